"""Per-user memory on any LangGraph `BaseStore`: cards, the user vector, pending feedback.

Namespaces, all labels strings: ("vars", <user>, "cards") one item per card;
("vars", <user>, "state") items "vector" and "meta" (a version token bumped on every card
change, so indexes know when they are stale); ("vars", <user>, "pending") one item per thread;
("vars", <user>, "threads") one item per conversation thread the user ran (so `forget` can
delete the checkpointed threads even when the user id came from the runtime context).
The store is the source of truth; nothing here caches.

Card items (format 2): the card's fields without `embedding`, plus `emb16`: the embedding as
little-endian float16 bytes in base64 (768 bytes -> 1,024 characters for 384-d; a JSON float
list was ~8 KB). The float16-rounded vector is the card's vector everywhere (store, index,
export), so every process computes the same scores.

`cemb16` (optional, before `emb16`): the embedding of the card's condition, the same encoding,
computed when the card is written (with its note, in one embedding call) so the rerank node's
condition gate reads it instead of running the model on the answer's path. Cards written
before it, or with an empty condition, have none (the gate embeds a missing one once and the
next card write stores it: `VARSEngine.add_preferences`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import orjson
from langgraph.store.base import BaseStore, PutOp

from vars_langgraph.types import PreferenceCard

ROOT = "vars"
PARTS = ("cards", "state", "pending", "threads")  # every namespace a user's data lives in
# forget generations (`UserMemory.generation`): a label `_label` never makes (a lone '%')
TOMB_NS = (ROOT, "%forget")
PAGE = 1000
MAX_USER_ID = 256
VEC_KEY = "emb16"  # format 2: base64 of the little-endian float16 embedding
COND_KEY = "cemb16"  # the condition's embedding, same encoding (optional)
NOT_BODY = (VEC_KEY, COND_KEY, "embedding")  # item members that are not card fields
VEC_DTYPE = np.dtype("<f2")
EXPORT_FORMAT = "vars-langgraph/2"
log = logging.getLogger(__name__)


def canonical_vector(vec: Any) -> np.ndarray:
    """The vector as stored: float16-rounded, as float32 (1-D)."""
    return np.asarray(vec, np.float32).ravel().astype(VEC_DTYPE).astype(np.float32)


def encode_vector(vec: Any) -> str:
    return base64.b64encode(np.asarray(vec, np.float32).ravel().astype(VEC_DTYPE).tobytes()).decode()


def decode_vector(text: Any) -> np.ndarray | None:
    """float32 vector from `encode_vector` text; None when it is not valid base64 float16."""
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) % 2:
        return None
    return np.frombuffer(raw, VEC_DTYPE).astype(np.float32)


def value_vector(value: Mapping[str, Any]) -> np.ndarray | None:
    """A card item's embedding (`emb16`) as float32; None when absent or malformed."""
    return decode_vector(value[VEC_KEY]) if VEC_KEY in value else None


def value_cond_vector(value: Mapping[str, Any]) -> np.ndarray | None:
    """A card item's condition embedding (`cemb16`) as float32; None when absent or malformed."""
    return decode_vector(value.get(COND_KEY)) if COND_KEY in value else None


def card_value(card: PreferenceCard, vector: Any = None, cond_vector: Any = None) -> dict[str, Any]:
    """A card as a format-2 store item (`vector`, else `card.embedding`, as `emb16`; the
    condition's embedding `cond_vector`, when given, as `cemb16`; `emb16` last)."""
    value = card.model_dump(mode="json", exclude={"embedding"})
    if cond_vector is not None and len(cond_vector):
        value[COND_KEY] = encode_vector(cond_vector)
    vec = card.embedding if vector is None else vector
    if vec is not None and len(vec):
        value[VEC_KEY] = encode_vector(vec)
    return value


def light_card_check(value: Any) -> bool:
    """A cheap check that an item looks like a card (an id and a note); the full validation
    happens when the card is read (an invalid one then reads as absent)."""
    return (type(value) is dict and type(value.get("id")) is str
            and type(value.get("note")) is str)


def card_from_value(value: Any, with_embedding: bool = True) -> PreferenceCard:
    """A `PreferenceCard` from a store item (ValueError when unreadable)."""
    if not isinstance(value, dict):
        raise ValueError("card item is not an object")
    body = {k: v for k, v in value.items() if k not in NOT_BODY}
    if with_embedding:
        vec = value_vector(value)
        body["embedding"] = vec.tolist() if vec is not None else []
    return PreferenceCard.model_validate(body)


