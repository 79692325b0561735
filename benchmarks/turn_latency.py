"""Per-node latency of one VARS turn on the CPU default stack (real server, SQLite, FAISS).

    python benchmarks/turn_latency.py [--turns 6] [--servers both|one|two]
        [--out results/turn_latency.json]

Times each node from LangGraph's `updates` stream (the gap between consecutive node outputs),
learning inline (`build_graph`'s default: this message's preferences are extracted before the
answer). `--servers both` (default) runs the same chat twice in one process on fresh data dirs:
first with one llama.cpp process for every role (`local_server.extractor_server: false`), then
with the extractor's own process (the default). p50/p95 of the turn time and the 1-minute load
average are reported beside each."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from vars_langgraph import VARSConfig, build_graph

MESSAGES = [
    "When you write code for me, I prefer Python with type hints.",
    "I prefer answers in bullet points.",
    "Write a function that checks if a number is prime.",
    "No, that's not what I asked.",
    "How do I brew green tea?",
    "Thanks, great. What about black tea?",
]


def run(extractor_server: bool, turns: int, max_tokens: int) -> dict:
    """One chat of `turns` messages on a fresh data dir; per-node and per-turn times."""
    cfg = VARSConfig.from_dict({"data_dir": tempfile.mkdtemp(prefix="vars-lat-"),
                                "llm": {"max_tokens": max_tokens, "temperature": 0.0},
                                "local_server": {"extractor_server": extractor_server}})
    graph = build_graph(cfg)
    graph.engine.chat_model  # noqa: B018 - start the servers before timing
    graph.engine.extractor  # noqa: B018
    graph.engine.embedder  # noqa: B018
    run_cfg = {"configurable": {"thread_id": "lat", "user_id": "bench"}}
    per_node: dict[str, list[float]] = {}
    totals = []
    for text in tqdm((MESSAGES * 10)[:turns], desc="one server" if not extractor_server
                     else "extractor's own server"):
        t0 = last = time.perf_counter()
        for ev in graph.stream({"messages": [("user", text)]}, run_cfg, stream_mode="updates"):
            now = time.perf_counter()
            for node in ev:
                per_node.setdefault(node, []).append(now - last)
            last = now
        totals.append(time.perf_counter() - t0)
    q = statistics.quantiles(totals, n=20, method="inclusive")
    return {"turn_mean_s": statistics.mean(totals), "turn_p50_s": statistics.median(totals),
            "turn_p95_s": q[18], "load_1m": os.getloadavg()[0], "turns_s": totals,
            "nodes": {n: {"mean_s": statistics.mean(v), "max_s": max(v)}
                      for n, v in per_node.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--turns", type=int, default=len(MESSAGES))
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--servers", choices=("both", "one", "two"), default="both")
    ap.add_argument("--out", default="results/turn_latency.json")
    args = ap.parse_args()
    modes = {"both": ["one", "two"], "one": ["one"], "two": ["two"]}[args.servers]
    out = {"max_tokens": args.max_tokens, "turns": args.turns,
           "runs": {m: run(m == "two", args.turns, args.max_tokens) for m in modes}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for mode, r in out["runs"].items():
        print(f"\n{mode} server process(es): turn p50 {r['turn_p50_s']:.2f} s, p95 "
              f"{r['turn_p95_s']:.2f} s, mean {r['turn_mean_s']:.2f} s (load {r['load_1m']:.2f})")
        print("| node | mean s | max s |\n|---|---|---|")
        for n, row in r["nodes"].items():
            print(f"| {n} | {row['mean_s']:.3f} | {row['max_s']:.3f} |")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
