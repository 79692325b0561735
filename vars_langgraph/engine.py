"""VARSEngine: the shared parts behind every node (models, store access, index, user locks).

Built once from a `VARSConfig` and a `BaseStore`; nodes, `VARSMemory` and the CLI all use the
same engine, so models load once per process. Models load lazily on first use.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Collection, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from langgraph.store.base import BaseStore

from vars_langgraph.config import VARSConfig
from vars_langgraph.learning.policy import UserVector, item_vectors
from vars_langgraph.memory.index import CardIndex
from vars_langgraph.memory.lexical import LexicalCache
from vars_langgraph.memory.store import UserMemory, canonical_vector, check_user_id
from vars_langgraph.models.base import Embedder, Extractor, Reranker
from vars_langgraph.storage.features import StoreFeatures, store_features
from vars_langgraph.types import CardSource, Preference, PreferenceCard

log = logging.getLogger(__name__)

# condition vectors the rerank node had to embed (cards written before they were stored),
# stored with the next card write: at most this many per write, kept for this many users
COND_REPAIR_MAX = 256
COND_REPAIR_USERS = 1024


def apply_threads(config: VARSConfig, torch_too: bool = False) -> None:
    """FAISS OpenMP (and torch CPU) threads from `config.cache` (0: the library's own). The
    torch setting is applied when the engine loads its embedder (process-wide, like FAISS's)."""
    if config.cache.faiss_threads > 0:
        import faiss

        faiss.omp_set_num_threads(config.cache.faiss_threads)
    if torch_too and config.cache.torch_threads > 0:
        import torch

        if torch.get_num_threads() != config.cache.torch_threads:
            torch.set_num_threads(config.cache.torch_threads)


class VARSEngine:
    """Models, per-user storage and the FAISS cache for one store. Thread-safe."""

    def __init__(self, config: VARSConfig, store: BaseStore, *, index_dir: str | Path | None = None,
                 embedder: Embedder | None = None, extractor: Extractor | None = None,
                 reranker: Reranker | None = None, chat_model: Any = None):
        self.config = config
        self.store = store
        self.memory = UserMemory(store)
        self.features: StoreFeatures = store_features(store)  # the store's optional features
        self._index_dir = index_dir
        self._given = {"embedder": embedder, "extractor": extractor, "reranker": reranker,
                       "chat": chat_model}
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        self._held = threading.local()  # card write locks this thread holds (re-entrant)
        self._file_lock: FileLock | None = None
        apply_threads(config)
        # (user, thread) -> the user's forget generation when this process saw the session start
        self._sessions: dict[tuple[str, str], int] = {}
        # user -> {card id: (condition, its vector)} embedded on the answer's path, to store
        self._cond_repairs: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
        self._projection = self._load_projection()
        # node slots shared by this engine's graphs (`max_concurrency`; nodes/wiring.py)
        self.node_slots = threading.BoundedSemaphore(max(1, int(config.max_concurrency)))
        # what the answering server told once: its context size and tokenizer endpoint
        # (nodes/generate.py: context_tokens, count_tokens)
        self.server_facts: dict[str, Any] = {}
        self.learner: Any = None  # the background learner, made on first use (background.py)

    # models (lazy) ------------------------------------------------------------------------------
    @cached_property
    def embedder(self) -> Embedder:
        if self._given["embedder"] is not None:
            return self._given["embedder"]
        from vars_langgraph.models.embedder import load_embedder

        apply_threads(self.config, torch_too=True)
        return load_embedder(self.config.embedding)

    @cached_property
    def dim(self) -> int:
        """The embedding dimension: from the model's files when they say it (`stated_dim`, no
        model load: `memories`, `export`, `import` stay light), else from the loaded model."""
        if self._given["embedder"] is None:
            from vars_langgraph.models.embedder import stated_dim

            dim = stated_dim(self.config.embedding)
            if dim:
                return dim
        return int(self.embedder.dim)

    @cached_property
    def query_embedder(self) -> Any:
        """The embedder behind the one query-embedding cache (`CachedEmbedder`, LRU of
        `cache.query_cache` queries): reward and retrieve embed a turn's query once."""
        from vars_langgraph.models.embedder import CachedEmbedder

        return CachedEmbedder(self.embedder, max_items=max(self.config.cache.query_cache, 1))

    @cached_property
    def condition_embedder(self) -> Any:
        """The embedder the rerank node's condition gate uses for a card stored without its
        condition's vector (`CachedEmbedder`, LRU of 4096 conditions)."""
        from vars_langgraph.models.embedder import CachedEmbedder

        return CachedEmbedder(self.embedder, max_items=4096)

    @cached_property
    def extractor(self) -> Extractor:
        if self._given["extractor"] is not None:
            return self._given["extractor"]
        from vars_langgraph.models.extraction import load_extractor

        return load_extractor(self.config)

    @cached_property
    def reranker(self) -> Reranker | None:
        if self._given["reranker"] is not None:
            return self._given["reranker"]
        from vars_langgraph.models.reranker import load_reranker

        return load_reranker(self.config, self.embedder)

    @cached_property
    def chat_model(self) -> Any:
        """The answering model: any LangChain `BaseChatModel` (default: ChatOpenAI on `llm`)."""
        if self._given["chat"] is not None:
            return self._given["chat"]
        from vars_langgraph.models.llm import chat_model, resolve_llm

        return chat_model(resolve_llm(self.config.llm, self.config))

    @cached_property
    def lexical(self) -> LexicalCache:
        """The per-user BM25 indexes of hybrid retrieval, keyed by store version (LRU)."""
        return LexicalCache()

    @cached_property
    def index(self) -> CardIndex:
        """The store's card index (`StoreFeatures.make_card_index`; default: the FAISS cache)."""
        if self.config.cache.faiss_device != "cpu":
            from vars_langgraph.memory.index import set_faiss_device

            set_faiss_device(self.config.cache.faiss_device)
        return self.features.make_card_index(
            self.memory, self.dim, self._index_dir,
            flat_max=self.config.retrieval.flat_index_max,
            max_bytes=int(self.config.cache.index_max_mb * 2**20))

    # helpers ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def card_write_lock(self, user_id: str) -> Iterator[None]:
        """Serialises card writes with other processes, so the in-memory index's incremental
        update never misses a card another process wrote meanwhile: the store's
        `StoreFeatures.card_write_lock(user_id)` when it gives one (Postgres: an advisory lock
        per user), else a file lock in index_dir (`filelock`; one data dir). Re-entrant
        within a thread."""
        held: set[str] = self._held.__dict__.setdefault("users", set())
        if user_id in held:
            yield
            return
        lock: Any = self.features.card_write_lock(user_id)
        if lock is None:
            lock = self._default_write_lock()
        with lock:
            held.add(user_id)
            try:
                yield
            finally:
                held.discard(user_id)

    def _default_write_lock(self) -> Any:
        """The lock for stores without their own: a file lock in index_dir (no index dir, no
        other process to serialise with: none)."""
        if not self._index_dir:
            return contextlib.nullcontext()
        Path(self._index_dir).mkdir(parents=True, exist_ok=True)
        with self._guard:
            if self._file_lock is None:
                self._file_lock = FileLock(str(Path(self._index_dir) / ".cards.lock"),
                                           thread_local=False)
        return self._file_lock

    def user_lock(self, user_id: str) -> threading.RLock:
        """Serialises read-modify-write of one user's vector and cards within this process."""
        with self._guard:
            return self._locks.setdefault(check_user_id(user_id), threading.RLock())

    def embed_query(self, text: str) -> np.ndarray:
        """The query's embedding through the query cache (`query_embedder`)."""
        return self.query_embedder.embed_query(text)

    def item_vectors(self, embeddings: np.ndarray) -> np.ndarray:
        proj, mean = self._projection
        return item_vectors(embeddings, self.config.policy.item_dim, proj, mean)

    def load_vector(self, user_id: str, card_ids: Collection[str] | None = None) -> UserVector:
        """The user's vector; with `card_ids`, holding only those cards' learned values (for
        reading only: `UserVector.from_dict`)."""
        return UserVector.from_dict(self.memory.get_vector(user_id), self.config.policy.item_dim,
                                    card_ids)

    def save_vector(self, user_id: str, vec: UserVector) -> None:
        self.memory.put_vector(user_id, vec.to_dict())

    # cards --------------------------------------------------------------------------------------
    def add_preferences(self, user_id: str, prefs: list[Preference],
                        source: CardSource, generation: int | None = None) -> list[PreferenceCard]:
        """Store preferences as cards; near-duplicates (cos >= dedup_threshold) merge into the
        existing card, keeping the higher confidence and recording both sources. Each card's
        note and condition are embedded in one call and stored together (`cemb16`: the
        rerank node's condition gate reads it). The same write repairs cards whose vector is
        damaged and stores condition vectors the gate had to compute (`note_conditions`).
        Nothing is written when the user was forgotten after the session
        (`source.thread_id`, or the given `generation`) started."""
        if not prefs:
            return []
        check_user_id(user_id)
        notes = [p.note for p in prefs]
        conds = list(dict.fromkeys(p.condition for p in prefs if p.condition.strip()))
        both = np.asarray(self.embedder.embed_documents(notes + conds), np.float32)
        embs = both[:len(notes)]
        cond_emb = dict(zip(conds, both[len(notes):], strict=True))
        thr = self.config.retrieval.dedup_threshold
        if generation is None:
            generation = self.session_generation(user_id, source.thread_id or "")
        with self.user_lock(user_id), self.card_write_lock(user_id):
            if generation is not None and self.memory.generation(user_id) != generation:
                log.info("user %r was forgotten after this session started: cards not stored",
                         user_id)
                return []
            old_version = self.memory.version(user_id)
            ui = self.index.get(user_id)
            out: dict[str, PreferenceCard] = {}
            vecs: dict[str, np.ndarray] = {}  # embeddings of the cards in `out`
            for pref, emb in zip(prefs, embs, strict=True):
                match = self._nearest(ui, out, vecs, emb, thr)
                if match is not None:
                    if match.id not in vecs:
                        vecs[match.id] = ui.vectors([match.id])[0]
                    match = match.model_copy(deep=True)
                    match.confidence = max(match.confidence, pref.confidence)
                    if len(match.sources) < 50:
                        match.sources.append(source)
                    match.updated_at = time.time()
                    out[match.id] = match
                else:
                    card = PreferenceCard.from_preference(user_id, pref, source, [])
                    out[card.id] = card
                    vecs[card.id] = canonical_vector(emb)
            self._repair(user_id, ui, out, vecs)
            cvecs = self._condition_vectors(ui, out, cond_emb)
            returned = list(out.values())
            self._take_condition_repairs(user_id, ui, out, vecs, cvecs)
            cards = list(out.values())
            new_version = self.memory.put_cards(user_id, cards, vecs, cvecs)
            self.index.apply(user_id, old_version, new_version, cards, vecs, cvecs)
        for c in returned:
            c.embedding = vecs[c.id].tolist()
        return returned

    def _condition_vectors(self, ui: Any, out: dict[str, PreferenceCard],
                           cond_emb: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The condition vector of each card in `out` with a condition: the stored one, the
        one just embedded with the notes, else embedded now (one call for the rest)."""
        cvecs: dict[str, np.ndarray] = {}
        todo: list[PreferenceCard] = []
        for cid, card in out.items():
            if not card.condition.strip():
                continue
            if cid in ui.rows:
                vec, has = ui.condition_vectors([cid])
                if has[0]:
                    cvecs[cid] = vec[0]
                    continue
            if card.condition in cond_emb:
                cvecs[cid] = canonical_vector(cond_emb[card.condition])
            else:
                todo.append(card)
        if todo:
            embs = self.embedder.embed_documents([c.condition for c in todo])
            cvecs.update((c.id, canonical_vector(e)) for c, e in zip(todo, embs, strict=True))
        return cvecs

    def note_conditions(self, user_id: str, found: dict[str, tuple[str, np.ndarray]]) -> None:
        """Condition vectors the rerank node embedded for cards stored without one (card id ->
        (condition, vector)): the next card write of the user stores them (bounded)."""
        with self._guard:
            pending = self._cond_repairs.pop(user_id, {})
            for cid, item in found.items():
                if len(pending) < 4 * COND_REPAIR_MAX:
                    pending[cid] = item
            self._cond_repairs[user_id] = pending  # most recent last
            while len(self._cond_repairs) > COND_REPAIR_USERS:
                self._cond_repairs.pop(next(iter(self._cond_repairs)))

    def _take_condition_repairs(self, user_id: str, ui: Any, out: dict[str, PreferenceCard],
                                vecs: dict[str, np.ndarray], cvecs: dict[str, np.ndarray]) -> None:
        """Add up to COND_REPAIR_MAX cards whose condition vector the gate computed
        (`note_conditions`) to this write, unchanged but for the stored `cemb16`."""
        with self._guard:
            pending = self._cond_repairs.pop(user_id, {})
            take = list(pending.items())[:COND_REPAIR_MAX]
            rest = dict(list(pending.items())[COND_REPAIR_MAX:])
            if rest:
                self._cond_repairs[user_id] = rest
        for cid, (cond, vec) in take:
            if cid in out or cid not in ui.rows or ui.condition_vectors([cid])[1][0]:
                continue
            card = ui.cards.get(cid)
            if card is None or card.condition != cond:
                continue
            out[cid] = card
            vecs[cid] = ui.vectors([cid])[0]
            cvecs[cid] = canonical_vector(vec)

    def _repair(self, user_id: str, ui: Any, out: dict[str, PreferenceCard],
                vecs: dict[str, np.ndarray]) -> None:
        """Add the user's readable cards whose stored vector is damaged (`UserIndex.damaged`)
        to this write, re-embedded from their note, so they are served again."""
        from pydantic import ValidationError

        fix = []
        for cid, body in getattr(ui, "damaged", {}).items():
            try:
                card = PreferenceCard.model_validate_json(body)
            except ValidationError:
                continue
            if card.id == cid and card.user_id == user_id and cid not in out:
                fix.append(card)
        if not fix:
            return
        for card, emb in zip(fix, self.embedder.embed_documents([c.note for c in fix]),
                             strict=True):
            out[card.id] = card
            vecs[card.id] = canonical_vector(emb)  # its condition: `_condition_vectors`
        log.info("user %r: %d cards with a damaged vector re-embedded", user_id, len(fix))

    @staticmethod
    def _nearest(ui: Any, pending: dict[str, PreferenceCard], vecs: dict[str, np.ndarray],
                 emb: np.ndarray, thr: float) -> PreferenceCard | None:
        """The stored or pending card nearest to `emb` with cosine >= thr, else None."""
        best, best_sim = None, thr
        if len(ui):
            sims, rows = ui.search_rows(emb, 1)
            if rows[0] >= 0 and sims[0] >= best_sim and ui.ids[rows[0]] in ui.cards:
                cid = ui.ids[rows[0]]
                best, best_sim = pending.get(cid) or ui.cards[cid], float(sims[0])
        for cid, c in pending.items():
            sim = float(np.dot(vecs[cid], emb))
            if sim >= best_sim:
                best, best_sim = c, sim
        return best

    def forget_card(self, user_id: str, card_id: str) -> bool:
        with self.user_lock(user_id), self.card_write_lock(user_id):
            if not self.memory.has_card(user_id, card_id):  # unreadable cards can go too
                return False
            self.memory.delete_cards(user_id, [card_id])
            self.index.invalidate(user_id)
        return True

    def forget_user(self, user_id: str) -> int:
        """Delete every trace of the user: store items and index files (checkpointed threads:
        `cli.forget_threads`). On SQLite the deleted rows are zeroed and the WAL truncated."""
        from vars_langgraph.memory.index import remove_user_files
        from vars_langgraph.storage import purge_deleted

        with self.user_lock(user_id), self.card_write_lock(user_id):
            n = self.memory.forget_user(user_id)  # a new generation first: see `note_thread`
            if "index" in self.__dict__:
                self.index.invalidate(user_id, remove_files=True)
            elif self._index_dir:  # no need to load the embedding model just to delete files
                remove_user_files(self._index_dir, user_id)
            if "query_embedder" in self.__dict__:  # the user's queries go too
                self.query_embedder.clear()
            if "condition_embedder" in self.__dict__:  # and their cards' conditions
                self.condition_embedder.clear()
            with self._guard:
                self._cond_repairs.pop(user_id, None)
        purge_deleted(self.store)
        return n

    def note_thread(self, user_id: str, thread_id: str, renew: bool = True) -> None:
        """A run of the user's thread starts: record the thread for `forget --threads` (once
        per process and forget generation) and the generation this session writes under
        (one item read per run). `renew=False` (a node inside a run): only when this process
        has no session of the thread yet, so a forget during a run is never taken over."""
        key = (check_user_id(user_id), thread_id)
        if not renew:
            with self._guard:
                if key in self._sessions:
                    return
        gen = self.memory.generation(user_id)
        with self._guard:
            if self._sessions.get(key) == gen:
                return
        with self.user_lock(user_id), self.card_write_lock(user_id):  # not inside a forget
            self.memory.note_thread(user_id, thread_id)
            gen = self.memory.generation(user_id)
        with self._guard:
            self._sessions[key] = gen

    def session_generation(self, user_id: str, thread_id: str) -> int | None:
        """The forget generation the session (user, thread) started under in this process
        (None: not started here)."""
        with self._guard:
            return self._sessions.get((user_id, thread_id))

    def forgotten_since(self, user_id: str, thread_id: str, generation: int | None = None) -> bool:
        """True when the user was forgotten after the session (or `generation`) started: its
        writes must not happen (one item read; False for a session unknown here)."""
        gen = self.session_generation(user_id, thread_id) if generation is None else generation
        return gen is not None and self.memory.generation(user_id) != gen

    def enforce_forget(self, user_id: str, thread_id: str, checkpointer: Any = None) -> bool:
        """After a run: if the user was forgotten while it ran, delete what the run wrote
        after the forget (the thread's checkpoints, registry entry and pending feedback).
        Returns True when it did."""
        if not self.forgotten_since(user_id, thread_id):
            return False
        from vars_langgraph.storage import purge_deleted

        if checkpointer is not None:
            checkpointer.delete_thread(thread_id)
            purge_deleted(checkpointer)
        self.memory.drop_thread(user_id, thread_id)
        log.info("user %r was forgotten during a run of thread %r: its writes deleted",
                 user_id, thread_id)
        return True

    def _load_projection(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        path = self.config.policy.projection_path
        if not path:
            return None, None
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"policy.projection_path: file not found: {p}")
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            return data["projection"], data.get("mean")
        return np.asarray(data, np.float32), None
