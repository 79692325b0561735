"""Two `eval collab` runs of the same users, user by user: the paired difference of a method's
enforcements per session (new - old) over the last 5 and over all sessions, with a bootstrap
95% CI (10,000 resamples, seed 0).

    python benchmarks/collab_compare.py OLD/results.json NEW/results.json [--method vars]

Round to round: `git show REV:docs/results/collab/results.json > old.json` gives an earlier one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def paired(old: dict, new: dict, last: int | None, resamples: int = 10_000) -> dict[str, float | int]:
    """Mean, CI and counts of new - old per user (users in both runs)."""
    users = sorted(set(old) & set(new))
    if not users:
        raise SystemExit("the two runs share no user")

    def mean(run: dict, u: str) -> float:
        e = run[u]["enforcements"]
        return float(np.mean(e[-last:] if last else e))

    diff = np.array([mean(new, u) - mean(old, u) for u in users])
    rng = np.random.default_rng(0)
    boot = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(1)
    return {"mean": float(diff.mean()), "ci_low": float(np.percentile(boot, 2.5)),
            "ci_high": float(np.percentile(boot, 97.5)), "users": len(users),
            "better": int((diff < 0).sum()), "worse": int((diff > 0).sum())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--method", default="vars")
    args = ap.parse_args(argv)
    old, new = (json.loads(Path(f).read_text())[args.method]["per_user"] for f in (args.old, args.new))
    for name, last in (("last 5", 5), ("all sessions", None)):
        r = paired(old, new, last)
        print(f"{args.method} {name}: new - old {r['mean']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
              f" ({r['users']} users: {r['better']} better, {r['worse']} worse)")


if __name__ == "__main__":
    main()
