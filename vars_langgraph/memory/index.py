"""Per-user card index: a bounded, version-checked cache of the store's cards and vectors.

A user's entry (`UserIndex`) holds the cards as compact JSON bytes (parsed on access), the
fields a search serves as per-row columns (notes, confidences, global flags: a search builds
its candidates from them, no card is parsed), a FAISS inner-product index over their
embeddings (exact, float16 storage, `IndexScalarQuantizer(QT_fp16)`, up to `flat_max` cards;
IVF above: nlist = 4 sqrt(N), nprobe 16), the global card ids and the store version it
reflects. The cards' vectors are float16-rounded (`memory.store.canonical_vector`), so the
float16 index holds them exactly, in half the bytes of `IndexFlatIP`, and it is the only copy
of them (`matrix` is a float16 view of its codes). Every `get` compares the version with the
store's (one item read), so a card written by another process or a crash between writes
never yields stale results.

Opening a cold user is one bulk read of its card items; the vectors come from the index file
`<index_dir>/<user_dir_name(user)>/cards.faiss` + `meta.json` when it reflects that version
(the file's sha256, kept in `meta.json` with the version token, is checked, so every row
it serves is verified; a mismatch rebuilds), else they are decoded from the items (all
float16 base64 strings in one call) and the file is rewritten.

Each entry also holds the cards' condition embeddings (`cond`, float16, rows aligned with
`ids`; `cond_ok` marks the rows that have one: the item's `cemb16`), which the rerank node's
condition gate reads instead of embedding conditions on the answer's path.

Entries are kept in an LRU bounded by bytes (`max_bytes`; hits/misses/evictions counted) and
replaced, never changed in place (`apply` builds a new one; only an IVF index is extended in
place, under its lock), so a reader holding an entry sees one consistent snapshot.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import faiss
import numpy as np
import orjson
from cachetools import LRUCache, cached
from pydantic import ValidationError

from vars_langgraph.memory.store import (
    COND_KEY,
    VEC_DTYPE,
    VEC_KEY,
    UserMemory,
    canonical_vector,
    card_body_bytes,
    check_user_id,
    encode_vector,
    light_card_check,
    split_vector,
    value_cond_vector,
    value_vector,
)
from vars_langgraph.types import ACTIVE, PreferenceCard

log = logging.getLogger(__name__)

PARSED_CACHE = 4096  # parsed cards kept per process (all users together)
ENTRY_OVERHEAD = 200  # bytes per card of Python bookkeeping (dict slots, id strings, list)
LOCK_STRIPES = 256  # per-user open/apply locks, striped


def user_dir_name(user_id: str) -> str:
    """A user's index directory name: one path component, whatever the id holds ('/', '..',
    a leading '/' would otherwise escape index_dir); over-long names become a sha256."""
    name = quote(check_user_id(user_id), safe="").replace(".", "%2E")
    if len(name) > 200:
        name = "sha256-" + hashlib.sha256(user_id.encode()).hexdigest()
    return name


def remove_user_files(index_dir: str | Path, user_id: str) -> None:
    """Delete a user's index directory and everything in it (also temp files a crash left)."""
    d = Path(index_dir) / user_dir_name(user_id)
    if d.is_dir():
        shutil.rmtree(d)


def _remove_dead_tmp(d: Path) -> None:
    """Delete temp files left by writers that were killed mid-write (`<name>.<pid>.tmp`)."""
    for f in d.glob("*.tmp"):
        try:
            pid = int(f.name.rsplit(".", 2)[-2])
            if pid != os.getpid():
                os.kill(pid, 0)
        except ProcessLookupError:
            f.unlink(missing_ok=True)
        except (ValueError, OSError):
            pass  # not ours to judge, or the writer is alive


def _b64_or(text: str, default: bytes) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return default
    return raw if len(raw) == len(default) else default


@cached(LRUCache(PARSED_CACHE), lock=threading.Lock())
def parse_card(body: bytes) -> PreferenceCard:
    """A card from its compact JSON bytes, through a process-wide LRU keyed by the bytes (so a
    changed card is a new key); bounded by count, whatever the number of users (~1.5 KB a
    card). Raises ValidationError when unreadable (not cached)."""
    return PreferenceCard.model_validate_json(body)


class _ByBytes(LRUCache):
    """`CardIndex`'s entries, LRU bounded by their `nbytes`; counts evictions. An entry larger
    than the bound counts as the bound: it evicts every other entry and stays, alone."""

    def __init__(self, max_bytes: int):
        bound = max(1, max_bytes)  # 0 bytes: still the one entry just used
        super().__init__(bound, getsizeof=lambda ui: min(ui.nbytes, bound))
        self.evictions = 0

    def popitem(self) -> tuple[str, UserIndex]:
        item = super().popitem()
        self.evictions += 1
        return item


