"""Storage backends chosen by `VARSConfig.storage`: LangGraph's own stores and checkpointers.

"sqlite" (default): LangGraph's SQLite classes in `data_dir` (vars.sqlite, threads.sqlite);
"memory": `InMemoryStore` + `InMemorySaver`; "postgres://..." / "postgresql://...": LangGraph's
Postgres classes on a pool (the `postgres` extra: `pip install "vars-langgraph[postgres]"`).

Two ways to open them, like LangGraph's own `from_conn_string(...)` + `setup()`:

- sync, `open_store(config)` / `open_checkpointer(config)`: set-up `SqliteStore`/`SqliteSaver`
  (or `PostgresStore`/`PostgresSaver`) subclasses; what `build_graph(config)` uses. A graph
  built on them serves `invoke` and `ainvoke`/`astream` alike (`storage.bridge`).
- async, `async with open_async_storage(config) as (store, checkpointer)`: LangGraph's
  `AsyncSqliteStore` + `AsyncSqliteSaver` (or `AsyncPostgresStore` + `AsyncPostgresSaver`),
  set up, bound to the running event loop; closed on exit. For fully async apps.

Optional store features the engine uses (card index, cross-process card write lock, bulk
read) are the explicit interface `storage.features.StoreFeatures`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore

from vars_langgraph.storage.features import StoreFeatures, store_features
from vars_langgraph.storage.sqlite import (
    STORE_FILE,
    THREADS_FILE,
    VARSSqliteSaver,
    VARSSqliteStore,
    open_async_sqlite,
    open_sqlite_checkpointer,
    open_sqlite_store,
)

__all__ = ["STORE_FILE", "THREADS_FILE", "StoreFeatures", "VARSSqliteSaver", "VARSSqliteStore",
           "open_async_storage", "open_checkpointer", "open_store", "purge_deleted",
           "store_features"]

log = logging.getLogger(__name__)

POSTGRES_MODULES = ("psycopg", "psycopg_pool", "langgraph.checkpoint.postgres",
                    "langgraph.store.postgres")


def is_postgres(storage: str) -> bool:
    return storage.startswith(("postgres://", "postgresql://"))


def postgres_backend() -> ModuleType:
    """`vars_langgraph.storage.postgres`; without the `postgres` extra, an ImportError
    (`extras.MissingExtra`) that names `pip install "vars-langgraph[postgres]"`."""
    from vars_langgraph.extras import require

    require("postgres", *POSTGRES_MODULES)
    from vars_langgraph.storage import postgres

    return postgres


def _unknown(storage: str) -> ValueError:
    return ValueError(f"storage: unknown backend {storage!r} (sqlite, memory, postgres://)")


def purge_deleted(store_or_saver: Any) -> None:
    """After deleting personal data: fold SQLite's WAL into the database file and truncate it,
    so no deleted text lingers in `-wal` (with `secure_delete` it is zeroed in the database).
    Sync SQLite classes, and LangGraph's async ones when called off their event loop (from a
    worker thread, as the engine's sync code runs). A no-op for other backends (Postgres:
    VACUUM reclaims dead rows)."""
    conn = getattr(store_or_saver, "conn", None)  # LangGraph's classes: a public attribute
    if isinstance(conn, sqlite3.Connection):
        with getattr(store_or_saver, "lock", None) or contextlib.nullcontext():
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    elif type(conn).__module__.startswith("aiosqlite"):
        busy = _purge_async(store_or_saver, conn)
        if busy is None:
            return
    else:
        return
    if busy:
        log.warning("SQLite WAL not truncated (another connection is reading); deleted data "
                    "stays in the -wal file until the next checkpoint")


def _purge_async(owner: Any, conn: Any) -> int | None:
    import asyncio

    loop = getattr(owner, "loop", None)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or running is loop or not loop.is_running():
        log.info("SQLite WAL not truncated: call purge_deleted off the store's event loop")
        return None

    async def checkpoint() -> int:
        async with conn.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
            row = await cur.fetchone()
        return row[0]

    return asyncio.run_coroutine_threadsafe(checkpoint(), loop).result()


def open_store(config: Any) -> BaseStore:
    """The per-user store named by config (a new connection; set up and ready)."""
    if config.storage == "memory":
        return InMemoryStore()
    if config.storage == "sqlite":
        return open_sqlite_store(config.data_path / STORE_FILE)
    if is_postgres(config.storage):
        return postgres_backend().open_postgres_store(config.storage, config)
    raise _unknown(config.storage)


def open_checkpointer(config: Any) -> BaseCheckpointSaver:
    """The thread checkpointer named by config (set up and ready)."""
    if config.storage == "memory":
        return InMemorySaver()
    if config.storage == "sqlite":
        return open_sqlite_checkpointer(config.data_path / THREADS_FILE)
    if is_postgres(config.storage):
        return postgres_backend().open_postgres_checkpointer(config.storage, config)
    raise _unknown(config.storage)


@contextlib.asynccontextmanager
async def open_async_storage(config: Any) -> AsyncIterator[tuple[BaseStore, BaseCheckpointSaver]]:
    """The store and checkpointer named by config as LangGraph's async classes, set up, for
    fully async apps; call inside the app's event loop, closed on exit::

        async with open_async_storage(cfg) as (store, checkpointer):
            graph = build_graph(cfg, store=store, checkpointer=checkpointer)
            await graph.ainvoke({"messages": [...]}, {"configurable": {...}})

    sqlite: `AsyncSqliteStore` + `AsyncSqliteSaver` (aiosqlite) on the same files as
    `open_store`/`open_checkpointer`; postgres: `AsyncPostgresStore` + `AsyncPostgresSaver`
    on one `AsyncConnectionPool` (`storage.postgres.open_async_postgres`); memory: the
    in-memory classes. VARS's nodes are sync: under `ainvoke` they run in worker threads and
    reach the async classes through LangGraph's bridge onto this loop, so sync calls on these
    objects from the loop's own thread raise (LangGraph's check); use their `a*` methods there.
    """
    if config.storage == "memory":
        yield InMemoryStore(), InMemorySaver()
    elif config.storage == "sqlite":
        async with open_async_sqlite(config.data_path) as pair:
            yield pair
    elif is_postgres(config.storage):
        async with postgres_backend().open_async_postgres(config.storage, config) as pair:
            yield pair
    else:
        raise _unknown(config.storage)
