"""Reranker calibration: raw reranker score -> s0 = log P(useful | query, note).

Every backend's raw score (cosine, log P("yes"), a cross-encoder logit) goes through one
monotone logistic map, P = sigmoid(a * raw + b + c * is_global), fitted on labelled
(query, note, useful) pairs (`data/calibration_labelled.jsonl`). s0 = log P is then in the
units the method's constants (tau, beta, eta) were set for, whatever the backend. The fitted
maps ship in `data/calibration.json`, keyed `"<backend>:<model>"`; refit one with
`python benchmarks/rerank.py --fit` and point `reranker.calibration_path` at the result.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vars_langgraph.extras import require

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SHIPPED = DATA_DIR / "calibration.json"
LABELLED = DATA_DIR / "calibration_labelled.jsonl"
HELD_OUT_SHARE = 0.3  # share of queries held out from fitting (by a hash of the query text)


@dataclass(frozen=True)
class Calibration:
    """P(useful) = sigmoid(a * raw + b + c * is_global); a > 0 keeps the map monotone."""

    a: float
    b: float
    c: float = 0.0
    key: str = "identity"
    input: str = "score"  # "log_p": raw is a log-probability, mapped to its logit first

    def logit(self, raw: np.ndarray, is_global: np.ndarray | None = None) -> np.ndarray:
        r = np.asarray(raw, np.float64)
        if self.input == "log_p":
            r = np.minimum(r, -1e-9)
            r = r - np.log(-np.expm1(r))  # log p -> log(p / (1 - p))
        x = self.a * r + self.b
        if is_global is not None:
            x = x + self.c * np.asarray(is_global, np.float64)
        return x

    def log_p(self, raw: np.ndarray, is_global: np.ndarray | None = None,
              bonus: float | None = None) -> np.ndarray:
        """s0 = log P(useful); `bonus` (log-odds) replaces the fitted global coefficient c."""
        glob = None if is_global is None else np.asarray(is_global, bool)
        cal = self if bonus is None else Calibration(self.a, self.b, float(bonus), self.key, self.input)
        return -np.logaddexp(0.0, -cal.logit(raw, glob))

    def prob(self, raw: np.ndarray, is_global: np.ndarray | None = None) -> np.ndarray:
        return np.exp(self.log_p(raw, is_global))


def fit_logistic(raw: np.ndarray, is_global: np.ndarray, y: np.ndarray,
                 l2: float = 1e-3) -> tuple[float, float, float]:
    """Maximum-likelihood (a, b, c) with a small L2 penalty on a and c (not on the intercept
    b): scikit-learn's logistic regression, used only when refitting (the `[fit]` extra); the
    runtime applies the fitted numbers with numpy (`Calibration`)."""
    require("fit", "sklearn")
    from sklearn.linear_model import LogisticRegression

    x = np.column_stack([np.asarray(raw, np.float64), np.asarray(is_global, np.float64)])
    model = LogisticRegression(C=1.0 / l2, tol=1e-10, max_iter=10_000)
    model.fit(x, np.asarray(y, bool))
    a, c = (float(v) for v in model.coef_[0])
    b = float(model.intercept_[0])
    if not a > 0:
        raise ValueError(f"calibration slope a={a:.3g} is not positive: the raw score does not "
                         "rank useful notes above the others on this data")
    return a, b, c


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, np.float64) - np.asarray(y, np.float64)) ** 2))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: mean |confidence - accuracy| over equal-width bins."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[idx == i].mean() - y[idx == i].mean()) * (idx == i).sum()
                     for i in range(bins) if (idx == i).any()) / max(1, len(p)))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(y, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def split_of(query: str) -> str:
    """"fit" or "held_out", fixed by a hash of the query (all pairs of a query stay together)."""
    h = int(hashlib.sha256(query.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "held_out" if h < HELD_OUT_SHARE else "fit"


def load_labelled(path: str | Path = LABELLED) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for r in rows:
        r.setdefault("global", r["note"].lower().startswith("in general"))
    return rows


def evaluate(cal: Calibration, raw: np.ndarray, is_global: np.ndarray, y: np.ndarray,
             base_rate: float) -> dict[str, float]:
    """Brier, ECE and log loss of the map, and of the constant predictor P = base_rate."""
    p = cal.prob(raw, is_global)
    const = np.full(len(y), base_rate)
    return {"pairs": int(len(y)), "brier": brier(p, y), "ece": ece(p, y),
            "log_loss": log_loss(p, y), "brier_constant": brier(const, y),
            "ece_constant": ece(const, y), "log_loss_constant": log_loss(const, y)}


def fit_and_validate(key: str, rows: list[dict[str, Any]], raw: np.ndarray,
                     input: str = "score") -> dict[str, Any]:
    """Fit on the 'fit' queries, validate on the held-out ones; the map plus its report."""
    raw = Calibration(1.0, 0.0, 0.0, key, input).logit(raw)  # log_p -> logit; else unchanged
    y = np.array([bool(r["useful"]) for r in rows])
    glob = np.array([bool(r["global"]) for r in rows])
    fit = np.array([split_of(r["query"]) == "fit" for r in rows])
    a, b, c = fit_logistic(raw[fit], glob[fit], y[fit])
    cal = Calibration(a, b, c, key)  # on the transformed raw score
    base_rate = float(y[fit].mean())
    return {"a": a, "b": b, "c": c, "input": input,
            "fit": evaluate(cal, raw[fit], glob[fit], y[fit], base_rate),
            "held_out": evaluate(cal, raw[~fit], glob[~fit], y[~fit], base_rate)}


def calibration_key(cfg: Any) -> str:
    """"<backend>:<model>" of a VARSConfig's reranker (embedding: the embedding model)."""
    rc = cfg.reranker
    if rc.backend in ("embedding", "none"):
        return f"embedding:{cfg.embedding.model}"
    if rc.backend == "llm":
        llm = rc.llm or cfg.llm
        return f"llm:{cfg.local_server.model if not llm.base_url else llm.model}"
    return f"cross_encoder:{rc.model or 'BAAI/bge-reranker-base'}"


