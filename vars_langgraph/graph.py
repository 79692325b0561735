"""The VARS graph: the only place where nodes are wired.

    START -> reward -> update -> extract -> retrieve -> rerank -> augment -> generate -> END

reward/update score the previous turn (t) from this user message (t+1), as in the method,
so they run first; extract runs before retrieve so a preference stated now is used now.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore

from vars_langgraph.config import VARSConfig
from vars_langgraph.engine import VARSEngine
from vars_langgraph.memory.store import InvalidUserId
from vars_langgraph.nodes import (
    make_augment,
    make_extract,
    make_generate,
    make_rerank,
    make_retrieve,
    make_reward,
    make_update,
)
from vars_langgraph.state import VARSContext, VARSState

log = logging.getLogger(__name__)

MEMORY_NODES = ("reward", "update", "extract", "retrieve", "rerank")
ORDER = ("reward", "update", "extract", "retrieve", "rerank", "augment", "generate")
FACTORIES = {
    "reward": make_reward, "update": make_update, "extract": make_extract,
    "retrieve": make_retrieve, "rerank": make_rerank, "augment": make_augment,
    "generate": make_generate,
}


def fail_open(name: str, fn: Any) -> Any:
    """With `fail_open: true`, a memory node that fails logs and leaves the state unchanged,
    so the agent still answers, without personalization. Bad input (no user id) still raises."""

    @functools.wraps(fn)
    def wrapped(state: Any, config: Any, runtime: Any) -> dict[str, Any]:
        try:
            return fn(state, config, runtime)
        except (InvalidUserId, ValueError):
            raise
        except Exception as e:  # noqa: BLE001 - the switch exists to swallow memory faults
            log.warning("VARS node %s failed, continuing without personalization: %r", name, e)
            return {"selected": []} if name in ("retrieve", "rerank") else {}

    return wrapped


def add_vars_nodes(builder: StateGraph, engine: VARSEngine, names: tuple[str, ...] = ORDER,
                   prefix: str = "") -> list[str]:
    """Add VARS nodes to any StateGraph whose state has VARSState's keys; returns node names."""
    out = []
    for name in names:
        fn = FACTORIES[name](engine)
        if engine.config.fail_open and name in MEMORY_NODES:
            fn = fail_open(name, fn)
        builder.add_node(prefix + name, fn)
        out.append(prefix + name)
    return out


def build_graph(
    config: VARSConfig | None = None,
    *,
    store: BaseStore | None = None,
    checkpointer: BaseCheckpointSaver | None | bool = None,
    engine: VARSEngine | None = None,
) -> CompiledStateGraph:
    """Compile the VARS chat graph.

    Without `store`/`checkpointer`, the embedded SQLite defaults in `config.data_dir` are used
    (pass `checkpointer=False` to compile without one, e.g. for LangGraph Studio). Invoke with
    `{"messages": [...]}` and `{"configurable": {"thread_id": ..., "user_id": ...}}` or
    `context={"user_id": ...}`.

    >>> graph = build_graph(VARSConfig.from_yaml("configs/cpu.yaml"))
    >>> graph.invoke({"messages": [("user", "Hi")]},
    ...              {"configurable": {"thread_id": "t1", "user_id": "alice"}})
    """
    config = config or (engine.config if engine else VARSConfig())
    if engine is None:
        if store is None:
            from vars_langgraph.storage import open_store

            store = open_store(config)
        engine = VARSEngine(config, store, index_dir=default_index_dir(config))
    if checkpointer is None:
        from vars_langgraph.storage import open_checkpointer

        checkpointer = open_checkpointer(config)
    builder = StateGraph(VARSState, context_schema=VARSContext)
    names = add_vars_nodes(builder, engine)
    builder.add_edge(START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    graph = builder.compile(
        checkpointer=checkpointer or None, store=engine.store, name="vars"
    )
    graph.engine = engine  # type: ignore[attr-defined]  # for CLI/tests: the shared parts
    return graph


def default_index_dir(config: VARSConfig) -> str | None:
    if config.storage == "memory":
        return None
    return str(config.data_path / "index")