def split_vector(text: str | bytes, key: str = VEC_KEY) -> tuple[bytes, str | None]:
    """A format-2 item's JSON text as (the text without its `key` member, the base64), by
    byte search instead of parsing the 1 KB string; (text, None) when there is no member.
    (A `"emb16"` inside a JSON string value is escaped, `\\"emb16\\"`, so never matches.)"""
    if isinstance(text, str):
        text = text.encode()
    if text.endswith(b'"}'):  # fast path: the member is last (as `card_value` writes it)
        for tail in (f',"{key}":"'.encode(), f', "{key}": "'.encode()):  # orjson, json.dumps
            i = text.rfind(tail, max(0, len(text) - 8192))
            if i > 0 and b'"' not in text[i + len(tail):-2]:
                return text[:i] + b"}", text[i + len(tail):-2].decode("ascii", "replace")
    name = f'"{key}"'.encode()
    i = text.find(name)
    if i < 0:
        return text, None
    try:
        j = text.index(b'"', text.index(b":", i + len(name)) + 1)
        k = text.index(b'"', j + 1)
    except ValueError:
        return text, None
    left, right = text[:i].rstrip(), text[k + 1:].lstrip()
    if left.endswith(b","):
        left = left[:-1]
    elif right.startswith(b","):
        right = right[1:]
    return left + right, text[j + 1:k].decode("ascii", "replace")


def card_body_bytes(value: dict[str, Any]) -> bytes:
    """The card's fields without its embedding, as compact JSON (how the index keeps cards)."""
    return orjson.dumps({k: v for k, v in value.items() if k not in NOT_BODY})


class BadImport(ValueError):
    """An import file that cannot be restored as given (one line: what and where)."""


def _short(key: Any) -> str:
    return repr(str(key)[:40])


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:200]


def _same_owner(value: Any, owner: str, what: str) -> None:
    """`BadImport` when `value` names a user other than the file's own."""
    uid = value.get("user_id") if isinstance(value, dict) else None
    if uid is not None and uid != owner:
        raise BadImport(f"import: {what} belongs to user {str(uid)[:60]!r}, not to the file's "
                        f"user {owner!r}: refusing to import another user's data")


class InvalidUserId(ValueError):
    """Raised before any read or write when a user id is missing or unusable."""


class BadInput(ValueError):
    """The caller's input is unusable (e.g. an empty last user message): raised even with
    `fail_open`, unlike faults of the memory side (a `ValueError` from damaged data is one)."""


