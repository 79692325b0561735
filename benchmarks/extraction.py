"""Extraction benchmark: extracted cards scored against labelled (condition, action) pairs.

    python benchmarks/extraction.py [--config vars.yaml] [--split heldout] [--out results/extraction.json]

Data: vars_langgraph/data/extraction_labelled.jsonl (one message a line, optional `context`
turns before it, `cards` = the labelled preferences). Split rule: line index % 3 == 2 is the
held-out split, the rest is dev; nothing (prompt, examples, filters, gate, thresholds) is tuned
on held-out. The first 62 lines are the original set (its held-out third unchanged); the lines
after them were appended in a seeded shuffle (random.Random(0)) and split by the same rule.

Scoring (eval/vars_langgraph_eval/extraction.py): a card matches a label when the MiniLM cosine of
the actions is >= 0.5, no content word is negated in one and asserted in the other, and the
condition fits (a label "general" needs an unscoped card; a specific label needs condition
cosine >= 0.5). Reported per split: precision, recall (strict and action-only), share of cards
that are global and share correctly global, neutral messages with cards, JSON validity, latency
p50/p95; for the gate (models/extraction_gate.py): share of messages skipped, recall kept
(preference messages passed to the LLM) and end-to-end precision/recall with the gate; for the
rule-based fast path (`fast_preferences`): its precision/recall; for the `pipeline` (what the
extract node stores: gate, LLM, rules; `nodes.extract.combine`): its precision/recall -- the
CPU default's numbers. The LLM runs on every message so that the "with gate" numbers are the
same outputs with the skipped messages emptied.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from vars_langgraph.config import VARSConfig  # noqa: E402
from vars_langgraph.models.embedder import load_embedder  # noqa: E402
from vars_langgraph.models.extraction import load_extractor  # noqa: E402
from vars_langgraph.models.extraction.postprocess import postprocess  # noqa: E402
from vars_langgraph.types import Preference  # noqa: E402
from vars_langgraph_eval.extraction import (  # noqa: E402
    ACTION_THRESHOLD,
    CONDITION_THRESHOLD,
    MessageScore,
    score_message,
    summarize_scores,
)
from vars_langgraph_eval.stats import percentile  # noqa: E402

try:  # absent before the node's combination was importable
    from vars_langgraph.nodes.extract import combine as pipeline  # noqa: E402
except ImportError:  # pragma: no cover
    pipeline = None  # type: ignore[assignment]

try:  # absent in versions before the gate and the fast path (the "before" run)
    from vars_langgraph.models.extraction.rules import fast_preferences  # noqa: E402, I001
    from vars_langgraph.models.extraction_gate import load_gate  # noqa: E402
except ImportError:  # pragma: no cover
    load_gate = fast_preferences = None  # type: ignore[assignment]

DATA = ROOT / "vars_langgraph" / "data" / "extraction_labelled.jsonl"


def split_of(i: int) -> str:
    return "heldout" if i % 3 == 2 else "dev"


def load_items(path: Path | str = DATA) -> list[dict[str, Any]]:
    """The labelled messages, each with its `split` and `window` ((role, text) turns)."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    items = []
    for i, ln in enumerate(lines):
        d = json.loads(ln)
        window = [(r, t) for r, t in d.get("context", [])] + [("user", d["text"])]
        items.append({**d, "index": i, "split": split_of(i), "window": window})
    return items


def json_valid(raw: str | None) -> bool | None:
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("preferences"), list)


def _scores(rows: list[dict[str, Any]], key: str) -> list[MessageScore]:
    return [MessageScore(**r[key]) for r in rows if r.get(key) is not None]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    pos = [r for r in rows if r["cards"]]
    out: dict[str, Any] = {"n": len(rows), "n_preference": len(pos), "n_neutral": len(rows) - len(pos)}
    if any(r.get("llm") for r in rows):
        valid = [r["json_valid"] for r in rows if r.get("json_valid") is not None]
        lat = [r["latency_s"] for r in rows if "latency_s" in r]
        out["llm"] = summarize_scores(_scores(rows, "llm"))
        out["llm"].update({
            "json_valid": sum(valid) / len(valid) if valid else None,
            "n_complete_outputs": len(valid),
            "latency_p50_s": percentile(lat, 50), "latency_p95_s": percentile(lat, 95),
            "requests_mean": statistics.fmean(r["requests"] for r in rows),
        })  # fmt: skip
    if any("gate_pass" in r for r in rows):
        gated = [r for r in rows if "gate_pass" in r]
        gpos = [r for r in gated if r["cards"]]
        glat = [r["gate_s"] for r in gated]
        out["gate"] = {
            "skipped": sum(not r["gate_pass"] for r in gated) / len(gated),
            "skipped_neutral": sum(not r["gate_pass"] for r in gated if not r["cards"])
            / max(1, len(gated) - len(gpos)),
            "recall_kept": sum(r["gate_pass"] for r in gpos) / max(1, len(gpos)),
            "gate_p50_ms": 1000 * percentile(glat, 50), "gate_p95_ms": 1000 * percentile(glat, 95),
        }  # fmt: skip
        if out.get("llm"):
            out["llm_with_gate"] = summarize_scores(_scores(rows, "llm_gated"))
            lat = [r["latency_gated_s"] for r in rows if "latency_gated_s" in r]
            out["llm_with_gate"].update({"latency_p50_s": percentile(lat, 50),
                                         "latency_p95_s": percentile(lat, 95)})
    if any(r.get("fast") for r in rows):
        out["fast_path"] = summarize_scores(_scores(rows, "fast"))
    if any(r.get("pipeline") for r in rows):
        out["pipeline"] = summarize_scores(_scores(rows, "pipeline"))
    return out


