"""The scripted user's natural phrase pools share no cue with what the reward was built from."""

from __future__ import annotations

import random
import re

import pytest

from vars_langgraph.learning import reward as rw
from vars_langgraph.models.reward_classifier import load_labelled
from vars_langgraph_eval.simulator import POOLS, PhrasePool, ScriptedSettings, enforcement

NATURAL = ("tune", "report")


def trigrams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower().replace("\u2019", "'"))
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def phrases(pool: PhrasePool) -> list[str]:
    return [*pool.openers, *pool.leads, *pool.followups, *pool.closings]


def leaks(pool: PhrasePool, training: list[str]) -> list[str]:
    """Phrases with a keyword cue, or a word 3-gram of a labelled reward message."""
    seen = set().union(*(trigrams(t) for t in training))
    return [p for p in phrases(pool)
            if rw.has_negative_cue(p) or rw.has_positive_cue(p) or trigrams(p) & seen]  # fmt: skip


@pytest.mark.parametrize("name", NATURAL)
def test_natural_pool_shares_no_cue_with_keyword_lists_or_training_messages(name):
    training = [r["text"] for r in load_labelled()]
    assert len(training) >= 400
    assert leaks(POOLS[name], training) == []


def test_leak_check_catches_a_cue():
    """The check above can fail: a keyword cue, or a labelled message's words, are leaks."""
    training = [r["text"] for r in load_labelled()]
    base = POOLS["report"]
    for bad in ("Thanks, that helps a lot.", "Hmm, I said something else.", training[0]):
        pool = PhrasePool(base.openers + (bad,), base.leads, base.followups, base.closings)
        assert leaks(pool, training) == [bad], bad
    assert leaks(POOLS["keyword"], training)  # the first phrasing complains in the cues' words


def test_report_and_tune_pools_are_disjoint():
    tune = set().union(*(trigrams(p) for p in phrases(POOLS["tune"])))
    assert not [p for p in phrases(POOLS["report"]) if trigrams(p) & tune]
    assert set(phrases(POOLS["tune"])).isdisjoint(phrases(POOLS["report"]))


def test_leads_end_in_a_first_person_wish_and_enforcement_uses_the_pool():
    for name in NATURAL:
        for lead in POOLS[name].leads:
            assert re.search(r"\bI(?:'d| would)?\s+\w+$", lead), lead

    class Pref:  # PreferenceSpec's two fields that `enforcement` reads, plus `explicit`
        dislike_fp = None
        details_fp: list[str] = []

        @staticmethod
        def explicit(lead: str) -> str:
            return f"{lead} short answers."

    for seed in range(10):
        text = enforcement(Pref, random.Random(seed), POOLS["tune"])  # type: ignore[arg-type]
        assert any(text.startswith(o) for o in POOLS["tune"].openers)
    assert ScriptedSettings().pool is POOLS["report"]
    with pytest.raises(ValueError, match="phrase pool"):
        _ = ScriptedSettings(phrases="nope").pool
