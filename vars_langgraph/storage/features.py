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

The readers below (`SqliteTables`, `PostgresTables`) are the one place in VARS with its own SQL
on LangGraph's tables (`store`, `store_vectors`); everything else uses LangGraph's public API
only. Why these reads exist: the memory's
hot paths read one user's cards (cold open of a user: every card in one SELECT instead of
paged `search` calls that build an `Item` per row) and, every turn, a handful of single items
(the version token, the user vector, pending feedback: one SELECT instead of a `GetOp` batch);
docs/scaling.md measured both. Postgres with `postgres.retrieval: pgvector` also indexes the
cards written before pgvector was on, in one INSERT ... SELECT.

The stores make their reader only after LangGraph's `setup()`, and only when the tables have the
columns these queries use (`tables_for_sqlite` / `tables_for_postgres` check the schema).
When they do not (a LangGraph release that changed its schema), the stores hand out no
reader and VARS falls back to the public API: `search`/`get` for the reads (the memory's
defaults, `memory.store.NamespaceRows`), re-putting cards through `batch` for the backfill.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vars_langgraph.memory.store import NamespaceRows

if TYPE_CHECKING:
    from vars_langgraph.memory.index import CardIndex
    from vars_langgraph.memory.store import UserMemory

__all__ = ["PostgresTables", "SqliteTables", "StoreFeatures", "store_features",
           "tables_for_postgres", "tables_for_sqlite"]


class StoreFeatures(NamespaceRows):
    """The optional store features the engine uses; every method has the default above."""

    def make_card_index(self, memory: UserMemory, dim: int, index_dir: str | Path | None,
                        **kwargs: Any) -> CardIndex:
        """The engine's card index over this store. kwargs: `CardIndex`'s (flat_max,
        max_bytes)."""
        from vars_langgraph.memory.index import CardIndex

        return CardIndex(memory, dim, index_dir, **kwargs)

    def card_write_lock(self, user_id: str) -> AbstractContextManager[Any] | None:
        """A cross-process lock on the user's card writes, or None (the engine's file lock)."""
        return None


DEFAULTS = StoreFeatures()


def store_features(store: Any) -> StoreFeatures:
    """The store itself when it implements `StoreFeatures`, else the defaults."""
    return store if isinstance(store, StoreFeatures) else DEFAULTS


# LangGraph's tables, read directly ------------------------------------------------------------
log = logging.getLogger(__name__)

STORE_COLUMNS = frozenset({"prefix", "key", "value"})
VECTOR_COLUMNS = frozenset({"prefix", "key", "field_name", "embedding"})


def _warn(table: str, found: set[str], want: frozenset[str]) -> None:
    log.warning("LangGraph's %s table has columns %s, not %s: VARS reads it through the "
                "public store API", table, sorted(found), sorted(want))


# SQLite --------------------------------------------------------------------------------------
class SqliteTables:
    """Direct reads of `SqliteStore`'s `store` table on the store's own connection and lock."""

    def __init__(self, conn: Any, lock: AbstractContextManager[Any] | threading.Lock) -> None:
        self.conn = conn
        self.lock = lock

    def namespace_rows(self, namespace: tuple[str, ...]) -> list[tuple[str, Any]]:
        with self.lock:
            return self.conn.execute("SELECT key, value FROM store WHERE prefix = ?",
                                     (".".join(namespace),)).fetchall()

    def item_value(self, namespace: tuple[str, ...], key: str) -> Any:
        with self.lock:
            row = self.conn.execute("SELECT value FROM store WHERE prefix = ? AND key = ?",
                                    (".".join(namespace), key)).fetchone()
        return row[0] if row is not None else None


def tables_for_sqlite(conn: Any, lock: Any) -> SqliteTables | None:
    """A reader for a set-up `SqliteStore` (its `conn` and `lock`), or None when LangGraph's
    `store` table does not have the columns the reads use."""
    with lock:
        found = {row[1] for row in conn.execute("PRAGMA table_info(store)").fetchall()}
    if not found >= STORE_COLUMNS:
        _warn("store", found, STORE_COLUMNS)
        return None
    return SqliteTables(conn, lock)


