"""Learned reward: which of the judge's labels a user's next message carries.

Features: the message's embedding (MiniLM by default), the cosine between it and the previous
user turn (0 when there is none), the keyword reward's negative and positive cue flags, and
indicators of the word unigrams and bigrams found in at least two tuning messages (the
vocabulary ships with the coefficients). A multinomial logistic regression over the seven
labels of `learning.reward.JUDGE_LABELS`; the message is negative when the summed probability
of the three `neg_*` labels is >= `neg_threshold`.

Data: `vars_langgraph/data/reward_labelled.jsonl` (one next-user-message a line, with the
previous user turn `prev_query` and a gist of the assistant's answer). Split by a hash of the
text (`split_of`): sha256 of the stripped, lower-cased text, first 8 hex digits as an integer,
% 3 == 0 is the report part, the rest the tuning part. Only the tuning part is read here.

Fitting (scikit-learn, only at fit time): the L2 strength C, the term indicators' scale and the
threshold are chosen by 5-fold stratified cross-validation on the tuning part: for each setting
the lowest threshold whose out-of-fold negative precision is >= `TARGET_PRECISION`, then the
setting with the highest out-of-fold negative recall at its threshold. Refit and write the
shipped coefficients: `python -m vars_langgraph.models.reward_classifier --fit`. At run time
only numpy is used. With another embedder (name or dimension) the classifier refits itself at
load (scikit-learn needed); if that fails the reward node uses the keyword reward.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vars_langgraph.learning.reward import JUDGE_LABELS, PROGRESS, has_negative_cue, has_positive_cue

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
LABELLED = DATA_DIR / "reward_labelled.jsonl"
WEIGHTS = DATA_DIR / "reward_classifier.json"
LABELS = tuple(JUDGE_LABELS)
NEGATIVE = tuple(lab for lab in LABELS if lab.startswith("neg_"))
TARGET_PRECISION = 0.92  # a margin over the 0.9 asked for on the report part
C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
LEX_GRID = (0.3, 0.5, 0.8)  # term indicators' scale against the unit-norm embedding (CV on tune)
LEX_SCALE = 0.5  # used when the shipped parameters name none
N_EXTRA = 3  # features after the embedding: cosine to the previous turn, two keyword cue flags
MIN_DF = 2  # a term enters the vocabulary when it is in >= 2 tuning messages
FOLDS = 5


class Embedder(Protocol):
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...


def split_of(text: str) -> str:
    """'report' for a third of the messages (by a hash of the text), else 'tune'."""
    h = int(hashlib.sha256(text.strip().lower().encode()).hexdigest()[:8], 16)
    return "report" if h % 3 == 0 else "tune"


def load_labelled(path: Path | str = LABELLED, split: str | None = None) -> list[dict[str, Any]]:
    """The labelled messages (each with its `split`), optionally only one split."""
    rows = []
    for i, ln in enumerate(Path(path).read_text().splitlines()):
        if not ln.strip():
            continue
        d = json.loads(ln)
        if d.get("label") not in JUDGE_LABELS or not str(d.get("text", "")).strip():
            raise ValueError(f"{path}:{i + 1}: needs a non-empty `text` and a `label` in {LABELS}")
        rows.append({**d, "split": split_of(d["text"])})
    return [r for r in rows if split is None or r["split"] == split]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(na > 0, (a * b).sum(1) / np.maximum(na, 1e-12), 0.0)


_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[?!]")


def terms(text: str) -> set[str]:
    """Word unigrams and bigrams of a message (lower-cased; '?' and '!' kept as words)."""
    words = _TOKEN.findall(text.lower().replace("\u2019", "'"))
    return {*words, *(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))}


def build_vocab(texts: Sequence[str], min_df: int = MIN_DF) -> list[str]:
    """Terms in at least `min_df` of the texts, sorted."""
    df: dict[str, int] = {}
    for t in texts:
        for w in terms(t):
            df[w] = df.get(w, 0) + 1
    return sorted(w for w, n in df.items() if n >= min_df)


def features(embedder: Embedder, texts: Sequence[str], prev_sims: Sequence[float | None],
             vocab: Sequence[str], scale: float = LEX_SCALE) -> np.ndarray:  # fmt: skip
    """[embedding, cosine to the previous user turn (0 if none), the keyword reward's two cue
    flags, scaled term indicators]."""
    e = np.asarray(embedder.embed_documents(list(texts)), np.float32)
    sims = np.array([[s or 0.0, has_negative_cue(t), has_positive_cue(t)]
                     for s, t in zip(prev_sims, texts, strict=True)], np.float32)  # fmt: skip
    index = {w: i for i, w in enumerate(vocab)}
    lex = np.zeros((len(texts), len(vocab)), np.float32)
    for row, t in enumerate(texts):
        for w in terms(t):
            if (i := index.get(w)) is not None:
                lex[row, i] = scale
    return np.hstack([e, sims, lex])


def prev_similarities(embedder: Embedder, texts: Sequence[str],
                      prev: Sequence[str | None]) -> list[float | None]:  # fmt: skip
    """Cosine between each message and its previous user turn (None where there is none)."""
    idx = [i for i, p in enumerate(prev) if p]
    out: list[float | None] = [None] * len(texts)
    if idx:
        e = np.asarray(embedder.embed_documents([texts[i] for i in idx]), np.float32)
        pe = np.asarray(embedder.embed_documents([str(prev[i]) for i in idx]), np.float32)
        for i, v in zip(idx, _cosines(e, pe), strict=True):
            out[i] = float(v)
    return out


@dataclass
class RewardPrediction:
    label: str
    p_negative: float
    probs: dict[str, float]

    @property
    def negative(self) -> bool:
        return self.label in NEGATIVE


def reward_value(pred: RewardPrediction, sim_queries: float | None) -> float:
    """r from the predicted label: a negative label's judge value (-1 restate, -0.8 correction,
    -0.6 confusion); praise +0.5, +0.5 more when on topic (cos > 0.3), like the keyword reward;
    progress +0.1 when on topic; neutral and topic shift 0. Positive values are halved off topic
    (cos < 0.2); negatives are not: a complaint rarely repeats the question's words."""
    on_topic = sim_queries is not None and sim_queries > 0.3
    if pred.negative:
        return JUDGE_LABELS[pred.label]
    if pred.label == "pos_praise":
        r = 0.5 + (0.5 if on_topic else 0.0)
    elif pred.label == "pos_progress":
        r = PROGRESS if on_topic else 0.0
    else:
        r = 0.0
    if sim_queries is not None and sim_queries < 0.2:
        r *= 0.5
    return float(r)


