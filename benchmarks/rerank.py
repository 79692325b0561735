"""Reranker benchmark: AUC and latency per (query, note) pair on the labelled rerank set.

    python benchmarks/rerank.py [--config vars.yaml] [--backends embedding,llm,cross_encoder]

AUC pooled over all pairs, and the mean of per-query AUCs (what matters for ranking one
user's candidates). Backends: the embedding cosine reranker, the LLM yes/no reranker on the
configured (default: local) LLM, and a cross-encoder when one loads offline.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vars_langgraph.config import VARSConfig  # noqa: E402
from vars_langgraph.models.embedder import load_embedder  # noqa: E402
from vars_langgraph.models.llm import resolve_llm  # noqa: E402
from vars_langgraph.models.reranker import (  # noqa: E402
    CrossEncoderReranker,
    EmbeddingReranker,
    LLMReranker,
)

DATA = ROOT / "vars_langgraph" / "data" / "rerank_labelled.jsonl"
CROSS_ENCODERS = (
    "cross-encoder/ms-marco-MiniLM-L6-v2",
    "BAAI/bge-reranker-base",
    "Qwen/Qwen3-Reranker-0.6B",
)


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """Probability that a relevant note outscores an irrelevant one (ties count half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def run_backend(name: str, score_fn: Any, data: list[dict[str, Any]]) -> dict[str, Any]:
    scores: list[float] = []
    labels: list[bool] = []
    per_query: list[float] = []
    top1: list[bool] = []
    elapsed = 0.0
    for item in tqdm(data, desc=name, unit="query"):
        notes = [n["note"] for n in item["notes"]]
        ys = [bool(n["relevant"]) for n in item["notes"]]
        t = time.perf_counter()
        s = [float(x) for x in score_fn(item["query"], notes)]
        elapsed += time.perf_counter() - t
        scores += s
        labels += ys
        a = auc(s, ys)
        if a is not None:
            per_query.append(a)
        top1.append(ys[max(range(len(s)), key=s.__getitem__)])
    pairs = len(scores)
    return {
        "backend": name,
        "auc_pooled": auc(scores, labels),
        "auc_per_query_mean": statistics.fmean(per_query) if per_query else None,
        "top1_relevant": sum(top1) / len(top1),
        "pairs": pairs,
        "latency_per_pair_s": elapsed / max(1, pairs),
        "latency_per_query_s": elapsed / max(1, len(data)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="VARS YAML config (default: CPU defaults)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(ROOT / "results" / "rerank.json"))
    ap.add_argument("--backends", default="embedding,llm,cross_encoder")
    ap.add_argument("--base-url", help="OpenAI-compatible endpoint for the LLM reranker")
    ap.add_argument("--cross-encoder", action="append", help="model name/path to try offline")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    cfg = VARSConfig.from_yaml(args.config)
    data = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    wanted = set(args.backends.split(","))
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}

    if "embedding" in wanted:
        emb = load_embedder(cfg.embedding)
        rr = EmbeddingReranker(emb, cfg.reranker.scale)
        emb.embed_documents(["warm up"])
        results.append(run_backend(f"embedding ({cfg.embedding.model})", rr.score, data))
        cache = {n["note"]: v for item in data for n, v in zip(
            item["notes"], emb.embed_documents([n["note"] for n in item["notes"]]), strict=True
        )}  # fmt: skip
        results.append(
            run_backend(
                "embedding, card vectors known",
                lambda q, notes: rr.score_embeddings(
                    emb.embed_query(q), [cache[n] for n in notes]
                ),
                data,
            )
        )
    if "llm" in wanted:
        llm_cfg = cfg.reranker.llm or cfg.llm
        if args.base_url:
            llm_cfg = llm_cfg.model_copy(update={"base_url": args.base_url})
        llm = resolve_llm(llm_cfg, cfg)
        rr_llm = LLMReranker(llm)
        rr_llm.score("warm up", ["When warming up, say yes."])
        label = f"llm yes/no ({cfg.local_server.model if not llm_cfg.base_url else llm.model})"
        results.append(run_backend(label, rr_llm.score, data))
    if "cross_encoder" in wanted:
        for name in args.cross_encoder or CROSS_ENCODERS:
            try:
                ce = CrossEncoderReranker(name, local_files_only=True)
            except Exception as e:  # noqa: BLE001 - report why it is not benchmarked
                skipped[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                continue
            results.append(run_backend(f"cross-encoder ({name})", ce.score, data))

    out = {"queries": len(data), "results": results, "skipped": skipped}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print("\n| reranker | AUC (pooled) | AUC (per query) | top-1 relevant | ms / pair |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['backend']} | {r['auc_pooled']:.3f} | {r['auc_per_query_mean']:.3f} | "
            f"{r['top1_relevant']:.0%} | {1000 * r['latency_per_pair_s']:.1f} |"
        )
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
