"""Drop-in VARS memory for existing agents: `VARSMemory` (nodes, subgraph, `create_react_agent`
hooks, `create_agent` middleware, memory tools) and `RuntimeStore` for platform-given stores.
See docs/dropin.md."""

from vars_langgraph.integrations.memory import VARSAgentState, VARSMemory, VARSMemoryState
from vars_langgraph.integrations.store import RuntimeStore

__all__ = ["VARSMemory", "VARSMemoryState", "VARSAgentState", "RuntimeStore"]
