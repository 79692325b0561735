"""Extraction gate: a cheap check that skips the LLM extractor on messages with no preference.

Rules plus a logistic regression on the message's embedding (MiniLM by default):
- pass when the rule-based fast path (`fast_preferences`) finds a preference, or a strong cue
  is present ("prefer", "always", "never", "don't", "stop", "from now on", "I said", ...);
- otherwise pass when P(preference | embedding) >= threshold.

The weights ship in `vars_langgraph/data/extraction_gate.json`, fitted on the dev split of
`extraction_labelled.jsonl` (line index % 3 != 2; the held-out third is never used), with the
threshold and the L2 penalty chosen by 5-fold cross-validation on dev (the highest threshold
that keeps >= 95% of preference messages; the penalty that then skips most neutral ones).
Refit: `python -m vars_langgraph.models.extraction_gate --fit`. With
another embedder (other name or dimension) the gate refits itself at load from the same file;
an embedder without a `name` gets no gate. Any error in the gate passes the message on to the
LLM (never loses a preference).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vars_langgraph.extras import require

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
LABELLED = DATA_DIR / "extraction_labelled.jsonl"
WEIGHTS = DATA_DIR / "extraction_gate.json"
TARGET_RECALL = 0.95
L2_GRID = (1.0, 0.3, 0.1, 0.03, 0.01)  # chosen by cross-validation on dev (most neutral skipped)
FOLDS = 5

_CUES = re.compile(
    r"\b(?:i(?:'d| would)? prefer|always|never|don't|do not|stop|no more|from now on|in future|"
    r"going forward|i hate|i (?:don't|do not) like|i'd rather|i(?:'d| would) like you|"
    r"i want you|whenever|i said|i told you|avoid|instead of|rather than|"
    # first-person likes and dislikes about anything, not only answers (PrefEval's tuning topics)
    r"prefer\w*|dislike\w*|aversion|despise|refuse|can't stand|cannot stand|not (?:a )?(?:big )?fan|"
    r"(?:not interested|no interest) in|allerg\w*|exclusively|won't consider|bias against|"
    r"i (?:really |strongly |absolutely )?(?:love|enjoy|like|hate)|"
    r"i (?:only|usually|mostly|tend to|rarely)|favou?rite)\b",
    re.I,
)


class Embedder(Protocol):
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...


def rule_pass(text: str) -> bool:
    """The rules alone: an explicit preference or a strong cue."""
    from vars_langgraph.models.extraction.rules import fast_preferences  # lazy: extraction imports a lot

    t = text.replace("\u2019", "'")
    return bool(_CUES.search(t)) or bool(fast_preferences(t))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 0.1) -> tuple[np.ndarray, float]:
    """(w, b): scikit-learn's logistic regression with an L2 penalty `l2` on w (not on b), used
    only when fitting (the `[fit]` extra); the runtime applies w and b with numpy."""
    require("fit", "sklearn")
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0 / l2, tol=1e-10, max_iter=10_000)
    model.fit(np.asarray(x, np.float64), np.asarray(y, bool))
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def _sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-z))


def load_dev(path: Path = LABELLED) -> tuple[list[str], np.ndarray]:
    """(last user message, has_preference) of the dev split (index % 3 != 2)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    rows = [json.loads(ln) for i, ln in enumerate(lines) if i % 3 != 2]
    return [r["text"] for r in rows], np.array([float(r["has_preference"]) for r in rows])


def cross_validate(x: np.ndarray, y: np.ndarray, rules: np.ndarray, l2: float) -> tuple[float, float]:
    """(threshold, share of neutral messages skipped) by FOLDS-fold cross-validation.

    The threshold is the highest whose cross-validated recall (rules OR p >= t) is >= TARGET_RECALL.
    """
    idx = np.arange(len(y))
    probs = np.zeros(len(y))
    for k in range(FOLDS):
        test = idx % FOLDS == k
        w, b = fit_logistic(x[~test], y[~test], l2)
        probs[test] = _sigmoid(x[test] @ w + b)
    pos = y == 1
    threshold = 0.0
    for t in np.round(np.arange(0.95, 0.0, -0.01), 2):
        if (rules[pos] | (probs[pos] >= t)).mean() >= TARGET_RECALL:
            threshold = float(t)
            break
    skipped = float((~(rules[~pos] | (probs[~pos] >= threshold))).mean())
    return threshold, skipped


