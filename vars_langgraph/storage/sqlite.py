"""The embedded SQLite backend: LangGraph's SQLite store and checkpointer on WAL connections.

Two shapes, both LangGraph's own classes with VARS's connection settings:

- sync (`open_store` / `open_checkpointer`, what `build_graph(config)` uses by default):
  `VARSSqliteStore` (`SqliteStore`) and `VARSSqliteSaver` (`SqliteSaver`). One graph built
  this way serves both `invoke`/`stream` and `ainvoke`/`astream`; see `SyncSaverAsyncAPI` for
  why the checkpointer needs its async API filled in and the store does not.
- async (`open_async_storage`): LangGraph's `AsyncSqliteStore` and `AsyncSqliteSaver`
  (aiosqlite), opened inside the app's event loop.

Both use the same files (`vars.sqlite`, `threads.sqlite`) and tables, so a data dir written by
one opens in the other.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from filelock import FileLock
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.base import Op, Result
from langgraph.store.sqlite import SqliteStore

from vars_langgraph.memory.store import UNSUPPORTED
from vars_langgraph.storage.bridge import SyncSaverAsyncAPI
from vars_langgraph.storage.features import SqliteTables, StoreFeatures, tables_for_sqlite

STORE_FILE = "vars.sqlite"
THREADS_FILE = "threads.sqlite"

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA secure_delete=ON",  # deleted rows are zeroed, not left in free pages
)


def setup_lock(path: str | Path) -> AbstractContextManager[Any]:
    """A lock across processes for a database file's first-time setup (`<file>.lock` beside
    it). Switching a new file to WAL and LangGraph's migrations are not safe when two
    processes open a new data dir at once: SQLite answers "database is locked" without waiting,
    or both processes add the same column."""
    if str(path) in ("", ":memory:"):
        return nullcontext()
    return FileLock(f"{path}.lock", timeout=60)


def _conn_path(conn: sqlite3.Connection) -> str:
    return conn.execute("PRAGMA database_list").fetchone()[2]


def connect(path: str | Path) -> sqlite3.Connection:
    """A sqlite3 connection with VARS's settings: WAL, autocommit (LangGraph's classes open
    their own transactions), usable from LangGraph's worker threads."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    with setup_lock(path):
        for pragma in PRAGMAS:
            conn.execute(pragma)
    return conn


# the sync classes ---------------------------------------------------------------------------
class VARSSqliteStore(SqliteStore, StoreFeatures):
    """LangGraph's `SqliteStore` on a VARS connection (`connect`: WAL, secure delete).

    `abatch` (which every async method of `BaseStore` calls) runs `batch` in a worker thread,
    as LangGraph's own `PostgresStore.abatch` does, so async nodes of the user's can use the
    store too. Store features (`StoreFeatures`): the bulk read of a namespace is one SELECT on
    this store's `conn` under its `lock`; card index and card write lock are the defaults
    (the FAISS cache, the engine's file lock in the data dir)."""

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string: str, **kwargs: Any) -> Iterator[VARSSqliteStore]:
        """LangGraph's `SqliteStore.from_conn_string`, on a `connect()` connection. Call
        `setup()` before first use, as with LangGraph's class."""
        conn = connect(conn_string)
        try:
            yield cls(conn, **kwargs)
        finally:
            conn.close()

    tables: SqliteTables | None = None

    def setup(self) -> None:
        """LangGraph's migrations, then the direct reader of its `store` table when the
        schema is the expected one (`storage.features`; else the public API). One process
        at a time (`setup_lock`)."""
        if not self.is_setup:
            with setup_lock(_conn_path(self.conn)):
                super().setup()
        if self.tables is None:
            self.tables = tables_for_sqlite(self.conn, self.lock)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    def _reader(self) -> SqliteTables | None:
        if not self.is_setup:
            self.setup()
        return self.tables

    def namespace_rows(self, namespace: tuple[str, ...]) -> list[tuple[str, Any]] | None:
        tables = self._reader()
        return tables.namespace_rows(namespace) if tables is not None else None

    def item_value(self, namespace: tuple[str, ...], key: str) -> Any:
        tables = self._reader()
        return tables.item_value(namespace, key) if tables is not None else UNSUPPORTED


class VARSSqliteSaver(SyncSaverAsyncAPI, SqliteSaver):
    """LangGraph's `SqliteSaver` on a VARS connection, which also serves `ainvoke`/`astream`
    (`SyncSaverAsyncAPI`)."""

    def setup(self) -> None:
        """LangGraph's tables, one process at a time (`setup_lock`)."""
        if not self.is_setup:
            with setup_lock(_conn_path(self.conn)):
                super().setup()

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string: str) -> Iterator[VARSSqliteSaver]:
        """LangGraph's `SqliteSaver.from_conn_string`, on a `connect()` connection."""
        conn = connect(conn_string)
        try:
            yield cls(conn)
        finally:
            conn.close()


def open_sqlite_store(path: str | Path) -> VARSSqliteStore:
    store = VARSSqliteStore(connect(path))
    store.setup()
    return store


def open_sqlite_store_read_only(path: str | Path) -> VARSSqliteStore:
    """The store of a data dir that cannot be written (read-only mount, no permission, full
    disk), opened read-only: set up by whoever wrote it, nothing may be written now."""
    error: sqlite3.OperationalError | None = None
    for query in ("mode=ro", "mode=ro&immutable=1"):  # immutable: no -shm can be made
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?{query}", uri=True,
                               check_same_thread=False, isolation_level=None)
        store = VARSSqliteStore(conn)
        store.is_setup = True
        try:
            store.list_namespaces(limit=1)  # the public API reads: the file is usable
            return store
        except sqlite3.OperationalError as e:
            conn.close()
            error = e
    assert error is not None
    raise error


def open_sqlite_checkpointer(path: str | Path) -> VARSSqliteSaver:
    saver = VARSSqliteSaver(connect(path))
    saver.setup()
    return saver


# the async classes --------------------------------------------------------------------------
@asynccontextmanager
async def open_async_sqlite(data_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """LangGraph's `AsyncSqliteStore` and `AsyncSqliteSaver` on the data dir's two files,
    opened with their `from_conn_string`, given VARS's pragmas and set up."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    data_path.mkdir(parents=True, exist_ok=True)
    async with (
        AsyncSqliteStore.from_conn_string(str(data_path / STORE_FILE)) as store,
        AsyncSqliteSaver.from_conn_string(str(data_path / THREADS_FILE)) as saver,
    ):
        for conn, file in ((store.conn, STORE_FILE), (saver.conn, THREADS_FILE)):
            with setup_lock(data_path / file):  # a few ms, once per process
                for pragma in PRAGMAS:
                    await conn.execute(pragma)
        with setup_lock(data_path / STORE_FILE):
            await store.setup()
        with setup_lock(data_path / THREADS_FILE):
            await saver.setup()
        yield store, saver
