"""vars-langgraph: a per-user preference memory that learns, for any LangGraph agent.

`build_graph(VARSConfig)` gives the full VARS chat graph; see README.md for drop-in use.
Names are imported on first use, so `import vars_langgraph.config` stays light (no LangGraph,
torch or FAISS until a graph or memory is built).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vars_langgraph.config import VARSConfig
    from vars_langgraph.engine import VARSEngine
    from vars_langgraph.graph import build_graph
    from vars_langgraph.integrations.memory import VARSMemory
    from vars_langgraph.state import VARSContext, VARSState
    from vars_langgraph.types import Preference, PreferenceCard

_EXPORTS = {
    "VARSConfig": "vars_langgraph.config",
    "VARSEngine": "vars_langgraph.engine",
    "build_graph": "vars_langgraph.graph",
    "VARSMemory": "vars_langgraph.integrations.memory",
    "VARSContext": "vars_langgraph.state",
    "VARSState": "vars_langgraph.state",
    "Preference": "vars_langgraph.types",
    "PreferenceCard": "vars_langgraph.types",
}
__all__ = [
    "VARSConfig", "VARSEngine", "VARSContext", "VARSState", "Preference", "PreferenceCard",
    "build_graph", "VARSMemory",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """PEP 562: import an exported name's module on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vars_langgraph' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
