"""LaMP evaluation: official formats and metrics, profile retrievers (BM25, recency, dense, the
VARS policy), ROPG and RSPG, and the harness behind `vars-langgraph eval lamp`.

Persona-Plug lives in `vars_langgraph_eval.persona_plug`. Heavy imports (torch, sklearn, bm25s)
happen inside the functions that need them or in `ropg`/`rspg`.
"""

from vars_langgraph_eval.lamp.data import (
    LABELS,
    TASKS,
    Question,
    load_outputs,
    load_questions,
    normalise_task,
    write_predictions,
)
from vars_langgraph_eval.lamp.harness import METHODS, Harness, Settings, lamp_main
from vars_langgraph_eval.lamp.metrics import evaluate_task, metric_names, score, utility
from vars_langgraph_eval.lamp.prompts import build_prompt, corpus, retrieval_query

__all__ = [
    "LABELS", "METHODS", "TASKS", "Harness", "Question", "Settings", "build_prompt", "corpus",
    "evaluate_task", "lamp_main", "load_outputs", "load_questions", "metric_names",
    "normalise_task", "retrieval_query", "score", "utility", "write_predictions",
]
