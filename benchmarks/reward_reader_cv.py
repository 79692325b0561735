"""Cross-validation of the fine-tuned reaction reader on the tuning part of the labelled reward
set (never the report part): 5 stratified folds; per fold the linear classifier (the shipped
settings, its vocabulary from the fold) and MiniLM adapted with LoRA (the shipped recipe) or,
with `--lora 0`, trained end to end (models/reward_reader.py).

    python benchmarks/reward_reader_cv.py [--lora 8] [--alpha 16] [--epochs 8] [--lr 5e-4]
                                          [--train-layers 6] [--pair] [--first-sentence]
                                          [--save oof.json]

Prints, from the out-of-fold probabilities: AUC of the negative probability, 7-label accuracy,
negative recall at the lowest threshold with precision >= 0.92 (and that threshold), the
precision / recall of the fine-tuned reader at `NEG_THRESHOLD`, of the linear one at its shipped
threshold, of either reading a complaint, and of the two averaged (`reward_reader.combine`) at
thresholds 0.45 to 0.75 and at `BOTH_THRESHOLD`. `--first-sentence` also reads each message's
first sentence with the fold's models and prints the averaged reading of the message, or of its
first sentence where the reward node reads it
(`reward_reader.lead_sentence`), and on any first sentence. About 9 minutes on 2 cores.
docs/perception.md §10, §12, §15, §16.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from tqdm import tqdm  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from vars_langgraph.config import VARSConfig  # noqa: E402
from vars_langgraph.models import reward_classifier as rc  # noqa: E402
from vars_langgraph.models.embedder import load_embedder  # noqa: E402
from vars_langgraph.models.reward_reader import (  # noqa: E402
    BOTH_THRESHOLD,
    LORA_ALPHA,
    NEG_THRESHOLD,
    RECIPE,
    base_model,
    first_sentence,
    lead_sentence,
    network,
    train,
)


def recall_at(p: np.ndarray, y: np.ndarray, precision: float = 0.92) -> float:
    for t in np.sort(np.unique(p)):
        pred = p >= t
        if pred.any() and (pred & y).sum() / pred.sum() >= precision:
            return float((pred & y).sum() / y.sum())
    return 0.0


def pr(pred: np.ndarray, y: np.ndarray) -> str:
    tp = (pred & y).sum()
    return f"precision {tp / max(1, pred.sum()):.3f}, recall {tp / y.sum():.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    ap.add_argument("--lr", type=float, default=RECIPE["lr"])
    ap.add_argument("--train-layers", type=int, default=6, help="top encoder layers trained (6: all)")
    ap.add_argument("--pair", action="store_true", help="the previous user turn as a sentence pair")
    ap.add_argument("--lora", type=int, default=RECIPE["lora_rank"],
                    help="LoRA rank on every linear layer (0: all weights train)")
    ap.add_argument("--alpha", type=int, default=LORA_ALPHA, help="LoRA alpha (scale alpha / rank)")
    ap.add_argument("--first-sentence", action="store_true",
                    help="also read each message's first sentence (the node's reading)")
    ap.add_argument("--save", help="write the out-of-fold probabilities (JSON) here")
    args = ap.parse_args(argv)
    cfg = VARSConfig()
    base, emb = base_model(cfg), load_embedder(cfg.embedding)
    params = json.loads(rc.WEIGHTS.read_text())
    rows = rc.load_labelled(split="tune")
    texts = [r["text"] for r in rows]
    sims = rc.prev_similarities(emb, texts, [r.get("prev_query") for r in rows])
    y = np.array([rc.LABELS.index(r["label"]) for r in rows])
    neg = np.array([lab in rc.NEGATIVE for lab in rc.LABELS])
    y_neg = neg[y]
    tok = AutoTokenizer.from_pretrained(base)

    def batch(idx: np.ndarray) -> dict:
        kw = {"padding": True, "truncation": True, "return_tensors": "pt"}
        if args.pair:
            return tok([rows[i].get("prev_query") or "" for i in idx], [texts[i] for i in idx],
                       max_length=128, **kw)
        return tok([texts[i] for i in idx], max_length=RECIPE["max_length"], **kw)

    firsts = [first_sentence(t) for t in texts]
    lead = np.array([lead_sentence(t) is not None for t in texts])
    tuned, linear = np.zeros((len(rows), len(rc.LABELS))), np.zeros(len(rows))
    tuned_f, linear_f = np.zeros_like(tuned), np.zeros_like(linear)
    folds = StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y)
    for tr, te in tqdm(list(folds), desc="folds"):
        vocab = rc.build_vocab([texts[i] for i in tr])
        x = rc.features(emb, texts, sims, vocab, params["lex_scale"])
        m = LogisticRegression(C=params["C"], max_iter=5000).fit(x[tr], [rc.LABELS[i] for i in y[tr]])
        linear[te] = rc._neg_prob(m.predict_proba(x[te]), list(m.classes_))
        if args.first_sentence:
            xf = rc.features(emb, [firsts[i] for i in te], [sims[i] for i in te], vocab,
                             params["lex_scale"])
            linear_f[te] = rc._neg_prob(m.predict_proba(xf), list(m.classes_))
        torch.manual_seed(RECIPE["seed"])
        net = network(base, args.lora, args.alpha)
        if not args.lora:
            keep = [f"encoder.layer.{k}." for k in range(6 - args.train_layers, 6)]
            for name, p in net.encoder.named_parameters():
                p.requires_grad = args.train_layers >= 6 or any(name.startswith(k) for k in keep)
        train(net, batch, y, tr, args.epochs, args.lr)
        with torch.inference_mode():
            tuned[te] = torch.softmax(net(batch(te)), -1).numpy()
            if args.first_sentence:
                enc = tok([firsts[i] for i in te], padding=True, truncation=True,
                          return_tensors="pt", max_length=RECIPE["max_length"])
                tuned_f[te] = torch.softmax(net(enc), -1).numpy()
    p_neg = tuned[:, neg].sum(1)
    if args.save:
        Path(args.save).write_text(json.dumps({"y": y.tolist(), "tuned": tuned.round(6).tolist(),
                                               "linear": linear.round(6).tolist(),
                                               "tuned_first": tuned_f.round(6).tolist(),
                                               "linear_first": linear_f.round(6).tolist()}))
    print(f"fine-tuned: AUC {roc_auc_score(y_neg, p_neg):.3f}, 7-label accuracy "
          f"{(tuned.argmax(1) == y).mean():.3f}, recall at precision >= 0.92 "
          f"{recall_at(p_neg, y_neg):.3f}")
    t, tp, tr_ = rc._threshold_for(p_neg, y_neg)
    print(f"fine-tuned: lowest threshold with precision >= {rc.TARGET_PRECISION}: {t} "
          f"(precision {tp:.3f}, recall {tr_:.3f})")
    ft, lin = p_neg >= NEG_THRESHOLD, linear >= params["neg_threshold"]
    print(f"fine-tuned at {NEG_THRESHOLD}: {pr(ft, y_neg)}")
    print(f"linear at {params['neg_threshold']}: {pr(lin, y_neg)}")
    print(f"either reads a complaint (round 15-18's rule): {pr(ft | lin, y_neg)}")
    mean = (p_neg + linear) / 2  # `reward_reader.combine`: the probabilities averaged
    t, tp, tr_ = rc._threshold_for(mean, y_neg)
    print(f"averaged: lowest threshold with precision >= {rc.TARGET_PRECISION}: {t} "
          f"(precision {tp:.3f}, recall {tr_:.3f})")
    for t in np.round(np.arange(0.45, 0.76, 0.025), 3):
        print(f"  averaged at {t}: {pr(mean >= t, y_neg)}")
    both = mean >= BOTH_THRESHOLD
    print(f"averaged at {BOTH_THRESHOLD} (combine): {pr(both, y_neg)}")
    if args.first_sentence:
        ff = (tuned_f[:, neg].sum(1) + linear_f) / 2 >= BOTH_THRESHOLD
        multi = np.array([f != t.strip() for f, t in zip(firsts, texts, strict=True)])
        print(f"combine, or combine on a reaction put first (the node): {pr(both | ff & lead, y_neg)} "
              f"({lead.sum()} such messages)")
        print(f"combine, or combine on any first sentence: {pr(both | ff, y_neg)} "
              f"({multi.sum()} messages of several sentences)")


if __name__ == "__main__":
    main()
