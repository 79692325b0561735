"""Per-user FAISS index: a cache of the store's cards, rebuilt when missing, stale or corrupt.

Each user's index is kept in memory and persisted beside the store as
`<index_dir>/<user_dir_name(user)>/cards.faiss` + `meta.json` (card ids and the store version it reflects).
Every search first compares that version with the store's, so a card written by another
process or a crash between writes never yields stale results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import faiss
import numpy as np

from vars_langgraph.memory.store import UserMemory, check_user_id
from vars_langgraph.types import PreferenceCard

log = logging.getLogger(__name__)


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


@dataclass
class UserIndex:
    """One user's cards, their embedding matrix and a FAISS inner-product index over it."""

    version: str
    ids: list[str] = field(default_factory=list)
    cards: dict[str, PreferenceCard] = field(default_factory=dict)
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    index: faiss.Index | None = None
    global_ids: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def reindex(self) -> None:
        """Recompute the id -> row map and the global card ids after ids/cards changed."""
        self.rows = {cid: i for i, cid in enumerate(self.ids)}
        self.global_ids = [cid for cid in self.ids if self.cards[cid].is_global]

    def vectors(self, ids: list[str]) -> np.ndarray:
        """The (len(ids), d) float32 embeddings of these cards, in order (KeyError if unknown)."""
        if not ids:
            return np.zeros((0, self.matrix.shape[1] if self.matrix.ndim == 2 else 0), np.float32)
        return self.matrix[[self.rows[i] for i in ids]]


