"""benchmarks/reward.py --real: the hand labels of PrefEval's real chats line up with the chats
(read from ../shared, never copied) and nothing of their text is written out."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import SHARED
from vars_langgraph.models.reward_classifier import LABELS

ROOT = Path(__file__).resolve().parents[1]
PREFEVAL = SHARED / "data" / "prefeval"


def _bench():
    spec = importlib.util.spec_from_file_location("reward_bench", ROOT / "benchmarks" / "reward.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_labels_hold_ids_and_labels_only():
    rows = [json.loads(line) for line in (ROOT / "benchmarks" / "data" / "reward_real_labels.jsonl")
            .read_text().splitlines()]
    assert len(rows) == 292
    assert all(set(r) == {"conversation_id", "user_turn", "label", "why"} for r in rows)
    assert {r["label"] for r in rows} <= set(LABELS)
    assert all(r["user_turn"] >= 1 and len(r["why"].split()) <= 12 for r in rows)


@pytest.mark.skipif(not PREFEVAL.is_dir(), reason="../shared/data/prefeval not present")
def test_real_follow_ups_line_up_and_leave_no_text():
    bench = _bench()
    rows = bench.load_real(PREFEVAL, None)
    chats = json.loads((PREFEVAL / bench.REAL_CHATS).read_text())
    assert len(rows) == 292
    by_id = {c["conversation_id"][:8]: [m["content"] for m in c["conversation"] if m["role"] == "user"]
             for c in chats}
    for r in rows:
        cid, turn = r["id"].split(":")
        assert r["text"] == by_id[cid][int(turn)] and r["prev_query"] == by_id[cid][int(turn) - 1]
    tune, report = bench.load_real(PREFEVAL, "tune"), bench.load_real(PREFEVAL, "report")
    assert len(tune) + len(report) == 292 and report
    assert not {r["id"][:8] for r in tune} & {r["id"][:8] for r in report}  # a chat in one part
    result = {"rows": [dict(r, classifier={"coarse": "none"}) for r in rows[:3]],
              "readers": {"classifier": {"false_negatives": [rows[0]["text"]], "false_positives": []}}}
    out = json.dumps(bench.without_text(result))
    assert all(r["text"][:40] not in out for r in rows[:3]) and rows[0]["id"] in out
