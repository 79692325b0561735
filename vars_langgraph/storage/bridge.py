"""The async API of LangGraph's sync checkpointers, run in worker threads (`SyncSaverAsyncAPI`).

Used by `VARSSqliteSaver` and `VARSPostgresSaver`, the checkpointers `build_graph(config)` gets
by default, so that one compiled graph serves `invoke`/`stream` and `ainvoke`/`astream`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver


def _run_in_thread(sync_name: str, async_fn: Callable[..., Any]) -> Callable[..., Any]:
    """`async_fn`'s stand-in: the sync method `sync_name` run in a worker thread (with the
    caller's context, as `asyncio.to_thread` copies it). An async generator (`alist`) gets the
    sync iterator's items, read in the thread in one go: LangGraph's sync savers hold their
    connection lock while a `list()` iterator is open, which must not span an `await`."""
    if inspect.isasyncgenfunction(async_fn):
        @functools.wraps(async_fn)
        async def agen(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            items = await asyncio.to_thread(lambda: list(getattr(self, sync_name)(*args, **kwargs)))
            for item in items:
                yield item

        return agen

    @functools.wraps(async_fn)
    async def coro(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self, sync_name), *args, **kwargs)

    return coro


class SyncSaverAsyncAPI:
    """Mixin for a sync LangGraph checkpointer: every async method of `BaseCheckpointSaver`
    (`aget_tuple`, `aput`, `alist`, ...) runs its sync twin in a worker thread.

    Why this exists at all: `graph.ainvoke`/`astream` drive the checkpointer only through its
    async API (`AsyncPregelLoop` awaits `aget_tuple`, `aput`, `aput_writes`; `aget_state_history`
    iterates `alist`), and `SqliteSaver`/`PostgresSaver` raise `NotImplementedError` there.
    LangGraph's async savers cannot take their place for a graph built synchronously:
    `AsyncSqliteSaver` binds to the event loop running when it is created (there is none in
    `build_graph(config)`), and its sync methods block on that loop, so `graph.invoke` from
    plain code would hang, and every `asyncio.run(graph.ainvoke(...))` runs on a new loop.
    The store needs no such help: LangGraph (1.2) hands the compiled graph's store to the
    nodes unwrapped, VARS's nodes are sync and run in worker threads under `ainvoke`, and
    every async method of `BaseStore` goes through the one `abatch` (see `VARSSqliteStore`).

    The methods are not listed here: they are read off `BaseCheckpointSaver` when a class
    uses the mixin: each `a<name>` coroutine or async generator whose sync `<name>` the class
    implements (overrides `BaseCheckpointSaver`'s, which raises `NotImplementedError`), so one
    LangGraph adds later is served too, and a capability the sync class lacks (`SqliteSaver`:
    `copy_thread`, `delete_for_runs`, `prune`) is not claimed: LangGraph's conformance suite
    reads a claim from an overridden async method. A method the class defines itself is kept.
    Fully async apps use LangGraph's async savers instead (`open_async_storage`).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in dir(BaseCheckpointSaver):
            if not name.startswith("a") or name in cls.__dict__:
                continue
            async_fn = inspect.getattr_static(BaseCheckpointSaver, name)
            if not (inspect.iscoroutinefunction(async_fn) or inspect.isasyncgenfunction(async_fn)):
                continue
            if implements(cls, name[1:]):
                setattr(cls, name, _run_in_thread(name[1:], async_fn))


def implements(cls: type, name: str) -> bool:
    """True when `cls` has its own sync method `name` (not `BaseCheckpointSaver`'s default)."""
    base = inspect.getattr_static(BaseCheckpointSaver, name, None)
    own = inspect.getattr_static(cls, name, None)
    return callable(base) and callable(own) and own is not base


def bridged_methods(cls: type) -> list[str]:
    """The async methods `SyncSaverAsyncAPI` filled in on `cls` (for tests and docs)."""
    return sorted(n for n, v in vars(cls).items()
                  if n.startswith("a") and getattr(v, "__wrapped__", None) is not None)