class CardTable(Mapping[str, PreferenceCard]):
    """id -> `PreferenceCard` over compact JSON bytes; cards are parsed when read (a turn reads
    its candidates) through the process-wide LRU of `parse_card`. A body that fails validation reads
    as absent. Treat the cards as read-only (they may be shared)."""

    def __init__(self, raw: dict[str, bytes]):
        self._raw = raw

    def __getitem__(self, card_id: str) -> PreferenceCard:
        try:
            card = parse_card(self._raw[card_id])
        except ValidationError:
            raise KeyError(card_id) from None
        if card.id != card_id:
            raise KeyError(card_id)
        return card

    def __contains__(self, card_id: object) -> bool:
        return card_id in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self._raw.values())


def is_exact(index: faiss.Index) -> bool:
    """An exact index whose storage is rows in order: `IndexFlat` (files written before the
    float16 index) or the float16 `IndexScalarQuantizer` (`flat_index`)."""
    return isinstance(index, faiss.IndexFlat) or (
        isinstance(index, faiss.IndexScalarQuantizer)
        and index.sq.qtype == faiss.ScalarQuantizer.QT_fp16)


def flat_view(index: faiss.Index) -> np.ndarray:
    """The (ntotal, d) vectors inside an exact index (`is_exact`), without a copy (valid while
    the index lives and is not extended): float32 for `IndexFlat`, float16 for the float16
    scalar quantizer (its codes are the IEEE halves, little-endian)."""
    n, d = index.ntotal, index.d
    if isinstance(index, faiss.IndexFlat):
        if n == 0:
            return np.zeros((0, d), np.float32)
        return faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)
    if n == 0:
        return np.zeros((0, d), np.float16)
    sq: Any = index  # an IndexScalarQuantizer (SWIG: its fields are not typed)
    codes = faiss.rev_swig_ptr(sq.codes.data(), n * sq.code_size)
    return codes.view(np.float16).reshape(n, d)


def flat_index(matrix: np.ndarray) -> faiss.Index:
    """Exact inner-product index over `matrix` (rows float16-rounded), stored as float16."""
    index = faiss.IndexScalarQuantizer(matrix.shape[1], faiss.ScalarQuantizer.QT_fp16,
                                       faiss.METRIC_INNER_PRODUCT)
    if len(matrix):
        index.add(np.ascontiguousarray(matrix, np.float32))
    return index


_NUM = (float, int)


def serving_fields(key: str, value: Any) -> tuple[str, float, bool, bool]:
    """(note, confidence, is_global, ok) of a card item's parsed body, for the per-row columns.

    ok: the item is certainly a valid `PreferenceCard` with id `key` (every field of the model
    present with its JSON type, sources included), so a search may serve the columns without
    parsing it; otherwise (ok False: odd types pydantic may coerce, or an invalid card) the
    search reads that row through `CardTable` (pydantic), exactly as a card object would be.
    is_global is the raw flag (`is True`), which is also what `global_ids` holds."""
    if type(value) is not dict:
        return "", 0.0, False, False
    note, conf, glob = value.get("note"), value.get("confidence"), value.get("is_global", False)
    ok = (value.get("id") == key and type(note) is str and type(conf) in _NUM
          and type(glob) is bool and type(value.get("user_id")) is str
          and type(value.get("condition")) is str and type(value.get("action")) is str
          and type(value.get("kind", "")) is str
          and type(value.get("created_at", 0.0)) in _NUM
          and type(value.get("updated_at", 0.0)) in _NUM)
    if ok:
        sources = value.get("sources", [])
        ok = type(sources) is list and all(
            type(src) is dict and type(src.get("thread_id", "")) is str
            and type(src.get("turn", 0)) is int and type(src.get("query", "")) is str
            and type(src.get("created_at", 0.0)) in _NUM for src in sources)
    try:
        conf_f = float(cast(float, conf)) if type(conf) in _NUM else 0.0
    except OverflowError:
        conf_f, ok = 0.0, False
    return (note if type(note) is str else ""), conf_f, glob is True, ok


def _card_fields(card: PreferenceCard) -> tuple[str, float, bool, bool]:
    return card.note, float(card.confidence), card.is_global is True, True