def check_user_id(user_id: Any) -> str:
    """A non-empty string user id; namespace-safe (dots are escaped, see `_label`)."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidUserId(
            "a user id is required: pass context={'user_id': ...} or "
            "config={'configurable': {'user_id': ...}}"
        )
    if (len(user_id) > MAX_USER_ID or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF
                                          for c in user_id)):
        raise InvalidUserId(f"user id must be <= {MAX_USER_ID} printable characters "
                            "(valid Unicode)")
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
             "chosen": c.get("chosen") is True,
             "rerank": float(c["rerank"]) if _finite(c.get("rerank")) else None,
             "rank": c["rank"] if isinstance(c.get("rank"), int) and not isinstance(c["rank"], bool)
             else None}
            for c in cands if isinstance(c, dict) and isinstance(c.get("id"), str)
        ] if isinstance(cands, list) else [],
    }


def _label(user_id: str) -> str:
    # BaseStore namespace labels may not contain '.'; escape reversibly.
    return check_user_id(user_id).replace("%", "%25").replace(".", "%2E")


def unlabel(label: str) -> str:
    """The user id a namespace label was made from (`_label` reversed)."""
    return label.replace("%2E", ".").replace("%25", "%")


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
        """Every readable card, embedding included (unreadable items are skipped, never deleted)."""
        for key, value in self.card_items(user_id):
            try:
                yield card_from_value(value)
            except ValueError as e:
                log.warning("user %r: card item %r unreadable, skipped (kept in the store): %s",
                            user_id, key, _one_line(e))

    def card_rows(self, user_id: str) -> list[tuple[str, Any]]:
        """All of the user's card items as (key, JSON text or dict) in one bulk read: a store
        with `NamespaceRows` (VARS's SQLite and Postgres stores: one SELECT, unparsed text);
        any other `BaseStore`, one `search` call (dicts)."""
        ns = self.ns(user_id, "cards")
        rows = _bulk_rows(self.store, ns)
        if rows is None:
            items = self.store.search(ns, limit=10**9)
            return [(it.key, it.value) for it in items if tuple(it.namespace) == ns]
        return rows

    def card_items(self, user_id: str) -> list[tuple[str, Any]]:
        """All of the user's card items as (key, value dict) in one bulk read."""
        out = []
        for key, value in self.card_rows(user_id):
            if isinstance(value, str | bytes):
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError:
                    log.warning("user %r: card item %r is not valid JSON, skipped (kept in the "
                                "store)", user_id, key)
                    continue
            out.append((key, value))
        return out

    def list_cards(self, user_id: str) -> list[PreferenceCard]:
        return list(self.iter_cards(user_id))

    def get_card(self, user_id: str, card_id: str) -> PreferenceCard | None:
        """The card, or None when absent or unreadable (see `has_card`)."""
        it = self.store.get(self.ns(user_id, "cards"), card_id)
        try:
            return card_from_value(it.value) if it else None
        except ValueError:
            return None

    def has_card(self, user_id: str, card_id: str) -> bool:
        """Whether an item exists under this card id, readable or not (so it can be deleted)."""
        return self.store.get(self.ns(user_id, "cards"), card_id) is not None

    def put_cards(self, user_id: str, cards: Iterable[PreferenceCard],
                  vectors: Mapping[str, Any] | None = None,
                  cond_vectors: Mapping[str, Any] | None = None) -> str:
        """Write cards (format 2; each card's vector from `vectors[card.id]`, else its own
        `embedding`; its condition's from `cond_vectors[card.id]`, else none) and a new
        version token in one batch; returns the new version."""
        cards = list(cards)
        if any(c.user_id != user_id for c in cards):
            raise ValueError("card belongs to another user")
        version = uuid.uuid4().hex
        vectors, cond_vectors = vectors or {}, cond_vectors or {}
        ops = [
            PutOp(self.ns(user_id, "cards"), c.id,
                  card_value(c, vectors.get(c.id), cond_vectors.get(c.id)), index=False)
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
        """The user's card version token ("" before any card write): one item read."""
        value = read_value(self.store, self.ns(user_id, "state"), "meta")
        return str(value.get("version", "")) if value else ""

    # user vector --------------------------------------------------------------------------
    def get_vector(self, user_id: str) -> dict[str, Any] | None:
        return read_value(self.store, self.ns(user_id, "state"), "vector")

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
        return read_value(self.store, self.ns(user_id, "pending"), thread_id or "-")

    def put_pending(self, user_id: str, thread_id: str, value: dict[str, Any]) -> None:
        self.store.put(self.ns(user_id, "pending"), thread_id or "-", value, index=False)

    def delete_pending(self, user_id: str, thread_id: str) -> None:
        self.store.delete(self.ns(user_id, "pending"), thread_id or "-")

    # threads the user ran (for `forget --threads`) -----------------------------------------
    def note_thread(self, user_id: str, thread_id: str) -> None:
        self.store.put(self.ns(user_id, "threads"), thread_id or "-", {"first_seen": time.time()},
                       index=False)

    def drop_thread(self, user_id: str, thread_id: str) -> None:
        """Remove one thread's registry entry and pending feedback."""
        self.store.batch([PutOp(self.ns(user_id, "threads"), thread_id or "-", None),
                          PutOp(self.ns(user_id, "pending"), thread_id or "-", None)])

    # forget generation ----------------------------------------------------------------------
    @staticmethod
    def _tomb_key(user_id: str) -> str:
        return hashlib.sha256(check_user_id(user_id).encode()).hexdigest()

    def generation(self, user_id: str) -> int:
        """How many times the user was forgotten (0: never): one item read. A session records
        it when it starts; every later write of that session checks it is unchanged, so
        nothing a session started before a `forget` writes survives the forget."""
        value = read_value(self.store, TOMB_NS, self._tomb_key(user_id))
        gen = value.get("generation") if value else 0
        return gen if isinstance(gen, int) and not isinstance(gen, bool) else 0

    def bump_generation(self, user_id: str) -> int:
        """Start a new generation (first step of a forget); returns it. The tombstone holds a
        sha256 of the user id and a counter, nothing else, and is never deleted."""
        gen = self.generation(user_id) + 1
        self.store.put(TOMB_NS, self._tomb_key(user_id), {"generation": gen}, index=False)
        return gen

    def threads(self, user_id: str) -> list[str]:
        return [k for k, _ in self._items(user_id, "threads")]

    # whole user ---------------------------------------------------------------------------
    def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything stored for a user, as JSON-ready data (cards as stored: format 2)."""
        out: dict[str, Any] = {"user_id": user_id, "format": EXPORT_FORMAT}
        for part in PARTS:
            out[part] = {k: v for k, v in self._items(user_id, part)}
        return out

    def import_user(self, data: Any, user_id: str | None = None,
                    embed: Callable[[list[str]], Any] | None = None,
                    dim: int | Callable[[], int] | None = None) -> int:
        """Restore an export (see `import_checked`); returns the number of items written."""
        return self.import_checked(data, user_id, embed, dim)["imported"]

    def import_checked(self, data: Any, user_id: str | None = None,
                       embed: Callable[[list[str]], Any] | None = None,
                       dim: int | Callable[[], int] | None = None) -> dict[str, Any]:
        """Restore an export (`EXPORT_FORMAT`), optionally under another user id (`user_id`),
        writing only into that user's namespaces.

        Checked before anything is written (`BadImport`, one line, on the first problem):
        the file is an object of known format; every `user_id` inside it (cards, pending
        records) is the file's own user; every card is readable. Then, re-keyed to the
        target user: cards are stored under their `id` (not the file's key), a confidence out
        of [0, 1] is clamped and a non-finite one skips the card (both counted); a card with
        no usable vector (missing, malformed or not `dim` long; `dim` may be a callable, called
        only once the file passed every check) is re-embedded from its note with `embed`, and
        a condition with no usable `cemb16` from its text (one `embed` call for both).
        Never imported: learning jobs (executable work; the next
        turns derive their own from the user's data), the thread registry (it names
        checkpointed threads, which `forget --threads` deletes: only threads this store saw
        the user run are recorded) and the version token (a new one is written).
        Returns counts: imported, clamped, skipped_cards, reembedded, skipped_jobs,
        skipped_threads, skipped_state, user_id."""
        if not isinstance(data, dict):
            raise BadImport("import: the file must hold a JSON object (a `vars-langgraph export`)")
        fmt = data.get("format", EXPORT_FORMAT)
        if fmt != EXPORT_FORMAT:
            raise BadImport(f"import: unknown format {str(fmt)[:40]!r} (expected "
                            f"{EXPORT_FORMAT!r})")
        source = data.get("user_id")
        if source is not None:
            try:
                source = check_user_id(source)
            except InvalidUserId as e:
                raise InvalidUserId(f"import: the file's user_id is unusable: {e}") from None
        try:
            uid = check_user_id(user_id or source)
        except InvalidUserId as e:
            raise InvalidUserId(f"import: no usable user id (pass --user or import a file "
                                f"with a user_id): {e}") from None
        owner = source or uid  # whom the file's records must belong to
        parts = {}
        for part in PARTS:
            got = data.get(part)
            if got is not None and not isinstance(got, dict):
                raise BadImport(f"import: {part!r} must be an object (key -> item)")
            parts[part] = got or {}
        stats: dict[str, Any] = {"user_id": uid, "imported": 0, "clamped": 0,
                                 "skipped_cards": 0, "reembedded": 0, "skipped_jobs": 0,
                                 "skipped_threads": len(parts["threads"]), "skipped_state": 0}
        ops: list[PutOp] = []
        cards: list[tuple[PreferenceCard, np.ndarray | None]] = []
        conds: dict[str, np.ndarray | None] = {}  # card id -> its condition's stored vector
        for key, value in parts["cards"].items():
            _same_owner(value, owner, f"card {_short(key)}")
            vec = value_vector(value) if isinstance(value, dict) else None
            cvec = value_cond_vector(value) if isinstance(value, dict) else None
            try:
                card = card_from_value({**value, "user_id": uid} if isinstance(value, dict)
                                       else value, with_embedding=False)
            except ValueError as e:
                raise BadImport(f"import: card {_short(key)} is unreadable: "
                                f"{_one_line(e)}") from None
            if not card.id.strip():
                raise BadImport(f"import: card {_short(key)} has an empty id")
            if not math.isfinite(card.confidence):
                stats["skipped_cards"] += 1
                continue
            if not 0.0 <= card.confidence <= 1.0:
                card.confidence = min(max(card.confidence, 0.0), 1.0)
                stats["clamped"] += 1
            if vec is not None and not np.isfinite(vec).all():
                vec = None
            cards.append((card, vec))
            conds[card.id] = cvec if cvec is not None and np.isfinite(cvec).all() else None
        for key, value in parts["pending"].items():
            if not isinstance(value, dict):
                raise BadImport(f"import: pending item {_short(key)} is not an object")
            _same_owner(value, owner, f"pending item {_short(key)}")
            if str(key).startswith("job:") or "kind" in value or "window" in value:
                stats["skipped_jobs"] += 1  # executable work is never imported
                continue
            ops.append(PutOp(self.ns(uid, "pending"), str(key), value, index=False))
        for key, value in parts["state"].items():
            if key != "vector":  # "meta" (the version token) is written new below
                stats["skipped_state"] += 1
                continue
            if not isinstance(value, dict):
                raise BadImport("import: state 'vector' is not an object")
            _same_owner(value, owner, "the user vector")
            ops.append(PutOp(self.ns(uid, "state"), "vector", value, index=False))
        try:  # orjson: the text every backend stores (NaN, lone surrogates are refused here)
            for value in [*(op.value for op in ops),
                          *(c.model_dump(mode="json") for c, _ in cards)]:
                orjson.dumps(value)
        except (TypeError, ValueError) as e:
            raise BadImport(f"import: an item cannot be stored: {_one_line(e)}") from None
        # all checked: now (and only now) the embedding model may be needed
        want = dim() if callable(dim) else dim
        if want:
            cards = [(c, v if v is not None and v.shape == (want,) else None) for c, v in cards]
            conds = {cid: v if v is not None and v.shape == (want,) else None
                     for cid, v in conds.items()}
        missing = [i for i, (_, v) in enumerate(cards) if v is None]
        no_cond = [c.id for c, _ in cards if conds.get(c.id) is None and c.condition.strip()]
        if (missing or no_cond) and embed is not None:
            by_id = {c.id: c for c, _ in cards}
            embs = np.asarray(embed([cards[i][0].note for i in missing]
                                    + [by_id[cid].condition for cid in no_cond]), np.float32)
            for i, emb in zip(missing, embs[:len(missing)], strict=True):
                cards[i] = (cards[i][0], emb)
            conds.update(zip(no_cond, embs[len(missing):], strict=True))
            stats["reembedded"] = len(missing)
        ops += [PutOp(self.ns(uid, "cards"), c.id,
                      card_value(c, v if v is not None else [], conds.get(c.id)), index=False)
                for c, v in cards]
        ops.append(PutOp(self.ns(uid, "state"), "meta", {"version": uuid.uuid4().hex}, index=False))
        self.store.batch(ops)
        stats["imported"] = len(ops) - 1
        return stats

    def forget_user(self, user_id: str) -> int:
        """Delete every item stored for the user (after starting a new generation, so the
        writes of sessions that started before are refused). Returns how many were deleted."""
        self.bump_generation(user_id)
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
            if len(ns) >= 2 and ns != TOMB_NS:
                out.add(unlabel(ns[1]))
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


class _Unsupported:
    """`NamespaceRows.item_value`'s answer for a store without one-item reads."""

    def __repr__(self) -> str:
        return "UNSUPPORTED"


UNSUPPORTED: Any = _Unsupported()


class NamespaceRows:
    """The store features the memory uses when a store has them (VARS's SQLite and Postgres
    stores: `vars_langgraph.storage.features.StoreFeatures`, which extends this class); VARS's
    items carry no TTL, so these reads need not refresh one:

    - `namespace_rows(namespace)`: one namespace's (key, value) rows in one read (value: JSON
      text or a dict; no paging, no `Item` objects); None: not supported, the memory reads
      with one `search`.
    - `item_value(namespace, key)`: one item's value (JSON text or a dict), None when absent,
      in one read (one SELECT; no `GetOp` batch, no `Item`); `UNSUPPORTED`: the memory calls
      `store.get`. The per-turn reads (the version token, the user vector, the pending
      feedback) go through it."""

    def namespace_rows(self, namespace: tuple[str, ...]) -> list[tuple[str, Any]] | None:
        return None

    def item_value(self, namespace: tuple[str, ...], key: str) -> Any:
        return UNSUPPORTED


def _bulk_rows(store: BaseStore, namespace: tuple[str, ...]) -> list[tuple[str, Any]] | None:
    """The namespace's rows from a store with `NamespaceRows`, else None."""
    return store.namespace_rows(namespace) if isinstance(store, NamespaceRows) else None


def read_value(store: BaseStore, namespace: tuple[str, ...], key: str) -> dict[str, Any] | None:
    """One item's value as a dict (None when absent or not a JSON object): the store's
    `item_value` when it has one, else `store.get`."""
    value = store.item_value(namespace, key) if isinstance(store, NamespaceRows) else UNSUPPORTED
    if value is UNSUPPORTED:
        it = store.get(namespace, key)
        return dict(it.value) if it is not None else None
    if isinstance(value, str | bytes):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None
