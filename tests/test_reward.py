"""Keyword reward (word matching, not substrings) and the gate table of vars-method.md step 6."""

import pytest

from vars_langgraph.learning import reward as rw


@pytest.mark.parametrize("text,neg", [
    ("no, that's not what I asked", True),
    ("No. Use bullet points like I said", True),
    ("That’s not right", True),  # curly apostrophe
    ("this is wrong", True),
    ("I know what you mean, thanks", False),  # "no" inside "know" must not fire
    ("Nothing else, thanks", False),
    ("another question about notation", False),
    ("please redo it", True),
])
def test_negative_cues_match_words(text, neg):
    assert rw.has_negative_cue(text) is neg


@pytest.mark.parametrize("text,sim,expected", [
    ("no, that's not what I asked", 0.5, -1.0),
    ("no, that's not what I asked", 0.1, -0.5),  # halved when off topic
    ("thanks, great", 0.5, 1.0),  # +0.5 cue, +0.5 on topic
    ("thanks, great", 0.25, 0.5),
    ("thanks, great", 0.1, 0.25),
    ("what about the second part?", 0.5, 0.1),  # no cue, on topic: progress, not praise
    ("tell me about cats", 0.1, 0.0),
    ("ok", None, 0.0),
])
def test_keyword_reward_table(text, sim, expected):
    assert rw.keyword_reward(text, sim) == pytest.approx(expected)


@pytest.mark.parametrize("r,sq,snext,g", [
    (-1.0, 0.1, 0.1, 0.9),   # strong negative, notes unrelated to the query: learn a lot
    (-1.0, 0.1, 0.3, 0.5),   # code's extra condition on q_{t+1}
    (-1.0, 0.1, None, 0.9),
    (-1.0, 0.6, None, 0.2),  # notes on topic: probably not their fault
    (-1.0, 0.3, None, 0.5),
    (1.0, 0.5, None, 0.6),
    (1.0, 0.3, None, 0.3),
    (0.5, 0.9, None, 0.5),   # not > 0.5
    (0.0, 0.0, None, 0.5),
])
def test_gate_table(r, sq, snext, g):
    assert rw.gate(r, sq, snext) == g


def test_judge_verdict_parsing():
    v = rw.parse_verdict('blah {"label": "neg_correction", "confidence": 0.9, "rationale": "x"} tail')
    assert v is not None and v.reward == -0.8 and v.confidence == 0.9
    assert rw.parse_verdict('{"label": "made_up", "confidence": 0.9}') is None
    assert rw.parse_verdict('{"label": "pos_praise", "confidence": 7}') is None
    assert rw.parse_verdict("not json") is None


ENFORCEMENTS = [
    "No, that's not what I asked for. I said I prefer bullet points.",
    "You didn't follow my preference. As I said, I prefer short answers.",
    "That is not what I wanted. Again: I'd like you to show every step.",
    "No, I told you before. I prefer answers without emojis.",
]


@pytest.mark.parametrize("text", ENFORCEMENTS)
@pytest.mark.parametrize("sim_q", [0.1, 0.25, 0.45])  # the restated preference vs the last query
@pytest.mark.parametrize("sim_notes", [0.05, 0.3, 0.6])  # injected notes vs the last query
@pytest.mark.parametrize("baseline", [-0.3, 0.0, 0.3])
def test_enforcement_turns_give_a_learning_signal(text, sim_q, sim_notes, baseline):
    """A negative cue plus a restated preference is a negative reward whatever the similarities,
    and the gate never silences it: |A| = g |r - b| stays well above the 1e-6 skip threshold."""
    r = rw.keyword_reward(text, sim_q)
    g = rw.gate(r, sim_notes, sim_notes)
    assert r <= -0.5 and g >= 0.2
    assert abs(g * (r - baseline)) >= 0.04
