"""Reward benchmark: how each reward reads labelled next-user-messages.

    python benchmarks/reward.py [--split report|tune|all] [--judge N] [--phrases POOL] [--data FILE]
                                [--real DIR] [--out FILE]

Data: vars_langgraph/data/reward_labelled.jsonl (text, label, prev_query, prev_answer_gist);
split by a hash of the text (models/reward_classifier.py `split_of`: report third / tuning
two thirds). Readers:
- `keyword`: learning/reward.py `keyword_reward` (negative when r < 0, praise when r >= 0.5,
  progress when 0 < r < 0.5, none at 0), with the cosine between message and previous turn;
- `classifier`: the shipped MiniLM + logistic model (models/reward_classifier.py);
- `finetuned`: MiniLM adapted on the tuning part with the shipped LoRA adapter
  (models/reward_reader.py; for another embedding model fitted here into the model cache when
  it is not there yet, about two minutes on 2 cores);
- `reader`: what the reward node reads (the default): both learned readers, their
  probabilities averaged (`reward_reader.combine`);
- `judge` (with --judge N): the LLM judge prompt of learning/reward.py on the local CPU server
  (or --base-url), on the first N messages of the split (an unusable verdict counts as none).
With --phrases POOL (tune, report or keyword: the scripted collab user's phrase pools,
eval/vars_langgraph_eval/simulator.py) it also prints how many of each kind of phrase (complaint
openers, follow-ups, closings) each learned reader reads as a complaint; a follow-up or a closing
read as one punishes the notes of a good answer.
With --real DIR (PrefEval's directory, where `filtered_inter_turns.json` holds 24 logged chats
of real users, CC BY-NC: read from there, never copied) it reads those chats' 292 follow-up
messages instead, labelled here by hand (benchmarks/data/reward_real_labels.jsonl: ids, label
and a reason, no text); split by a hash of the conversation id (`split_of`), so a chat is
wholly in one part; the output keeps ids, not text (default results/reward_real.json).
Printed and written: per reader, a confusion matrix (true label x read as negative / praise /
progress / none), negative precision and recall, and for readers that give labels the 7-label
accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from vars_langgraph.config import VARSConfig  # noqa: E402
from vars_langgraph.learning import reward as rw  # noqa: E402
from vars_langgraph.models import reward_classifier as rc  # noqa: E402
from vars_langgraph.models.embedder import load_embedder  # noqa: E402
from vars_langgraph.models.reward_reader import (  # noqa: E402
    RECIPE,
    combine,
    first_sentence,
    load_reader,
    reader_path,
    with_first_sentence,
)
from vars_langgraph.models.reward_reader import fit as fit_reader  # noqa: E402

COLUMNS = ("negative", "praise", "progress", "none")


def coarse_of_value(r: float) -> str:
    if r < 0:
        return "negative"
    if r >= 0.5:
        return "praise"
    return "progress" if r > 0 else "none"


def coarse_of_label(label: str | None) -> str:
    if label is None:
        return "none"
    if label.startswith("neg_"):
        return "negative"
    return {"pos_praise": "praise", "pos_progress": "progress"}.get(label, "none")


def metrics(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Confusion matrix (true label x coarse reading) and negative precision / recall."""
    matrix = {lab: dict.fromkeys(COLUMNS, 0) for lab in rc.LABELS}
    for r in rows:
        matrix[r["label"]][r[key]["coarse"]] += 1
    true_neg = np.array([r["label"] in rc.NEGATIVE for r in rows])
    read_neg = np.array([r[key]["coarse"] == "negative" for r in rows])
    tp = int((true_neg & read_neg).sum())
    out = {
        "n": len(rows), "matrix": matrix,
        "neg_precision": tp / read_neg.sum() if read_neg.any() else None,
        "neg_recall": tp / true_neg.sum() if true_neg.any() else None,
        "false_negatives": [r["text"] for r, t, p in zip(rows, true_neg, read_neg, strict=True) if t > p],
        "false_positives": [r["text"] for r, t, p in zip(rows, true_neg, read_neg, strict=True) if p > t],
    }  # fmt: skip
    if any("label" in r[key] for r in rows):
        out["label_accuracy"] = float(np.mean([r[key].get("label") == r["label"] for r in rows]))
    return out


REAL_LABELS = ROOT / "benchmarks" / "data" / "reward_real_labels.jsonl"
REAL_CHATS = "filtered_inter_turns.json"


