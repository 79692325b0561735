"""The embedded SQLite backend: LangGraph's `SqliteStore` and `SqliteSaver` on WAL connections,
with their async API served by the sync one in a worker thread."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.base import Op, Result
from langgraph.store.sqlite import SqliteStore

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


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in free pages
    return conn