def load_maps(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    p = Path(path).expanduser() if path else SHIPPED
    if not p.exists():
        raise FileNotFoundError(f"reranker.calibration_path: file not found: {p}")
    try:
        data = json.loads(p.read_text())
        return dict(data["maps"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{p}: not a calibration file (expected {{'maps': {{key: {{a, b, c}}}}}}): "
                         f"{e}") from e


def load_calibration(key: str, path: str | Path | None = None) -> Calibration:
    """The fitted map for `key` from `path` (None: the shipped file).

    Unknown key: log P(yes) backends (llm, cross_encoder) keep their raw score as s0 (identity
    on log P); other scores get the shipped map of the default embedder, with a warning that
    says how to fit one."""
    maps = load_maps(path)
    m = maps.get(key)
    if m is not None:
        return Calibration(float(m["a"]), float(m["b"]), float(m.get("c", 0.0)), key,
                           str(m.get("input", "score")))
    backend = key.split(":", 1)[0]
    hint = "fit one with `python benchmarks/rerank.py --fit` and set reranker.calibration_path"
    if backend in ("llm", "cross_encoder"):
        log.warning("no calibration for %s; s0 = the raw log P(yes) (%s)", key, hint)
        return Calibration(1.0, 0.0, 0.0, "identity", "log_p")  # s0 = raw log P
    fallback = maps.get("embedding:all-MiniLM-L6-v2")
    if fallback is None:
        raise ValueError(f"no calibration for {key} in {path or SHIPPED}; {hint}")
    log.warning("no calibration for %s; using the all-MiniLM-L6-v2 map (%s)", key, hint)
    return Calibration(float(fallback["a"]), float(fallback["b"]), float(fallback.get("c", 0.0)),
                       f"{key} (fallback)")


def write_map(path: str | Path, key: str, report: dict[str, Any], meta: dict[str, Any]) -> None:
    """Add or replace `key` in a calibration file (other keys kept)."""
    p = Path(path)
    data = json.loads(p.read_text()) if p.exists() else {"maps": {}}
    data.setdefault("maps", {})[key] = {"a": report["a"], "b": report["b"], "c": report["c"],
                                        "input": report.get("input", "score"), **meta,
                                        "held_out": report["held_out"]}
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2) + "\n")