@dataclass
class UserIndex:
    """One user's cards (compact), their FAISS index and vectors (`matrix`, rows in `ids`
    order: a float16 view of the flat index's storage, or its own array for IVF), and the
    per-row columns a search serves (`notes`, `confidence`, `is_global`, `ok`; see
    `serving_fields`)."""

    version: str
    index: faiss.Index
    ids: list[str] = field(default_factory=list)
    raw: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    is_global: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    ok: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # readable cards with no usable vector (a damaged `emb16`): not served; the next card
    # write re-embeds them from their note (`VARSEngine.add_preferences`)
    damaged: dict[str, bytes] = field(default_factory=dict)
    ivf_matrix: np.ndarray | None = None  # IVF only: the vectors (IVF lists are not rows)
    ivf_lock: threading.Lock = field(default_factory=threading.Lock)  # IVF add vs search
    # the conditions' embeddings (float16, rows in `ids` order; None: no row has one) and
    # which rows have one (`cemb16` stored)
    cond: np.ndarray | None = None
    cond_ok: np.ndarray | None = None
    rows: dict[str, int] = field(init=False)
    cards: CardTable = field(init=False)
    matrix: np.ndarray = field(init=False)
    global_ids: list[str] = field(init=False)
    global_rows: np.ndarray = field(init=False)
    _nbytes: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.cards = CardTable(self.raw)
        self.rows = {cid: i for i, cid in enumerate(self.ids)}
        self.matrix = self.ivf_matrix if self.ivf_matrix is not None else flat_view(self.index)
        if not (len(self.notes) == len(self.confidence) == len(self.is_global) == len(self.ok)
                == len(self.ids)):
            raise ValueError("UserIndex: one column value per card id is required")
        if self.cond_ok is None or self.cond is None or not self.cond_ok.any():
            self.cond, self.cond_ok = None, np.zeros(len(self.ids), bool)
        elif not len(self.cond) == len(self.cond_ok) == len(self.ids):
            raise ValueError("UserIndex: one condition row per card id is required")
        self.global_rows = np.flatnonzero(self.is_global)
        self.global_ids = [self.ids[r] for r in self.global_rows.tolist()]

    @classmethod
    def build(cls, version: str, index: faiss.Index, ids: list[str], raw: dict[str, bytes],
              fields: Mapping[str, tuple[str, float, bool, bool]] | list[tuple[str, float, bool, bool]],
              **kwargs: Any) -> UserIndex:
        """An entry from per-card `serving_fields` (a list in `ids` order, or by id)."""
        cols = fields if isinstance(fields, list) else [fields[cid] for cid in ids]
        return cls(version=version, index=index, ids=ids, raw=raw,
                   notes=[c[0] for c in cols],
                   confidence=np.fromiter((c[1] for c in cols), np.float64, len(cols)),
                   is_global=np.fromiter((c[2] for c in cols), bool, len(cols)),
                   ok=np.fromiter((c[3] for c in cols), bool, len(cols)), **kwargs)

    def fields(self, row: int) -> tuple[str, float, bool, bool]:
        return (self.notes[row], float(self.confidence[row]), bool(self.is_global[row]),
                bool(self.ok[row]))

    @property
    def is_flat(self) -> bool:
        return self.ivf_matrix is None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Bytes this entry holds: vectors (an IVF index's copy too), card bodies, the columns,
        bookkeeping (computed once: an entry is not changed after it is built)."""
        if self._nbytes is None:
            ivf = 0 if self.is_flat else self.index.ntotal * (self.index.d * 4 + 8)
            notes = sum(map(len, self.notes)) + 57 * len(self.notes)  # str objects + pointers
            cols = self.confidence.nbytes + self.is_global.nbytes + self.ok.nbytes
            cols += sum(a.nbytes for a in (self.cond_ok, self.cond) if a is not None)
            self._nbytes = int(self.matrix.nbytes + self.cards.nbytes + notes + cols
                               + ENTRY_OVERHEAD * len(self.ids) + ivf)
        return self._nbytes

    def vectors(self, ids: list[str]) -> np.ndarray:
        """The (len(ids), d) float32 embeddings of these cards, in order (KeyError if unknown)."""
        if not ids:
            return np.zeros((0, self.index.d), np.float32)
        return self.matrix[[self.rows[i] for i in ids]].astype(np.float32)

    def condition_vectors(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors float32 (len(ids), d), has) of these cards' stored condition embeddings;
        rows without one (has False) are zeros (KeyError if a card is unknown)."""
        rows = np.fromiter((self.rows[i] for i in ids), np.int64, len(ids))
        if self.cond is None or self.cond_ok is None:
            return np.zeros((len(ids), self.index.d), np.float32), np.zeros(len(ids), bool)
        return self.cond[rows].astype(np.float32), self.cond_ok[rows]

    def search_rows(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(sims, rows) of the top-k rows by inner product with `query` (rows -1: none)."""
        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(1, -1))
        k = min(k, len(self.ids))
        if not self.is_flat:
            with self.ivf_lock:
                sims, rows = self.index.search(q, k)
        elif _GPU.enabled:
            sims, rows = _GPU.knn(q, self.matrix, k)
        else:
            sims, rows = self.index.search(q, k)
        return sims[0], rows[0]

    def search(self, query: np.ndarray, k: int) -> list[tuple[PreferenceCard, float]]:
        """Top-k cards of this entry by cosine with `query` (L2-normalised)."""
        if not self.ids or k <= 0:
            return []
        sims, rows = self.search_rows(query, k)
        out = []
        for s, r in zip(sims, rows, strict=True):
            if r >= 0:
                card = self.cards.get(self.ids[r])
                if card is not None:
                    out.append((card, float(s)))
        return out

    def candidate(self, row: int, sim: float, glob: bool | None = None) -> dict[str, Any] | None:
        """The retrieve node's candidate dict for a row (None: the card is unreadable)."""
        cid = self.ids[row]
        if self.ok[row]:
            return {"id": cid, "note": self.notes[row], "dense": round(sim, 6),
                    "confidence": float(self.confidence[row]),
                    "global": bool(self.is_global[row]) if glob is None else glob}
        card = self.cards.get(cid)  # odd or invalid item: read it as a card object would be
        if card is None:
            return None
        return {"id": card.id, "note": card.note, "dense": round(sim, 6),
                "confidence": card.confidence, "global": card.is_global if glob is None else glob}

    def candidates(self, query: np.ndarray, top_k: int, max_global: int,
                   hits: list[tuple[int, float]] | None = None) -> list[dict[str, Any]]:
        """The retrieve node's candidates: the dense top-K rows plus the global cards not
        among them (up to `max_global` globals in all, most confident first, then by
        cosine), sorted by cosine. Built from the columns; only rows that are not `ok` are
        parsed. `hits`: (row, cosine) pairs found elsewhere (pgvector) instead of FAISS."""
        q = np.asarray(query, np.float32).ravel()
        out: list[dict[str, Any]] = []
        resort = hits is not None  # FAISS returns its rows by cosine; other sources may not
        if hits is None and self.ids and top_k > 0:
            sims, rows = self.search_rows(q, top_k)
            keep = rows >= 0
            rows, sims = rows[keep], sims[keep]
        elif hits:
            rows = np.fromiter((r for r, _ in hits), np.int64, len(hits))
            sims = np.fromiter((s for _, s in hits), np.float32, len(hits))
        else:
            rows, sims = np.zeros(0, np.int64), np.zeros(0, np.float32)
        if len(rows) and self.ok[rows].all():  # the common case: columns only, no per-row calls
            out = [{"id": self.ids[r], "note": self.notes[r], "dense": d, "confidence": c,
                    "global": g}
                   for r, d, c, g in zip(rows.tolist(), np.round(sims.astype(np.float64), 6).tolist(),
                                         self.confidence[rows].tolist(),
                                         self.is_global[rows].tolist(), strict=True)]
        elif len(rows):
            out = [c for c in (self.candidate(r, s) for r, s in
                               zip(rows.tolist(), sims.tolist(), strict=True)) if c is not None]
        room = max_global - sum(c["global"] for c in out)
        if room > 0 and len(self.global_rows):
            seen = {c["id"] for c in out}
            extra = [r for r in self.global_rows.tolist() if self.ids[r] not in seen]
            if extra:
                sims = self.matrix[extra].astype(np.float32) @ q
                conf = [self._confidence(r) for r in extra]
                order = sorted(range(len(extra)), key=lambda i: (-conf[i], -sims[i]))
                for i in order:
                    if room <= 0:
                        break
                    c = self.candidate(extra[i], float(sims[i]), glob=True)
                    if c is not None:
                        out.append(c)
                        room -= 1
                resort = True
        if resort:
            out.sort(key=lambda c: -c["dense"])
        return out

    def _confidence(self, row: int) -> float:
        if self.ok[row]:
            return float(self.confidence[row])
        card = self.cards.get(self.ids[row])
        return card.confidence if card is not None else float("-inf")


class _GpuSearch:
    """FAISS on a GPU when enabled (`cache.faiss_device`) and faiss-gpu is installed."""

    def __init__(self) -> None:
        self.enabled = False
        self._res: Any = None

    def enable(self, device: str) -> bool:
        """device "gpu": required (error without one); "auto": when present; "cpu": off."""
        has = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        if device == "gpu" and not has:
            raise RuntimeError("cache.faiss_device: gpu, but FAISS has no GPU: "
                               'pip install "vars-langgraph[gpu]"')
        self.enabled = device != "cpu" and has
        if self.enabled and self._res is None:
            self._res = faiss.StandardGpuResources()
        return self.enabled

    def knn(self, q: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search on the GPU (IVF indexes, above flat_max, stay on the CPU)."""
        return faiss.knn_gpu(self._res, q, xb, k, metric=faiss.METRIC_INNER_PRODUCT)


_GPU = _GpuSearch()


def set_faiss_device(device: str) -> bool:
    """Route FAISS searches to a GPU ("gpu", "auto") or keep them on CPU ("cpu")."""
    return _GPU.enable(device)


class _Rows:
    """A user's card items, checked and split, with their vectors decoded only on demand.

    Format-2 text rows: the vector member is cut out by string search and only the small
    body is parsed (to check it); `decode()` turns all the base64 strings into one matrix in
    one call. Unreadable items and wrong-sized vectors are left out (stored, never served);
    `decode` also drops non-finite vectors."""

    def __init__(self, dim: int, rows: list[tuple[str, Any]]):
        self.dim = dim
        self.ids: list[str] = []
        self.bodies: dict[str, bytes] = {}
        self.fields: list[tuple[str, float, bool, bool]] = []  # `serving_fields`, per id
        self._src: list[str | np.ndarray] = []  # base64 text or a decoded vector, per id
        self._csrc: list[str | np.ndarray | None] = []  # the condition's (`cemb16`), per id
        self.unreadable: list[str] = []  # keys of items that are not a readable card
        self.no_vector: dict[str, bytes] = {}  # readable cards whose vector is damaged
        want = len(encode_vector(np.zeros(dim, np.float32)))
        for key, value in rows:
            if key in self.bodies:
                continue
            if isinstance(value, str | bytes):
                body, b64 = split_vector(value)
                body, cb64 = split_vector(body, COND_KEY)
                try:
                    parsed = orjson.loads(body)
                except orjson.JSONDecodeError:
                    self.unreadable.append(key)
                    continue
                if b64 is not None and len(b64) == want and light_card_check(parsed):
                    self._add(key, body, b64, parsed, cb64)
                    continue
                if b64 is not None:
                    parsed[VEC_KEY] = b64
                if cb64 is not None:
                    parsed[COND_KEY] = cb64
                value = parsed
            if not light_card_check(value):
                self.unreadable.append(key)
                continue
            vec = value_vector(value)
            if vec is not None and vec.shape == (dim,):
                self._add(key, card_body_bytes(value), vec, value, value_cond_vector(value))
            else:
                self.no_vector[key] = card_body_bytes(value)

    def _add(self, key: str, body: bytes, src: str | np.ndarray, value: dict[str, Any],
             cond: str | np.ndarray | None = None) -> None:
        if value.get("status") not in (None, ACTIVE):  # archived / superseded: kept, not served
            return
        self.ids.append(key)
        self.bodies[key] = body
        self._src.append(src)
        self._csrc.append(cond)
        self.fields.append(serving_fields(key, value))

    def conditions(self, ids: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """(float16 matrix, has) of these cards' condition embeddings, rows in `ids` order
        (None: no card has a usable one); a missing, malformed, wrong-sized or non-finite
        `cemb16` reads as none (the gate embeds that condition itself)."""
        pos = {cid: i for i, cid in enumerate(self.ids)}
        srcs = [self._csrc[pos[cid]] for cid in ids]
        want = len(encode_vector(np.zeros(self.dim, np.float32)))
        cond = np.zeros((len(ids), self.dim), VEC_DTYPE)
        has = np.zeros(len(ids), bool)
        texts = [i for i, src in enumerate(srcs) if isinstance(src, str) and len(src) == want]
        if texts:
            joined = "".join(srcs[i] for i in texts)  # type: ignore[misc]
            buf = b""
            if "=" not in joined:  # no padding inside: one decode of them all (see `decode`)
                try:
                    buf = base64.b64decode(joined)
                except ValueError:
                    buf = b""
            if len(buf) == len(texts) * self.dim * VEC_DTYPE.itemsize:
                cond[texts] = np.frombuffer(buf, VEC_DTYPE).reshape(len(texts), self.dim)
            else:  # a damaged string somewhere: one by one
                for i in texts:
                    cond[i] = np.frombuffer(_b64_or(srcs[i], self._nan), VEC_DTYPE)  # type: ignore[arg-type]
            has[texts] = True
        for i, src in enumerate(srcs):
            if isinstance(src, np.ndarray) and src.shape == (self.dim,):
                cond[i], has[i] = src.astype(VEC_DTYPE), True
        has &= np.isfinite(cond).all(axis=1)
        cond[~has] = 0
        return (cond if has.any() else None), has

    def decode_some(self, positions: list[int]) -> np.ndarray:
        return np.stack([self._vec(self._src[i]) for i in positions])

    def _vec(self, src: str | np.ndarray) -> np.ndarray:
        if isinstance(src, np.ndarray):
            return src
        return np.frombuffer(_b64_or(src, self._nan), VEC_DTYPE).astype(np.float32)

    @property
    def _nan(self) -> bytes:
        return np.full(self.dim, np.nan, VEC_DTYPE).tobytes()

    def fields_by_id(self) -> dict[str, tuple[str, float, bool, bool]]:
        return dict(zip(self.ids, self.fields, strict=True))

    def decode(self) -> tuple[np.ndarray, list[str]]:
        """(matrix, ids) of the cards with a finite vector, in row order."""
        if not self.ids:
            return np.zeros((0, self.dim), np.float32), []
        texts = [s for s in self._src if isinstance(s, str)]
        matrix = None
        if len(texts) == len(self._src):
            joined = "".join(texts)
            n_raw = len(texts) * self.dim * VEC_DTYPE.itemsize
            # no padding inside (768 bytes -> 1024 chars): one decode of them all; the decoder
            # skips non-alphabet characters, so a wrong length means a bad string somewhere
            if "=" not in joined:
                try:
                    buf = base64.b64decode(joined)
                except ValueError:  # binascii.Error: a damaged string; decoded one by one
                    buf = b""
                if len(buf) == n_raw:
                    matrix = np.frombuffer(buf, VEC_DTYPE).reshape(len(texts), self.dim)
        if matrix is None:
            matrix = np.stack([self._vec(s) for s in self._src])
        matrix = matrix.astype(np.float32)
        ok = np.isfinite(matrix).all(axis=1)
        if ok.all():
            return matrix, list(self.ids)
        keep = np.flatnonzero(ok)
        for i in np.flatnonzero(~ok).tolist():
            self.no_vector[self.ids[i]] = self.bodies[self.ids[i]]
        return matrix[keep], [self.ids[i] for i in keep]


class CardIndex:
    """Per-user indexes for many users over one `UserMemory`; thread-safe; disk optional.

    `max_bytes` bounds the entries kept (LRU; the entry just used always stays)."""

    def __init__(
        self, memory: UserMemory, dim: int, index_dir: str | Path | None = None,
        flat_max: int = 200_000, max_bytes: int = 1 << 30,
    ):
        self.memory = memory
        self.dim = dim
        self.index_dir = Path(index_dir) if index_dir else None
        self.flat_max = flat_max
        self.max_bytes = max_bytes
        self._users = _ByBytes(max_bytes)  # guarded by `_guard`
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._guard = threading.Lock()
        self.rebuilds = 0  # entries built from the store (cold opens)
        self.loads = 0  # IVF indexes loaded from their file
        self.hits = 0
        self.misses = 0
        self.damaged = 0  # card items skipped on open: unreadable, or their vector damaged

    # public ---------------------------------------------------------------------------------
    def get(self, user_id: str) -> UserIndex:
        """The user's index, fresh with respect to the store's version token."""
        version = self.memory.version(user_id)
        with self._guard:
            cur = self._users.get(user_id)  # marks it used
            if cur is not None and cur.version == version:
                self.hits += 1
                return cur
        with self._lock(user_id):
            with self._guard:
                cur = self._users.get(user_id)
            if cur is not None and cur.version == version:
                return cur
            cur = self._open(user_id, version)
            self._put(user_id, cur)
        return cur

    def search(self, user_id: str, query: np.ndarray, k: int) -> list[tuple[PreferenceCard, float]]:
        """Top-k cards of this user by cosine with `query` (L2-normalised), fresh with respect
        to the store (one version check; with an entry already in hand, use `ui.search`)."""
        return self.get(user_id).search(query, k)

    def candidates(self, user_id: str, query: np.ndarray, top_k: int,
                   max_global: int) -> list[dict[str, Any]]:
        """The retrieve node's candidates for this user (`UserIndex.candidates`), fresh with
        respect to the store (one version check)."""
        return self.get(user_id).candidates(query, top_k, max_global)

    def apply(self, user_id: str, old_version: str, new_version: str,
              upserts: list[PreferenceCard], vectors: Mapping[str, np.ndarray] | None = None,
              cond_vectors: Mapping[str, np.ndarray] | None = None) -> None:
        """After a write of `upserts` (vectors: `vectors[id]`, else `card.embedding`; condition
        vectors: `cond_vectors[id]`, else none, as `UserMemory.put_cards` wrote them) moved the
        store old -> new version: a new entry with them (copy-on-write), or drop a stale one."""
        vectors, cond_vectors = vectors or {}, cond_vectors or {}
        with self._lock(user_id):
            with self._guard:
                cur = self._users.get(user_id)
            if cur is None or cur.version != old_version:
                self._drop(user_id)  # stale or absent: rebuilt lazily on next get
                return
            raw, ids, new_vecs = dict(cur.raw), list(cur.ids), []
            damaged = {k: v for k, v in cur.damaged.items() if k not in {c.id for c in upserts}}
            fields = {cid: cur.fields(r) for cid, r in cur.rows.items()}
            if any(c.status != ACTIVE for c in upserts):
                self._drop(user_id)  # a card left retrieval: rebuilt lazily on next get
                return
            conds: dict[str, np.ndarray | None] = {}  # the written cards' condition vectors
            for c in upserts:
                vec = vectors.get(c.id)
                vec = canonical_vector(c.embedding if vec is None else vec)
                if vec.shape != (self.dim,) or not np.all(np.isfinite(vec)):
                    continue
                if c.id not in raw:
                    ids.append(c.id)
                    new_vecs.append(vec)
                raw[c.id] = card_body_bytes(c.model_dump(mode="json", exclude={"embedding"}))
                fields[c.id] = _card_fields(c)
                cv = cond_vectors.get(c.id)
                cv = canonical_vector(cv) if cv is not None else None
                conds[c.id] = cv if cv is not None and cv.shape == (self.dim,) \
                    and np.all(np.isfinite(cv)) else None
            cond, cond_ok = self._conditions(cur, ids, conds)
            if cur.is_flat and len(ids) > self.flat_max:
                self._drop(user_id)  # grew past flat_max: reopened (IVF) on next get
                return
            if cur.is_flat:  # a new flat index (copy-on-write: readers keep the old one)
                index = flat_index(np.vstack([cur.matrix.astype(np.float32), *new_vecs])) \
                    if new_vecs else cur.index  # unchanged vectors: share the index
                new = UserIndex.build(new_version, index, ids, raw, fields, damaged=damaged,
                                      cond=cond, cond_ok=cond_ok)
            else:
                matrix = np.vstack([cur.matrix, *new_vecs]) if new_vecs else cur.matrix
                if new_vecs:
                    with cur.ivf_lock:  # IVF rows are ids' order: append the new ones
                        cur.index.add(np.vstack(new_vecs))
                new = UserIndex.build(new_version, cur.index, ids, raw, fields, damaged=damaged,
                                      ivf_matrix=matrix, ivf_lock=cur.ivf_lock, cond=cond,
                                      cond_ok=cond_ok)
            self._put(user_id, new)

    @staticmethod
    def _conditions(cur: UserIndex, ids: list[str], conds: Mapping[str, np.ndarray | None]
                    ) -> tuple[np.ndarray | None, np.ndarray]:
        """The condition columns of an entry with rows `ids` (cur's, then new ones), where the
        cards written (`conds`: id -> vector, None: written without one) replace cur's rows."""
        n_old, d = len(cur.ids), cur.index.d
        if cur.cond is None and all(v is None for v in conds.values()):
            return None, np.zeros(len(ids), bool)  # no row has one: share nothing, copy nothing
        cond = np.zeros((len(ids), d), VEC_DTYPE)
        has = np.zeros(len(ids), bool)
        if cur.cond is not None:
            cond[:n_old], has[:n_old] = cur.cond, cur.cond_ok
        new_rows = {cid: n_old + j for j, cid in enumerate(ids[n_old:])}
        for cid, v in conds.items():
            r = cur.rows.get(cid, new_rows.get(cid))
            if r is None:
                continue
            cond[r] = v if v is not None else 0
            has[r] = v is not None
        return cond, has

    def invalidate(self, user_id: str, remove_files: bool = False) -> None:
        with self._lock(user_id):
            self._drop(user_id)
            if remove_files and self.index_dir:
                remove_user_files(self.index_dir, user_id)

    def flush(self) -> None:
        """Persist every in-memory index that is newer than its file."""
        with self._guard:  # from a copy: reading the cache itself marks every entry used
            items = list(copy.copy(self._users).items())
        for uid, ui in items:
            with self._lock(uid):
                self._save(uid, ui)

    def stats(self) -> dict[str, int]:
        """Entries and bytes held, the bound, and hit/miss/eviction/rebuild counters."""
        with self._guard:
            return {"users": len(self._users), "bytes": int(self._users.currsize),
                    "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses,
                    "evictions": self._users.evictions,
                    "rebuilds": self.rebuilds, "loads": self.loads,
                    "damaged": self.damaged}

    # internals ------------------------------------------------------------------------------
    def _lock(self, user_id: str) -> threading.Lock:
        """One of LOCK_STRIPES locks (by a hash of the user): bounded however many users."""
        return self._locks[hash(user_id) % LOCK_STRIPES]

    def _drop(self, user_id: str) -> None:
        with self._guard:
            self._users.pop(user_id, None)

    def _put(self, user_id: str, ui: UserIndex) -> None:
        _ = ui.nbytes  # computed (and cached) outside the guard
        with self._guard:
            self._users.pop(user_id, None)  # its old entry is not counted while making room
            self._users[user_id] = ui

    def _dir(self, user_id: str) -> Path:
        assert self.index_dir is not None
        return self.index_dir / user_dir_name(user_id)

    def _open(self, user_id: str, version: str) -> UserIndex:
        """Build the entry from one bulk read of the store; the vectors from the index file
        when it is fresh (no decoding), else decoded from the items (and the file rewritten)."""
        with self._guard:
            self.misses += 1
        rows = _Rows(self.dim, self.memory.card_rows(user_id))
        loaded = self._load(user_id, version, rows)
        if loaded is not None:
            index, order = loaded
            fields = rows.fields_by_id()
            ivf_matrix = None
            if not is_exact(index):
                matrix = rows.decode()[0]
                pos = {cid: i for i, cid in enumerate(rows.ids)}
                ivf_matrix = matrix[[pos[cid] for cid in order]]
            old_file = isinstance(index, faiss.IndexFlat)
            if old_file:  # a file written before the float16 index: convert (exact), rewrite
                index = flat_index(flat_view(index))
            with self._guard:
                self.loads += 1
            cond, cond_ok = rows.conditions(order)
            ui = UserIndex.build(version, index, order, rows.bodies, fields,
                                 ivf_matrix=ivf_matrix, cond=cond, cond_ok=cond_ok)
            if old_file:
                self._save(user_id, ui, force=True)
            return ui
        matrix, ids = rows.decode()
        raw = {cid: rows.bodies[cid] for cid in ids}
        row_fields: Mapping[str, tuple[str, float, bool, bool]] | list[tuple[str, float, bool, bool]]
        row_fields = rows.fields if len(ids) == len(rows.ids) else rows.fields_by_id()
        self._report_damage(user_id, rows)
        cond, cond_ok = rows.conditions(ids)
        if len(ids) > self.flat_max:
            ui = UserIndex.build(version, self._train_ivf(matrix), ids, raw, row_fields,
                                 ivf_matrix=matrix, damaged=rows.no_vector, cond=cond,
                                 cond_ok=cond_ok)
        else:
            ui = UserIndex.build(version, flat_index(matrix), ids, raw, row_fields,
                                 damaged=rows.no_vector, cond=cond, cond_ok=cond_ok)
        with self._guard:
            self.rebuilds += 1
        self._save(user_id, ui, force=True)
        return ui

    def _report_damage(self, user_id: str, rows: _Rows) -> None:
        """Count and log the user's card items that cannot be served (never deleted)."""
        bad = len(rows.unreadable) + len(rows.no_vector)
        if not bad:
            return
        with self._guard:
            self.damaged += bad
        log.warning("user %r: %d card items unreadable (skipped, kept in the store), %d with a "
                    "damaged vector (re-embedded from their note on the next card write)",
                    user_id, len(rows.unreadable), len(rows.no_vector))

    def _train_ivf(self, matrix: np.ndarray) -> faiss.Index:
        n = len(matrix)
        nlist = max(1, min(int(4 * np.sqrt(n)), n))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist,
                                 faiss.METRIC_INNER_PRODUCT)
        ivf.nprobe = 16
        ivf.cp.min_points_per_centroid = 1  # no warning for small test indexes
        ivf.train(matrix)
        ivf.add(matrix)
        return ivf

    def _save(self, user_id: str, ui: UserIndex, force: bool = False) -> None:
        if self.index_dir is None or ui.index is None:
            return
        d = self._dir(user_id)
        d.mkdir(parents=True, exist_ok=True)
        meta = d / "meta.json"
        try:
            if (not force and meta.exists()
                    and json.loads(meta.read_text()).get("version") == ui.version):
                return
        except (OSError, ValueError):
            pass
        tmp = d / f"cards.faiss.{os.getpid()}.tmp"
        with ui.ivf_lock:
            buf = faiss.serialize_index(ui.index)
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, d / "cards.faiss")
        tmpm = d / f"meta.json.{os.getpid()}.tmp"
        # the file's checksum with the version token: a load verifies every row, not a sample
        tmpm.write_text(json.dumps({"version": ui.version, "ids": ui.ids, "dim": self.dim,
                                    "sha256": hashlib.sha256(buf.tobytes()).hexdigest()}))
        os.replace(tmpm, meta)  # meta last: a crash in between leaves a stale meta -> rebuild
        _remove_dead_tmp(d)

    def _load(self, user_id: str, version: str,
              rows: _Rows) -> tuple[faiss.Index, list[str]] | None:
        """The index file and its row order, if it reflects `version`, holds exactly these
        ids, its bytes match the checksum written with them, and a sample of its rows equals
        the store's vectors; else None (rebuild)."""
        ids = rows.ids
        if self.index_dir is None or not ids:
            return None
        d = self._dir(user_id)
        try:
            meta = json.loads((d / "meta.json").read_text())
            order = list(meta["ids"])
            if (meta.get("version") != version or meta.get("dim") != self.dim
                    or len(order) != len(ids) or set(order) != set(ids)):
                return None
            raw = (d / "cards.faiss").read_bytes()
            if meta.get("sha256") != hashlib.sha256(raw).hexdigest():
                raise ValueError("checksum mismatch: the file is not the one written")
            index = faiss.deserialize_index(np.frombuffer(raw, np.uint8))
            if (index.ntotal != len(ids) or index.d != self.dim
                    or index.metric_type != faiss.METRIC_INNER_PRODUCT):
                raise ValueError("index and meta disagree")
        except FileNotFoundError:
            return None
        except Exception as e:  # corrupt file: rebuild from the store
            log.warning("index for user %r unreadable (%s); rebuilding from the store", user_id, e)
            return None
        if is_exact(index):
            # the two files are replaced one after the other: check that the vectors really
            # are those of `order` (a sample of rows; a mismatch means rebuild)
            pos = {cid: i for i, cid in enumerate(ids)}
            sample = np.unique(np.linspace(0, len(order) - 1, min(len(order), 64)).astype(int))
            want = rows.decode_some([pos[order[r]] for r in sample])
            if not np.array_equal(flat_view(index)[sample], want):
                return None
        elif hasattr(index, "nprobe"):
            index.nprobe = 16
        return index, order
