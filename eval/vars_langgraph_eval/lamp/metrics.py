"""The official LaMP metrics, reimplemented without hub downloads (`eval/evaluation.py`).

LaMP-1/2: accuracy and macro-F1 (sklearn) over the label list, exact match after strip,
unknown strings map to -1. LaMP-3: MAE/RMSE, unparsable output becomes the rating farthest
from the gold. LaMP-4..7: ROUGE-1/ROUGE-L F-measure (rouge_score, no stemming), averaged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from vars_langgraph_eval.lamp.data import LABELS, normalise_task

HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "MAE": False, "RMSE": False,
                    "rouge-1": True, "rouge-L": True}


def metric_names(task: str) -> list[str]:
    """Result keys of a task, as the official script names them."""
    n = int(normalise_task(task)[-1])
    if n in (1, 2):
        return ["accuracy", "f1"]
    if n == 3:
        return ["MAE", "RMSE"]
    return ["rouge-1", "rouge-L"]


def label_index(x: str, labels: Sequence[str]) -> int:
    """Position of x.strip() in the label list (case-sensitive), -1 when unknown."""
    try:
        return list(labels).index(str(x).strip())
    except ValueError:
        return -1


def classification_metrics(
    preds: Sequence[str], golds: Sequence[str], labels: Sequence[str]
) -> dict[str, float]:
    """Accuracy and macro-F1 over `labels` (F1 labels=range(len(labels)), -1 always wrong)."""
    from sklearn.metrics import accuracy_score, f1_score

    p = [label_index(x, labels) for x in preds]
    g = [label_index(x, labels) for x in golds]
    acc = accuracy_score(g, p)
    f1 = f1_score(g, p, labels=list(range(len(labels))), average="macro", zero_division=0.0)
    return {"accuracy": float(acc), "f1": float(f1)}


def rating_value(pred: str, gold: str) -> float:
    """float(pred.strip()); if that fails, the rating farthest from the gold (1.0 or 5.0).

    Ties (gold 3) give 5.0, as `abs(1 - y) > abs(5 - y)` is false. Non-finite values ('nan',
    'inf'), which would crash the official script, count as unparsable here.
    """
    y = float(str(gold).strip())
    try:
        v = float(str(pred).strip())
        if math.isfinite(v):
            return v
    except ValueError:
        pass
    return 1.0 if abs(1 - y) > abs(5 - y) else 5.0


def regression_metrics(preds: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    """MAE and RMSE with the farthest-rating rule; no clamping or rounding."""
    if not golds:
        raise ValueError("no examples to score")
    errs = [rating_value(p, g) - float(str(g).strip()) for p, g in zip(preds, golds, strict=True)]
    mae = sum(abs(e) for e in errs) / len(errs)
    rmse = math.sqrt(sum(e * e for e in errs) / len(errs))
    return {"MAE": mae, "RMSE": rmse}


_SCORER = None


def _rouge_scorer():
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    return _SCORER


def rouge_pair(pred: str, gold: str) -> dict[str, float]:
    """Per-example ROUGE-1 / ROUGE-L F-measure of pred.strip() against gold.strip()."""
    s = _rouge_scorer().score_multi([str(gold).strip()], str(pred).strip())
    return {"rouge-1": s["rouge1"].fmeasure, "rouge-L": s["rougeL"].fmeasure}


def rouge_metrics(preds: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    """Mean per-example ROUGE-1/ROUGE-L F (the official bootstrap `mid` estimates this mean)."""
    if not golds:
        raise ValueError("no examples to score")
    pairs = [rouge_pair(p, g) for p, g in zip(preds, golds, strict=True)]
    n = len(pairs)
    return {k: sum(x[k] for x in pairs) / n for k in ("rouge-1", "rouge-L")}


def score(
    task: str, preds: Sequence[str], golds: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, float]:
    """Official metrics of aligned prediction/gold lists for a task."""
    t = normalise_task(task)
    if t in ("LaMP_1", "LaMP_2"):
        return classification_metrics(preds, golds, labels or LABELS[t])
    if t == "LaMP_3":
        return regression_metrics(preds, golds)
    return rouge_metrics(preds, golds)


def evaluate_task(
    task: str, golds: Mapping[str, str], preds: Mapping[str, str],
    labels: Sequence[str] | None = None,
) -> dict[str, float]:
    """Score {id: output} predictions against golds; the id sets must be equal (as officially)."""
    if set(golds) != set(preds):
        missing, extra = set(golds) - set(preds), set(preds) - set(golds)
        raise ValueError(
            f"prediction ids and gold ids do not match ({len(missing)} missing, "
            f"{len(extra)} extra; e.g. {sorted(missing or extra)[:3]})"
        )
    ids = sorted(golds)
    return score(task, [preds[i] for i in ids], [golds[i] for i in ids], labels)


def utility(task: str, pred: str, gold: str, labels: Sequence[str] | None = None) -> float:
    """Per-example feedback in [0, 1], higher is better (ROPG/RSPG learning signal).

    LaMP-1/2: exact label match; LaMP-3: (worst - |pred - gold|) / worst with
    worst = max(|y - 1|, |y - 5|) as in ROPG's trainer; LaMP-4..7: ROUGE-1 F.
    """
    t = normalise_task(task)
    if t in ("LaMP_1", "LaMP_2"):
        lab = labels or LABELS[t]
        i = label_index(pred, lab)
        return float(i != -1 and i == label_index(gold, lab))
    if t == "LaMP_3":
        y = float(str(gold).strip())
        worst = max(abs(y - 1), abs(y - 5)) or 1.0
        return max(0.0, (worst - abs(rating_value(pred, gold) - y)) / worst)
    return rouge_pair(pred, gold)["rouge-1"]