def load_real(data_dir: Path, split: str | None) -> list[dict[str, Any]]:
    """The labelled follow-ups of the real chats in `data_dir` (text read from there), each with
    its previous user message and the start of the answer it reacts to."""
    chats = {c["conversation_id"]: [m for m in c["conversation"] if m.get("content")]
             for c in json.loads((data_dir / REAL_CHATS).read_text())}
    rows = []
    for line in REAL_LABELS.read_text().splitlines():
        lab = json.loads(line)
        part = rc.split_of(lab["conversation_id"])
        if split and part != split:
            continue
        conv = chats[lab["conversation_id"]]
        users = [i for i, m in enumerate(conv) if m["role"] == "user"]
        i = users[lab["user_turn"]]
        rows.append({"id": f"{lab['conversation_id'][:8]}:{lab['user_turn']}", "label": lab["label"],
                     "split": part, "text": conv[i]["content"],
                     "prev_query": conv[users[lab["user_turn"] - 1]]["content"],
                     "prev_answer_gist": conv[i - 1]["content"][:300]})
    return rows


def without_text(result: dict[str, Any]) -> dict[str, Any]:
    """The result with every message replaced by its id (the real chats' licence)."""
    ids = {r["text"]: r["id"] for r in result["rows"]}
    for m in result["readers"].values():
        for k in ("false_negatives", "false_positives"):
            m[k] = [ids.get(t, "?") for t in m[k]]
    result["rows"] = [{k: v for k, v in r.items() if k not in ("text", "prev_query", "prev_answer_gist")}
                      for r in result["rows"]]
    return result


def judge_verdict(client: Any, model: str, row: dict[str, Any]) -> rw.JudgeVerdict | None:
    user = (f"Query: {row.get('prev_query', '')}\nAnswer: {row.get('prev_answer_gist', '')}\n"
            f"Next message: {row['text']}")
    resp = client.chat.completions.create(
        model=model, temperature=0, max_tokens=128,
        messages=[{"role": "system", "content": rw.JUDGE_PROMPT}, {"role": "user", "content": user}],
    )  # fmt: skip
    return rw.parse_verdict(resp.choices[0].message.content or "")


