"""The one `VARSMemory` behind the graphs in `graphs/` (LangGraph Studio / `langgraph dev`).

Its store is a `RuntimeStore`: VARS data lives in the store the server gives each run (the
`store` section of `langgraph.json`); the FAISS cache stays in memory. Graphs are exported
without checkpointer or store, as the server requires.
"""

from __future__ import annotations

import threading

from vars_langgraph.config import VARSConfig
from vars_langgraph.engine import VARSEngine
from vars_langgraph.integrations.memory import VARSMemory
from vars_langgraph.integrations.store import RuntimeStore

_MEMORIES: dict[str | None, VARSMemory] = {}
_LOCK = threading.Lock()


def studio_memory(config_path: str | None = None) -> VARSMemory:
    """One shared memory per config file per process (None: the CPU defaults)."""
    with _LOCK:
        memory = _MEMORIES.get(config_path)
        if memory is None:
            config = VARSConfig.from_yaml(config_path)
            memory = VARSMemory(engine=VARSEngine(config, RuntimeStore(), index_dir=None))
            _MEMORIES[config_path] = memory
        return memory
