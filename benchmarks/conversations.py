"""Answers, not echoes: scripted multi-turn conversations through the real VARS graph.

    python benchmarks/conversations.py [--split report|tune|all] [--max-tokens 128]
        [--llm-url http://127.0.0.1:PORT/v1] [--out results/conversations.json]

Each conversation of `benchmarks/data/conversations.jsonl` seeds the user's preference cards
(as learned in an earlier session: `cards`), then sends its user turns one by one through
`build_graph` (real llama.cpp server, SQLite + FAISS on a temp dir, MiniLM; reward, update,
retrieve, rerank and augment run inline, so each turn sees the same memory on every run).
The LLM extractor is off by default so the injected notes do not depend on it
(`--extract llm` turns it on). Every answer is judged by rules that need no LLM:

- **echo**: the answer copies an injected note or an earlier answer of the same conversation:
  the share of the answer's word 3-grams found in the source (1-grams for answers under 3
  words) >= ECHO_CONTAINED, or difflib's ratio of the two normalised texts (lower case,
  punctuation removed) >= ECHO_RATIO (a near-verbatim copy). A copy of the user's own message
  (share >= ECHO_USER: an answer may restate the question) and an empty answer count too.
- **on topic**: a key term of the turn that is not in the user's own message occurs in the
  answer (at a word start), or MiniLM cosine(answer, reference) >= ON_TOPIC_SIM.
- **preference honoured**: each conversation's `checks` apply to every non-"preference" turn
  whose injected notes contain the check's `note_has` text: bullets (>= 2 lines starting with
  -, *, •, or 1.), numbered (>= 2 lines starting with 1. or 1)), max_words, code_block (```),
  no_code, contains_any, ends_with_question (the last non-empty line has a "?").
- **good**: not an echo and on topic.

Split (fixed): the ids sorted, shuffled with random.Random(SPLIT_SEED); the first N_TUNE are the
tuning part (prompts and decoding were tuned on these only), the rest the report part.
The thresholds (ECHO_CONTAINED, ECHO_RATIO, ON_TOPIC_SIM) were set before any answer was looked
at and are not tuned.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import tempfile
import time
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import yaml

from vars_langgraph_eval.stats import percentile

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "conversations.jsonl"
SPLIT_SEED = 12
N_TUNE = 6
ECHO_CONTAINED = 0.6  # share of the answer's 3-grams found in the source
ECHO_RATIO = 0.8  # difflib ratio: near-verbatim copies
ECHO_USER = 0.9  # share of the answer's 3-grams found in the user's own message
ON_TOPIC_SIM = 0.5
BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S")
NUMBERED = re.compile(r"^\s*\d+[.)]\s+\S")


# ------------------------------------------------------------------ rules (pure, no models)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def _grams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def copy_score(answer: str, source: str) -> tuple[float, float]:
    """(share of the answer's word n-grams found in `source`, difflib ratio), both 0..1."""
    a, s = normalise(answer), normalise(source)
    if not a or not s:
        return 0.0, 0.0
    ratio = SequenceMatcher(None, a, s, autojunk=False).ratio()
    aw, sw = a.split(), s.split()
    n = 3 if len(aw) >= 3 else len(aw)
    grams, src = _grams(aw, n), set(_grams(sw, n))
    contained = sum(g in src for g in grams) / len(grams) if grams else 0.0
    return contained, ratio


def is_copy(answer: str, source: str) -> bool:
    contained, ratio = copy_score(answer, source)
    return contained >= ECHO_CONTAINED or ratio >= ECHO_RATIO


def echo_of(answer: str, notes: list[str], earlier: list[str], user: str = "") -> dict[str, Any]:
    """Whether the answer copies an injected note, an earlier answer or the user's message."""
    def worst(sources: list[str]) -> list[float]:
        scores = [copy_score(answer, s) for s in sources] or [(0.0, 0.0)]
        return [round(max(x[0] for x in scores), 3), round(max(x[1] for x in scores), 3)]

    note = any(is_copy(answer, n) for n in notes)
    prev = any(is_copy(answer, e) for e in earlier)
    said = bool(user) and copy_score(answer, user)[0] >= ECHO_USER
    empty = not normalise(answer)
    return {"note_scores": worst(notes), "answer_scores": worst(earlier), "empty": empty,
            "echo_note": note, "echo_answer": prev, "echo_user": said,
            "echo": empty or note or prev or said}


def term_hits(answer: str, terms: list[str], question: str) -> list[str]:
    """Key terms found in the answer at a word start, ignoring terms the user already wrote."""
    low, q = answer.lower(), question.lower()

    def found(term: str, text: str) -> bool:
        return re.search(r"(?<![a-z0-9])" + re.escape(term.lower()), text) is not None

    return [t for t in terms if not found(t, q) and found(t, low)]


def check(kind: dict[str, Any], answer: str) -> bool:
    """One checkable preference (see the module docstring)."""
    lines = [x for x in answer.splitlines() if x.strip()]
    t = kind["type"]
    if t == "bullets":
        return sum(bool(BULLET.match(x)) for x in lines) >= 2
    if t == "numbered":
        return sum(bool(NUMBERED.match(x)) for x in lines) >= 2
    if t == "max_words":
        return 0 < len(answer.split()) <= int(kind["n"])
    if t == "code_block":
        return "```" in answer
    if t == "no_code":
        return "```" not in answer
    if t == "contains_any":
        return any(term.lower() in answer.lower() for term in kind["terms"])
    if t == "ends_with_question":
        return bool(lines) and "?" in lines[-1]
    raise ValueError(f"unknown check type: {t}")


def applicable(checks: list[dict[str, Any]], notes: list[str], turn_kind: str) -> list[dict]:
    if turn_kind == "preference":
        return []
    low = [n.lower() for n in notes]
    return [c for c in checks if any(c["note_has"].lower() in n for n in low)]


def split_ids(ids: list[str]) -> dict[str, list[str]]:
    order = sorted(ids)
    random.Random(SPLIT_SEED).shuffle(order)
    return {"tune": sorted(order[:N_TUNE]), "report": sorted(order[N_TUNE:])}


def load(path: Path = DATA) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate conversation ids")
    return rows


# ------------------------------------------------------------------ the run


def judge(emb: Any, conv: dict[str, Any], turn: dict[str, Any], answer: str, notes: list[str],
          earlier: list[str]) -> dict[str, Any]:
    """All rules for one answer (`emb`: the MiniLM embedder, for the on-topic similarity)."""
    echo = echo_of(answer, notes, earlier, turn["user"])
    hits = term_hits(answer, turn["key_terms"], turn["user"])
    sim = float(emb.embed_query(answer or " ") @ emb.embed_query(turn["reference"]))
    on_topic = bool(hits) or sim >= ON_TOPIC_SIM
    checks = [{"type": c["type"], "ok": check(c, answer)}
              for c in applicable(conv.get("checks", []), notes, turn["kind"])]
    return {**echo, "terms": hits, "sim": round(sim, 3), "on_topic": on_topic,
            "good": on_topic and not echo["echo"], "checks": checks,
            "words": len(answer.split())}


def rates(turns: list[dict[str, Any]]) -> dict[str, Any]:
    checked = [c["ok"] for t in turns for c in t["checks"]]
    n = max(1, len(turns))
    return {
        "no_echo": sum(not t["echo"] for t in turns) / n,
        "no_note_echo": sum(not t["echo_note"] for t in turns) / n,
        "no_answer_echo": sum(not t["echo_answer"] for t in turns) / n,
        "no_user_echo": sum(not t["echo_user"] for t in turns) / n,
        "on_topic": sum(t["on_topic"] for t in turns) / n,
        "good": sum(t["good"] for t in turns) / n,
        "preference_honoured": sum(checked) / len(checked) if checked else None,
        "preference_checks": len(checked),
        "words_p50": percentile([t["words"] for t in turns], 50),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from vars_langgraph import VARSConfig, build_graph
    from vars_langgraph.state import message_text
    from vars_langgraph.types import CardSource, Preference

    convs = load(Path(args.data))
    parts = split_ids([c["id"] for c in convs])
    keep = set(parts[args.split]) if args.split != "all" else {c["id"] for c in convs}
    convs = [c for c in convs if c["id"] in keep][: args.limit or None]
    llm: dict[str, Any] = {"max_tokens": args.max_tokens}
    if args.llm_url:
        llm["base_url"] = args.llm_url
    data: dict[str, Any] = {
        "data_dir": tempfile.mkdtemp(prefix="vars-conv-"), "storage": "sqlite", "llm": llm,
        "extractor": {"enabled": args.extract == "llm"}, "background": {"enabled": False}}
    for item in args.set:  # section.key=value (YAML value), e.g. prompt.history_turns=3
        key, _, raw = item.partition("=")
        *path, last = key.split(".")
        node = data
        for p in path:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(raw)
    cfg = VARSConfig.from_dict(data)
    graph = build_graph(cfg)
    engine = graph.engine
    chat = engine.chat_model  # starts the server before timing
    emb = engine.embedder
    turns, latencies, gen_times = [], [], []
    bar = tqdm(total=sum(len(c["turns"]) for c in convs), desc="turns")
    for ci, conv in enumerate(convs):
        uid, run_cfg = f"u-{conv['id']}", {"configurable": {"thread_id": conv["id"],
                                                            "user_id": f"u-{conv['id']}"}}
        engine.add_preferences(uid, [Preference(condition=c["condition"], action=c["action"],
                                                confidence=0.9) for c in conv["cards"]],
                               CardSource(thread_id="earlier-session"))
        earlier: list[str] = []
        for i, turn in enumerate(conv["turns"]):
            if args.seed is not None and hasattr(chat, "seed"):
                # one fixed seed per turn: reproducible, but not the same draw for every request
                # (one seed for all would make similar prompts sample the same words)
                chat.seed = args.seed + 1000 * ci + i
            t0 = last = time.perf_counter()
            gen = 0.0
            for ev in graph.stream({"messages": [("user", turn["user"])]}, run_cfg,
                                   stream_mode="updates"):
                now = time.perf_counter()
                if "generate" in ev:
                    gen = now - last
                last = now
            latencies.append(time.perf_counter() - t0)
            gen_times.append(gen)
            state = graph.get_state(run_cfg).values
            answer = message_text(state["messages"][-1])
            notes = [c["note"] for c in state.get("selected", [])]
            turns.append({"conv": conv["id"], "turn": i, "kind": turn["kind"], "user": turn["user"],
                          "answer": answer, "notes": notes,
                          **judge(emb, conv, turn, answer, notes, earlier),
                          "latency_s": round(latencies[-1], 2), "generate_s": round(gen, 2)})
            earlier.append(answer)
            bar.update(1)
    bar.close()
    return {
        "split": args.split, "conversations": [c["id"] for c in convs], "turns": len(turns),
        "rates": rates(turns),
        "latency_s": {"turn_p50": percentile(latencies, 50), "turn_p95": percentile(latencies, 95),
                      "generate_p50": percentile(gen_times, 50), "generate_p95": percentile(gen_times, 95)},
        "thresholds": {"echo_contained": ECHO_CONTAINED, "echo_ratio": ECHO_RATIO, "echo_user": ECHO_USER,
                       "on_topic_sim": ON_TOPIC_SIM},
        "split_def": {"seed": SPLIT_SEED, "n_tune": N_TUNE, **parts},
        "config": {"max_tokens": args.max_tokens, "extract": args.extract, "seed": args.seed,
                   "set": args.set,
                   "llm": cfg.llm.model_dump(exclude={"api_key", "base_url"}),
                   "prompt": cfg.prompt.model_dump()},
        "git": _git(), "load": os.getloadavg(), "per_turn": turns,
    }


def rescore(path: Path) -> dict[str, Any]:
    """Judge the saved answers of an earlier run again with the rules of this file."""
    from vars_langgraph import VARSConfig
    from vars_langgraph.models.embedder import load_embedder

    res = json.loads(path.read_text())
    convs = {c["id"]: c for c in load()}
    emb = load_embedder(VARSConfig().embedding)
    earlier: dict[str, list[str]] = {}
    for t in res["per_turn"]:
        conv = convs[t["conv"]]
        prev = earlier.setdefault(t["conv"], [])
        t.update(judge(emb, conv, conv["turns"][t["turn"]], t["answer"], t["notes"], prev))
        prev.append(t["answer"])
    res["rates"] = rates(res["per_turn"])
    res["thresholds"] = {"echo_contained": ECHO_CONTAINED, "echo_ratio": ECHO_RATIO,
                         "echo_user": ECHO_USER, "on_topic_sim": ON_TOPIC_SIM}
    res["rescored"] = True
    return res


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "vars_langgraph"], cwd=ROOT,
                               text=True, capture_output=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--split", choices=["report", "tune", "all"], default="report")
    ap.add_argument("--limit", type=int, default=0, help="first N conversations of the split")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=7,
                    help="base sampling seed; each turn sends seed + 1000 * conversation + turn")
    ap.add_argument("--extract", choices=["off", "llm"], default="off")
    ap.add_argument("--llm-url", default=os.environ.get("VARS_TEST_LLM_URL"))
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="config override (tuning on the tune split), repeatable")
    ap.add_argument("--rescore", metavar="RESULTS_JSON",
                    help="judge the answers saved in a results file again (no LLM), write --out")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default="results/conversations.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    res = rescore(Path(args.rescore)) if args.rescore else {"label": args.label, **run(args)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, ensure_ascii=False))
    r, lat = res["rates"], res["latency_s"]
    hon = "n/a" if r["preference_honoured"] is None else f"{r['preference_honoured']:.0%}"
    print(f"{res['label'] or 'run'} [{res['split']}: {len(res['conversations'])} conversations, "
          f"{res['turns']} turns, git {res['git']}, load {res['load'][0]:.1f}]")
    print(f"no echo {r['no_echo']:.0%} (notes {r['no_note_echo']:.0%}, earlier answers "
          f"{r['no_answer_echo']:.0%}) | on topic {r['on_topic']:.0%} | good {r['good']:.0%} | "
          f"preference honoured {hon} of {r['preference_checks']}")
    print(f"turn p50 {lat['turn_p50']:.1f} s, p95 {lat['turn_p95']:.1f} s "
          f"(generate p50 {lat['generate_p50']:.1f} s, p95 {lat['generate_p95']:.1f} s) -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
