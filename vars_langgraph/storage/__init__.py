"""Storage backends chosen by `VARSConfig.storage`: LangGraph's own stores and checkpointers.

"sqlite" (default): `SqliteStore` + `SqliteSaver` in `data_dir` (vars.sqlite, threads.sqlite);
"memory": `InMemoryStore` + `InMemorySaver`. LangGraph's SQLite classes are sync-only; the
thin subclasses below also serve `ainvoke`/`astream` by running the sync calls in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore

from vars_langgraph.storage.sqlite import (
    STORE_FILE,
    THREADS_FILE,
    ThreadedSqliteSaver,
    ThreadedSqliteStore,
    connect,
)

__all__ = ["STORE_FILE", "THREADS_FILE", "open_checkpointer", "open_store", "purge_deleted"]

log = logging.getLogger(__name__)


def purge_deleted(store_or_saver: Any) -> None:
    """After deleting personal data: fold SQLite's WAL into the database file and truncate it,
    so no deleted text lingers in `-wal` (with `secure_delete` it is zeroed in the database).
    A no-op for other backends (Postgres: VACUUM reclaims dead rows)."""
    conn = getattr(store_or_saver, "conn", None)
    if not isinstance(conn, sqlite3.Connection):
        return
    with getattr(store_or_saver, "lock", None) or contextlib.nullcontext():
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        log.warning("SQLite WAL not truncated (another connection is reading); deleted data "
                    "stays in the -wal file until the next checkpoint")


def open_store(config: Any) -> BaseStore:
    """The per-user store named by config (a new connection; set up and ready)."""
    if config.storage == "memory":
        return InMemoryStore()
    if config.storage == "sqlite":
        store = ThreadedSqliteStore(connect(config.data_path / STORE_FILE))
        store.setup()
        return store
    if config.storage.startswith(("postgres://", "postgresql://")):
        from vars_langgraph.storage.postgres import open_postgres_store

        return open_postgres_store(config.storage, config)
    raise ValueError(f"storage: unknown backend {config.storage!r} (sqlite, memory, postgres://)")


def open_checkpointer(config: Any) -> BaseCheckpointSaver:
    """The thread checkpointer named by config."""
    if config.storage == "memory":
        return InMemorySaver()
    if config.storage == "sqlite":
        saver = ThreadedSqliteSaver(connect(config.data_path / THREADS_FILE))
        saver.setup()
        return saver
    if config.storage.startswith(("postgres://", "postgresql://")):
        from vars_langgraph.storage.postgres import open_postgres_checkpointer

        return open_postgres_checkpointer(config.storage, config)
    raise ValueError(f"storage: unknown backend {config.storage!r} (sqlite, memory, postgres://)")
