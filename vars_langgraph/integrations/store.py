"""`RuntimeStore`: a `BaseStore` that forwards to the store of the run in progress.

For graphs whose store is given by the platform at run time (`langgraph dev`, LangGraph
Platform: the `store` section of `langgraph.json`), not at build time. Outside a run, or in a
graph compiled without a store, it uses `fallback` (an `InMemoryStore` unless given).

Store features (`vars_langgraph.storage.features.StoreFeatures`): the per-call ones (card
write lock, bulk read, one-item read) are those of the store in use at the call; the card index, made once
per engine, is the default FAISS cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

from langgraph.store.base import BaseStore, Op, Result
from langgraph.store.memory import InMemoryStore

from vars_langgraph.storage.features import StoreFeatures, store_features


class RuntimeStore(BaseStore, StoreFeatures):
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

    def card_write_lock(self, user_id: str) -> AbstractContextManager[Any] | None:
        return store_features(self.current).card_write_lock(user_id)

    def namespace_rows(self, namespace: tuple[str, ...]) -> list[tuple[str, Any]] | None:
        return store_features(self.current).namespace_rows(namespace)

    def item_value(self, namespace: tuple[str, ...], key: str) -> Any:
        return store_features(self.current).item_value(namespace, key)