class CardIndex:
    """FAISS indexes for many users over one `UserMemory`; thread-safe; disk optional."""

    def __init__(
        self, memory: UserMemory, dim: int, index_dir: str | Path | None = None,
        flat_max: int = 200_000,
    ):
        self.memory = memory
        self.dim = dim
        self.index_dir = Path(index_dir) if index_dir else None
        self.flat_max = flat_max
        self._users: dict[str, UserIndex] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.rebuilds = 0

    # public ---------------------------------------------------------------------------------
    def get(self, user_id: str) -> UserIndex:
        """The user's index, fresh with respect to the store's version token."""
        version = self.memory.version(user_id)
        with self._lock(user_id):
            cur = self._users.get(user_id)
            if cur is not None and cur.version == version:
                return cur
            cur = self._load(user_id, version) or self._rebuild(user_id, version)
            self._users[user_id] = cur
            return cur

    def search(self, user_id: str, query: np.ndarray, k: int) -> list[tuple[PreferenceCard, float]]:
        """Top-k cards of this user by cosine with `query` (L2-normalised)."""
        ui = self.get(user_id)
        if not ui.ids or k <= 0:
            return []
        q = np.asarray(query, np.float32).reshape(1, -1)
        sims, idx = ui.index.search(q, min(k, len(ui.ids)))
        return [(ui.cards[ui.ids[i]], float(s)) for s, i in zip(sims[0], idx[0], strict=True) if i >= 0]

    def apply(self, user_id: str, old_version: str, new_version: str,
              upserts: list[PreferenceCard]) -> None:
        """Incremental update after a write of `upserts` moved the store old -> new version."""
        with self._lock(user_id):
            cur = self._users.get(user_id)
            if cur is None or cur.version != old_version:
                self._users.pop(user_id, None)  # rebuilt lazily on next get
                return
            new = [c for c in upserts if c.id not in cur.cards]
            for c in upserts:
                cur.cards[c.id] = c
            if new:
                vecs = np.asarray([c.embedding for c in new], np.float32)
                cur.ids.extend(c.id for c in new)
                cur.matrix = vecs if cur.matrix.size == 0 else np.vstack([cur.matrix, vecs])
                if cur.index is None:
                    cur.index = self._new_index(len(cur.ids))
                cur.index.add(vecs)
            cur.reindex()
            cur.version = new_version

    def invalidate(self, user_id: str, remove_files: bool = False) -> None:
        with self._lock(user_id):
            self._users.pop(user_id, None)
            if remove_files and self.index_dir:
                remove_user_files(self.index_dir, user_id)

    def flush(self) -> None:
        """Persist every in-memory index that is newer than its file."""
        for uid, ui in list(self._users.items()):
            with self._lock(uid):
                self._save(uid, ui)

    # internals ------------------------------------------------------------------------------
    def _lock(self, user_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(user_id, threading.Lock())

    def _dir(self, user_id: str) -> Path:
        assert self.index_dir is not None
        return self.index_dir / user_dir_name(user_id)

    def _new_index(self, n: int) -> faiss.Index:
        if n > self.flat_max:
            quant = faiss.IndexFlatIP(self.dim)
            nlist = int(4 * np.sqrt(n))
            ivf = faiss.IndexIVFFlat(quant, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.nprobe = 16
            return ivf
        return faiss.IndexFlatIP(self.dim)

    def _usable(self, card: PreferenceCard) -> bool:
        """Cards with a wrong-sized or non-finite embedding stay stored but are not served."""
        return len(card.embedding) == self.dim and bool(np.all(np.isfinite(card.embedding)))

    def _rebuild(self, user_id: str, version: str) -> UserIndex:
        cards = [c for c in self.memory.iter_cards(user_id) if self._usable(c)]
        ui = UserIndex(version=version, ids=[c.id for c in cards], cards={c.id: c for c in cards})
        ui.matrix = (
            np.asarray([c.embedding for c in cards], np.float32)
            if cards else np.zeros((0, self.dim), np.float32)
        )
        ui.index = self._new_index(len(cards))
        if cards:
            if not ui.index.is_trained:
                ui.index.train(ui.matrix)
            ui.index.add(ui.matrix)
        ui.reindex()
        self.rebuilds += 1
        self._save(user_id, ui)
        return ui

    def _save(self, user_id: str, ui: UserIndex) -> None:
        if self.index_dir is None or ui.index is None:
            return
        d = self._dir(user_id)
        d.mkdir(parents=True, exist_ok=True)
        meta = d / "meta.json"
        try:
            if meta.exists() and json.loads(meta.read_text()).get("version") == ui.version:
                return
        except (OSError, ValueError):
            pass
        tmp = d / f"cards.faiss.{os.getpid()}.tmp"
        faiss.write_index(ui.index, str(tmp))
        os.replace(tmp, d / "cards.faiss")
        tmpm = d / f"meta.json.{os.getpid()}.tmp"
        tmpm.write_text(json.dumps({"version": ui.version, "ids": ui.ids, "dim": self.dim}))
        os.replace(tmpm, meta)  # meta last: a crash in between leaves a stale meta -> rebuild
        _remove_dead_tmp(d)

    def _load(self, user_id: str, version: str) -> UserIndex | None:
        """Load from disk if the file reflects `version` and agrees with itself; else None."""
        if self.index_dir is None:
            return None
        d = self._dir(user_id)
        try:
            meta = json.loads((d / "meta.json").read_text())
            if meta.get("version") != version or meta.get("dim") != self.dim:
                return None
            index = faiss.read_index(str(d / "cards.faiss"))
            ids = list(meta["ids"])
            if index.ntotal != len(ids) or index.d != self.dim:
                raise ValueError("index and meta disagree")
        except FileNotFoundError:
            return None
        except Exception as e:  # corrupt file: rebuild from the store
            log.warning("index for user %r unreadable (%s); rebuilding from the store", user_id, e)
            return None
        cards = {c.id: c for c in self.memory.iter_cards(user_id) if self._usable(c)}
        if set(ids) != set(cards):
            return None
        ui = UserIndex(version=version, ids=ids, cards=cards, index=index)
        ui.matrix = np.asarray([cards[i].embedding for i in ids], np.float32)
        if isinstance(index, faiss.IndexFlat) and ids:
            # the two files are replaced one after the other: check that the vectors really
            # are those of `ids`, in order (a sample of rows; a mismatch means rebuild)
            rows = np.unique(np.linspace(0, len(ids) - 1, min(len(ids), 64)).astype(int))
            got = np.stack([index.reconstruct(int(r)) for r in rows])
            if not np.allclose(got, ui.matrix[rows], atol=1e-5):
                return None
        ui.reindex()
        return ui