def _data_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def fit(embedder: Embedder, name: str, path: Path = LABELLED) -> dict[str, Any]:
    """Fit the gate on the dev split: weights, bias, threshold and provenance."""
    texts, y = load_dev(path)
    x = np.asarray(embedder.embed_documents(texts), np.float32)
    rules = np.array([rule_pass(t) for t in texts])
    cv = {l2: cross_validate(x, y, rules, l2) for l2 in L2_GRID}
    l2 = max(L2_GRID, key=lambda v: (cv[v][1], v))  # most skipped; ties: the stronger penalty
    threshold, skipped = cv[l2]
    w, b = fit_logistic(x, y, l2)
    return {
        "embedder": name, "dim": int(x.shape[1]), "threshold": threshold, "bias": round(b, 6),
        "weights": [round(float(v), 6) for v in w], "n_train": len(texts),
        "n_preference": int(y.sum()), "data_sha256": _data_hash(path), "l2": l2,
        "cv_neutral_skipped": round(skipped, 4), "target_recall": TARGET_RECALL,
        "split": "dev (line index % 3 != 2)",
    }  # fmt: skip


class ExtractionGate:
    """`passes(window)`: whether the LLM extractor should read this dialogue window."""

    def __init__(self, embedder: Embedder, params: dict[str, Any], threshold: float | None = None):
        self.embedder = embedder
        self.params = params
        self.w = np.asarray(params["weights"], np.float32)
        self.b = float(params["bias"])
        self.threshold = float(params["threshold"] if threshold is None else threshold)

    def probability(self, text: str) -> float:
        e = np.asarray(self.embedder.embed_documents([text]), np.float32)[0]
        return float(_sigmoid(float(e @ self.w) + self.b))

    def passes_text(self, text: str) -> bool:
        text = " ".join(str(text or "").split())
        if not text:
            return False
        if rule_pass(text):
            return True
        try:
            return self.probability(text) >= self.threshold
        except Exception as e:  # noqa: BLE001 - a broken gate must not lose preferences
            log.warning("extraction gate failed (%s); passing the message on", e)
            return True

    def passes(self, window: Sequence[tuple[str, str]]) -> bool:
        """Judged on the last user message (the one the extractor extracts from)."""
        last = next((t for r, t in reversed(list(window)) if r == "user"), "")
        return self.passes_text(last)

    def info(self) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if k != "weights"} | {"threshold": self.threshold}


_GATES: dict[int, ExtractionGate] = {}
_LOCK = threading.Lock()


def load_gate(embedder: Embedder, threshold: float | None = None) -> ExtractionGate:
    """The shipped gate for this embedder, or one refitted at load when the embedder differs."""
    name = getattr(embedder, "name", None)
    if not name:
        raise ValueError("the extraction gate needs an embedder with a model `name`")
    dim = getattr(embedder, "dim", None)
    params = json.loads(WEIGHTS.read_text()) if WEIGHTS.exists() else None
    if params is None or params.get("embedder") != name or (dim is not None and params.get("dim") != dim):
        log.info("extraction gate: fitting for embedder %s on the labelled dev split", name)
        params = fit(embedder, name)
    return ExtractionGate(embedder, params, threshold)


def worth_extracting(window: Sequence[tuple[str, str]], embedder: Embedder) -> bool:
    """Whether the LLM extractor should run on this window (one gate per embedder, cached)."""
    try:
        with _LOCK:
            gate = _GATES.get(id(embedder))
            if gate is None or gate.embedder is not embedder:
                gate = _GATES[id(embedder)] = load_gate(embedder)
    except Exception as e:  # noqa: BLE001 - no gate: extract as before
        log.warning("extraction gate unavailable (%s); extracting", e)
        return True
    return gate.passes(window)


def main(argv: list[str] | None = None) -> int:
    from vars_langgraph.models.fitting import fit_command

    return fit_command("Fit the extraction gate on the labelled dev split.", WEIGHTS, fit, ("weights",), argv)


if __name__ == "__main__":
    raise SystemExit(main())
