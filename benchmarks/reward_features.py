"""Would the reward classifier read more complaints with the assistant's answer beside the
message? Out-of-fold negative recall at precision >= 0.92 (the classifier's own CV rule,
`models/reward_classifier.py`), tuning part only, for feature sets that add the answer.

    python benchmarks/reward_features.py

The set's answers are gists (`prev_answer_gist`), the only answer text it holds. Prints one
line per feature set (best C of the grid)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from vars_langgraph.config import EmbeddingConfig  # noqa: E402
from vars_langgraph.models import reward_classifier as rc  # noqa: E402
from vars_langgraph.models.embedder import load_embedder  # noqa: E402


def main() -> None:
    emb = load_embedder(EmbeddingConfig())
    rows = rc.load_labelled(split="tune")
    texts = [r["text"] for r in rows]
    prev = [r.get("prev_query") for r in rows]
    e = np.asarray(emb.embed_documents(texts))
    p = np.asarray(emb.embed_documents([q or "" for q in prev]))
    g = np.asarray(emb.embed_documents([r.get("prev_answer_gist") or "" for r in rows]))
    y = np.array([r["label"] for r in rows])
    y_neg = np.isin(y, rc.NEGATIVE)
    sims = rc.prev_similarities(emb, texts, prev)
    folds = list(StratifiedKFold(rc.FOLDS, shuffle=True, random_state=0).split(np.zeros(len(y)), y))
    cos_gist = (e * g).sum(1, keepdims=True)

    def base(tr: np.ndarray) -> np.ndarray:  # the shipped features (vocabulary from the fold)
        return rc.features(emb, texts, sims, rc.build_vocab([texts[i] for i in tr]), 0.8)

    sets: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "message (shipped)": base,
        "+ cos(message, answer)": lambda tr: np.hstack([base(tr), cos_gist]),
        "+ message * answer": lambda tr: np.hstack([base(tr), cos_gist, e * g]),
        "+ |message - previous question|": lambda tr: np.hstack([base(tr), cos_gist, np.abs(e - p)]),
        "+ answer embedding": lambda tr: np.hstack([base(tr), cos_gist, 0.5 * g]),
    }
    for name, build in sets.items():
        best = (0.0, 0.0, 0.0, 0.0)
        for c in (1.0, 3.0, 10.0, 30.0):
            oof = np.zeros(len(y))
            for tr, te in folds:
                x = build(tr)
                m = LogisticRegression(C=c, max_iter=5000).fit(x[tr], y[tr])
                oof[te] = rc._neg_prob(m.predict_proba(x[te]), list(m.classes_))
            t, prec, rec = rc._threshold_for(oof, y_neg)
            if rec > best[3]:
                best = (c, t, prec, rec)
        print(f"{name:36s} C={best[0]:<4g} threshold {best[1]:.2f}  precision {best[2]:.3f}  "
              f"recall {best[3]:.3f}", flush=True)


if __name__ == "__main__":
    main()