def decide(probs: np.ndarray, labels: Sequence[str], neg_threshold: float) -> list[RewardPrediction]:
    """Each row's label: the likeliest negative one when the three `neg_*` probabilities sum to
    >= `neg_threshold`, else the likeliest of the others."""
    neg = np.array([lab in NEGATIVE for lab in labels])
    out = []
    for p in probs:
        p_neg = float(p[neg].sum())
        side = neg if p_neg >= neg_threshold else ~neg
        best = int(np.argmax(np.where(side, p, -1.0)))
        named = {lab: round(float(v), 4) for lab, v in zip(labels, p, strict=True)}
        out.append(RewardPrediction(labels[best], p_neg, named))
    return out


class RewardClassifier:
    """`predict(message, prev_sim)`: the label, from shipped coefficients (numpy only)."""

    def __init__(self, embedder: Embedder, params: dict[str, Any]):
        self.embedder = embedder
        self.params = params
        self.labels = tuple(params["labels"])
        self.coef = np.asarray(params["coef"], np.float32)
        self.intercept = np.asarray(params["intercept"], np.float32)
        self.neg_threshold = float(params["neg_threshold"])
        self.vocab = list(params.get("vocab", []))
        self.scale = float(params.get("lex_scale", LEX_SCALE))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.coef.T + self.intercept
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def decide(self, probs: np.ndarray) -> list[RewardPrediction]:
        return decide(probs, self.labels, self.neg_threshold)

    def predict_many(self, texts: Sequence[str], prev_sims: Sequence[float | None]) -> list[RewardPrediction]:
        x = features(self.embedder, texts, prev_sims, self.vocab, self.scale)
        return self.decide(self.probabilities(x))

    def predict(self, text: str, prev_sim: float | None) -> RewardPrediction:
        """One message; `prev_sim` = cosine to the previous user turn (None: no previous turn)."""
        return self.predict_many([text], [prev_sim])[0]

    def info(self) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if k not in ("coef", "intercept", "vocab")}


