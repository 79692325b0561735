"""`RuntimeStore`: a `BaseStore` that forwards to the store of the run in progress.

For graphs whose store is given by the platform at run time (`langgraph dev`, LangGraph
Platform: the `store` section of `langgraph.json`), not at build time. Outside a run, or in a
graph compiled without a store, it uses `fallback` (an `InMemoryStore` unless given).
"""

from __future__ import annotations

from collections.abc import Iterable

from langgraph.store.base import BaseStore, Op, Result
from langgraph.store.memory import InMemoryStore


class RuntimeStore(BaseStore):
    """Every call goes to `langgraph.config.get_store()` when a run with a store is in
    progress, else to `fallback`.

    >>> engine = VARSEngine(config, RuntimeStore())  # VARS data lives in the server's store
    """

    def __init__(self, fallback: BaseStore | None = None):
        self.fallback = fallback if fallback is not None else InMemoryStore()

    @property
    def current(self) -> BaseStore:
        """The store this call would use now."""
        from langgraph.config import get_store

        try:
            store = get_store()
        except (RuntimeError, KeyError, AttributeError):  # not inside a run
            return self.fallback
        if store is None or store is self:
            return self.fallback
        return store

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self.current.batch(ops)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await self.current.abatch(ops)
