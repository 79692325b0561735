"""PrefEval (CC BY-NC 4.0) is read from where the user keeps it, never copied into this
repository: no tracked file holds any of its texts (preferences, questions, persona turns,
the logged real chats' messages), and the PrefEval benchmark's results name items by key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SHARED

PREFEVAL = SHARED / "data" / "prefeval"
ROOT = Path(__file__).resolve().parents[1]
MIN_CHARS = 40  # shorter texts ("thanks, that works") are anyone's words


def _texts(node: object, out: set[str]) -> None:
    if isinstance(node, str):
        if len(node.strip()) >= MIN_CHARS:
            out.add(node.strip()[:120])
    elif isinstance(node, dict):
        for v in node.values():
            _texts(v, out)
    elif isinstance(node, list):
        for v in node:
            _texts(v, out)


@pytest.mark.skipif(not PREFEVAL.is_dir(), reason="../shared/data/prefeval not present")
def test_no_tracked_file_holds_a_prefeval_text():
    texts: set[str] = set()
    for path in PREFEVAL.rglob("*.json"):
        _texts(json.loads(path.read_text()), texts)
    assert len(texts) > 1000  # the data was read
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    found = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (weights, images)
        found += [(name, t[:60]) for t in texts if t in content]
    assert not found, found[:10]
