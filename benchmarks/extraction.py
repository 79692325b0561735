"""Extraction benchmark: the configured extractor over the labelled messages.

    python benchmarks/extraction.py [--config vars.yaml] [--out results/extraction.json]

Metrics (per split and overall): recall (messages with a preference where >= 1 was extracted),
neutral_empty (neutral messages left empty), json_valid (complete outputs that parse as
{"preferences": [...]}) and latency. Every third message (index % 3 == 2) is the held-out
split: nothing (prompt, examples, min_confidence) is tuned on it.
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
from vars_langgraph.models.extractor import load_extractor  # noqa: E402

DATA = ROOT / "vars_langgraph" / "data" / "extraction_labelled.jsonl"


def split_of(i: int) -> str:
    return "heldout" if i % 3 == 2 else "dev"


def json_valid(raw: str | None) -> bool | None:
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("preferences"), list)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    pos = [r for r in rows if r["has_preference"]]
    neg = [r for r in rows if not r["has_preference"]]
    valid = [r["json_valid"] for r in rows if r["json_valid"] is not None]
    lat = [r["latency_s"] for r in rows]
    return {
        "n": len(rows),
        "n_preference": len(pos),
        "n_neutral": len(neg),
        "recall": sum(bool(r["extracted"]) for r in pos) / max(1, len(pos)),
        "neutral_empty": sum(not r["extracted"] for r in neg) / max(1, len(neg)),
        "json_valid": sum(valid) / len(valid) if valid else None,
        "n_complete_outputs": len(valid),
        "latency_mean_s": statistics.fmean(lat) if lat else None,
        "latency_p50_s": statistics.median(lat) if lat else None,
        "latency_max_s": max(lat) if lat else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="VARS YAML config (default: CPU defaults)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(ROOT / "results" / "extraction.json"))
    ap.add_argument("--prompt", choices=["few_shot", "finetuned"])
    ap.add_argument("--min-confidence", type=float)
    ap.add_argument("--base-url", help="use this OpenAI-compatible endpoint for the extractor")
    ap.add_argument("--model", help="model name at --base-url")
    ap.add_argument("--limit", type=int, help="only the first N messages")
    ap.add_argument("--split", choices=["dev", "heldout"], help="only this split")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    ext: dict[str, Any] = {}
    if args.prompt:
        ext["prompt"] = args.prompt
    if args.min_confidence is not None:
        ext["min_confidence"] = args.min_confidence
    if args.base_url:
        ext["llm"] = {"base_url": args.base_url, **({"model": args.model} if args.model else {})}
    cfg = VARSConfig.from_yaml(args.config, extractor=ext) if ext else VARSConfig.from_yaml(
        args.config
    )
    t0 = time.perf_counter()
    extractor = load_extractor(cfg)
    startup = time.perf_counter() - t0

    data = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    if args.limit:
        data = data[: args.limit]
    rows = []
    for i, item in enumerate(tqdm(data, desc="extract", unit="msg")):
        if args.split and split_of(i) != args.split:
            continue
        t = time.perf_counter()
        res = extractor.extract_detailed([("user", item["text"])])
        rows.append(
            {
                "split": split_of(i),
                "text": item["text"],
                "has_preference": item["has_preference"],
                "expected": item["expected"],
                "extracted": [
                    {"note": p.note, "confidence": p.confidence} for p in res.preferences
                ],
                "p_open": res.p_open,
                "raw": res.raw,
                "json_valid": json_valid(res.raw),
                "requests": res.requests,
                "latency_s": time.perf_counter() - t,
            }
        )
    result = {
        "extractor": {
            "base_url": extractor.base_url,
            "model": extractor.llm.model,
            "local_model": cfg.local_server.model_path or cfg.local_server.model,
            "prompt": cfg.extractor.prompt,
            "min_confidence": cfg.extractor.min_confidence,
            "response_format": extractor.mode,
            "logprob_confidence": extractor.use_logprobs,
        },
        "startup_s": startup,
        "metrics": {
            "dev": summarize([r for r in rows if r["split"] == "dev"]),
            "heldout": summarize([r for r in rows if r["split"] == "heldout"]),
            "all": summarize(rows),
        },
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"\nextractor: {result['extractor']}")
    print("| split | n | recall | neutral empty | JSON valid | mean latency (s) |")
    print("|---|---|---|---|---|---|")
    for name, m in result["metrics"].items():
        if not m["n"]:
            continue
        jv = "-" if m["json_valid"] is None else f"{m['json_valid']:.0%}"
        print(
            f"| {name} | {m['n']} | {m['recall']:.0%} ({m['n_preference']}) | "
            f"{m['neutral_empty']:.0%} ({m['n_neutral']}) | {jv} | {m['latency_mean_s']:.2f} |"
        )
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