def _neg_prob(probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    return probs[:, [i for i, lab in enumerate(labels) if lab in NEGATIVE]].sum(1)


def _threshold_for(p_neg: np.ndarray, y_neg: np.ndarray) -> tuple[float, float, float]:
    """(threshold, precision, recall): the lowest threshold with precision >= TARGET_PRECISION."""
    best = (0.95, 0.0, 0.0)
    for t in np.round(np.arange(0.95, 0.04, -0.01), 2):
        pred = p_neg >= t
        if not pred.any():
            continue
        prec = float(y_neg[pred].mean())
        if prec >= TARGET_PRECISION:
            best = (float(t), prec, float(pred[y_neg].mean()))
    return best


def fit(embedder: Embedder, name: str, path: Path | str = LABELLED) -> dict[str, Any]:
    """Fit on the tuning part (scikit-learn): coefficients, vocabulary, threshold, provenance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    rows = load_labelled(path, "tune")
    texts = [r["text"] for r in rows]
    sims = prev_similarities(embedder, texts, [r.get("prev_query") for r in rows])
    y = np.array([r["label"] for r in rows])
    y_neg = np.isin(y, NEGATIVE)
    folds = list(StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(np.zeros(len(y)), y))
    cv: dict[tuple[float, float], tuple[float, float, float]] = {}
    for scale in LEX_GRID:
        # each fold's vocabulary comes from its own training part
        fold_x = [(features(embedder, texts, sims, build_vocab([texts[i] for i in tr]), scale), tr, te)
                  for tr, te in folds]  # fmt: skip
        for c in C_GRID:
            oof = np.zeros(len(y))
            for x, tr, te in fold_x:
                m = LogisticRegression(C=c, max_iter=5000).fit(x[tr], y[tr])
                oof[te] = _neg_prob(m.predict_proba(x[te]), list(m.classes_))
            cv[(scale, c)] = _threshold_for(oof, y_neg)
    # best recall at the target precision, then precision, then the stronger penalty
    scale, c = max(cv, key=lambda k: (cv[k][2], cv[k][1], -k[1]))
    vocab = build_vocab(texts)
    x = features(embedder, texts, sims, vocab, scale)
    model = LogisticRegression(C=c, max_iter=5000).fit(x, y)
    return {
        "embedder": name, "dim": int(x.shape[1] - N_EXTRA - len(vocab)),
        "labels": [str(v) for v in model.classes_],
        "vocab": vocab, "lex_scale": scale, "min_df": MIN_DF,
        "coef": [[round(float(v), 6) for v in row] for row in model.coef_],
        "intercept": [round(float(v), 6) for v in model.intercept_],
        "neg_threshold": cv[(scale, c)][0], "C": c, "cv_precision": round(cv[(scale, c)][1], 4),
        "cv_recall": round(cv[(scale, c)][2], 4), "n_train": len(rows), "target_precision": TARGET_PRECISION,
        "data_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16],
        "split": "tune (sha256(text.strip().lower())[:8] % 3 != 0)",
        "cv": {f"scale={k[0]} C={k[1]}": [round(v, 4) for v in t] for k, t in cv.items()},
    }  # fmt: skip


_CACHE: dict[int, RewardClassifier] = {}
_LOCK = threading.Lock()


def load_classifier(embedder: Embedder) -> RewardClassifier:
    """The shipped classifier for this embedder (one per embedder), refitted when it differs."""
    with _LOCK:
        clf = _CACHE.get(id(embedder))
        if clf is not None and clf.embedder is embedder:
            return clf
        name = getattr(embedder, "name", None)
        if not name:
            raise ValueError("the reward classifier needs an embedder with a model `name`")
        dim = getattr(embedder, "dim", None)
        params = json.loads(WEIGHTS.read_text()) if WEIGHTS.exists() else None
        if params is None or params.get("embedder") != name or (dim is not None and params.get("dim") != dim):
            log.info("reward classifier: fitting for embedder %s on the tuning part", name)
            params = fit(embedder, name)
        clf = _CACHE[id(embedder)] = RewardClassifier(embedder, params)
        return clf


def main(argv: list[str] | None = None) -> int:
    from vars_langgraph.models.fitting import fit_command

    return fit_command("Fit the reward classifier on the tuning part.", WEIGHTS, fit,
                       ("coef", "intercept", "vocab"), argv)


if __name__ == "__main__":
    raise SystemExit(main())
