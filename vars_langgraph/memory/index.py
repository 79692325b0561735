"""Per-user card index: a bounded, version-checked cache of the store's cards and vectors.

A user's entry (`UserIndex`) holds the cards as compact JSON bytes (parsed on access), a FAISS
inner-product index over their embeddings (exact `IndexFlatIP` up to `flat_max` cards, IVF
above: nlist = 4 sqrt(N), nprobe 16), the global card ids and the store version it reflects.
For the flat index the FAISS storage is the only copy of the vectors (`matrix` is a view of
it). Every `get` compares the version with the store's (one key read), so a card written by
another process or a crash between writes never yields stale results.

Opening a cold user is one bulk read of its card items; the vectors come from the index file
`<index_dir>/<user_dir_name(user)>/cards.faiss` + `meta.json` when it reflects that version
(a sample of rows is checked against the store), else they are decoded from the items (all
float16 base64 strings in one call) and the file is rewritten.

Entries are kept in an LRU bounded by bytes (`max_bytes`; hits/misses/evictions counted) and
replaced, never changed in place (`apply` builds a new one; only an IVF index is extended in
place, under its lock), so a reader holding an entry sees one consistent snapshot.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import faiss
import numpy as np
import orjson
from pydantic import ValidationError

from vars_langgraph.memory.store import (
    VEC_DTYPE,
    VEC_KEY,
    UserMemory,
    canonical_vector,
    card_body_bytes,
    check_user_id,
    encode_vector,
    light_card_check,
    split_vector,
    value_vector,
)
from vars_langgraph.types import PreferenceCard

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


class _ParsedCards:
    """A process-wide LRU of parsed cards, keyed by their compact JSON bytes (so a changed
    card is a new key); bounded by count, whatever the number of users (~1.5 KB a card)."""

    def __init__(self, size: int):
        self.size = size
        self._lru: OrderedDict[bytes, PreferenceCard] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, body: bytes) -> PreferenceCard:
        with self._lock:
            card = self._lru.get(body)
            if card is not None:
                self._lru.move_to_end(body)
                return card
        card = PreferenceCard.model_validate_json(body)  # ValidationError: unreadable
        with self._lock:
            self._lru[body] = card
            while len(self._lru) > self.size:
                self._lru.popitem(last=False)
        return card


PARSED = _ParsedCards(PARSED_CACHE)


class CardTable(Mapping[str, PreferenceCard]):
    """id -> `PreferenceCard` over compact JSON bytes; cards are parsed when read (a turn reads
    its candidates) through the process-wide `PARSED` LRU. A body that fails validation reads
    as absent. Treat the cards as read-only (they may be shared)."""

    def __init__(self, raw: dict[str, bytes]):
        self._raw = raw

    def __getitem__(self, card_id: str) -> PreferenceCard:
        try:
            card = PARSED.get(self._raw[card_id])
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


def flat_view(index: faiss.IndexFlat) -> np.ndarray:
    """The (ntotal, d) float32 vectors inside a flat FAISS index, without a copy (valid while
    the index lives and is not extended)."""
    n, d = index.ntotal, index.d
    if n == 0:
        return np.zeros((0, d), np.float32)
    return faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)


def flat_index(matrix: np.ndarray) -> faiss.IndexFlatIP:
    index = faiss.IndexFlatIP(matrix.shape[1])
    if len(matrix):
        index.add(np.ascontiguousarray(matrix, np.float32))
    return index


@dataclass
class UserIndex:
    """One user's cards (compact), their FAISS index and vectors (`matrix`, rows in `ids`
    order: a view of the flat index's storage, or its own array for IVF)."""

    version: str
    index: faiss.Index
    ids: list[str] = field(default_factory=list)
    raw: dict[str, bytes] = field(default_factory=dict)
    global_ids: list[str] = field(default_factory=list)
    ivf_matrix: np.ndarray | None = None  # IVF only: the vectors (IVF lists are not rows)
    ivf_lock: threading.Lock = field(default_factory=threading.Lock)  # IVF add vs search
    rows: dict[str, int] = field(init=False)
    cards: CardTable = field(init=False)
    matrix: np.ndarray = field(init=False)
    _nbytes: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.cards = CardTable(self.raw)
        self.rows = {cid: i for i, cid in enumerate(self.ids)}
        self.matrix = self.ivf_matrix if self.ivf_matrix is not None else flat_view(self.index)

    @property
    def is_flat(self) -> bool:
        return self.ivf_matrix is None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Bytes this entry holds: vectors (an IVF index's copy too), card bodies, bookkeeping
        (computed once: an entry is not changed after it is built)."""
        if self._nbytes is None:
            ivf = 0 if self.is_flat else self.index.ntotal * (self.index.d * 4 + 8)
            self._nbytes = int(self.matrix.nbytes + self.cards.nbytes
                               + ENTRY_OVERHEAD * len(self.ids) + ivf)
        return self._nbytes

    def vectors(self, ids: list[str]) -> np.ndarray:
        """The (len(ids), d) float32 embeddings of these cards, in order (KeyError if unknown)."""
        if not ids:
            return np.zeros((0, self.index.d), np.float32)
        return self.matrix[[self.rows[i] for i in ids]]

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
        self.globals: list[str] = []
        self.old_format: list[str] = []
        self._src: list[str | np.ndarray] = []  # base64 text or a decoded vector, per id
        want = len(encode_vector(np.zeros(dim, np.float32)))
        for key, value in rows:
            if key in self.bodies:
                continue
            if isinstance(value, str | bytes):
                body, b64 = split_vector(value)
                try:
                    parsed = orjson.loads(body)
                except orjson.JSONDecodeError:
                    continue
                if b64 is not None and len(b64) == want and light_card_check(parsed):
                    self._add(key, body, b64, parsed)
                    continue
                if b64 is not None:
                    parsed[VEC_KEY] = b64
                value = parsed
            if not light_card_check(value):
                continue
            if VEC_KEY not in value and "embedding" in value:
                self.old_format.append(key)
            vec = value_vector(value)
            if vec is not None and vec.shape == (dim,):
                self._add(key, card_body_bytes(value), vec, value)

    def _add(self, key: str, body: bytes, src: str | np.ndarray, value: dict[str, Any]) -> None:
        self.ids.append(key)
        self.bodies[key] = body
        self._src.append(src)
        if value.get("is_global") is True:
            self.globals.append(key)

    def decode_some(self, positions: list[int]) -> np.ndarray:
        return np.stack([self._vec(self._src[i]) for i in positions])

    def _vec(self, src: str | np.ndarray) -> np.ndarray:
        if isinstance(src, np.ndarray):
            return src
        return np.frombuffer(_b64_or(src, self._nan), VEC_DTYPE).astype(np.float32)

    @property
    def _nan(self) -> bytes:
        return np.full(self.dim, np.nan, VEC_DTYPE).tobytes()

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
                buf = base64.b64decode(joined)
                if len(buf) == n_raw:
                    matrix = np.frombuffer(buf, VEC_DTYPE).reshape(len(texts), self.dim)
        if matrix is None:
            matrix = np.stack([self._vec(s) for s in self._src])
        matrix = matrix.astype(np.float32)
        ok = np.isfinite(matrix).all(axis=1)
        if ok.all():
            return matrix, list(self.ids)
        keep = np.flatnonzero(ok)
        return matrix[keep], [self.ids[i] for i in keep]


class CardIndex:
    """Per-user indexes for many users over one `UserMemory`; thread-safe; disk optional.

    `max_bytes` bounds the entries kept (LRU; the entry just used always stays); `write_lock`
    (the engine's cross-process card write lock) guards the format-1 -> 2 migration."""

    def __init__(
        self, memory: UserMemory, dim: int, index_dir: str | Path | None = None,
        flat_max: int = 200_000, max_bytes: int = 1 << 30,
        write_lock: Callable[[str], AbstractContextManager[Any]] | None = None,
    ):
        self.memory = memory
        self.dim = dim
        self.index_dir = Path(index_dir) if index_dir else None
        self.flat_max = flat_max
        self.max_bytes = max_bytes
        self.write_lock = write_lock or (lambda _uid: nullcontext())
        self._users: OrderedDict[str, UserIndex] = OrderedDict()
        self._bytes = 0  # sum of the held entries' nbytes
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._guard = threading.Lock()
        self.rebuilds = 0  # entries built from the store (cold opens)
        self.loads = 0  # IVF indexes loaded from their file
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.migrated = 0  # format-1 card items rewritten

    # public ---------------------------------------------------------------------------------
    def get(self, user_id: str) -> UserIndex:
        """The user's index, fresh with respect to the store's version token."""
        version = self.memory.version(user_id)
        with self._guard:
            cur = self._users.get(user_id)
            if cur is not None and cur.version == version:
                self._users.move_to_end(user_id)
                self.hits += 1
                return cur
        with self._lock(user_id):
            with self._guard:
                cur = self._users.get(user_id)
            if cur is not None and cur.version == version:
                return cur
            cur, old_format = self._open(user_id, version)
            self._put(user_id, cur)
        if old_format:  # outside the index lock: the write lock may be waited for
            self._migrate(user_id, old_format)
        return cur

    def _migrate(self, user_id: str, keys: list[str]) -> None:
        """Rewrite the user's format-1 items as format 2 under the card write lock (same
        cards, same version token: the entry just built stays valid)."""
        with self.write_lock(user_id):
            n = self.memory.migrate_cards(user_id, keys)
        with self._guard:
            self.migrated += n
        if n:
            log.info("user %r: %d cards rewritten in the compact format", user_id, n)

    def search(self, user_id: str, query: np.ndarray, k: int) -> list[tuple[PreferenceCard, float]]:
        """Top-k cards of this user by cosine with `query` (L2-normalised), fresh with respect
        to the store (one version check; with an entry already in hand, use `ui.search`)."""
        return self.get(user_id).search(query, k)

    def apply(self, user_id: str, old_version: str, new_version: str,
              upserts: list[PreferenceCard], vectors: Mapping[str, np.ndarray] | None = None) -> None:
        """After a write of `upserts` (vectors: `vectors[id]`, else `card.embedding`) moved the
        store old -> new version: a new entry with them (copy-on-write), or drop a stale one."""
        vectors = vectors or {}
        with self._lock(user_id):
            with self._guard:
                cur = self._users.get(user_id)
            if cur is None or cur.version != old_version:
                self._drop(user_id)  # stale or absent: rebuilt lazily on next get
                return
            raw, ids, new_vecs, globals_ = dict(cur.raw), list(cur.ids), [], list(cur.global_ids)
            for c in upserts:
                vec = vectors.get(c.id)
                vec = canonical_vector(c.embedding if vec is None else vec)
                if vec.shape != (self.dim,) or not np.all(np.isfinite(vec)):
                    continue
                if c.id not in raw:
                    ids.append(c.id)
                    new_vecs.append(vec)
                    if c.is_global:
                        globals_.append(c.id)
                raw[c.id] = card_body_bytes(c.model_dump(mode="json", exclude={"embedding"}))
            if cur.is_flat and len(ids) > self.flat_max:
                self._drop(user_id)  # grew past flat_max: reopened (IVF) on next get
                return
            if cur.is_flat:  # a new flat index (copy-on-write: readers keep the old one)
                matrix = np.vstack([cur.matrix, *new_vecs]) if new_vecs else cur.matrix
                new = UserIndex(version=new_version, index=flat_index(matrix), ids=ids, raw=raw,
                                global_ids=globals_)
            else:
                matrix = np.vstack([cur.matrix, *new_vecs]) if new_vecs else cur.matrix
                if new_vecs:
                    with cur.ivf_lock:  # IVF rows are ids' order: append the new ones
                        cur.index.add(np.vstack(new_vecs))
                new = UserIndex(version=new_version, index=cur.index, ids=ids, raw=raw,
                                global_ids=globals_, ivf_matrix=matrix, ivf_lock=cur.ivf_lock)
            self._put(user_id, new)

    def invalidate(self, user_id: str, remove_files: bool = False) -> None:
        with self._lock(user_id):
            self._drop(user_id)
            if remove_files and self.index_dir:
                remove_user_files(self.index_dir, user_id)

    def flush(self) -> None:
        """Persist every in-memory index that is newer than its file."""
        with self._guard:
            items = list(self._users.items())
        for uid, ui in items:
            with self._lock(uid):
                self._save(uid, ui)

    def stats(self) -> dict[str, int]:
        """Entries and bytes held, the bound, and hit/miss/eviction/rebuild counters."""
        with self._guard:
            return {"users": len(self._users), "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "rebuilds": self.rebuilds, "loads": self.loads, "migrated": self.migrated}

    # internals ------------------------------------------------------------------------------
    def _lock(self, user_id: str) -> threading.Lock:
        """One of LOCK_STRIPES locks (by a hash of the user): bounded however many users."""
        return self._locks[hash(user_id) % LOCK_STRIPES]

    def _drop(self, user_id: str) -> None:
        with self._guard:
            old = self._users.pop(user_id, None)
            if old is not None:
                self._bytes -= old.nbytes

    def _put(self, user_id: str, ui: UserIndex) -> None:
        size = ui.nbytes
        with self._guard:
            old = self._users.pop(user_id, None)
            self._bytes += size - (old.nbytes if old is not None else 0)
            self._users[user_id] = ui
            while self._bytes > self.max_bytes and len(self._users) > 1:
                _, gone = self._users.popitem(last=False)
                self._bytes -= gone.nbytes
                self.evictions += 1

    def _dir(self, user_id: str) -> Path:
        assert self.index_dir is not None
        return self.index_dir / user_dir_name(user_id)

    def _open(self, user_id: str, version: str) -> tuple[UserIndex, list[str]]:
        """Build the entry from one bulk read of the store; the vectors from the index file
        when it is fresh (no decoding), else decoded from the items (and the file rewritten).
        Also returns the keys of format-1 items (to migrate)."""
        with self._guard:
            self.misses += 1
        rows = _Rows(self.dim, self.memory.card_rows(user_id))
        loaded = self._load(user_id, version, rows)
        if loaded is not None:
            index, order = loaded
            gset = set(rows.globals)
            g_order = [cid for cid in order if cid in gset]
            ivf_matrix = None
            if not isinstance(index, faiss.IndexFlat):
                matrix = rows.decode()[0]
                pos = {cid: i for i, cid in enumerate(rows.ids)}
                ivf_matrix = matrix[[pos[cid] for cid in order]]
            with self._guard:
                self.loads += 1
            return UserIndex(version=version, index=index, ids=order, raw=rows.bodies,
                             global_ids=g_order, ivf_matrix=ivf_matrix), rows.old_format
        matrix, ids = rows.decode()
        raw = {cid: rows.bodies[cid] for cid in ids}
        gset = set(rows.globals)
        globals_ = [cid for cid in ids if cid in gset]
        if len(ids) > self.flat_max:
            ui = UserIndex(version=version, index=self._train_ivf(matrix), ids=ids, raw=raw,
                           global_ids=globals_, ivf_matrix=matrix)
        else:
            ui = UserIndex(version=version, index=flat_index(matrix), ids=ids, raw=raw,
                           global_ids=globals_)
        with self._guard:
            self.rebuilds += 1
        self._save(user_id, ui, force=True)
        return ui, rows.old_format

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
            faiss.write_index(ui.index, str(tmp))
        os.replace(tmp, d / "cards.faiss")
        tmpm = d / f"meta.json.{os.getpid()}.tmp"
        tmpm.write_text(json.dumps({"version": ui.version, "ids": ui.ids, "dim": self.dim}))
        os.replace(tmpm, meta)  # meta last: a crash in between leaves a stale meta -> rebuild
        _remove_dead_tmp(d)

    def _load(self, user_id: str, version: str,
              rows: _Rows) -> tuple[faiss.Index, list[str]] | None:
        """The index file and its row order, if it reflects `version`, holds exactly these
        ids, and a sample of its rows equals the store's vectors; else None (rebuild)."""
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
            index = faiss.read_index(str(d / "cards.faiss"))
            if index.ntotal != len(ids) or index.d != self.dim:
                raise ValueError("index and meta disagree")
        except FileNotFoundError:
            return None
        except Exception as e:  # corrupt file: rebuild from the store
            log.warning("index for user %r unreadable (%s); rebuilding from the store", user_id, e)
            return None
        if isinstance(index, faiss.IndexFlat):
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
