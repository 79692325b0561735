"""GPU check for the scale path (issue 15): run on a machine with an NVIDIA GPU, faiss-gpu and
a CUDA torch. It embeds notes on the GPU (`embedding.device: cuda`), searches one user's cards
with FAISS on the GPU (`cache.faiss_device: gpu`) and on the CPU, and checks that both give the
same top-K; it prints timings and writes gpu_check.json.

    python scripts/gpu_check.py --cards 20000 --out gpu_check.json

Exit code 0: GPU paths ran and agree with the CPU; 1: they disagree; 2: no GPU / no faiss-gpu.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cards", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--out", default="gpu_check.json")
    args = ap.parse_args(argv)

    import faiss
    import torch

    from vars_langgraph import VARSConfig, VARSEngine
    from vars_langgraph.memory.index import set_faiss_device
    from vars_langgraph.storage import open_store
    from vars_langgraph.types import CardSource, Preference, PreferenceCard
    from vars_langgraph_eval.bench import pct, synthetic_notes, synthetic_queries

    report: dict = {"torch_cuda": torch.cuda.is_available(),
                    "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0}
    if not report["torch_cuda"] or not report["faiss_gpus"]:
        print(f"no GPU path here: {report}", file=sys.stderr)
        Path(args.out).write_text(json.dumps(report, indent=1))
        return 2
    tmp = Path(tempfile.mkdtemp())
    cfg = VARSConfig.from_dict({"data_dir": str(tmp), "embedding": {"device": "cuda"},
                                "cache": {"faiss_device": "gpu", "torch_threads": 0}})
    engine = VARSEngine(cfg, open_store(cfg), index_dir=tmp / "index")
    notes = [Preference(condition=c, action=a).note for c, a in synthetic_notes(args.cards)]
    t0 = time.perf_counter()
    embs = engine.embedder.embed_documents(notes)
    report["embed_notes_s"] = round(time.perf_counter() - t0, 3)
    src = CardSource(thread_id="gpu", turn=0)
    cards = [PreferenceCard.from_preference("u", Preference(condition=c, action=a), src, [])
             for c, a in synthetic_notes(args.cards)]
    for i in range(0, len(cards), 2000):
        engine.memory.put_cards("u", cards[i:i + 2000],
                                {c.id: embs[i + j] for j, c in enumerate(cards[i:i + 2000])})
    t0 = time.perf_counter()
    engine.index.get("u")
    report["cold_open_s"] = round(time.perf_counter() - t0, 3)
    queries = synthetic_queries(args.queries)
    qv = [engine.embed_query(q) for q in queries]
    results = {}
    for device in ("gpu", "cpu"):
        set_faiss_device(device)
        ts, tops = [], []
        engine.index.search("u", qv[0], 64)  # warm-up
        for q in qv:
            t0 = time.perf_counter()
            hits = engine.index.search("u", q, 64)
            ts.append((time.perf_counter() - t0) * 1000)
            tops.append([c.id for c, _ in hits[:10]])
        results[device] = tops
        report[f"search_{device}_ms"] = pct(ts)
    agree = float(np.mean([len(set(a) & set(b)) / 10 for a, b in
                           zip(results["gpu"], results["cpu"], strict=True)]))
    report["top10_agreement"] = round(agree, 4)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0 if agree >= 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