def print_table(name: str, m: dict[str, Any]) -> None:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    acc = f" | 7-label accuracy {m['label_accuracy']:.2f}" if "label_accuracy" in m else ""
    print(f"\n**{name}** (n = {m['n']}): negative precision {f(m['neg_precision'])}, "
          f"recall {f(m['neg_recall'])}{acc}\n")  # fmt: skip
    print("| true label | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for lab, row in m["matrix"].items():
        print(f"| {lab} | " + " | ".join(str(row[c]) for c in COLUMNS) + " |")


def read_phrases(pool_name: str, clf: Any, reader: Any) -> dict[str, dict[str, int]]:
    """Per kind of the pool's phrases: how many each learned reader reads as a complaint."""
    from vars_langgraph_eval.simulator import POOLS

    pool = POOLS[pool_name]
    out: dict[str, dict[str, int]] = {}
    print(f"\n**phrase pool `{pool_name}`**: phrases read as a complaint\n")
    print("| kind | n | classifier | finetuned | reader |\n|---|---|---|---|---|")
    for kind in ("openers", "followups", "closings"):
        texts = list(getattr(pool, kind))
        lin = clf.predict_many(texts, [None] * len(texts))
        tuned = reader.predict_many(texts)
        out[kind] = {"n": len(texts), "classifier": sum(p.negative for p in lin),
                     "finetuned": sum(p.negative for p in tuned),
                     "reader": sum(combine(t, q).negative for t, q in zip(tuned, lin, strict=True))}
        print(f"| {kind} | " + " | ".join(str(v) for v in out[kind].values()) + " |")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(rc.LABELLED))
    ap.add_argument("--split", choices=["report", "tune", "all"], default="report")
    ap.add_argument("--judge", type=int, default=0, help="run the LLM judge on the first N messages")
    ap.add_argument("--base-url", help="judge endpoint (default: the local CPU server)")
    ap.add_argument("--model", help="judge model name at --base-url")
    ap.add_argument("--phrases", choices=["tune", "report", "keyword"],
                    help="also read the scripted collab user's phrase pool of that name")
    ap.add_argument("--real", metavar="DIR", help="read PrefEval's real chats in DIR instead")
    ap.add_argument("--out", help="output JSON (default results/reward.json, with --real "
                                  "results/reward_real.json)")
    args = ap.parse_args(argv)
    cfg = VARSConfig()
    embedder = load_embedder(cfg.embedding)
    split = None if args.split == "all" else args.split
    rows = load_real(Path(args.real), split) if args.real else rc.load_labelled(args.data, split)
    texts = [r["text"] for r in rows]
    sims = rc.prev_similarities(embedder, texts, [r.get("prev_query") for r in rows])
    clf = rc.load_classifier(embedder)
    preds = clf.predict_many(texts, sims)
    for r, s, p in zip(rows, sims, preds, strict=True):
        kv = rw.keyword_reward(r["text"], s)
        r["keyword"] = {"value": kv, "coarse": coarse_of_value(kv)}
        cv = rc.reward_value(p, s)
        r["classifier"] = {"value": cv, "label": p.label, "p_negative": round(p.p_negative, 4),
                           "coarse": coarse_of_label(p.label)}  # fmt: skip
    if not reader_path(cfg).exists():
        fit_reader(cfg)
    reader = load_reader(cfg)
    firsts = [first_sentence(t) for t in texts]
    # the node reads a short first sentence too (`reward_reader.with_first_sentence`)
    leads = [combine(a, b) for a, b in zip(reader.predict_many(firsts), clf.predict_many(firsts, sims),
                                           strict=True)]  # fmt: skip
    for r, p, lin, s, lead in zip(rows, reader.predict_many(texts), preds, sims, leads, strict=True):
        both = combine(p, lin)
        node = with_first_sentence(
            lambda t, text=r["text"], both=both, lead=lead: both if t == text else lead, r["text"])
        for name, q in (("finetuned", p), ("reader", both), ("node", node)):
            r[name] = {"value": rc.reward_value(q, s), "label": q.label,
                       "p_negative": round(q.p_negative, 4), "coarse": coarse_of_label(q.label)}
        # what the reward node does with the reading: a new preference or request is no
        # complaint (its link here: the previous query only; the node also reads the answer,
        # the notes and the stored cards, which can only keep more complaints)
        why = rw.not_a_reaction(r["text"], lambda s=s: s or 0.0) if r["node"]["value"] < 0 else None
        if why:
            r["node"].update(value=0.0, label="neutral", coarse="none", why=why)
    result: dict[str, Any] = {"split": args.split, "classifier": clf.info(),
                              "finetuned": {"path": str(reader_path(cfg)), "recipe": RECIPE},
                              "readers": {}}
    for name in ("keyword", "classifier", "finetuned", "reader", "node"):
        result["readers"][name] = metrics(rows, name)
    if args.judge:
        from vars_langgraph.config import LLMConfig
        from vars_langgraph.models.llm import openai_client, resolve_llm

        llm = resolve_llm(LLMConfig(base_url=args.base_url, **({"model": args.model} if args.model else {}))
                          if args.base_url else None, cfg)  # fmt: skip
        client = openai_client(llm)
        sub = rows[: args.judge]
        for r in tqdm(sub, desc="judge", unit="msg"):
            v = judge_verdict(client, llm.model, r)
            r["judge"] = {"label": v.label if v else None, "confidence": v.confidence if v else None,
                          "coarse": coarse_of_label(v.label if v else None)}  # fmt: skip
        result["readers"]["judge"] = metrics(sub, "judge")
        result["judge_model"] = llm.model
        # the other readers on the same subset, for a like-for-like comparison
        result["readers"]["keyword_on_judge_subset"] = metrics(sub, "keyword")
        result["readers"]["classifier_on_judge_subset"] = metrics(sub, "classifier")
        result["readers"]["finetuned_on_judge_subset"] = metrics(sub, "finetuned")
        result["readers"]["reader_on_judge_subset"] = metrics(sub, "reader")
    if args.phrases:
        result["phrases"] = read_phrases(args.phrases, clf, load_reader(cfg))
    result["rows"] = rows
    for name, m in result["readers"].items():
        print_table(f"{name} ({args.split})", m)
    if args.real:
        result["real"] = {"data": str(Path(args.real) / REAL_CHATS), "labels": str(REAL_LABELS)}
        result = without_text(result)
    out = Path(args.out or ROOT / "results" / ("reward_real.json" if args.real else "reward.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
