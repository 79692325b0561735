"""The VARS graph (the node functions come from nodes/wiring.py).

    START -> reward -> update -> extract -> retrieve -> rerank -> augment -> generate -> END

reward/update score the previous turn (t) from this user message (t+1), as in the method,
so they run first; extract runs before retrieve so a preference stated now is used now.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from langchain_core.messages import convert_to_messages
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime
from langgraph.store.base import BaseStore

from vars_langgraph.background import add_background_nodes, background_enabled
from vars_langgraph.config import VARSConfig
from vars_langgraph.engine import VARSEngine
from vars_langgraph.memory.threads import FailOpenSaver, drop_failed_run
from vars_langgraph.nodes.wiring import ORDER, add_vars_nodes
from vars_langgraph.state import VARSContext, VARSState, message_text, user_id_from

__all__ = ["ORDER", "VARSGraph", "add_vars_nodes", "build_graph", "default_index_dir"]

log = logging.getLogger(__name__)

class VARSGraph(CompiledStateGraph[Any, Any, Any, Any]):
    """The compiled VARS graph. Before a run starts, so before the checkpointer stores the
    input, it refuses a missing or empty user id and an empty last user message, and records
    the thread in the user's registry (what `forget --threads` deletes).

    Built from the graph `StateGraph.compile()` returns, through the constructor with the
    fields LangGraph's own `copy()` passes it, plus `engine`; so LangGraph's `copy()` (which
    `langgraph dev` calls per run) rebuilds a `VARSGraph` with its engine."""

    engine: VARSEngine

    def __init__(self, *, engine: VARSEngine, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = engine

    @classmethod
    def from_compiled(cls, graph: CompiledStateGraph[Any, Any, Any, Any], engine: VARSEngine) -> VARSGraph:
        """A `VARSGraph` with `graph`'s fields (as `graph.copy()` would construct it)."""
        fields = {k: v for k, v in vars(graph).items() if k != "__orig_class__"}
        return cls(engine=engine, **fields)

    def stream(self, input: Any, config: Any = None, **kwargs: Any) -> Any:  # noqa: A002
        self._before_run(input, config, kwargs.get("context"))
        return _forget_wins(self._after_run(config, kwargs.get("context")),
                            super().stream(input, config, **kwargs))

    def astream(self, input: Any, config: Any = None, **kwargs: Any) -> Any:  # noqa: A002
        note = self._before_run(input, config, kwargs.get("context"), defer_note=True)
        stream = super().astream(input, config, **kwargs)
        stream = stream if note is None else _noted_first(note, stream)
        return _aforget_wins(self._after_run(config, kwargs.get("context")), stream)

    def _after_run(self, config: Any, context: Any) -> Any:
        """After the run: if the user was forgotten meanwhile, what it wrote goes too
        (`VARSEngine.enforce_forget`); None without a thread id."""
        conf = (config or {}).get("configurable") or {}
        if conf.get("thread_id") is None:
            return None
        if context is None:  # a subgraph call: the parent run's context
            context = _parent_context()
        user_id = user_id_from(context, config)
        return functools.partial(_after, self.engine, user_id, str(conf["thread_id"]),
                                 self.checkpointer or None)

    def _before_run(self, input: Any, config: Any, context: Any,  # noqa: A002
                    defer_note: bool = False) -> Any:
        conf = (config or {}).get("configurable") or {}
        if context is None:  # a subgraph call: the parent run's context
            context = _parent_context()
        user_id = user_id_from(context, config)
        msgs = input.get("messages") if isinstance(input, dict) else None
        if msgs:
            try:
                last = convert_to_messages(msgs[-1:] if isinstance(msgs, list) else [msgs])[-1]
            except (ValueError, TypeError, NotImplementedError):
                last = None  # malformed input: LangGraph reports it
            if last is not None and last.type == "human" and not message_text(last).strip():
                raise ValueError("the last message must be a non-empty user message (text); "
                                 "images or other non-text content alone are not supported")
        if conf.get("thread_id") is not None:
            note = functools.partial(self._note_thread, user_id, str(conf["thread_id"]))
            if defer_note:
                return note
            note()
        return None

    def _note_thread(self, user_id: str, thread_id: str) -> None:
        try:
            self.engine.note_thread(user_id, thread_id)
        except Exception as e:
            if not self.engine.config.fail_open:
                raise
            log.warning("VARS could not record the thread: %r", e)


