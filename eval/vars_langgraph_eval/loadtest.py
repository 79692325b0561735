"""Load test: N concurrent simulated users against one store (Postgres or SQLite).

    loadtest_main(["--storage", "postgresql://...", "--users", "16", "--turns", "6"])

Each simulated user runs a scripted conversation (states preferences, asks questions, gives
negative feedback, starts a second session) in its own thread (or coroutine with `--async`),
all through one graph in this process, on the real embedder, FAISS and store. The chat model
is scripted with a fixed latency (`--llm-ms`) and the extractor is a keyword rule set, so the
numbers are the memory layer's, not an LLM's: **memory overhead** of a turn = its wall time
minus the time spent inside the chat model (everything VARS adds: the memory nodes, the
pending-feedback write, the checkpoints). Prints one JSON object (also `--out FILE`).

`--retrieval-bench` instead measures the dense retrieval step alone, the per-process FAISS
cache against pgvector through the store's own index, on Postgres, for several card counts:
warm (cache valid) and stale (another process just wrote a card for the user).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from vars_langgraph_eval.stats import summary

SCRIPT = [
    ("s1", "Hi! Please always use bullet points, and write python code when code is needed."),
    ("s1", "How does a hash map work?"),
    ("s1", "No, that's not what I asked, be short"),
    ("s1", "Write a function that merges two sorted lists"),
    ("s2", "What is the difference between TCP and UDP?"),
    ("s2", "Thanks, that is great"),
    ("s2", "Explain recursion to a beginner"),
    ("s2", "Give me an example with emojis please"),
]

RULES = {
    "bullet": ("when answering questions", "use bullet points"),
    "python": ("when writing code", "use Python with type hints"),
    "short": ("when explaining", "keep answers short"),
    "emoji": ("when chatting", "use emojis"),
}

TOPICS = ["databases", "cooking", "travel", "python", "music", "finance", "gardening", "math",
          "history", "fitness", "writing", "movies", "linux", "chess", "biology", "poetry"]
STYLES = ["use short sentences", "give one example", "cite sources", "use a table",
          "avoid jargon", "start with a summary", "use numbered steps", "be formal"]


class RuleExtractor:
    """Keyword rules instead of an LLM extractor (the load test measures memory, not LLMs)."""

    def extract(self, turns: Any) -> list[Any]:
        from vars_langgraph.types import Preference

        text = turns[-1][1].lower() if turns else ""
        return [Preference(condition=c, action=a, confidence=0.9)
                for k, (c, a) in RULES.items() if k in text]


def _scripted_chat(latency_s: float) -> Any:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    class TimedChat(FakeListChatModel):
        """Scripted answers after a fixed latency; records time spent per thread."""

        def _call(self, *args: Any, **kwargs: Any) -> str:
            t = time.perf_counter()
            if latency_s:
                time.sleep(latency_s)
            out = super()._call(*args, **kwargs)
            _LLM_TIME.add(time.perf_counter() - t)
            return out

    return TimedChat(responses=["- Sure.\n- Here is the answer, short and in bullets."])


class _ThreadTimer:
    """Chat-model time of the current turn: a context variable holding a list, which LangGraph's
    context copies (worker threads, ainvoke) share, so the nodes' time lands in the turn's list."""

    def __init__(self) -> None:
        import contextvars

        self.var: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
            "vars_llm_time", default=None)

    def start(self) -> list[float]:
        acc: list[float] = []
        self.var.set(acc)
        return acc

    def add(self, dt: float) -> None:
        acc = self.var.get()
        if acc is not None:
            acc.append(dt)


_LLM_TIME = _ThreadTimer()


def _summary(xs: list[float]) -> dict[str, float | None]:
    ms = [x * 1000 for x in xs]
    return {**summary(ms, 2), "max": round(max(ms), 2) if ms else None}


def _seed_cards(engine: Any, user: str, n: int, rng: np.random.Generator) -> None:
    from vars_langgraph.types import CardSource, Preference

    prefs = []
    for i in range(n):
        topic, style = TOPICS[i % len(TOPICS)], STYLES[int(rng.integers(len(STYLES)))]
        prefs.append(Preference(condition=f"when talking about {topic} (case {i})",
                                action=style, confidence=0.7))
    if prefs:
        engine.add_preferences(user, prefs, CardSource(thread_id="seed", turn=0, query="seed"))


def _build(args: argparse.Namespace, data_dir: str) -> Any:
    from vars_langgraph import VARSConfig, VARSEngine, build_graph
    from vars_langgraph.storage import open_checkpointer, open_store

    data: dict[str, Any] = {
        "data_dir": data_dir, "storage": args.storage,
        "max_concurrency": args.max_concurrency,
        "postgres": {"retrieval": args.retrieval, "pool_max": args.pool_max},
        "background": {"enabled": args.background},
        # the scripted answer repeats by design: an echo retry would double the simulated LLM time
        "prompt": {"retry_on_echo": False},
    }
    config = VARSConfig.from_yaml(args.config, **data) if args.config else \
        VARSConfig.from_dict(data)
    engine = VARSEngine(config, open_store(config), index_dir=os.path.join(data_dir, "index"),
                        extractor=RuleExtractor(), chat_model=_scripted_chat(args.llm_ms / 1000))
    return build_graph(config, engine=engine, checkpointer=open_checkpointer(config))


def _run_user(graph: Any, user: str, turns: int, tag: str) -> list[tuple[float, float, str]]:
    out = []
    for i in range(turns):
        session, text = SCRIPT[i % len(SCRIPT)]
        cfg = {"configurable": {"thread_id": f"{user}-{session}-{tag}-{i // len(SCRIPT)}",
                                "user_id": user}}
        acc = _LLM_TIME.start()
        t = time.perf_counter()
        err = ""
        try:
            graph.invoke({"messages": [("user", text)]}, cfg)
        except Exception as e:  # noqa: BLE001 - counted, reported
            err = repr(e)[:200]
        out.append((time.perf_counter() - t, sum(acc), err))
    return out


async def _arun_user(graph: Any, user: str, turns: int, tag: str) -> list[tuple[float, float, str]]:
    out = []
    for i in range(turns):
        session, text = SCRIPT[i % len(SCRIPT)]
        cfg = {"configurable": {"thread_id": f"{user}-{session}-{tag}-{i // len(SCRIPT)}",
                                "user_id": user}}
        acc = _LLM_TIME.start()
        t = time.perf_counter()
        err = ""
        try:
            await graph.ainvoke({"messages": [("user", text)]}, cfg)
        except Exception as e:  # noqa: BLE001
            err = repr(e)[:200]
        out.append((time.perf_counter() - t, sum(acc), err))
    return out


def run_load(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="vars-loadtest-")
    graph = _build(args, data_dir)
    engine = graph.engine
    run_id = uuid.uuid4().hex[:6]
    users = [f"lt-{run_id}-{i}" for i in range(args.users)]
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    engine.embedder.embed_query("warm up")
    for u in users:
        _seed_cards(engine, u, args.cards, rng)
    seed_s = time.perf_counter() - t
    # warm the process (imports, first graph run, caches) outside the measurement
    _run_user(graph, f"lt-{run_id}-warm", 2, "warm")

    t0 = time.perf_counter()
    if args.use_async:
        async def main() -> list[Any]:
            sem = asyncio.Semaphore(args.concurrency)

            async def one(u: str) -> Any:
                async with sem:
                    return await _arun_user(graph, u, args.turns, "run")

            return await asyncio.gather(*(one(u) for u in users))

        per_user = asyncio.run(main())
    else:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            per_user = list(pool.map(lambda u: _run_user(graph, u, args.turns, "run"), users))
    wall = time.perf_counter() - t0
    learner = engine.learner
    drain_s = 0.0
    if learner is not None:
        t = time.perf_counter()
        learner.drain(600)
        drain_s = time.perf_counter() - t

    rows = [r for rs in per_user for r in rs]
    ok = [r for r in rows if not r[2]]
    turn_s = [r[0] for r in ok]
    llm_s = [r[1] for r in ok]
    overhead = [max(0.0, r[0] - r[1]) for r in ok]
    kind = "postgres" if args.storage.startswith(("postgres://", "postgresql://")) else args.storage
    result = {
        "storage": kind, "retrieval": args.retrieval if kind == "postgres" else "faiss",
        "users": args.users, "turns_per_user": args.turns, "concurrency": args.concurrency,
        "async": args.use_async, "background": args.background,
        "max_concurrency": args.max_concurrency, "cards_per_user": args.cards,
        "llm_ms": args.llm_ms, "turns": len(rows), "errors": len(rows) - len(ok),
        "first_error": next((r[2] for r in rows if r[2]), None),
        "wall_s": round(wall, 3), "throughput_turns_per_s": round(len(ok) / wall, 2),
        "turn_ms": _summary(turn_s), "llm_time_ms": _summary(llm_s),
        "memory_overhead_ms": _summary(overhead),
        "background_drain_s": round(drain_s, 3) if learner is not None else None,
        "seed_s": round(seed_s, 2), "cpu_count": os.cpu_count(),
    }
    for obj in (engine.store, graph.checkpointer):
        getattr(obj, "close", lambda: None)()
    return result


# FAISS cache vs pgvector ----------------------------------------------------------------------
def run_retrieval_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Dense top-K of one user's cards: FAISS cache (version check + in-memory search) vs the
    store's pgvector index (one SQL query), warm and right after another process's write."""
    from vars_langgraph.memory.index import CardIndex
    from vars_langgraph.memory.store import UserMemory
    from vars_langgraph.storage.postgres import open_postgres_store
    from vars_langgraph.types import CardSource, PreferenceCard

    if not args.storage.startswith(("postgres://", "postgresql://")):
        raise SystemExit("--retrieval-bench needs --storage postgresql://...")
    dim, k, reps = args.dim, args.top_k, args.reps
    store = open_postgres_store(args.storage)
    if not store.has_pgvector():
        raise SystemExit("the server has no pgvector extension")
    store.retrieval = "pgvector"
    writer = UserMemory(store)  # "another process": writes cards straight to the store
    memory = UserMemory(store)
    faiss_index = CardIndex(memory, dim, None)
    store.enable_vectors(dim)
    vec_index = store.make_card_index(memory, dim, None, flat_max=200_000)
    rng = np.random.default_rng(0)
    run_id = uuid.uuid4().hex[:6]
    out: dict[str, Any] = {"dim": dim, "top_k": k, "reps": reps, "sizes": {}}

    def unit(n: int) -> np.ndarray:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def cards(user: str, n: int) -> list[PreferenceCard]:
        src = CardSource(thread_id="bench", turn=0, query="bench")
        return [PreferenceCard(id=uuid.uuid4().hex[:24], user_id=user, condition=f"c{i}",
                               action=f"a{i}", note=f"note {i} {uuid.uuid4().hex[:6]}",
                               confidence=0.5, sources=[src], embedding=e.tolist())
                for i, e in enumerate(unit(n))]

    def timed(index: Any, user: str, q: np.ndarray) -> float:
        t = time.perf_counter()
        index.search(user, q, k)
        return time.perf_counter() - t

    for n in args.sizes:
        user = f"rb-{run_id}-{n}"
        for i in range(0, n, 500):
            writer.put_cards(user, cards(user, min(500, n - i)))
        queries = unit(reps)
        faiss_index.search(user, queries[0], k)  # build the cache once
        same = [c.id for c, _ in faiss_index.search(user, queries[0], k)] == \
               [c.id for c, _ in vec_index.search(user, queries[0], k)]
        warm_f = [timed(faiss_index, user, q) for q in queries]
        warm_v = [timed(vec_index, user, q) for q in queries]
        stale_f, stale_v = [], []
        for q in queries[: max(3, reps // 10)]:
            writer.put_cards(user, cards(user, 1))  # another process adds a card
            stale_f.append(timed(faiss_index, user, q))  # rebuilds from the store
            writer.put_cards(user, cards(user, 1))
            stale_v.append(timed(vec_index, user, q))
        out["sizes"][str(n)] = {
            "same_top_k": same,
            "faiss_warm_ms": _summary(warm_f), "pgvector_ms": _summary(warm_v),
            "faiss_after_foreign_write_ms": _summary(stale_f),
            "pgvector_after_foreign_write_ms": _summary(stale_v),
        }
        writer.forget_user(user)
    store.close()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vars-langgraph loadtest", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage", default="sqlite",
                   help="sqlite (in --data-dir) or a postgresql:// URL (default sqlite)")
    p.add_argument("--config", help="a VARS YAML config (models etc.); --storage etc. override")
    p.add_argument("--data-dir", help="data dir (default: a new temp dir)")
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--turns", type=int, default=8, help="turns per user (script repeats)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="users running at once (default: all)")
    p.add_argument("--cards", type=int, default=20, help="cards seeded per user")
    p.add_argument("--llm-ms", type=float, default=0.0, help="scripted chat model latency")
    p.add_argument("--retrieval", choices=["faiss", "pgvector"], default="faiss")
    p.add_argument("--background", action="store_true", help="learn off the hot path")
    p.add_argument("--async", dest="use_async", action="store_true", help="ainvoke, not invoke")
    p.add_argument("--max-concurrency", type=int, default=8)
    p.add_argument("--pool-max", type=int, default=10)
    p.add_argument("--retrieval-bench", action="store_true",
                   help="measure FAISS cache vs pgvector retrieval instead (Postgres)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--top-k", type=int, default=74, help="top_k + max_global (default 64+10)")
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--out", help="also write the JSON here")
    return p


def loadtest_main(argv: list[str] | None = None) -> int:
    """CLI entry: parse `argv`, run, print JSON. Returns the exit code."""
    args = build_parser().parse_args(argv)
    args.concurrency = args.concurrency or args.users
    try:
        result = run_retrieval_bench(args) if args.retrieval_bench else run_load(args)
    except SystemExit as e:
        print(f"loadtest: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if not result.get("errors") else 1


if __name__ == "__main__":
    raise SystemExit(loadtest_main(sys.argv[1:]))


__all__ = ["loadtest_main", "run_load", "run_retrieval_bench"]