# Postgres ------------------------------------------------------------------------------------
class PostgresTables:
    """Direct reads of `PostgresStore`'s tables on connections of the store's pool."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        from psycopg.rows import dict_row

        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            yield cur

    def namespace_rows(self, namespace: tuple[str, ...]) -> list[tuple[str, Any]]:
        with self.cursor() as cur:
            cur.execute("SELECT key, value::text AS value FROM store WHERE prefix = %s",
                        (".".join(namespace),))
            return [(r["key"], r["value"]) for r in cur.fetchall()]

    def item_value(self, namespace: tuple[str, ...], key: str) -> Any:
        with self.cursor() as cur:
            cur.execute("SELECT value::text AS value FROM store WHERE prefix = %s AND key = %s",
                        (".".join(namespace), key))
            row = cur.fetchone()
        return row["value"] if row is not None else None

    def vectors_ok(self) -> bool:
        """True when `store_vectors` (LangGraph's vector migrations) has the backfill's columns."""
        found = _pg_columns(self.pool, "store_vectors")
        if not found >= VECTOR_COLUMNS:
            _warn("store_vectors", found, VECTOR_COLUMNS)
            return False
        return True

    def embedding_type(self) -> str | None:
        """`store_vectors.embedding`'s type, e.g. "vector(384)"."""
        with self.cursor() as cur:
            cur.execute("SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute "
                        "WHERE attrelid = 'store_vectors'::regclass AND attname = 'embedding'")
            row = cur.fetchone()
        return row["t"] if row else None

    def backfill_vectors(self, root: str, vec_key: str, field: str, dim: int) -> int:
        """Index the cards (namespaces `<root>.*.cards`) that have no vector row yet, from
        the vector stored in the card (a JSON list `embedding`, or base64 float16 `vec_key`).
        Returns how many rows were added."""
        from vars_langgraph.memory.store import decode_vector

        with self.cursor() as cur:
            cur.execute(
                """
                INSERT INTO store_vectors (prefix, key, field_name, embedding)
                SELECT s.prefix, s.key, %s, (s.value->'embedding')::text::vector
                FROM store s
                WHERE s.prefix LIKE %s AND s.prefix LIKE %s
                  AND jsonb_typeof(s.value->'embedding') = 'array'
                  AND jsonb_array_length(s.value->'embedding') = %s
                ON CONFLICT (prefix, key, field_name) DO NOTHING
                """,
                (field, root + ".%", "%.cards", dim),
            )
            n = cur.rowcount
            cur.execute(
                """
                SELECT s.prefix, s.key, s.value->>%s AS v FROM store s
                LEFT JOIN store_vectors sv
                  ON sv.prefix = s.prefix AND sv.key = s.key AND sv.field_name = %s
                WHERE s.prefix LIKE %s AND s.prefix LIKE %s AND s.value ? %s AND sv.key IS NULL
                """,
                (vec_key, field, root + ".%", "%.cards", vec_key),
            )
            rows = []
            for r in cur.fetchall():
                vec = decode_vector(r["v"])
                if vec is not None and len(vec) == dim and np.all(np.isfinite(vec)):
                    rows.append((r["prefix"], r["key"], field,
                                 "[" + ",".join(map(repr, vec.tolist())) + "]"))
            if rows:
                cur.executemany(
                    "INSERT INTO store_vectors (prefix, key, field_name, embedding) VALUES "
                    "(%s, %s, %s, %s::vector) ON CONFLICT (prefix, key, field_name) DO NOTHING",
                    rows)
        return n + len(rows)


def _pg_columns(pool: Any, table: str) -> set[str]:
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s", (table,)).fetchall()
    return {r["column_name"] if isinstance(r, dict) else r[0] for r in rows}


def tables_for_postgres(pool: Any) -> PostgresTables | None:
    """A reader for a set-up `PostgresStore` on `pool`, or None when LangGraph's `store`
    table does not have the columns the reads use."""
    found = _pg_columns(pool, "store")
    if not found >= STORE_COLUMNS:
        _warn("store", found, STORE_COLUMNS)
        return None
    return PostgresTables(pool)
