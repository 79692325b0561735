"""What a store can offer the VARS engine beyond LangGraph's `BaseStore`: `StoreFeatures`.

A store opts in by subclassing `StoreFeatures` next to its `BaseStore` class and overriding
what it has; the engine and the memory ask `store_features(store)`, never `getattr`. The
features and their defaults (what any other store gets: `InMemoryStore`, LangGraph's own
SQLite/Postgres classes, a user's store):

- `make_card_index(memory, dim, index_dir, **kwargs)`: the card index the engine searches.
  Default: `CardIndex`, the per-process FAISS cache kept in step with the store by the
  per-user version token. `VARSPostgresStore` with `postgres.retrieval: pgvector` returns one
  whose dense search runs in Postgres.
- `card_write_lock(user_id)`: a context manager that serialises one user's card writes with
  every other process using the same data, or None. Default None: the engine serialises with
  a file lock (`filelock`) in its index dir, which covers the processes sharing one data dir.
  The Postgres stores return a per-user advisory lock (processes on any host).
- `namespace_rows(namespace)` (from `memory.store.NamespaceRows`): one namespace's (key,
  value) rows in one read, or None. Default None: the memory reads with one `search` call.
  VARS's SQLite and Postgres stores run one SELECT on LangGraph's `store` table.
- `item_value(namespace, key)` (also from `NamespaceRows`): one item's value (JSON text or a
  dict, None when absent) in one SELECT, or `UNSUPPORTED`. Default `UNSUPPORTED`: the memory
  calls `store.get` (a `GetOp` batch and an `Item`). The per-turn reads use it: the version
  token checked before every search, the user vector, the pending feedback.

VARS's own classes implement it: `VARSSqliteStore`, `VARSPostgresStore`,
`VARSAsyncPostgresStore`, and `RuntimeStore` (which forwards the per-call features to the store
of the run in progress).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vars_langgraph.memory.store import NamespaceRows

if TYPE_CHECKING:
    from vars_langgraph.memory.index import CardIndex
    from vars_langgraph.memory.store import UserMemory

__all__ = ["StoreFeatures", "store_features"]


class StoreFeatures(NamespaceRows):
    """The optional store features the engine uses; every method has the default above."""

    def make_card_index(self, memory: UserMemory, dim: int, index_dir: str | Path | None,
                        **kwargs: Any) -> CardIndex:
        """The engine's card index over this store. kwargs: `CardIndex`'s (flat_max,
        max_bytes, write_lock)."""
        from vars_langgraph.memory.index import CardIndex

        return CardIndex(memory, dim, index_dir, **kwargs)

    def card_write_lock(self, user_id: str) -> AbstractContextManager[Any] | None:
        """A cross-process lock on the user's card writes, or None (the engine's file lock)."""
        return None


DEFAULTS = StoreFeatures()


def store_features(store: Any) -> StoreFeatures:
    """The store itself when it implements `StoreFeatures`, else the defaults."""
    return store if isinstance(store, StoreFeatures) else DEFAULTS
