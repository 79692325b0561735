"""The seven VARS nodes, one per module. Each `make_<name>(engine)` returns the node function
`(state, config, runtime) -> partial state update`; `graph.py` wires them."""

from vars_langgraph.nodes.augment import make_augment, render_system_prompt
from vars_langgraph.nodes.extract import make_extract
from vars_langgraph.nodes.generate import make_generate
from vars_langgraph.nodes.rerank import make_rerank
from vars_langgraph.nodes.retrieve import make_retrieve
from vars_langgraph.nodes.reward import make_reward
from vars_langgraph.nodes.update import make_update

__all__ = [
    "make_extract", "make_retrieve", "make_rerank", "make_augment", "make_generate",
    "make_reward", "make_update", "render_system_prompt",
]
