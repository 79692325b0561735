"""How VARS node functions are made: the factories, the bounded node slots and `fail_open`.
Every node function has one signature, `(state, config, runtime) -> dict`. `graph.py` (the
inline graph) and `background.py` (learning after the answer) add them to a builder with
`add_vars_nodes`; the drop-in memory calls them directly (`vars_node_functions`)."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, cast

from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph

from vars_langgraph.engine import VARSEngine
from vars_langgraph.memory.store import BadInput, InvalidUserId
from vars_langgraph.nodes.augment import make_augment
from vars_langgraph.nodes.extract import make_extract
from vars_langgraph.nodes.generate import make_generate
from vars_langgraph.nodes.rerank import make_rerank
from vars_langgraph.nodes.retrieve import make_retrieve
from vars_langgraph.nodes.reward import make_reward
from vars_langgraph.nodes.update import make_update
from vars_langgraph.state import last_user_text

log = logging.getLogger(__name__)



class NodeFn(Protocol):
    """A VARS node function: LangGraph passes `config` and `runtime` by name."""

    def __call__(self, state: Any, config: RunnableConfig, runtime: Any) -> dict[str, Any]: ...


MEMORY_NODES = ("reward", "update", "extract", "retrieve", "rerank")
ORDER = ("reward", "update", "extract", "retrieve", "rerank", "augment", "generate")
FACTORIES: dict[str, Callable[[VARSEngine], Any]] = {
    "reward": make_reward, "update": make_update, "extract": make_extract,
    "retrieve": make_retrieve, "rerank": make_rerank, "augment": make_augment,
    "generate": make_generate,
}


def _fallback(name: str, state: Any) -> dict[str, Any]:
    """What a failed memory node writes: this turn's empty result, so nothing of the previous
    turn (its query, candidates, reward) is mistaken for this one's."""
    query = last_user_text(state.get("messages", []))
    results: dict[str, dict[str, Any]] = {
        "reward": {"query": query, "reward": None}, "update": {},
        "extract": {"query": query, "extracted": []},
        "retrieve": {"candidates": [], "selected": []},
        "rerank": {"candidates": [], "selected": []},
    }
    return results.get(name, {})


def fail_open(name: str, fn: Any) -> Any:
    """With `fail_open: true`, a memory node that fails logs and writes an empty result,
    so the agent still answers, without personalization: any exception of the memory side,
    damaged data included (`binascii.Error`, `UnicodeError`, pydantic's `ValidationError` are
    `ValueError`s). The caller's bad input (`InvalidUserId`, `BadInput`) still raises."""

    @functools.wraps(fn)
    def wrapped(state: Any, config: Any, runtime: Any) -> dict[str, Any]:
        try:
            return fn(state, config, runtime)
        except (InvalidUserId, BadInput):  # the caller's mistake, not a memory fault
            raise
        except Exception as e:  # noqa: BLE001 - the switch exists to swallow memory faults
            log.warning("VARS node %s failed, continuing without personalization: %r", name, e)
            return _fallback(name, state)

    return wrapped


def node_slots(engine: VARSEngine) -> threading.BoundedSemaphore:
    """The engine's semaphore of `max_concurrency` node slots (shared by its graphs)."""
    return engine.node_slots


def bounded(fn: Any, slots: threading.BoundedSemaphore) -> Any:
    """Run the node function holding one slot. Sync nodes run in LangGraph's worker threads
    under `ainvoke`/`astream` too, so one threading semaphore bounds both paths."""

    @functools.wraps(fn)  # keeps the signature LangGraph inspects to pass config/runtime
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with slots:
            return fn(*args, **kwargs)

    return wrapped


def add_vars_nodes(builder: StateGraph[Any, Any, Any, Any], engine: VARSEngine,
                   names: tuple[str, ...] = ORDER, prefix: str = "") -> list[str]:
    """Add VARS nodes to any StateGraph whose state has VARSState's keys; returns node names."""
    out = []
    for name, fn in vars_node_functions(engine, names):
        # LangGraph's node protocols name (state, config) and (state, *, runtime), not both
        builder.add_node(prefix + name, cast(Any, fn))
        out.append(prefix + name)
    return out


def vars_node_functions(engine: VARSEngine, names: tuple[str, ...] = ORDER) -> list[tuple[str, NodeFn]]:
    """The VARS node functions `names`, in that order, as a graph runs them: each
    `(state, config, runtime) -> dict`, holding one of the engine's `max_concurrency` slots,
    and for a memory node with `fail_open`, failing open."""
    return [(name, node_function(engine, name, FACTORIES[name](engine), memory=name in MEMORY_NODES))
            for name in names]


def node_function(engine: VARSEngine, name: str, fn: NodeFn, *, memory: bool) -> NodeFn:
    """`fn` bounded by the engine's node slots; with `fail_open`, a `memory` node fails open."""
    if memory and engine.config.fail_open:
        fn = fail_open(name, fn)
    return bounded(fn, node_slots(engine))