def _parent_context() -> Any:
    """The runtime context of the run this call is made from (a node of a parent graph), or
    None outside a run (`langgraph.runtime.get_runtime`)."""
    try:
        return get_runtime().context
    except RuntimeError:  # not inside a runnable context
        return None


def _after(engine: VARSEngine, user_id: str, tid: str, checkpointer: Any,
           failed: bool) -> None:
    """After a run: a failed run's checkpoints go (its message is not kept or sent again);
    if the user was forgotten meanwhile, what the run wrote goes too."""
    if failed and checkpointer is not None:
        try:
            drop_failed_run(checkpointer, tid)
        except Exception as e:  # noqa: BLE001 - the run's own error is the one to report
            log.warning("VARS could not remove the failed run's checkpoints: %r", e)
    try:
        engine.enforce_forget(user_id, tid, checkpointer)
    except Exception as e:
        if not engine.config.fail_open and not failed:  # else the run's own error wins
            raise
        log.warning("VARS could not check for a forget during the run: %r", e)


def _forget_wins(after: Any, stream: Any) -> Any:
    failed = False
    try:
        yield from stream
    except Exception:
        failed = True
        raise
    finally:
        if after is not None:
            after(failed)


async def _aforget_wins(after: Any, stream: Any) -> Any:
    failed = False
    try:
        async for chunk in stream:
            yield chunk
    except Exception:
        failed = True
        raise
    finally:
        if after is not None:
            await asyncio.to_thread(after, failed)


async def _noted_first(note: Any, stream: Any) -> Any:
    """Record the thread off the event loop (async stores refuse sync calls on it), then run."""
    await asyncio.to_thread(note)
    async for chunk in stream:
        yield chunk


def build_graph(
    config: VARSConfig | None = None,
    *,
    store: BaseStore | None = None,
    checkpointer: BaseCheckpointSaver | None | bool = None,
    engine: VARSEngine | None = None,
    background: bool | None = None,
) -> VARSGraph:
    """Compile the VARS chat graph.

    Without `store`/`checkpointer`, the embedded SQLite defaults in `config.data_dir` are used
    (pass `checkpointer=False` to compile without one, e.g. for LangGraph Studio). Invoke with
    `{"messages": [...]}` and `{"configurable": {"thread_id": ..., "user_id": ...}}` or
    `context={"user_id": ...}`. `background`: learn after the answer (background.py); None
    takes `config.background.enabled`, and when that is unset too, inline (the method's order).

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

        try:
            checkpointer = open_checkpointer(config)
        except Exception as e:  # unwritable data dir, full disk, server down
            if not config.fail_open:
                raise
            log.warning("VARS fail_open: the conversation store cannot be opened (%r); "
                        "conversations are not kept", e)
            checkpointer = InMemorySaver()
    # its faults: answer without history (and say so)
    if config.fail_open and isinstance(checkpointer, BaseCheckpointSaver):
        checkpointer = FailOpenSaver(checkpointer)
    builder = StateGraph(VARSState, context_schema=VARSContext)
    if background is None:
        background = background_enabled(config, default=False)
    # background: reward/update/extract in a worker, after the answer (background.py)
    names = add_background_nodes(builder, engine) if background else add_vars_nodes(builder, engine)
    builder.add_edge(START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    compiled = builder.compile(checkpointer=checkpointer or None, store=engine.store, name="vars")
    # checks the user id before anything is written; `engine`: the shared parts (CLI, tests)
    return VARSGraph.from_compiled(compiled, engine)


def default_index_dir(config: VARSConfig) -> str | None:
    if config.storage == "memory":
        return None
    return str(config.data_path / "index")
