"""A failed run leaves nothing in the thread: its checkpoints are removed (public
`BaseCheckpointSaver` API only: `list`, `delete_thread`, `put`, `put_writes`).

A LangGraph run writes its input first (a checkpoint whose metadata `source` is "input"),
then one checkpoint per step; when the run fails, the thread keeps them all, so the message
that failed would be sent again with the next turn, and stays on disk. `drop_failed_run`
rewrites the thread with the checkpoints from before that run's input checkpoint.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

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
    log.info("thread %r: the failed run's %d checkpoints removed", thread_id, i + 1)
    return i + 1
