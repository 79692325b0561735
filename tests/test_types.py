"""The runtime type-checks clean: mypy with pyproject.toml's [tool.mypy] on vars_langgraph."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_clean_on_the_runtime():
    pytest.importorskip("mypy")
    run = subprocess.run([sys.executable, "-m", "mypy", "vars_langgraph"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
