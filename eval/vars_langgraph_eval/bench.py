"""`vars-langgraph bench`: latency and scale of the memory, without the LLM calls.

For one user with N cards (default N = 100, 1k, 10k, 100k synthetic notes, embedded for real
with the configured embedder, in batches, cached on disk), it runs turns through the real node
functions on a real SQLite store and FAISS index and reports per stage p50/p95:

- embed: the query embedding (`engine.embed_query`, a text never seen before; computed once per
  turn, the reward and retrieve nodes reuse it through the engine's cache);
- search: the retrieve node with the query vector cached (FAISS top-K, store version check,
  global cards);
- rerank: the reranker's s0 for the K candidates (`nodes.rerank.base_scores`), also per candidate;
- policy: the rest of the rerank node (user vector load, item vectors, scores, softmax, top-k);
- augment: the augment node (system prompt);
- overhead = embed + search + policy + augment (the issue's target: p95 < 50 ms at 10k cards),
  and the same plus rerank; feedback = reward + update nodes of the next turn, and pending =
  the pending-feedback write that generate does besides the LLM call (reported, not in the sum).

Also per size: process memory (RSS) taken by the user's loaded index and cards, FAISS bytes, the
store file, the time to write the cards, to rebuild the user's index from the store and to load
it from its file; search-time growth of FAISS flat against IVF (nlist = 4 sqrt(N), nprobe = 16)
with IVF's recall@K; and, side by side in the same run over the same cards and vectors, what a
LangGraph user would use instead: `BaseStore.search` on a `SqliteStore` with an embedding index
(sqlite-vec), and LangMem's `create_search_memory_tool` over that store when langmem is installed.
The baselines get the query vector precomputed (their `search` time excludes the embedding, which
is the same model call for every system; compare with VARS's search stage and overhead - embed).

Bytes per card: in RAM, the index entry's own accounting (`UserIndex.nbytes`: vectors, card
bodies, bookkeeping) and the measured RSS growth when the user is opened; on disk, the SQLite
store (after a WAL checkpoint) and the index file cache, each divided by the cards. Cold open: a
user not in the process's cache, opened from the index file (`index_load_s`) and from the store
alone (`index_rebuild_s`, no file). `--many U` runs the many-users variant instead (U users x
each size; warm and cold turns, LRU bound `--cache-mb`). `--embed-max M` embeds only the first M
notes for real; the rest get jittered copies of those vectors (so a 100k row needs no 12-minute
embedding pass); the JSON records it. The issue-15 numbers from before are printed beside.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vars_langgraph.config import VARSConfig
from vars_langgraph_eval.stats import summary as pct

log = logging.getLogger(__name__)

DEFAULT_SIZES = (100, 1_000, 10_000, 100_000)
USER = "bench-user"
STAGES = ("embed", "search", "rerank", "policy", "augment")
# issue 15, measured before compact cards (same command, idle 2-core machine)
BEFORE = {
    1_000: {"overhead": "15.9 / 17.8", "search": "0.62 / 0.84", "faiss": "0.05 / 0.05",
            "ram_kb": 12.6, "disk_kb": 19.0, "open_s": "0.10"},
    10_000: {"overhead": "20.0 / 30.5", "search": "3.79 / 6.17", "faiss": "0.36 / 0.51",
             "ram_kb": 14.3, "disk_kb": 11.9, "open_s": "2.5"},
    100_000: {"overhead": "did not finish in 25 min (3.5 GB RSS)", "search": "–", "faiss": "–",
              "ram_kb": None, "disk_kb": None, "open_s": "–"},
}

# ------------------------------------------------------------------------------ synthetic data

_TOPICS = (
    "calculus", "linear algebra", "probability", "statistics", "geometry", "number theory",
    "python code", "SQL queries", "web design", "travel plans", "cooking", "gardening",
    "music theory", "poetry", "history essays", "job interviews", "email drafts", "budgets",
    "fitness plans", "medical questions", "legal questions", "physics homework", "chemistry",
    "biology", "philosophy", "movie suggestions", "book reviews", "language learning",
    "resume writing", "debugging", "data analysis", "machine learning", "cloud costs", "taxes",
    "parenting", "home repair", "photography", "chess", "public speaking", "negotiation",
)
_SITUATIONS = (
    "explaining {t}", "solving {t} problems", "giving feedback on {t}", "answering about {t}",
    "summarising {t}", "planning {t}", "comparing options for {t}", "reviewing {t}",
    "writing about {t}", "teaching me {t}",
)
_ACTIONS = (
    "use bullet points", "number every step", "keep it under {n} sentences",
    "start with a one-line summary", "end with a TL;DR", "include a worked example",
    "avoid jargon", "state assumptions first", "give a confidence estimate",
    "offer {n} alternatives with tradeoffs", "use a friendly tone", "be blunt and skip pleasantries",
    "add headings for each section", "ask before going to the next step", "cite sources",
    "use metric units", "show the formula before the numbers", "write in British English",
    "keep code in Python with type hints", "prefer tables over prose", "use analogies",
    "do not suggest next steps", "end with a proactive suggestion", "avoid emojis",
    "answer in under {n}0 words", "give the final answer first", "check the arithmetic twice",
)


def synthetic_notes(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n distinct (condition, action) pairs, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    i = 0
    while len(out) < n:
        t = _TOPICS[rng.integers(len(_TOPICS))]
        cond = _SITUATIONS[rng.integers(len(_SITUATIONS))].format(t=t)
        act = _ACTIONS[rng.integers(len(_ACTIONS))].format(n=int(rng.integers(2, 9)))
        if rng.random() < 0.5:
            act += f" (variant {i})"
        i += 1
        if (cond, act) not in seen:
            seen.add((cond, act))
            out.append((cond, act))
    return out


def synthetic_queries(n: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    forms = ("Can you help me with {t}? I have a question about part {k}.",
             "I'm working on {t} and got stuck at step {k}, what next?",
             "Explain {t} to me, case {k}.", "Quick question on {t} number {k}.")
    return [forms[rng.integers(len(forms))].format(t=_TOPICS[rng.integers(len(_TOPICS))], k=j)
            for j in range(n)]


def _cached_prefix(cache: Path, family: str, texts: Sequence[str], dim: int) -> np.ndarray | None:
    """Vectors of `texts` from a cached run of the same family over at least as many texts
    whose first text agrees (synthetic notes of a seed are prefixes of each other)."""
    for f in sorted(cache.glob(f"{family}-*.npy")):
        meta = f.with_suffix(".json")
        try:
            m = json.loads(meta.read_text())
            if m.get("n", 0) >= len(texts) and m.get("first") == texts[0] and m.get("dim") == dim:
                arr = np.load(f, mmap_mode="r")
                return np.ascontiguousarray(arr[: len(texts)])
        except (OSError, ValueError):
            continue
    return None


def embed_cached(embedder: Any, texts: Sequence[str], cache: Path | None, name: str,
                 batch: int = 256, progress: bool = True, family: str | None = None) -> np.ndarray:
    """Embed texts in batches with a progress bar; reuse `<cache>/<name>.npy` if it matches
    (or a longer cached run of the same `family`)."""
    if cache is not None and family and texts and cache.exists():
        hit = _cached_prefix(cache, family, texts, int(embedder.dim))
        if hit is not None:
            return hit
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        f, meta = cache / f"{name}.npy", cache / f"{name}.json"
        key = {"n": len(texts), "first": texts[0] if texts else "", "last": texts[-1] if texts else "",
               "model": str(getattr(embedder, "name", "")), "dim": int(embedder.dim)}
        if f.exists() and meta.exists():
            try:
                if json.loads(meta.read_text()) == key:
                    return np.load(f)
            except (OSError, ValueError):
                pass
    from tqdm import tqdm

    parts = []
    bar = tqdm(total=len(texts), desc=f"embedding {name}", unit="note", disable=not progress,
               dynamic_ncols=True)
    for i in range(0, len(texts), batch):
        chunk = list(texts[i:i + batch])
        parts.append(np.asarray(embedder.embed_documents(chunk), np.float32))
        bar.update(len(chunk))
    bar.close()
    out = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
    if cache is not None:
        np.save(f, out)
        meta.write_text(json.dumps(key))
    return out


# ------------------------------------------------------------------------------ helpers


def rss_mb() -> float:
    """Resident memory of this process (MB), after handing freed heap back to the OS (glibc
    `malloc_trim`), so growth measures what is still held."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timed_base_scores(sink: list[float]):
    """Time `nodes.rerank.base_scores` inside the real rerank node (restored afterwards)."""
    import vars_langgraph.nodes.rerank as rr

    orig = rr.base_scores

    def wrapper(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            sink.append((time.perf_counter() - t0) * 1000)

    rr.base_scores = wrapper
    try:
        yield
    finally:
        rr.base_scores = orig


def _cards(notes: Sequence[tuple[str, str]], embs: np.ndarray, user: str = USER) -> list[Any]:
    from vars_langgraph.types import CardSource, Preference, PreferenceCard

    src = CardSource(thread_id="bench", turn=0, query="")
    out = []
    for (cond, act), e in zip(notes, embs, strict=True):
        pref = Preference(condition=cond, action=act, confidence=0.8)
        out.append(PreferenceCard.from_preference(user, pref, src, e.tolist()))
    return out


def _cond_vectors(cards: Sequence[Any], cond_embs: dict[str, np.ndarray] | None
                  ) -> dict[str, np.ndarray] | None:
    """Each card's condition vector (stored with it, as `VARSEngine.add_preferences` does);
    None: written without (as cards written before condition vectors were stored)."""
    if cond_embs is None:
        return None
    return {c.id: cond_embs[c.condition] for c in cards if c.condition in cond_embs}


def _put(engine: Any, user: str, notes: Sequence[tuple[str, str]], embs: np.ndarray,
         cond_embs: dict[str, np.ndarray] | None) -> None:
    cards = _cards(notes, embs, user=user)
    engine.memory.put_cards(user, cards, cond_vectors=_cond_vectors(cards, cond_embs))


def jittered(real: np.ndarray, n: int, seed: int = 0, noise: float = 0.35) -> np.ndarray:
    """n unit vectors: `real` itself, then jittered copies of its rows (for rows past the
    embedded ones: a stand-in with the same distribution, no model pass)."""
    if n <= len(real):
        return real[:n]
    rng = np.random.default_rng(seed)
    extra = real[np.arange(len(real), n) % len(real)]
    extra = extra + rng.normal(0, noise / np.sqrt(real.shape[1]), extra.shape).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.concatenate([real, extra.astype(np.float32)])


def _checkpoint(store: Any) -> None:
    """Fold SQLite's WAL into the database file, so the file size is the data's."""
    conn = getattr(store, "conn", None)
    if conn is not None and hasattr(conn, "execute") and "sqlite" in type(conn).__module__:
        with getattr(store, "lock", None) or _nullcontext():
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _pg_bytes(store: Any) -> int:
    """Postgres: the size of LangGraph's `store` table with its indexes and TOAST."""
    # on a connection of the store's own pool (dead rows of earlier sizes count until autovacuum)
    with store.conn.connection() as conn:
        row = conn.execute("SELECT pg_total_relation_size('store')").fetchone()
    return int(row[0] if isinstance(row, tuple) else next(iter(row.values())))


@contextmanager
def _nullcontext():
    yield


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else 0


# ------------------------------------------------------------------------------ VARS turns


def run_vars(config: VARSConfig, embedder: Any, notes: Sequence[tuple[str, str]],
             embs: np.ndarray, queries: Sequence[str], workdir: Path, seed: int = 0,
             progress: bool = True,
             cond_embs: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Build one user's memory with len(notes) cards and time turns through the real nodes
    (`cond_embs`: condition -> vector, stored with the cards; None: cards without them)."""
    from langchain_core.messages import HumanMessage

    from vars_langgraph.engine import VARSEngine
    from vars_langgraph.learning.policy import UserVector
    from vars_langgraph.nodes import make_augment, make_rerank, make_retrieve, make_reward, make_update
    from vars_langgraph.nodes.generate import pending_record
    from vars_langgraph.storage import open_store

    n = len(notes)
    out: dict[str, Any] = {"cards": n}
    store = open_store(config)
    engine = VARSEngine(config, store, index_dir=workdir / "index", embedder=embedder,
                        extractor=_NoExtractor(), chat_model=None)
    engine.memory.forget_user(USER)  # a shared database (Postgres) may hold an earlier size
    t0 = time.perf_counter()
    for i in range(0, n, 2000):  # cards made per batch: 100k cards with float lists are GBs
        _put(engine, USER, notes[i:i + 2000], embs[i:i + 2000], cond_embs)
    out["write_cards_s"] = round(time.perf_counter() - t0, 3)
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    ui = engine.index.get(USER)  # first build: read every card, build FAISS, save the file
    out["index_build_s"] = round(time.perf_counter() - t0, 3)
    gc.collect()
    out["rss_index_mb"] = round(rss_mb() - rss0, 1)
    out["faiss_bytes"] = int(ui.index.ntotal * getattr(ui.index, "code_size", ui.index.d * 4))
    out["index_type"] = type(ui.index).__name__
    out["ram_bytes_per_card"] = round(ui.nbytes / max(n, 1), 1)  # the LRU's accounting
    out["rss_bytes_per_card"] = round(out["rss_index_mb"] * 2**20 / max(n, 1), 1)
    del ui
    loads, opens = [], []
    for _ in range(3):  # cold user in a warm process: from the index file, then from the store
        engine.index.invalidate(USER)
        t0 = time.perf_counter()
        engine.index.get(USER)
        loads.append(time.perf_counter() - t0)
    out["index_load_s"] = round(min(loads), 4)
    out["index_load_s_all"] = [round(x, 4) for x in loads]
    out["index_file_bytes"] = _dir_size(workdir / "index")
    for _ in range(3):
        engine.index.invalidate(USER, remove_files=True)
        t0 = time.perf_counter()
        engine.index.get(USER)
        opens.append(time.perf_counter() - t0)
    out["index_rebuild_s"] = round(min(opens), 4)
    out["index_rebuild_s_all"] = [round(x, 4) for x in opens]
    _checkpoint(store)
    out["storage"] = "sqlite" if config.storage == "sqlite" else "postgres"
    out["store_bytes"] = (_dir_size(Path(config.data_path)) - _dir_size(workdir / "index")
                          if config.storage == "sqlite" else _pg_bytes(store))
    out["disk_bytes_per_card"] = round(out["store_bytes"] / max(n, 1), 1)
    out["index_file_bytes_per_card"] = round(out["index_file_bytes"] / max(n, 1), 1)
    # a user vector that has learned something, so the policy does real work
    rng = np.random.default_rng(seed)
    dim = config.policy.item_dim
    vec = UserVector(rng.normal(0, 0.05, dim).astype(np.float32),
                     rng.normal(0, 0.05, dim).astype(np.float32), baseline=0.1, updates=10,
                     session_id="bench-thread")
    engine.save_vector(USER, vec)
    retrieve, rerank = make_retrieve(engine), make_rerank(engine)
    augment, reward, update = make_augment(engine), make_reward(engine), make_update(engine)
    cfg = {"configurable": {"user_id": USER, "thread_id": "bench-thread"}}
    stage: dict[str, list[float]] = {s: [] for s in (*STAGES, "feedback", "pending")}
    per_cand: list[float] = []
    s0_ms: list[float] = []
    from tqdm import tqdm

    engine.embed_query("warm-up")  # first call pays lazy initialisation
    with timed_base_scores(s0_ms):
        for q in tqdm(queries, desc=f"turns @ {n} cards", unit="turn", disable=not progress,
                      dynamic_ncols=True):
            state: dict[str, Any] = {"messages": [HumanMessage(q)], "query": q}
            t0 = time.perf_counter()
            engine.embed_query(q)  # once per turn; reward and retrieve reuse it (engine cache)
            t1 = time.perf_counter()
            if engine.memory.get_pending(USER, "bench-thread"):
                state.update(reward(state, cfg, None))
                state.update(update(state, cfg, None))
            t2 = time.perf_counter()
            state.update(retrieve(state, cfg, None))
            t3 = time.perf_counter()
            before = len(s0_ms)
            state.update(rerank(state, cfg, None))
            t4 = time.perf_counter()
            state.update(augment(state, cfg))
            t5 = time.perf_counter()
            engine.memory.put_pending(USER, "bench-thread", pending_record(engine, state, "ok"))
            t6 = time.perf_counter()
            s0 = s0_ms[-1] if len(s0_ms) > before else 0.0
            stage["embed"].append((t1 - t0) * 1000)
            stage["feedback"].append((t2 - t1) * 1000)
            stage["search"].append((t3 - t2) * 1000)
            stage["rerank"].append(s0)
            stage["policy"].append((t4 - t3) * 1000 - s0)
            stage["augment"].append((t5 - t4) * 1000)
            stage["pending"].append((t6 - t5) * 1000)
            k = len(state.get("candidates", []))
            if k:
                per_cand.append(s0 / k)
    overhead = [stage["embed"][i] + stage["search"][i] + stage["policy"][i] + stage["augment"][i]
                for i in range(len(queries))]
    out["stages_ms"] = {s: pct(v) for s, v in stage.items()}
    out["overhead_ms"] = pct(overhead)
    out["overhead_with_rerank_ms"] = pct([o + r for o, r in zip(overhead, stage["rerank"],
                                                                  strict=True)])
    out["rerank_per_candidate_ms"] = pct(per_cand)
    out["reranker"] = config.reranker.backend
    # conditions the rerank node's gate embedded during the turns (cards stored without one)
    out["condition_embeds"] = (engine.condition_embedder.misses
                               if "condition_embedder" in engine.__dict__ else 0)
    conn = getattr(store, "conn", None)
    if conn is not None:
        conn.close()
    return out


def run_many(config: VARSConfig, embedder: Any, notes: Sequence[tuple[str, str]],
             embs: np.ndarray, queries: Sequence[str], users: int, workdir: Path,
             seed: int = 0, progress: bool = True,
             cond_embs: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """`users` users with len(notes) cards each in one store and one process: write them, then
    time turns for users whose entry is in the LRU (warm) and users who are not (cold: opened
    from the store or index file during the turn), under the configured byte bound."""
    from langchain_core.messages import HumanMessage
    from tqdm import tqdm

    from vars_langgraph.engine import VARSEngine
    from vars_langgraph.nodes import make_augment, make_rerank, make_retrieve
    from vars_langgraph.storage import open_store

    n = len(notes)
    out: dict[str, Any] = {"users": users, "cards_per_user": n, "total_cards": users * n,
                           "cache_mb": config.cache.index_max_mb}
    store = open_store(config)
    engine = VARSEngine(config, store, index_dir=workdir / "index", embedder=embedder,
                        extractor=_NoExtractor(), chat_model=None)
    uids = [f"user-{i:05d}" for i in range(users)]
    t0 = time.perf_counter()
    for u in tqdm(uids, desc=f"writing {users:,} users x {n:,} cards", disable=not progress,
                  dynamic_ncols=True):
        for i in range(0, n, 2000):
            _put(engine, u, notes[i:i + 2000], embs[i:i + 2000], cond_embs)
    out["write_s"] = round(time.perf_counter() - t0, 2)
    _checkpoint(store)
    out["store_bytes_per_card"] = round(_dir_size(Path(config.data_path)) / (users * n), 1)
    retrieve, rerank, augment = make_retrieve(engine), make_rerank(engine), make_augment(engine)
    engine.embed_query("warm-up")
    rng = np.random.default_rng(seed)
    rss0 = rss_mb()
    hot = uids[: max(1, min(len(uids) // 10, 8))]  # a few active users
    for u in hot:
        engine.index.get(u)
    kinds: dict[str, dict[str, list[float]]] = {
        k: {"overhead": [], "search": [], "open": []} for k in ("warm", "cold")}
    cold_pool = [u for u in uids if u not in hot]
    rng.shuffle(cold_pool)
    bar = tqdm(total=len(queries), desc=f"turns, {users:,} users", disable=not progress,
               dynamic_ncols=True)
    for i, q in enumerate(queries):
        kind = "cold" if (i % 2 and cold_pool) else "warm"
        u = cold_pool.pop() if kind == "cold" else hot[int(rng.integers(len(hot)))]
        if kind == "cold":  # a user this process has not seen (or has evicted)
            engine.index.invalidate(u)
        cfg = {"configurable": {"user_id": u, "thread_id": f"t-{u}"}}
        state: dict[str, Any] = {"messages": [HumanMessage(q)], "query": q}
        t0 = time.perf_counter()
        engine.embed_query(q)
        t1 = time.perf_counter()
        engine.index.get(u)  # the version check, and the open when cold
        t2 = time.perf_counter()
        state.update(retrieve(state, cfg, None))
        t3 = time.perf_counter()
        state.update(rerank(state, cfg, None))
        state.update(augment(state, cfg))
        t4 = time.perf_counter()
        kinds[kind]["overhead"].append((t4 - t0) * 1000)
        kinds[kind]["open"].append((t2 - t1) * 1000)
        kinds[kind]["search"].append((t3 - t2) * 1000)
        bar.update(1)
    bar.close()
    gc.collect()
    out["rss_growth_mb"] = round(rss_mb() - rss0, 1)
    out["turns"] = {k: {m: pct(v) for m, v in d.items()} for k, d in kinds.items()}
    out["index_cache"] = engine.index.stats()
    conn = getattr(store, "conn", None)
    if conn is not None:
        conn.close()
    return out


class _NoExtractor:
    def extract(self, turns: Any) -> list[Any]:
        return []


# ------------------------------------------------------------------------------ FAISS growth


def faiss_growth(matrix: np.ndarray, qvecs: np.ndarray, k: int, nprobe: int = 16) -> dict[str, Any]:
    """Search time of FAISS flat (float32), of the float16 flat index VARS uses, and of IVF
    over the same vectors, and IVF's recall@k vs flat."""
    import faiss

    n, d = matrix.shape
    k = min(k, n)
    flat = faiss.IndexFlatIP(d)
    flat.add(matrix)
    res: dict[str, Any] = {"cards": n, "k": k}
    tf, truth = [], []
    for q in qvecs:
        t0 = time.perf_counter()
        _, idx = flat.search(q.reshape(1, -1), k)
        tf.append((time.perf_counter() - t0) * 1000)
        truth.append(set(idx[0].tolist()))
    res["flat_ms"] = pct(tf)
    from vars_langgraph.memory.index import flat_index

    sq, ts = flat_index(matrix), []  # the float16 index VARS itself searches
    for q in qvecs:
        t0 = time.perf_counter()
        sq.search(q.reshape(1, -1), k)
        ts.append((time.perf_counter() - t0) * 1000)
    res["fp16_ms"] = pct(ts)
    nlist = max(1, int(4 * np.sqrt(n)))  # the engine's rule (memory/index.py)
    if n >= nlist:
        quant = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        ivf.train(matrix)
        ivf.add(matrix)
        res["ivf_build_s"] = round(time.perf_counter() - t0, 3)
        ivf.nprobe = min(nprobe, nlist)
        ti, rec = [], []
        for q, tr in zip(qvecs, truth, strict=True):
            t0 = time.perf_counter()
            _, idx = ivf.search(q.reshape(1, -1), k)
            ti.append((time.perf_counter() - t0) * 1000)
            rec.append(len(tr & set(idx[0].tolist())) / max(1, len(tr)))
        res.update(ivf_ms=pct(ti), ivf_recall_at_k=round(float(np.mean(rec)), 4), nlist=nlist,
                   nprobe=ivf.nprobe)
    else:
        res.update(ivf_ms=None, ivf_recall_at_k=None, nlist=nlist,
                   ivf_note="too few cards to train IVF")
    return res


# ------------------------------------------------------------------------------ baselines


def run_basestore(notes: Sequence[tuple[str, str]], embs: np.ndarray, queries: Sequence[str],
                  qvecs: np.ndarray, embedder: Any, workdir: Path, limit: int,
                  langmem: bool = True) -> dict[str, Any]:
    """`SqliteStore` with an embedding index (sqlite-vec) over the same notes and vectors;
    `store.search(ns, query=..., limit=k)`; LangMem's search tool over the same store."""
    from langgraph.store.base import PutOp
    from langgraph.store.sqlite import SqliteStore

    from vars_langgraph.types import Preference

    texts = [Preference(condition=c, action=a).note for c, a in notes]
    lookup = {t: v for t, v in zip(texts, embs, strict=True)}
    lookup.update({q: v for q, v in zip(queries, qvecs, strict=True)})

    def embed(batch: Sequence[str]) -> list[list[float]]:
        missing = [t for t in batch if t not in lookup]
        if missing:
            for t, v in zip(missing, embedder.embed_documents(missing), strict=True):
                lookup[t] = np.asarray(v, np.float32)
        return [lookup[t].tolist() for t in batch]

    workdir.mkdir(parents=True, exist_ok=True)
    sqlite_mod, why = sqlite_with_extensions()
    if sqlite_mod is None:
        return {"cards": len(texts), "available": False, "reason": why}
    conn = sqlite_mod.connect(str(workdir / "basestore.sqlite"), check_same_thread=False,
                              isolation_level=None)
    store = SqliteStore(conn, index={"dims": int(embedder.dim), "embed": embed, "fields": ["note"]})
    store.setup()
    ns = ("bench", USER)
    out: dict[str, Any] = {"cards": len(texts), "available": True, "sqlite": why}
    t0 = time.perf_counter()
    for i in range(0, len(texts), 2000):
        store.batch([PutOp(ns, f"c{j}", {"note": texts[j]}) for j in range(i, min(i + 2000, len(texts)))])
    out["write_cards_s"] = round(time.perf_counter() - t0, 3)
    store.search(ns, query=queries[0], limit=limit)  # warm-up
    ts = []
    for q in queries:
        t0 = time.perf_counter()
        store.search(ns, query=q, limit=limit)
        ts.append((time.perf_counter() - t0) * 1000)
    out["search_ms"] = pct(ts)
    out["store_bytes"] = _dir_size(workdir)
    if langmem:
        out["langmem"] = run_langmem(store, ns, queries, limit)
    conn.close()
    return out


def sqlite_with_extensions() -> tuple[Any, str]:
    """A DB-API sqlite module that can load sqlite-vec (SqliteStore's vector index needs it):
    the standard library's when its SQLite allows extensions, else `pysqlite3` (PyPI
    `pysqlite3-binary`); (None, reason) when neither can."""
    import sqlite3

    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3, f"sqlite3 {sqlite3.sqlite_version}"
    try:
        from pysqlite3 import dbapi2
    except ImportError:
        return None, ("this Python's sqlite3 cannot load extensions and pysqlite3 is not "
                      "installed (pip install pysqlite3-binary)")
    return dbapi2, f"pysqlite3 (SQLite {dbapi2.sqlite_version})"


def langmem_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("langmem")
    except Exception:  # noqa: BLE001 - not installed
        return None


def run_langmem(store: Any, ns: tuple[str, ...], queries: Sequence[str], limit: int) -> dict[str, Any]:
    ver = langmem_version()
    if ver is None:
        return {"available": False, "reason": "langmem is not installed (pip install langmem)"}
    try:
        from langmem import create_search_memory_tool

        tool = create_search_memory_tool(namespace=ns, store=store)
        tool.invoke({"query": queries[0], "limit": limit})  # warm-up
        ts = []
        for q in queries:
            t0 = time.perf_counter()
            tool.invoke({"query": q, "limit": limit})
            ts.append((time.perf_counter() - t0) * 1000)
    except Exception as e:  # noqa: BLE001 - report, do not fail the benchmark
        return {"available": False, "version": ver, "reason": f"{type(e).__name__}: {e}"}
    return {"available": True, "version": ver, "search_ms": pct(ts)}


# ------------------------------------------------------------------------------ report


def _f(v: Any, nd: int = 2) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _before_after(res: dict[str, Any]) -> list[str]:
    """The issue-15 rows from before beside this run's, for the sizes both have."""
    rows = [r for r in res["vars"] if r["cards"] in BEFORE]
    if not rows:
        return []
    out = ["", "Before (issue 15, idle machine) -> this run (ms p50 / p95; KB per card):", "",
           "| cards | overhead | VARS search | raw FAISS flat | RAM KB/card | disk KB/card "
           "(store + index file) | cold open (s) |", "|---|---|---|---|---|---|---|"]
    flat = {g["cards"]: g["flat_ms"] for g in res.get("faiss", [])}
    for r in rows:
        b, s, o = BEFORE[r["cards"]], r["stages_ms"]["search"], r["overhead_ms"]
        f = flat.get(r["cards"]) or {"p50": None, "p95": None}
        ram = r.get("rss_bytes_per_card", 0) / 1024
        disk = (r.get("disk_bytes_per_card", 0) + r.get("index_file_bytes_per_card", 0)) / 1024
        out.append(
            f"| {r['cards']:,} | {b['overhead']} -> {_f(o['p50'])} / {_f(o['p95'])} | "
            f"{b['search']} -> {_f(s['p50'])} / {_f(s['p95'])} | {b['faiss']} -> "
            f"{_f(f['p50'])} / {_f(f['p95'])} | {_f(b['ram_kb'], 1)} -> {ram:.1f} | "
            f"{_f(b['disk_kb'], 1)} -> {disk:.1f} | {b['open_s']} -> {r['index_load_s']:.3f} |")
    return out


def many_report(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [f"# vars-langgraph bench, many users ({env['cpus']} CPUs, load average "
             f"{env['loadavg_start']} at start, {env.get('loadavg_end')} at end; LRU bound "
             f"{res['settings'].get('cache_mb')} MB; vectors: {res['settings'].get('vectors')})",
             "", "Turns without LLM calls alternate between a few active users (warm: entry in the "
             "LRU) and users this process has not seen (cold: opened during the turn). ms, "
             "p50 / p95:", "",
             "| users x cards | warm overhead | cold overhead | cold open | RSS growth (MB) | "
             "entries held / MB | hits / misses / evictions | store B/card | write (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["many"]:
        w, c, st = r["turns"]["warm"], r["turns"]["cold"], r["index_cache"]
        lines.append(
            f"| {r['users']:,} x {r['cards_per_user']:,} | {_f(w['overhead']['p50'])} / "
            f"{_f(w['overhead']['p95'])} | {_f(c['overhead']['p50'])} / {_f(c['overhead']['p95'])}"
            f" | {_f(c['open']['p50'])} / {_f(c['open']['p95'])} | {r['rss_growth_mb']:.1f} | "
            f"{st['users']} / {st['bytes'] / 2**20:.1f} | {st['hits']} / {st['misses']} / "
            f"{st['evictions']} | {r['store_bytes_per_card']:,.0f} | {r['write_s']:.1f} |")
    return "\n".join(lines) + "\n"


def markdown_report(res: dict[str, Any]) -> str:
    if res.get("many") is not None:
        return many_report(res)
    env = res["environment"]
    lines = [f"# vars-langgraph bench ({env['cpus']} CPUs, {env['machine']}, load average "
             f"{env['loadavg_start']} at start, {env['loadavg_end']} at end; threads: torch "
             f"{env.get('torch_threads')}, FAISS {env.get('faiss_threads')})", "",
             "Per-stage latency of one turn without LLM calls, one user, ms (p50 / p95):", "",
             "| cards | embed | search | rerank | policy | augment | overhead* p50 | overhead* p95 |"
             " target p95 < 50 ms | + rerank p95 | rerank / candidate | feedback (reward+update) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["vars"]:
        s = r["stages_ms"]
        ok = r["overhead_ms"]["p95"] is not None and r["overhead_ms"]["p95"] < 50
        lines.append(
            f"| {r['cards']:,} | " + " | ".join(
                f"{_f(s[k]['p50'])} / {_f(s[k]['p95'])}" for k in STAGES) +
            f" | {_f(r['overhead_ms']['p50'])} | {_f(r['overhead_ms']['p95'])} | "
            f"{'yes' if ok else 'no'} | {_f(r['overhead_with_rerank_ms']['p95'])} | "
            f"{_f(r['rerank_per_candidate_ms']['p50'], 4)} | "
            f"{_f(s['feedback']['p50'])} / {_f(s['feedback']['p95'])} |")
    lines += ["", "\\* overhead = embed + search + policy + augment (per turn, then p50/p95); "
              f"reranker backend: {res['vars'][0]['reranker'] if res['vars'] else '–'}.", "",
              "Memory and index maintenance (bytes per card: RAM = the index entry's accounting "
              "/ measured RSS growth; disk = SQLite store after a WAL checkpoint / index file "
              "cache; cold open = a user not in the process cache, best of 3):", "",
              "| cards | RAM B/card (entry / RSS) | disk B/card (store / index file) | "
              "RSS of loaded index + cards (MB) | store on disk (MB) | write cards (s) | "
              "first open (s) | cold open from index file (ms) | cold open from store alone (ms) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in res["vars"]:
        lines.append(f"| {r['cards']:,} | {r.get('ram_bytes_per_card', 0):,.0f} / "
                     f"{r.get('rss_bytes_per_card', 0):,.0f} | "
                     f"{r.get('disk_bytes_per_card', 0):,.0f} / "
                     f"{r.get('index_file_bytes_per_card', 0):,.0f} | {r['rss_index_mb']:.1f} | "
                     f"{r['store_bytes'] / 2**20:.1f} | {r['write_cards_s']:.2f} | "
                     f"{r['index_build_s']:.2f} | {r['index_load_s'] * 1000:.0f} | "
                     f"{r['index_rebuild_s'] * 1000:.0f} |")
    lines += _before_after(res)
    lines += ["", "Search-time growth, FAISS flat vs IVF (ms, p50 / p95; top-K = "
              f"{res['settings']['top_k']}):", "",
              "| cards | flat | flat float16 (VARS's index) | IVF | IVF nlist / nprobe | "
              "IVF recall@K | IVF build (s) |",
              "|---|---|---|---|---|---|---|"]
    for g in res["faiss"]:
        ivf = g.get("ivf_ms")
        sq = g.get("fp16_ms") or {"p50": None, "p95": None}
        lines.append(f"| {g['cards']:,} | {_f(g['flat_ms']['p50'], 3)} / {_f(g['flat_ms']['p95'], 3)}"
                     f" | {_f(sq['p50'], 3)} / {_f(sq['p95'], 3)}"
                     f" | {(_f(ivf['p50'], 3) + ' / ' + _f(ivf['p95'], 3)) if ivf else '–'} | "
                     f"{g['nlist']} / {g.get('nprobe', '–')} | {_f(g.get('ivf_recall_at_k'), 3)} | "
                     f"{_f(g.get('ivf_build_s'))} |")
    if res.get("baselines"):
        lm = res["baselines"][0].get("langmem", {})
        lm_head = f"LangMem search tool ({lm.get('version')})" if lm.get("available") else \
            "LangMem search tool"
        lines += ["", "Side by side, same cards, same vectors, same run (ms, p50 / p95; baselines "
                  "get the query vector precomputed, so compare them with VARS search, and with "
                  "VARS overhead minus embed):", "",
                  f"| cards | VARS search | VARS overhead - embed | VARS + rerank - embed | "
                  f"BaseStore.search (SqliteStore + sqlite-vec) | {lm_head} | write cards: VARS / "
                  "SqliteStore (s) |", "|---|---|---|---|---|---|---|"]
        for r, b in zip(res["vars"], res["baselines"], strict=True):
            if not b.get("available", True):
                lines.append(f"| {r['cards']:,} | – | – | – | n/a: {b.get('reason')} | – | – |")
                continue
            s = r["stages_ms"]
            o = [r["overhead_ms"][p] - s["embed"][p] if r["overhead_ms"][p] is not None else None
                 for p in ("p50", "p95")]
            o2 = [r["overhead_with_rerank_ms"][p] - s["embed"][p] for p in ("p50", "p95")]
            lmr = b.get("langmem", {})
            lms = (f"{_f(lmr['search_ms']['p50'])} / {_f(lmr['search_ms']['p95'])}"
                   if lmr.get("available") else "n/a")
            lines.append(f"| {r['cards']:,} | {_f(s['search']['p50'])} / {_f(s['search']['p95'])} | "
                         f"{_f(o[0])} / {_f(o[1])} | {_f(o2[0])} / {_f(o2[1])} | "
                         f"{_f(b['search_ms']['p50'])} / {_f(b['search_ms']['p95'])} | {lms} | "
                         f"{r['write_cards_s']:.2f} / {b['write_cards_s']:.2f} |")
        if not lm.get("available"):
            lines += ["", f"LangMem: {lm.get('reason', 'not run')}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vars-langgraph bench",
                                 description="Latency and scale of the VARS memory, without LLMs.")
    ap.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES),
                    help="cards per user, comma-separated (default 100,1000,10000,100000)")
    ap.add_argument("--queries", type=int, default=200, help="timed turns per size (200)")
    ap.add_argument("--config", help="VARS YAML config (default: built-in CPU defaults)")
    ap.add_argument("--out", default="results/bench", help="output directory")
    ap.add_argument("--cache-dir", default=None,
                    help="where embedded notes are cached (default <out>/cache)")
    ap.add_argument("--no-baselines", action="store_true",
                    help="skip BaseStore.search and LangMem")
    ap.add_argument("--no-langmem", action="store_true", help="skip LangMem's search tool")
    ap.add_argument("--batch-size", type=int, default=256, help="embedding batch size")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--faiss-threads", type=int, default=None,
                    help="FAISS OpenMP threads (default: FAISS's own; 1 avoids OpenMP "
                         "oversubscription when other processes load the CPU)")
    ap.add_argument("--storage", default=None,
                    help="sqlite (default) or a postgresql:// URL (the VARS side of the bench)")
    ap.add_argument("--many", type=int, default=0, metavar="U",
                    help="many-users variant: U users with each size's cards in one process")
    ap.add_argument("--cache-mb", type=float, default=None,
                    help="cache.index_max_mb (the LRU bound of per-user entries)")
    ap.add_argument("--embed-max", type=int, default=None, metavar="M",
                    help="embed only the first M notes; jittered copies of them beyond")
    ap.add_argument("--no-condition-vectors", action="store_true",
                    help="write the cards without their condition vectors (as cards written "
                         "before they were stored: the gate embeds conditions during turns)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--keep-data", action="store_true", help="keep the stores in <out>/work")
    return ap


def _threads(lib: str) -> int | None:
    try:
        if lib == "torch":
            import torch

            return int(torch.get_num_threads())
        import faiss

        return int(faiss.omp_get_max_threads())
    except Exception:  # noqa: BLE001 - informational only
        return None


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run_bench(args: argparse.Namespace, embedder: Any = None,
              log_fn: Callable[[str], None] = print) -> dict[str, Any]:
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        raise ValueError("--sizes must be positive integers")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache_dir) if args.cache_dir else out_dir / "cache"
    base = VARSConfig.from_yaml(args.config) if args.config else VARSConfig.from_dict({})
    if embedder is None:
        from vars_langgraph.models.embedder import load_embedder

        embedder = load_embedder(base.embedding)
    progress = not args.no_progress
    res: dict[str, Any] = {
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "cpus": os.cpu_count(), "loadavg_start": _loadavg(),
                        "embedding_model": base.embedding.model, "langmem": langmem_version(),
                        "torch_threads": _threads("torch"), "faiss_threads": _threads("faiss")},
        "settings": {"sizes": sizes, "queries": args.queries, "top_k": base.retrieval.top_k,
                     "select_k": base.retrieval.select_k, "seed": args.seed,
                     "flat_index_max": base.retrieval.flat_index_max},
        "vars": [], "faiss": [], "baselines": [],
    }
    if args.cache_mb is not None:
        base.cache.index_max_mb = args.cache_mb
    notes = synthetic_notes(sizes[-1], args.seed)
    from vars_langgraph.types import Preference

    note_texts = [Preference(condition=c, action=a).note for c, a in notes]
    m = min(args.embed_max or len(note_texts), len(note_texts))
    embs = embed_cached(embedder, note_texts[:m], cache, f"notes-s{args.seed}-{m}",
                        batch=args.batch_size, progress=progress, family=f"notes-s{args.seed}")
    embs = jittered(embs, len(note_texts), args.seed)
    res["settings"].update(embedded_notes=m, cache_mb=base.cache.index_max_mb,
                           vectors="real" if m == len(note_texts) else
                           f"real for the first {m:,} notes, jittered copies beyond")
    cond_embs = None
    if not getattr(args, "no_condition_vectors", False):
        conds = sorted({c for c, _ in notes})
        cond_embs = dict(zip(conds, embed_cached(
            embedder, conds, cache, f"conditions-s{args.seed}-{len(conds)}",
            batch=args.batch_size, progress=False), strict=True))
    res["settings"]["condition_vectors"] = "stored" if cond_embs is not None else "none"
    queries = synthetic_queries(args.queries, args.seed + 1)
    qvecs = embed_cached(embedder, queries, cache, f"queries-{len(queries)}-s{args.seed}",
                         batch=args.batch_size, progress=False)
    work = out_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    if args.many:
        res["many"] = []
        for n in sizes:
            d = work / f"many-{args.many}x{n}"
            cfg = base.model_copy(deep=True)
            cfg.data_dir, cfg.storage = str(d), "sqlite"
            log_fn(f"[bench] {args.many:,} users x {n:,} cards")
            res["many"].append(run_many(cfg, embedder, notes[:n], embs[:n], queries, args.many, d,
                                        args.seed, progress, cond_embs))
            if not args.keep_data:
                shutil.rmtree(d, ignore_errors=True)
            res["environment"]["loadavg_end"] = _loadavg()
            _write(out_dir, res)
        shutil.rmtree(work, ignore_errors=True)
        return res
    for n in sizes:
        d = work / f"vars-{n}"
        cfg = base.model_copy(deep=True)
        cfg.data_dir, cfg.storage = str(d), args.storage or "sqlite"
        log_fn(f"[bench] {n:,} cards: VARS turns ({cfg.storage.split('@')[-1]})")
        r = run_vars(cfg, embedder, notes[:n], embs[:n], queries, d, args.seed, progress,
                     cond_embs)
        res["vars"].append(r)
        res["faiss"].append(faiss_growth(embs[:n], qvecs, base.retrieval.top_k))
        if not args.no_baselines:
            log_fn(f"[bench] {n:,} cards: BaseStore.search / LangMem")
            res["baselines"].append(run_basestore(
                notes[:n], embs[:n], queries, qvecs, embedder, work / f"basestore-{n}",
                base.retrieval.select_k, langmem=not args.no_langmem))
        if not args.keep_data:
            shutil.rmtree(d, ignore_errors=True)
            shutil.rmtree(work / f"basestore-{n}", ignore_errors=True)
        gc.collect()
        res["environment"]["loadavg_end"] = _loadavg()
        _write(out_dir, res)  # after every size: a long run keeps what it measured
    if not args.keep_data:
        shutil.rmtree(work, ignore_errors=True)
    res["environment"]["loadavg_end"] = _loadavg()
    _write(out_dir, res)
    return res


def _write(out_dir: Path, res: dict[str, Any]) -> None:
    (out_dir / "bench.json").write_text(json.dumps(res, indent=1))
    (out_dir / "bench.md").write_text(markdown_report(res))


def bench_main(argv: list[str] | None = None, *, embedder: Any = None) -> int:
    """Entry point of `vars-langgraph bench`. Returns a process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `vars-langgraph ... -- --opt`: the separator is not ours
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.faiss_threads:
        import faiss

        faiss.omp_set_num_threads(args.faiss_threads)
    try:
        run_bench(args, embedder=embedder,
                  log_fn=(lambda s: None) if args.no_progress else
                  (lambda s: print(s, file=sys.stderr)))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print((out / "bench.md").read_text())
    print(f"results: {out / 'bench.json'}")
    return 0

