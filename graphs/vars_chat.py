"""The full VARS chat graph for LangGraph Studio: reward -> update -> extract -> retrieve ->
rerank -> augment -> generate, each a node; the state view shows the retrieved candidates
with their scores, the selected cards, the reward and the z norms of every turn.

Exported without checkpointer or store: `langgraph dev` persists threads itself and gives
the store named in `langgraph.json`. Settings: the YAML file in $VARS_CONFIG (default: CPU).
"""


from vars_langgraph import build_graph
from vars_langgraph.config import config_file
from vars_langgraph.integrations.studio import studio_memory

memory = studio_memory(config_file())
graph = build_graph(engine=memory.engine, checkpointer=False).copy(
    update={"store": None, "name": "vars_chat"})