def _pref_of(card: dict[str, Any]) -> Preference:
    """A stored row's card; older results have only the note "When {condition}, {action}."."""
    if card.get("condition") and card.get("action"):
        return Preference(condition=card["condition"], action=card["action"])
    note = card["note"].rstrip(".")
    head, _, act = note.partition(", ")
    cond = "general" if head.lower() == "in general" else head.removeprefix("When ").removeprefix("when ")
    return Preference(condition=cond or "general", action=act or note)


def rescore(path: str, out: str | None, data: str | None = None) -> dict[str, Any]:
    """Score a stored result file again with the current scorer, labels (from `data`, matched
    by index and window), rules and output checks (`postprocess`, which every extractor output
    goes through): the same LLM outputs and gate decisions."""
    result = json.loads(Path(path).read_text())
    embedder = load_embedder(VARSConfig().embedding)
    items = {it["index"]: it for it in load_items(data)} if data else {}
    for row in result["rows"]:
        it = items.get(row["index"])
        if it is not None and it["window"] == [tuple(t) for t in row["window"]]:
            row["cards"] = it["cards"]  # the current labels of the same message
        text = row["window"][-1][1]
        if fast_preferences is not None:  # the rules as they are now, on the same message
            fast = fast_preferences(text)
            row["fast_cards"] = [p.note for p in fast]
            row["fast"] = vars(score_message(fast, row["cards"], embedder))
        window = [tuple(t) for t in row["window"]]
        checked = postprocess([_pref_of(c) for c in row.get("extracted", [])], window)
        if pipeline is not None:
            cards = pipeline(window, checked, row.get("gate_pass", True))
            row["pipeline_cards"] = [p.note for p in cards]
            row["pipeline"] = vars(score_message(cards, row["cards"], embedder))
        if "extracted" in row:
            prefs = checked
            row["llm"] = vars(score_message(prefs, row["cards"], embedder))
            if "gate_pass" in row:
                row["llm_gated"] = vars(score_message(prefs if row["gate_pass"] else [], row["cards"],
                                                      embedder))  # fmt: skip
    splits = {r["split"] for r in result["rows"]}
    result["metrics"] = {s: summarize([r for r in result["rows"] if r["split"] == s]) for s in sorted(splits)}
    result["scoring"] = {"action_threshold": ACTION_THRESHOLD, "condition_threshold": CONDITION_THRESHOLD,
                         "embedder": "all-MiniLM-L6-v2", "rescored": True}  # fmt: skip
    if out:
        Path(out).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print_table(result)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="VARS YAML config (default: CPU defaults)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", help="result JSON (default: results/extraction.json; none with --rescore)")
    ap.add_argument("--prompt", choices=["few_shot", "finetuned"])
    ap.add_argument("--min-confidence", type=float)
    ap.add_argument("--base-url", help="use this OpenAI-compatible endpoint for the extractor")
    ap.add_argument("--model", help="model name at --base-url")
    ap.add_argument("--limit", type=int, help="only the first N messages")
    ap.add_argument("--split", choices=["dev", "heldout"], help="only this split")
    ap.add_argument("--no-llm", action="store_true", help="only the gate and the fast path")
    ap.add_argument("--rescore", metavar="RESULT_JSON", help="score a stored result again (to --out)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.rescore:
        return rescore(args.rescore, args.out, args.data)
    args.out = args.out or str(ROOT / "results" / "extraction.json")

    ext: dict[str, Any] = {}
    if args.prompt:
        ext["prompt"] = args.prompt
    if args.min_confidence is not None:
        ext["min_confidence"] = args.min_confidence
    if args.base_url:
        ext["llm"] = {"base_url": args.base_url, **({"model": args.model} if args.model else {})}
    cfg = VARSConfig.from_yaml(args.config, extractor=ext) if ext else VARSConfig.from_yaml(args.config)
    embedder = load_embedder(cfg.embedding)
    gate = load_gate(embedder) if load_gate is not None else None
    t0 = time.perf_counter()
    extractor = None if args.no_llm else load_extractor(cfg)
    startup = time.perf_counter() - t0

    items = load_items(args.data)[: args.limit or None]
    items = [it for it in items if not args.split or it["split"] == args.split]
    rows = []
    for it in tqdm(items, desc="extract", unit="msg"):
        labels = it["cards"]
        prefs: list[Preference] = []
        row: dict[str, Any] = {"index": it["index"], "split": it["split"], "kind": it.get("kind"),
                               "window": it["window"], "cards": labels}  # fmt: skip
        if fast_preferences is not None:
            fast = fast_preferences(it["text"])
            row["fast_cards"] = [p.note for p in fast]
            row["fast"] = vars(score_message(fast, labels, embedder))
        if gate is not None:
            t = time.perf_counter()
            row["gate_pass"] = gate.passes(it["window"])
            row["gate_s"] = time.perf_counter() - t
        if extractor is not None:
            t = time.perf_counter()
            res = extractor.extract_detailed(it["window"])
            row["latency_s"] = time.perf_counter() - t
            prefs = res.preferences
            row.update({
                "extracted": [{"note": p.note, "condition": p.condition, "action": p.action,
                               "confidence": p.confidence} for p in prefs],
                "p_open": res.p_open, "raw": res.raw, "json_valid": json_valid(res.raw),
                "requests": res.requests, "llm": vars(score_message(prefs, labels, embedder)),
            })  # fmt: skip
            if gate is not None:
                passed = row["gate_pass"]
                row["llm_gated"] = vars(score_message(prefs if passed else [], labels, embedder))
                row["latency_gated_s"] = row["gate_s"] + (row["latency_s"] if passed else 0.0)
        if pipeline is not None:  # what the extract node stores (nodes/extract.py); rules only with --no-llm
            llm_prefs = prefs if extractor is not None else []
            cards = pipeline(it["window"], llm_prefs, row.get("gate_pass", True))
            row["pipeline_cards"] = [p.note for p in cards]
            row["pipeline"] = vars(score_message(cards, labels, embedder))
        rows.append(row)
    result = {
        "extractor": None if extractor is None else {
            "base_url": extractor.base_url, "model": extractor.llm.model,
            "local_model": cfg.local_server.model_path or cfg.local_server.model,
            "prompt": cfg.extractor.prompt, "min_confidence": cfg.extractor.min_confidence,
            "response_format": extractor.mode, "logprob_confidence": extractor.use_logprobs,
        },  # fmt: skip
        "scoring": {"action_threshold": ACTION_THRESHOLD, "condition_threshold": CONDITION_THRESHOLD,
                    "embedder": cfg.embedding.model},  # fmt: skip
        "gate": None if gate is None else gate.info(),
        "commit": _commit(),
        "load": os.getloadavg(),
        "startup_s": startup,
        "metrics": {s: summarize([r for r in rows if r["split"] == s]) for s in ("dev", "heldout")},
        "rows": rows,
    }
    result["metrics"] = {k: v for k, v in result["metrics"].items() if v["n"]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print_table(result)
    print(f"wrote {out}")
    return result


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or None  # fmt: skip
    except OSError:
        return None


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def print_table(result: dict[str, Any]) -> None:
    print(f"\nextractor: {result['extractor']}  load: {result['load']}")
    print("| split | what | precision | recall | P / R action only | global (correct) | neutral w/ cards "
          "| JSON valid | p50 / p95 s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for split, m in result["metrics"].items():
        for what in ("pipeline", "llm", "llm_with_gate", "fast_path"):
            s = m.get(what)
            if not s:
                continue
            lat = (f"{s['latency_p50_s']:.2f} / {s['latency_p95_s']:.2f}"
                   if s.get("latency_p50_s") is not None else "-")  # fmt: skip
            print(f"| {split} | {what} | {_f(s['precision'])} | {_f(s['recall'])} ({s['labels']}) | "
                  f"{_f(s['precision_action_only'])} / {_f(s['recall_action_only'])} | "
                  f"{_f(s['global_share'])} ({_f(s['global_correct_share'])}) | "
                  f"{s['neutral_messages_with_cards']}/{m['n_neutral']} | "
                  f"{_f(s.get('json_valid'))} | {lat} |")
        if m.get("gate"):
            g = m["gate"]
            print(f"| {split} | gate | skipped {_f(g['skipped'])} (neutral {_f(g['skipped_neutral'])}) | "
                  f"recall kept {_f(g['recall_kept'])} | p50 {g['gate_p50_ms']:.1f} ms | | | | |")


if __name__ == "__main__":
    main()
