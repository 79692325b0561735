"""Reranker benchmark: AUC and latency per (query, note) pair on the labelled rerank set,
and the calibration fit that puts every backend's s0 in log P(useful | query, note) units.

    python benchmarks/rerank.py [--config vars.yaml] [--backends embedding,llm,cross_encoder]
    python benchmarks/rerank.py --fit [--config vars.yaml] [--out-map my_calibration.json]

AUC pooled over all pairs, and the mean of per-query AUCs (what matters for ranking one
user's candidates). Backends: the embedding cosine reranker, the LLM yes/no reranker on the
configured (default: local) LLM, and a cross-encoder when one loads offline.

`--fit` scores `vars_langgraph/data/calibration_labelled.jsonl` with the configured reranker
(`reranker.backend`, its model, `embedding.model`), fits P = sigmoid(a raw + b + c global) on the
fit queries, prints Brier / ECE / log loss on the held-out queries next to a constant
predictor, writes the map into `--out-map` (default: the shipped
vars_langgraph/data/calibration.json) under "<backend>:<model>", the report to
results/calibration.json and a reliability plot to results/calibration.png. Use the map with
`reranker.calibration_path: my_calibration.json`.
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
from vars_langgraph.learning import calibration as cal  # noqa: E402
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


def raw_scores(cfg: VARSConfig, rows: list[dict[str, Any]], base_url: str | None) -> Any:
    """The configured backend's raw score per labelled pair (cosine for the embedding one)."""
    import numpy as np

    backend = cfg.reranker.backend
    by_query: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_query.setdefault(r["query"], []).append(i)
    if backend in ("embedding", "none"):
        emb = load_embedder(cfg.embedding)
        scorer: Any = EmbeddingReranker(emb)
    elif backend == "llm":
        llm_cfg = cfg.reranker.llm or cfg.llm
        if base_url:
            llm_cfg = llm_cfg.model_copy(update={"base_url": base_url})
        scorer = LLMReranker(resolve_llm(llm_cfg, cfg))
    else:
        scorer = CrossEncoderReranker(cfg.reranker.model or "BAAI/bge-reranker-base",
                                      local_files_only=True)
    out = np.zeros(len(rows))
    for query, idx in tqdm(by_query.items(), desc=f"score ({backend})", unit="query"):
        out[idx] = scorer.score(query, [rows[i]["note"] for i in idx])
    return out


def reliability_plot(report: dict[str, Any], rows: list[dict[str, Any]], raw: Any,
                     key: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = cal.Calibration(report["a"], report["b"], report["c"], key, report["input"])
    held = np.array([cal.split_of(r["query"]) == "held_out" for r in rows])
    y = np.array([bool(r["useful"]) for r in rows])[held]
    p = m.prob(raw[held], np.array([bool(r["global"]) for r in rows])[held])
    bins = np.linspace(0, 1, 11)
    idx = np.minimum((p * 10).astype(int), 9)
    xs = [p[idx == i].mean() for i in range(10) if (idx == i).any()]
    ys = [y[idx == i].mean() for i in range(10) if (idx == i).any()]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot(xs, ys, "o-", label=f"held out (Brier {report['held_out']['brier']:.3f})")
    ax.set_xticks(bins[::2])
    ax.set(xlabel="predicted P(useful)", ylabel="share useful", title=f"calibration: {key}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fit_main(args: argparse.Namespace, cfg: VARSConfig) -> dict[str, Any]:
    rows = cal.load_labelled(args.labelled)
    key = cal.calibration_key(cfg)
    raw = raw_scores(cfg, rows, args.base_url)
    input_kind = "log_p" if cfg.reranker.backend == "llm" else "score"
    report = cal.fit_and_validate(key, rows, raw, input_kind)
    n_fit = sum(cal.split_of(r["query"]) == "fit" for r in {r["query"]: r for r in rows}.values())
    meta = {"labelled": Path(args.labelled).name, "fit_queries": n_fit,
            "held_out_queries": len({r["query"] for r in rows}) - n_fit}
    cal.write_map(args.out_map, key, report, meta)
    out = {"key": key, **meta, **report}
    res = Path(args.out).with_name("calibration.json") if args.out == str(DEFAULT_OUT) \
        else Path(args.out)
    res.parent.mkdir(parents=True, exist_ok=True)
    allres = json.loads(res.read_text()) if res.exists() else {}
    allres[key] = out
    res.write_text(json.dumps(allres, indent=2) + "\n")
    reliability_plot(report, rows, raw, key, res.with_suffix(".png"))
    h, f = report["held_out"], report["fit"]
    print(f"\n{key}: P(useful) = sigmoid({report['a']:.3f} raw + {report['b']:.3f} "
          f"+ {report['c']:.3f} global)  [{input_kind}]")
    print("| split | pairs | Brier | Brier (constant) | ECE | ECE (constant) | log loss | (constant) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in (("fit", f), ("held out", h)):
        print(f"| {name} | {m['pairs']} | {m['brier']:.3f} | {m['brier_constant']:.3f} | "
              f"{m['ece']:.3f} | {m['ece_constant']:.3f} | {m['log_loss']:.3f} | "
              f"{m['log_loss_constant']:.3f} |")
    print(f"wrote {args.out_map}, {res} and {res.with_suffix('.png')}")
    return out


DEFAULT_OUT = ROOT / "results" / "rerank.json"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="VARS YAML config (default: CPU defaults)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(DEFAULT_OUT),
                    help="results JSON (with --fit: default results/calibration.json)")
    ap.add_argument("--fit", action="store_true", help="fit the calibration map (see above)")
    ap.add_argument("--labelled", default=str(cal.LABELLED), help="labelled pairs for --fit")
    ap.add_argument("--out-map", default=str(cal.SHIPPED), help="calibration file to write")
    ap.add_argument("--backends", default="embedding,llm,cross_encoder")
    ap.add_argument("--base-url", help="OpenAI-compatible endpoint for the LLM reranker")
    ap.add_argument("--cross-encoder", action="append", help="model name/path to try offline")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    cfg = VARSConfig.from_yaml(args.config)
    if args.fit:
        return fit_main(args, cfg)
    data = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    wanted = set(args.backends.split(","))
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}

    if "embedding" in wanted:
        emb = load_embedder(cfg.embedding)
        rr = EmbeddingReranker(emb)
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
