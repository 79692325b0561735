"""benchmarks/collab_compare.py: the paired difference of two collab runs, user by user."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("collab_compare", ROOT / "benchmarks" / "collab_compare.py")
cc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cc)


def _run(enforcements: dict[str, list[float]]) -> dict:
    return {"vars": {"per_user": {u: {"enforcements": e} for u, e in enforcements.items()}}}


def test_paired_difference_counts_users_and_covers_the_mean(tmp_path):
    old = _run({"a": [2, 2, 2, 2, 2, 2], "b": [1, 1, 1, 1, 1, 1], "c": [0] * 6, "gone": [5] * 6})
    new = _run({"a": [2, 1, 1, 1, 1, 1], "b": [1, 1, 1, 1, 1, 1], "c": [0, 1, 1, 1, 1, 1]})
    r = cc.paired(old["vars"]["per_user"], new["vars"]["per_user"], last=5)
    assert r["users"] == 3 and r["better"] == 1 and r["worse"] == 1  # "gone" is in one run only
    assert r["mean"] == 0.0 and r["ci_low"] <= 0.0 <= r["ci_high"]
    paths = []
    for name, run in (("old", old), ("new", new)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(run))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "collab_compare.py"), *map(str, paths)],
                         capture_output=True, text=True, check=True).stdout
    assert "vars last 5: new - old +0.000" in out and "1 better, 1 worse" in out
