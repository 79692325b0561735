"""vars-langgraph: a per-user preference memory that learns, for any LangGraph agent.

`build_graph(VARSConfig)` gives the full VARS chat graph; see README.md for drop-in use.
"""

from vars_langgraph.config import VARSConfig
from vars_langgraph.engine import VARSEngine
from vars_langgraph.graph import build_graph
from vars_langgraph.integrations.memory import VARSMemory
from vars_langgraph.state import VARSContext, VARSState
from vars_langgraph.types import Preference, PreferenceCard

__all__ = [
    "VARSConfig", "VARSEngine", "VARSContext", "VARSState", "Preference", "PreferenceCard",
    "build_graph", "VARSMemory",
]
__version__ = "0.1.0"
