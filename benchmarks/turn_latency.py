"""Per-node latency of one VARS turn on the CPU default stack (real server, SQLite, FAISS).

    python benchmarks/turn_latency.py [--turns 6] [--out results/turn_latency.json]

Times each node from LangGraph's `updates` stream (the gap between consecutive node outputs)."""

from __future__ import annotations

import argparse
import json
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--turns", type=int, default=len(MESSAGES))
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", default="results/turn_latency.json")
    args = ap.parse_args()
    cfg = VARSConfig.from_dict({"data_dir": tempfile.mkdtemp(prefix="vars-lat-"),
                                "llm": {"max_tokens": args.max_tokens, "temperature": 0.0}})
    graph = build_graph(cfg)
    graph.engine.chat_model  # noqa: B018 - start the server before timing
    graph.engine.embedder  # noqa: B018
    run_cfg = {"configurable": {"thread_id": "lat", "user_id": "bench"}}
    per_node: dict[str, list[float]] = {}
    totals = []
    for text in tqdm((MESSAGES * 10)[: args.turns], desc="turns"):
        t0 = last = time.perf_counter()
        for ev in graph.stream({"messages": [("user", text)]}, run_cfg, stream_mode="updates"):
            now = time.perf_counter()
            for node in ev:
                per_node.setdefault(node, []).append(now - last)
            last = now
        totals.append(time.perf_counter() - t0)
    rows = {n: {"mean_s": statistics.mean(v), "max_s": max(v)} for n, v in per_node.items()}
    out = {"turns": len(totals), "turn_mean_s": statistics.mean(totals), "nodes": rows,
           "max_tokens": args.max_tokens}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("| node | mean s | max s |\n|---|---|---|")
    for n, r in rows.items():
        print(f"| {n} | {r['mean_s']:.3f} | {r['max_s']:.3f} |")
    print(f"turn mean: {out['turn_mean_s']:.2f} s over {len(totals)} turns -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
