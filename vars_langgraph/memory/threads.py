"""Threads (LangGraph checkpointers) on the side doors: a failed run leaves nothing in the
thread, and with `fail_open` the conversation store's faults do not stop the answer. Public
`BaseCheckpointSaver` API only.

A LangGraph run writes its input first (a checkpoint whose metadata `source` is "input"),
then one checkpoint per step; when the run fails, the thread keeps them all, so the message
that failed would be sent again with the next turn, and stays on disk. `drop_failed_run`
rewrites the thread with the checkpoints from before that run's input checkpoint.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, CheckpointTuple

log = logging.getLogger(__name__)


def drop_failed_run(checkpointer: Any, thread_id: str) -> int:
    """Remove the checkpoints of the thread's last run (from its "input" checkpoint on), the
    earlier ones kept (re-written in order, with their pending writes). Returns how many
    checkpoints were removed (0: none found, or the thread has subgraph namespaces, which
    are left alone)."""
    cfg = {"configurable": {"thread_id": thread_id}}
    tuples = list(checkpointer.list(cfg))  # newest first
    if any(t.config["configurable"].get("checkpoint_ns") for t in tuples):
        return 0
    i = next((i for i, t in enumerate(tuples) if (t.metadata or {}).get("source") == "input"),
             None)
    if i is None:
        return 0
    keep = tuples[i + 1:]
    checkpointer.delete_thread(thread_id)
    for t in reversed(keep):  # oldest first: each one's parent is already back
        parent = t.parent_config or {"configurable": {"thread_id": thread_id}}
        conf = {"configurable": {**parent["configurable"], "checkpoint_ns": ""}}
        saved = checkpointer.put(conf, t.checkpoint, t.metadata,
                                 dict(t.checkpoint.get("channel_versions", {})))
        writes: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for task_id, channel, value in t.pending_writes or []:
            writes[task_id].append((channel, value))
        for task_id, items in writes.items():
            checkpointer.put_writes(saved, items, task_id)
    from vars_langgraph.storage import purge_deleted

    purge_deleted(checkpointer)  # SQLite: the removed text does not linger in the WAL
    log.info("thread %r: the failed run's %d checkpoints removed", thread_id, i + 1)
    return i + 1


class FailOpenSaver(BaseCheckpointSaver):
    """A checkpointer for `fail_open: true`: LangGraph's checkpointer `inner`, except that a
    failing read answers "no history" and a failing write is skipped, each with a warning
    (full disk, unwritable or lost database): the agent answers without the conversation's
    history instead of failing. Deleting threads (`forget --threads`) still raises. The
    error is kept in `last_error` (None after a call that worked), so a caller can say so."""

    def __init__(self, inner: BaseCheckpointSaver):
        super().__init__(serde=inner.serde)
        self.inner = inner
        self.last_error: Exception | None = None

    def __getattr__(self, name: str) -> Any:  # conn, lock, pool, setup ... of the inner saver
        return getattr(self.inner, name)

    @property
    def config_specs(self) -> list:
        return self.inner.config_specs

    def _fault(self, what: str, e: Exception) -> None:
        self.last_error = e
        log.warning("VARS fail_open: the conversation store failed to %s (%r); answering "
                    "without the conversation's history", what, e)

    # reads: no history on failure ---------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        try:
            out = self.inner.get_tuple(config)
        except Exception as e:  # noqa: BLE001 - the switch exists to swallow storage faults
            self._fault("read", e)
            return None
        self.last_error = None
        return out

    def list(self, config: RunnableConfig | None, **kwargs: Any) -> Iterator[CheckpointTuple]:
        try:
            yield from self.inner.list(config, **kwargs)
        except Exception as e:  # noqa: BLE001
            self._fault("list", e)

    def get_delta_channel_history(self, *, config: RunnableConfig, channels: Any) -> Any:
        try:
            return self.inner.get_delta_channel_history(config=config, channels=channels)
        except Exception as e:  # noqa: BLE001
            self._fault("read", e)
            return {c: {"writes": []} for c in channels}

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        try:
            out = await self.inner.aget_tuple(config)
        except Exception as e:  # noqa: BLE001
            self._fault("read", e)
            return None
        self.last_error = None
        return out

    async def alist(self, config: RunnableConfig | None,
                    **kwargs: Any) -> AsyncIterator[CheckpointTuple]:
        try:
            async for t in self.inner.alist(config, **kwargs):
                yield t
        except Exception as e:  # noqa: BLE001
            self._fault("list", e)

    async def aget_delta_channel_history(self, *, config: RunnableConfig, channels: Any) -> Any:
        try:
            return await self.inner.aget_delta_channel_history(config=config, channels=channels)
        except Exception as e:  # noqa: BLE001
            self._fault("read", e)
            return {c: {"writes": []} for c in channels}

    # writes: skipped on failure -----------------------------------------------------------------
    @staticmethod
    def _saved(config: RunnableConfig, checkpoint: Checkpoint) -> RunnableConfig:
        conf = config.get("configurable") or {}
        return {"configurable": {"thread_id": conf.get("thread_id"),
                                 "checkpoint_ns": conf.get("checkpoint_ns", ""),
                                 "checkpoint_id": checkpoint["id"]}}

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: Any,
            new_versions: Any) -> RunnableConfig:
        try:
            return self.inner.put(config, checkpoint, metadata, new_versions)
        except Exception as e:  # noqa: BLE001
            self._fault("save", e)
            return self._saved(config, checkpoint)

    def put_writes(self, config: RunnableConfig, writes: Any, task_id: str,
                   task_path: str = "") -> None:
        try:
            self.inner.put_writes(config, writes, task_id, task_path)
        except Exception as e:  # noqa: BLE001
            self._fault("save", e)

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: Any,
                   new_versions: Any) -> RunnableConfig:
        try:
            return await self.inner.aput(config, checkpoint, metadata, new_versions)
        except Exception as e:  # noqa: BLE001
            self._fault("save", e)
            return self._saved(config, checkpoint)

    async def aput_writes(self, config: RunnableConfig, writes: Any, task_id: str,
                          task_path: str = "") -> None:
        try:
            await self.inner.aput_writes(config, writes, task_id, task_path)
        except Exception as e:  # noqa: BLE001
            self._fault("save", e)

    # the rest: the inner saver's own ----------------------------------------------------------
    def delete_thread(self, thread_id: str) -> None:
        self.inner.delete_thread(thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        await self.inner.adelete_thread(thread_id)

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.inner.get_next_version(current, channel)
