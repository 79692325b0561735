"""Lexical (BM25, the `bm25s` library) side of hybrid retrieval, over each card's note and the
user's own words it was learned from (`CardSource.query`), so a card the extractor garbled
still surfaces through what the user said.

One BM25 index per user, cached by the store version it reflects (`LexicalCache`, LRU). A new
version does not re-index the whole store each turn: cards added since the index was built
(the delta) are scored by a small BM25 of their own and merged by score, and the full index
is rebuilt only when the delta exceeds `REBUILD_SHARE` of it (or `REBUILD_MAX` cards).
Cards no longer in the user's entry (deleted, archived) are dropped at query time.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from cachetools import LRUCache

REBUILD_SHARE = 0.1
REBUILD_MAX = 256
MAX_SOURCES = 8  # utterances per card in its lexical document
MAX_USERS = 64  # users whose indexes are kept


_IMPORTED = False


def _bm25s() -> Any:
    """The bm25s module; its logger follows the application's levels (bm25s sets its own
    logger to DEBUG when imported, which would print a line per index build)."""
    global _IMPORTED
    import bm25s

    if not _IMPORTED:
        logging.getLogger("bm25s").setLevel(logging.NOTSET)
        _IMPORTED = True
    return bm25s


def _tokenize(texts: list[str]) -> list[list[str]]:
    return _bm25s().tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


def card_text(body: bytes | dict[str, Any]) -> str:
    """The lexical document of a card: its note, condition, action and the user's words."""
    value = orjson.loads(body) if isinstance(body, bytes | str) else body
    if not isinstance(value, dict):
        return ""
    parts = [str(value.get(k) or "") for k in ("note", "condition", "action")]
    for src in (value.get("sources") or [])[:MAX_SOURCES]:
        if isinstance(src, dict) and isinstance(src.get("query"), str):
            parts.append(src["query"])
    return " ".join(parts)


class _Bm25:
    """A BM25 index over some cards (ids in row order)."""

    def __init__(self, ids: list[str], texts: list[str]):
        self.ids = ids
        self.model = _bm25s().BM25()
        tokens = _tokenize(texts) if texts else []
        self.empty = not any(tokens)
        if not self.empty:
            self.model.index(tokens, show_progress=False)

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        if self.empty:
            return np.zeros(len(self.ids), np.float32)
        vocab = self.model.vocab_dict
        known = [t for t in query_tokens if t in vocab]
        if not known:
            return np.zeros(len(self.ids), np.float32)
        return np.asarray(self.model.get_scores(known), np.float32)


@dataclass
class _Entry:
    version: str
    main: _Bm25
    delta: _Bm25 | None
    delta_ids: frozenset[str]


class LexicalCache:
    """Per-user BM25 indexes keyed by store version; thread-safe; bounded (LRU)."""

    def __init__(self, max_users: int = MAX_USERS):
        self.max_users = max_users
        self._users: LRUCache[str, _Entry] = LRUCache(max_users)  # guarded by `_lock`
        self._lock = threading.Lock()
        self.rebuilds = 0

    def search(self, user_id: str, ui: Any, query: str, k: int) -> list[tuple[str, float]]:
        """Top-k (card id, BM25 score > 0) of the user's entry `ui` (a `UserIndex`) for query."""
        if not len(ui) or k <= 0:
            return []
        entry = self._entry(user_id, ui)
        qt = _tokenize([query])[0]
        if not qt:
            return []
        pairs: dict[str, float] = {}
        for part in (entry.main, entry.delta):
            if part is None:
                continue
            scores = part.scores(qt)
            hit = np.flatnonzero(scores > 0)
            if len(hit) > 4 * k:  # numpy top-k; rows gone from the entry are dropped below
                hit = hit[np.argpartition(-scores[hit], 4 * k)[: 4 * k]]
            for row in hit.tolist():
                cid = part.ids[row]
                if cid in ui.rows:
                    pairs[cid] = max(float(scores[row]), pairs.get(cid, 0.0))
        return sorted(pairs.items(), key=lambda t: -t[1])[:k]

    def invalidate(self, user_id: str) -> None:
        with self._lock:
            self._users.pop(user_id, None)

    def _entry(self, user_id: str, ui: Any) -> _Entry:
        with self._lock:
            cur = self._users.get(user_id)  # marks it used
        if cur is not None and cur.version == ui.version:
            return cur
        if cur is not None:
            known = set(cur.main.ids) | cur.delta_ids
            new = [cid for cid in ui.ids if cid not in known]
            limit = min(REBUILD_MAX, max(8, int(REBUILD_SHARE * len(cur.main.ids))))
            if len(cur.delta_ids) + len(new) <= limit:
                ids = sorted(c for c in cur.delta_ids | set(new) if c in ui.raw)
                delta = _Bm25(ids, [card_text(ui.raw[c]) for c in ids]) if ids else None
                entry = _Entry(ui.version, cur.main, delta, frozenset(ids))
                self._put(user_id, entry)
                return entry
        ids = list(ui.ids)
        entry = _Entry(ui.version, _Bm25(ids, [card_text(ui.raw[c]) for c in ids]), None,
                       frozenset())
        self.rebuilds += 1
        self._put(user_id, entry)
        return entry

    def _put(self, user_id: str, entry: _Entry) -> None:
        with self._lock:
            self._users[user_id] = entry


def rrf(rankings: list[list[str]], k: int = 60) -> dict[str, float]:
    """Reciprocal rank fusion: sum over rankings of 1 / (k + rank), rank from 1."""
    out: dict[str, float] = {}
    for ranking in rankings:
        for r, cid in enumerate(ranking, start=1):
            out[cid] = out.get(cid, 0.0) + 1.0 / (k + r)
    return out
