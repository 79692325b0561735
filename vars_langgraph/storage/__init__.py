"""Storage backends chosen by `VARSConfig.storage`: LangGraph's own stores and checkpointers.

"sqlite" (default): `SqliteStore` + `SqliteSaver` in `data_dir` (vars.sqlite, threads.sqlite);
"memory": `InMemoryStore` + `InMemorySaver`. LangGraph's SQLite classes are sync-only; the
thin subclasses below also serve `ainvoke`/`astream` by running the sync calls in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.base import BaseStore, Op, Result
from langgraph.store.memory import InMemoryStore
from langgraph.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

STORE_FILE = "vars.sqlite"
THREADS_FILE = "threads.sqlite"


class ThreadedSqliteStore(SqliteStore):
    """`SqliteStore` whose async API runs the sync one in a worker thread."""

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))


class ThreadedAsyncSaver:
    """Mixin for a sync checkpointer: its async API runs the sync one in a worker thread."""

    async def aget_tuple(self, config: Any) -> Any:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: Any, **kwargs: Any) -> AsyncIterator[Any]:
        for item in await asyncio.to_thread(lambda: list(self.list(config, **kwargs))):
            yield item

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def aget_delta_channel_history(self, *, config: Any, channels: Any) -> Any:
        return await asyncio.to_thread(
            lambda: self.get_delta_channel_history(config=config, channels=channels))


class ThreadedSqliteSaver(ThreadedAsyncSaver, SqliteSaver):
    """`SqliteSaver` that also serves `ainvoke`/`astream`."""


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in free pages
    return conn


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
        store = ThreadedSqliteStore(_connect(config.data_path / STORE_FILE))
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
        saver = ThreadedSqliteSaver(_connect(config.data_path / THREADS_FILE))
        saver.setup()
        return saver
    if config.storage.startswith(("postgres://", "postgresql://")):
        from vars_langgraph.storage.postgres import open_postgres_checkpointer

        return open_postgres_checkpointer(config.storage, config)
    raise ValueError(f"storage: unknown backend {config.storage!r} (sqlite, memory, postgres://)")
