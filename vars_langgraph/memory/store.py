"""Per-user memory on any LangGraph `BaseStore`: cards, the user vector, pending feedback.

Namespaces, all labels strings: ("vars", <user>, "cards") one item per card;
("vars", <user>, "state") items "vector" and "meta" (a version token bumped on every card
change, so indexes know when they are stale); ("vars", <user>, "pending") one item per thread;
("vars", <user>, "threads") one item per conversation thread the user ran (so `forget` can
delete the checkpointed threads even when the user id came from the runtime context).
The store is the source of truth; nothing here caches.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from langgraph.store.base import BaseStore, PutOp

from vars_langgraph.types import PreferenceCard

ROOT = "vars"
PARTS = ("cards", "state", "pending", "threads")  # every namespace a user's data lives in
PAGE = 1000
MAX_USER_ID = 256


class InvalidUserId(ValueError):
    """Raised before any read or write when a user id is missing or unusable."""


def check_user_id(user_id: Any) -> str:
    """A non-empty string user id; namespace-safe (dots are escaped, see `_label`)."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidUserId(
            "a user id is required: pass context={'user_id': ...} or "
            "config={'configurable': {'user_id': ...}}"
        )
    if len(user_id) > MAX_USER_ID or any(ord(c) < 32 for c in user_id):
        raise InvalidUserId(f"user id must be <= {MAX_USER_ID} printable characters")
    return user_id


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def clean_pending(value: Any) -> dict[str, Any] | None:
    """A pending-feedback record with every field reward/update read of the right type, the
    malformed parts dropped: a corrupt record is consumed, it never fails every later turn."""
    if not isinstance(value, dict):
        return None
    emb, ids, cands = (value.get(k) for k in ("query_embedding", "selected_ids", "candidates"))
    return {
        **value,
        "query": value["query"] if isinstance(value.get("query"), str) else "",
        "answer": value["answer"] if isinstance(value.get("answer"), str) else "",
        "query_embedding": emb if isinstance(emb, list) and all(map(_finite, emb)) else [],
        "selected_ids": [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else [],
        "sim_notes_query": float(value["sim_notes_query"])
        if _finite(value.get("sim_notes_query")) else 0.0,
        "candidates": [
            {"id": c["id"], "pi": float(c["pi"]) if _finite(c.get("pi")) else 0.0,
             "chosen": c.get("chosen") is True}
            for c in cands if isinstance(c, dict) and isinstance(c.get("id"), str)
        ] if isinstance(cands, list) else [],
    }


def _label(user_id: str) -> str:
    # BaseStore namespace labels may not contain '.'; escape reversibly.
    return check_user_id(user_id).replace("%", "%25").replace(".", "%2E")


def user_label(user_id: str) -> str:
    """The namespace label of a user (also used for index file names)."""
    return _label(user_id)


class UserMemory:
    """Typed access to one store's VARS data. Stateless: safe to share between threads."""

    def __init__(self, store: BaseStore):
        self.store = store

    # namespaces ---------------------------------------------------------------------------
    @staticmethod
    def ns(user_id: str, part: str) -> tuple[str, ...]:
        return (ROOT, _label(user_id), part)

    # cards --------------------------------------------------------------------------------
    def iter_cards(self, user_id: str) -> Iterator[PreferenceCard]:
        ns = self.ns(user_id, "cards")
        offset = 0
        while True:
            items = self.store.search(ns, limit=PAGE, offset=offset)
            for it in items:
                if tuple(it.namespace) == ns:
                    try:
                        yield PreferenceCard.model_validate(it.value)
                    except ValueError:
                        continue  # unreadable item: skip it, never delete it
            if len(items) < PAGE:
                return
            offset += PAGE

    def list_cards(self, user_id: str) -> list[PreferenceCard]:
        return list(self.iter_cards(user_id))

    def get_card(self, user_id: str, card_id: str) -> PreferenceCard | None:
        """The card, or None when absent or unreadable (see `has_card`)."""
        it = self.store.get(self.ns(user_id, "cards"), card_id)
        try:
            return PreferenceCard.model_validate(it.value) if it else None
        except ValueError:
            return None

    def has_card(self, user_id: str, card_id: str) -> bool:
        """Whether an item exists under this card id, readable or not (so it can be deleted)."""
        return self.store.get(self.ns(user_id, "cards"), card_id) is not None

    def put_cards(self, user_id: str, cards: Iterable[PreferenceCard]) -> str:
        """Write cards and a new version token in one batch; returns the new version."""
        cards = list(cards)
        if any(c.user_id != user_id for c in cards):
            raise ValueError("card belongs to another user")
        version = uuid.uuid4().hex
        ops = [
            PutOp(self.ns(user_id, "cards"), c.id, c.model_dump(mode="json"), index=False)
            for c in cards
        ]
        ops.append(PutOp(self.ns(user_id, "state"), "meta", {"version": version}, index=False))
        self.store.batch(ops)
        return version

    def delete_cards(self, user_id: str, card_ids: Iterable[str]) -> str:
        version = uuid.uuid4().hex
        ops = [PutOp(self.ns(user_id, "cards"), cid, None) for cid in card_ids]
        ops.append(PutOp(self.ns(user_id, "state"), "meta", {"version": version}, index=False))
        self.store.batch(ops)
        return version

    def version(self, user_id: str) -> str:
        it = self.store.get(self.ns(user_id, "state"), "meta")
        return str(it.value.get("version", "")) if it else ""

    # user vector --------------------------------------------------------------------------
    def get_vector(self, user_id: str) -> dict[str, Any] | None:
        it = self.store.get(self.ns(user_id, "state"), "vector")
        return dict(it.value) if it else None

    def put_vector(self, user_id: str, value: dict[str, Any]) -> None:
        self.store.put(self.ns(user_id, "state"), "vector", value, index=False)

    def commit_update(self, user_id: str, thread_id: str, vector: dict[str, Any],
                      drop_pending: bool) -> None:
        """Write the new vector and consume the pending feedback in one batch."""
        ops = [PutOp(self.ns(user_id, "state"), "vector", vector, index=False)]
        if drop_pending:
            ops.append(PutOp(self.ns(user_id, "pending"), thread_id or "-", None))
        self.store.batch(ops)

    # pending feedback (per thread) --------------------------------------------------------
    def get_pending(self, user_id: str, thread_id: str) -> dict[str, Any] | None:
        it = self.store.get(self.ns(user_id, "pending"), thread_id or "-")
        return dict(it.value) if it else None

    def put_pending(self, user_id: str, thread_id: str, value: dict[str, Any]) -> None:
        self.store.put(self.ns(user_id, "pending"), thread_id or "-", value, index=False)

    def delete_pending(self, user_id: str, thread_id: str) -> None:
        self.store.delete(self.ns(user_id, "pending"), thread_id or "-")

    # threads the user ran (for `forget --threads`) -----------------------------------------
    def note_thread(self, user_id: str, thread_id: str) -> None:
        self.store.put(self.ns(user_id, "threads"), thread_id or "-", {"first_seen": time.time()},
                       index=False)

    def threads(self, user_id: str) -> list[str]:
        return [k for k, _ in self._items(user_id, "threads")]

    # whole user ---------------------------------------------------------------------------
    def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything stored for a user, as JSON-ready data."""
        out: dict[str, Any] = {"user_id": user_id, "format": "vars-langgraph/1"}
        for part in PARTS:
            out[part] = {k: v for k, v in self._items(user_id, part)}
        return out

    def import_user(self, data: dict[str, Any], user_id: str | None = None) -> int:
        """Restore an export (optionally under another user id). Returns the number of items."""
        uid = check_user_id(user_id or data.get("user_id"))
        ops: list[PutOp] = []
        for part in PARTS:
            for key, value in (data.get(part) or {}).items():
                if part == "cards":
                    value = PreferenceCard.model_validate({**value, "user_id": uid}).model_dump(
                        mode="json"
                    )
                ops.append(PutOp(self.ns(uid, part), str(key), value, index=False))
        ops.append(PutOp(self.ns(uid, "state"), "meta", {"version": uuid.uuid4().hex}, index=False))
        self.store.batch(ops)
        return len(ops) - 1

    def forget_user(self, user_id: str) -> int:
        """Delete every item stored for the user. Returns how many were deleted."""
        n = 0
        for part in PARTS:
            keys = [k for k, _ in self._items(user_id, part)]
            if keys:
                self.store.batch([PutOp(self.ns(user_id, part), k, None) for k in keys])
                n += len(keys)
        return n

    def users(self) -> list[str]:
        """User ids with anything stored (unescaped)."""
        out = set()
        for ns in self.store.list_namespaces(prefix=(ROOT,), max_depth=2, limit=100_000):
            if len(ns) >= 2:
                out.add(ns[1].replace("%2E", ".").replace("%25", "%"))
        return sorted(out)

    def _items(self, user_id: str, part: str) -> Iterator[tuple[str, dict[str, Any]]]:
        ns = self.ns(user_id, part)
        offset = 0
        while True:
            items = self.store.search(ns, limit=PAGE, offset=offset)
            for it in items:
                if tuple(it.namespace) == ns:
                    yield it.key, it.value
            if len(items) < PAGE:
                return
            offset += PAGE
