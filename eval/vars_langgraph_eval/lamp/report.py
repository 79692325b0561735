"""LaMP result files: official predictions, traces, results.json and the markdown table with
the papers' numbers (theirs, labelled with their model) beside ours."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vars_langgraph_eval.lamp.data import write_predictions as write_official
from vars_langgraph_eval.lamp.metrics import HIGHER_IS_BETTER, metric_names
from vars_langgraph_eval.lamp.papers import OUR_TO_THEIRS, THEIR_MODEL, published

if TYPE_CHECKING:
    from vars_langgraph_eval.lamp.harness import MethodRun


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown_report(task: str, runs: Sequence[MethodRun], info: dict[str, Any]) -> str:
    """Our results table, then the papers' tables (theirs, with their model) for reference."""
    metrics = metric_names(task)
    arrows = [f"{m} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m in metrics]
    lines = [f"# {task}: our results", "",
             f"Model: {info.get('model', '?')}; k = {info.get('k')}; "
             f"{info.get('n')} inputs from {info.get('questions')}.", "",
             "| method (ours) | " + " | ".join(arrows) + " | seconds |",
             "|---|" + "---|" * (len(metrics) + 1)]
    for r in runs:
        vals = [_fmt(r.metrics.get(m)) if r.metrics else "n/a" for m in metrics]
        lines.append(f"| {r.method} | " + " | ".join(vals) + f" | {r.seconds:.1f} |")
    if not any(r.metrics for r in runs):
        lines += ["", "No gold outputs were given (--outputs), so nothing was scored."]
    theirs = published(task, metrics)
    lines += ["", "## Published numbers (theirs, for reference, not our model)", "",
              f"Their model: {THEIR_MODEL}. Our rows above use another model, other data "
              "sizes and our own retriever implementations; compare trends, not values.", ""]
    if not theirs:
        lines.append(f"The papers report no numbers for {task}.")
    counterpart = {v: k for k, v in OUR_TO_THEIRS.items()}
    for title, rows in theirs.items():
        lines += [f"### {title} (theirs)", "",
                  "| system (theirs) | " + " | ".join(arrows) + " | our counterpart |",
                  "|---|" + "---|" * (len(metrics) + 1)]
        for system, vals in rows.items():
            lines.append(f"| {system} | " + " | ".join(_fmt(vals[m]) for m in metrics)
                         + f" | {counterpart.get(system, '-')} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_outputs(out: Path, task: str, runs: Sequence[MethodRun], info: dict[str, Any]
                  ) -> dict[str, Path]:
    """Predictions (official format) and traces per method, results.json and results.md."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for r in runs:
        paths[r.method] = write_official(out / f"{task}_{r.method}_predictions.json", task,
                                         r.outputs)
        with open(out / f"{task}_{r.method}_trace.jsonl", "w", encoding="utf-8") as f:
            for qid, o in r.outputs.items():
                f.write(json.dumps({"id": qid, "picks": r.picks.get(qid), "prompt":
                                    r.prompts.get(qid), "output": o}, ensure_ascii=False) + "\n")
    results = {
        "task": task, **info,
        "methods": {r.method: {"metrics": r.metrics, "seconds": round(r.seconds, 3)}
                    for r in runs},
        "published_theirs": {"model": THEIR_MODEL,
                             "tables": published(task, metric_names(task))},
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown_report(task, runs, info))
    return paths
