"""The one percentile of the evaluation tooling: numpy's linear interpolation, None when empty."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile(xs: Sequence[float], q: float) -> float | None:
    """The q-th percentile (q in 0..100) of `xs`, or None for no values."""
    return float(np.percentile(np.asarray(xs, np.float64), q)) if len(xs) else None


def summary(xs: Sequence[float], digits: int = 4) -> dict[str, float | None]:
    """p50, p95 and mean of `xs`, rounded (None each when empty)."""
    if not len(xs):
        return {"p50": None, "p95": None, "mean": None}
    return {"p50": round(percentile(xs, 50), digits), "p95": round(percentile(xs, 95), digits),
            "mean": round(float(np.mean(xs)), digits)}
