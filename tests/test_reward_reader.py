"""The fine-tuned reaction reader (models/reward_reader.py, `reward.backend: finetuned`): its
shipped weights (a LoRA adapter and a head fitted on the labelled set's tuning part) are current,
read the report part they never saw, and are used by the real graph's reward node."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from vars_langgraph import VARSConfig, VARSEngine, build_graph
from vars_langgraph.models import reward_reader
from vars_langgraph.models.reward_classifier import LABELS, RewardPrediction, load_labelled
from vars_langgraph.models.reward_reader import SHIPPED, load_reader, reader_path
from vars_langgraph.storage import open_checkpointer, open_store


@pytest.fixture(scope="module")
def reader():
    return load_reader(VARSConfig())


def test_the_shipped_weights_are_fitted_on_the_current_set_and_recipe():
    """A change to the labelled set or the recipe without a refit (`python -m
    vars_langgraph.models.reward_reader --fit`) would leave every user to fit their own."""
    assert reader_path(VARSConfig()) == SHIPPED and SHIPPED.stat().st_size < 2_000_000


def test_reading_needs_no_fitting_library():
    """peft fits the adapter (the `fit` extra); reading folds it into MiniLM without it."""
    code = ("import sys; from vars_langgraph import VARSConfig; "
            "from vars_langgraph.models.reward_reader import load_reader; "
            "p = load_reader(VARSConfig()).predict('hmm, that is not what I asked for'); "
            "print(p.negative, 'peft' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"]


def test_reads_complaints_it_never_saw(reader):
    """Report part (404 messages, never trained on): benchmarks/reward.py measured precision
    0.93, recall 0.68; the linear classifier reads 0.64 of them."""
    rows = load_labelled(split="report")
    preds = reader.predict_many([r["text"] for r in rows])
    truth = [r["label"].startswith("neg_") for r in rows]
    said = [p.negative for p in preds]
    hits = sum(t and s for t, s in zip(truth, said, strict=True))
    assert hits / sum(said) >= 0.85 and hits / sum(truth) >= 0.6
    thanks = reader.predict("Made them this morning, the banana trick worked beautifully.")
    assert not thanks.negative


def _graph(tmp_path):
    config = VARSConfig.from_dict({"data_dir": str(tmp_path / "data")})
    engine = VARSEngine(config, open_store(config), index_dir=tmp_path / "index",
                        extractor=type("E", (), {"extract": lambda self, t: []})(),
                        chat_model=FakeListChatModel(responses=["Here is a long essay."]))
    return build_graph(config, engine=engine, checkpointer=open_checkpointer(config))


def _reaction(graph, text: str) -> dict:
    cfg = {"configurable": {"thread_id": "t", "user_id": "u"}}
    graph.invoke({"messages": [("user", "Explain recursion briefly.")]}, cfg)
    return graph.invoke({"messages": [("user", text)]}, cfg)["reward"]


def test_reward_node_reads_with_the_fitted_reader_by_default(reader, tmp_path):
    out = _reaction(_graph(tmp_path), "hmm, that's way more text than I need")
    assert out["backend"] == "finetuned" and out["label"].startswith("neg_")
    assert out["value"] < 0 and out["advantage"] < 0


def test_both_readers_read_a_plain_no_as_a_complaint(reader, tmp_path):
    """"No, that's not what I asked for." is a complaint in the node's reading (both readers'
    probabilities averaged, `combine`)."""
    text = "No, that's not what I asked for."
    out = _reaction(_graph(tmp_path / "g"), text)
    assert out["backend"] == "finetuned" and out["value"] < 0


def test_a_damaged_fit_falls_back_to_the_classifier(tmp_path, monkeypatch):
    damaged = tmp_path / "reader.safetensors"
    damaged.write_bytes(b"not a model")
    monkeypatch.setattr(reward_reader, "reader_path", lambda cfg: damaged)
    out = _reaction(_graph(tmp_path), "you lost me there")
    assert out["backend"] == "classifier" and out["label"] == "neg_confusion"


def _pred(p_neg: float) -> RewardPrediction:
    """A reading with `p_neg` on neg_correction and the rest on neutral."""
    probs = {lab: 0.0 for lab in LABELS} | {"neg_correction": p_neg, "neutral": 1.0 - p_neg}
    return RewardPrediction("neg_correction" if p_neg >= 0.5 else "neutral", p_neg, probs)


def test_combine_averages_the_two_readers():
    """One reader sure and the other not is no complaint; both leaning to one is."""
    assert not reward_reader.combine(_pred(0.99), _pred(0.05)).negative  # 0.52 < BOTH_THRESHOLD
    assert reward_reader.combine(_pred(0.7), _pred(0.65)).negative
    both = reward_reader.combine(_pred(0.9), _pred(0.8))
    assert both.label == "neg_correction" and abs(both.p_negative - 0.85) < 1e-6
    assert reward_reader.combine(_pred(0.9), None).p_negative == 0.9
