"""The learned reward: labelled set, hashed split, shipped coefficients, and the reward node."""

from __future__ import annotations

import collections
import hashlib
import json

import pytest

from vars_langgraph.config import VARSConfig
from vars_langgraph.learning import reward as rw
from vars_langgraph.models import reward_classifier as rc
from vars_langgraph.models.embedder import load_embedder


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(VARSConfig().embedding)


@pytest.fixture(scope="module")
def clf(embedder):
    return rc.load_classifier(embedder)


def test_labelled_set_is_large_varied_and_split_by_hash():
    rows = rc.load_labelled()
    assert len(rows) >= 400
    assert len({r["text"].lower() for r in rows}) == len(rows)
    by_split = collections.Counter((r["split"], r["label"]) for r in rows)
    for lab in rc.LABELS:  # every label in both parts
        assert by_split[("tune", lab)] >= 20 and by_split[("report", lab)] >= 10, lab
    report = sum(r["split"] == "report" for r in rows) / len(rows)
    assert 0.25 < report < 0.42
    assert rc.split_of("  Hello There ") == rc.split_of("hello there")  # stripped, lower-cased


def test_bad_rows_are_refused(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"text": "ok", "label": "angry"}) + "\n")
    with pytest.raises(ValueError, match="label"):
        rc.load_labelled(p)


def test_shipped_coefficients_were_fitted_on_this_data():
    params = json.loads(rc.WEIGHTS.read_text())
    assert params["data_sha256"] == hashlib.sha256(rc.LABELLED.read_bytes()).hexdigest()[:16]
    assert params["n_train"] == len(rc.load_labelled(split="tune"))
    assert set(params["labels"]) == set(rc.LABELS)


def test_report_part_beats_the_keyword_reward(embedder, clf):
    """On the report part (never fitted on): negative precision >= 0.85 and a recall at least
    twice the keyword reward's (measured: classifier 0.91 / 0.66, keyword 0.77 / 0.29)."""
    rows = rc.load_labelled(split="report")
    texts = [r["text"] for r in rows]
    sims = rc.prev_similarities(embedder, texts, [r.get("prev_query") for r in rows])
    truth = [r["label"] in rc.NEGATIVE for r in rows]
    ours = [p.negative for p in clf.predict_many(texts, sims)]
    kw = [rw.keyword_reward(t, s) < 0 for t, s in zip(texts, sims, strict=True)]

    def pr(pred):
        tp = sum(a and b for a, b in zip(pred, truth, strict=True))
        return tp / max(1, sum(pred)), tp / sum(truth)

    (p_c, r_c), (_, r_k) = pr(ours), pr(kw)
    assert p_c >= 0.85 and r_c >= 2 * r_k, (p_c, r_c, r_k)


@pytest.mark.parametrize("text,negative", [
    ("you lost me there", True),
    ("hmm, that's way more text than I need", True),
    ("That recipe has chicken in it... I'm vegetarian.", True),
    ("Stop words in NLP, what are they?", False),
    ("No worries. Different question: how do magnets work?", False),
    ("Lovely, that's exactly what I was after, cheers!", False),
])
def test_everyday_reactions(clf, text, negative):
    assert clf.predict(text, 0.3).negative is negative


def test_reward_value_follows_the_label():
    def pred(label):
        return rc.RewardPrediction(label, 0.0, {})

    assert rc.reward_value(pred("neg_constraint_restate"), 0.05) == -1.0  # complaints not halved
    assert rc.reward_value(pred("neg_confusion"), 0.5) == pytest.approx(-0.6)
    assert rc.reward_value(pred("pos_praise"), 0.5) == 1.0
    assert rc.reward_value(pred("pos_praise"), 0.1) == 0.25
    assert rc.reward_value(pred("pos_progress"), 0.5) == pytest.approx(0.1)
    assert rc.reward_value(pred("topic_shift"), 0.5) == 0.0
    for label in rc.NEGATIVE:  # every negative label opens the gate's strong-negative rows
        assert rw.gate(rc.reward_value(pred(label), 0.5), 0.1, 0.1) == 0.9


def test_reward_node_uses_the_classifier_and_falls_back_to_keywords(tmp_path):
    """Real graph (SQLite, FAISS, MiniLM), scripted chat model: a config naming `classifier`
    reads with the classifier alone, one naming `keyword` gets the keyword reward."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from vars_langgraph import VARSEngine, build_graph
    from vars_langgraph.storage import open_checkpointer, open_store

    def graph(backend):
        config = VARSConfig.from_dict({"data_dir": str(tmp_path / backend), "reward": {"backend": backend}})
        engine = VARSEngine(config, open_store(config), index_dir=tmp_path / backend / "index",
                            extractor=type("E", (), {"extract": lambda self, t: []})(),
                            chat_model=FakeListChatModel(responses=["Here is a long essay."]))  # fmt: skip
        return build_graph(config, engine=engine, checkpointer=open_checkpointer(config))

    cfg = {"configurable": {"thread_id": "t", "user_id": "u"}}
    out = {}
    for backend in ("classifier", "keyword"):
        g = graph(backend)
        g.invoke({"messages": [("user", "Explain recursion briefly.")]}, cfg)
        out[backend] = g.invoke({"messages": [("user", "you lost me there")]}, cfg)["reward"]
    assert out["classifier"]["backend"] == "classifier" and out["classifier"]["label"] == "neg_confusion"
    assert out["classifier"]["value"] < -0.5 and out["classifier"]["advantage"] < 0
    assert out["keyword"]["backend"] == "keyword" and out["keyword"]["value"] >= 0  # no cue word


def _real_graph(path, answer: str, extractor=None):
    """(engine, graph, run config): the real graph (SQLite, FAISS, MiniLM, the shipped readers)
    with a scripted chat model that gives `answer`, and an extractor that finds nothing unless
    one is given."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from vars_langgraph import VARSEngine, build_graph
    from vars_langgraph.storage import open_checkpointer, open_store

    config = VARSConfig.from_dict({"data_dir": str(path)})
    engine = VARSEngine(config, open_store(config), index_dir=path / "index",
                        extractor=extractor or type("E", (), {"extract": lambda self, t: []})(),
                        chat_model=FakeListChatModel(responses=[answer]))
    graph = build_graph(config, engine=engine, checkpointer=open_checkpointer(config))
    return engine, graph, {"configurable": {"thread_id": "t", "user_id": "u"}}


@pytest.mark.parametrize("text,link,new", [
    ("I dislike musicals because the singing gets on my nerves.", 0.2, True),
    ("I prefer not to go to loud bars.", 0.1, True),
    ("I am not comfortable with horror stories.", 0.3, True),
    # the same words restating a stored card, the previous query or an injected note
    ("I prefer not to go to loud bars.", 0.7, False),
    # pointing back at the answer or an earlier statement: a complaint
    ("I said I prefer not to go to loud bars.", 0.1, False),
    ("I dislike that, too long.", 0.1, False),
    ("I prefer short answers, remember?", 0.1, False),
    ("Too long, just the command.", 0.1, False),  # not a statement of taste
    ("My settings don't look like that at all.", 0.1, False),  # "like" of no taste
    ("I really only needed a few lines.", 0.1, False),  # what the answer should have been
    # a lasting fact about the user, and what follows from it (seen in a chat: read as -1)
    ("Since I'm dyslexic, avoid long walls of text in general.", 0.2, True),
    ("By the way, I live in Norway, so give prices in kroner.", 0.2, True),
    ("I can't read that chart, I'm colourblind.", 0.2, False),  # the fact comes after: a complaint
    ("I live in Norway, not Sweden!", 0.2, False),  # a contrast corrects
])
def test_a_preference_stated_for_the_first_time_is_no_complaint(text, link, new):
    from vars_langgraph.learning.reward import new_statement

    assert new_statement(text, link) is new


def test_reward_node_reads_a_new_preference_as_no_complaint_and_a_restated_one_as_one(tmp_path):
    """Real graph (SQLite, FAISS, MiniLM, the shipped readers), scripted chat model and
    extractor: "I prefer not to go to loud bars." after an unrelated answer states a new
    preference (no reward); the same message once that preference is stored restates it."""
    from vars_langgraph.types import Preference

    class Extractor:
        def extract(self, turns):
            text = turns[-1][1]
            return ([Preference(condition="general", action="avoid loud bars", confidence=0.9)]
                    if "loud bars" in text else [])

    _, g, cfg = _real_graph(tmp_path, "Here you go.", Extractor())
    statement = "I prefer not to go to loud bars."
    g.invoke({"messages": [("user", "Explain recursion briefly.")]}, cfg)
    new = g.invoke({"messages": [("user", statement)]}, cfg)["reward"]
    assert new["label"] == "neutral" and new["value"] == 0.0 and "new_statement" in new
    g.invoke({"messages": [("user", "What should I do in Berlin this weekend?")]}, cfg)
    again = g.invoke({"messages": [("user", statement)]}, cfg)["reward"]  # the card is stored now
    assert again["value"] < 0 and "new_statement" not in again


def test_a_card_the_rules_stored_from_the_message_is_not_before_it(tmp_path):
    """Seen in a chat: "Since I'm colourblind, don't rely on red and green ..." was stored by the
    rules on the answer's path, and the background reward then read the message against its
    own card (link 1.0) and took it for a restated constraint (r = -1)."""
    from vars_langgraph.types import CardSource, Preference

    engine, g, cfg = _real_graph(tmp_path, "A lentil salad with feta.")
    g.invoke({"messages": [("user", "Suggest a quick lunch for tomorrow.")]}, cfg)
    said = "Since I'm colourblind, don't rely on red and green when describing anything."
    card = Preference(condition="general", action="don't rely on red and green when describing "
                      "anything", confidence=0.9)  # what the rules store at once
    engine.add_preferences("u", [card], CardSource(thread_id="t", turn=2, query=said))
    out = g.invoke({"messages": [("user", said)]}, cfg)["reward"]
    assert out["value"] == 0.0 and "new_statement" in out


@pytest.mark.parametrize("text,new", [
    ("please compare Postgres and MySQL", True),
    ("convert to kubernetes_ingress_v1", True),
    ("Write a limerick about a cat in a hat.", True),
    # what the answer lacked: a correction
    ("please be more specific", False),
    ("Write it again without numbers", False),
    ("Make that shorter.", False),
    ("give me the command only", False),
    ("Can you explain step 2?", False),
])
def test_a_new_request_is_no_complaint(text, new):
    from vars_langgraph.learning.reward import new_request, not_a_reaction

    assert new_request(text) is new
    assert (not_a_reaction(text, lambda: 0.9) == "new_request") is new


def test_a_statement_against_what_the_answer_proposed_is_a_reaction(tmp_path):
    """"I dislike X" right after an answer that proposed X reacts to it (the answer is part of
    the statement's link); the same words after an unrelated answer state a new preference."""

    def reward_after(answer: str, name: str) -> dict:
        _, g, cfg = _real_graph(tmp_path / name, answer)
        g.invoke({"messages": [("user", "What's a fun weekend project?")]}, cfg)
        return g.invoke({"messages": [("user", "I dislike projects that need a web server.")]},
                        cfg)["reward"]

    proposed = reward_after("A project that needs a web server: build a small Flask web app.", "web")
    assert proposed["value"] < 0 and "new_statement" not in proposed
    unrelated = reward_after("Try baking sourdough bread: it takes two days.", "bread")
    assert unrelated["value"] == 0.0 and "new_statement" in unrelated


def test_a_reaction_put_first_is_read_before_the_preference_it_restates():
    """Logic: the first sentence's complaint counts when the rest explains it; praise with a
    concession, pasted code and a long first sentence keep the whole's reading."""
    from vars_langgraph.models.reward_classifier import RewardPrediction
    from vars_langgraph.models.reward_reader import with_first_sentence

    def read(text: str) -> RewardPrediction:  # a stand-in reader: only the lead complains
        bad = text in ("Hold on, this skips what matters to me.", "Clear, even if a bit long.",
                       "Fix this:")
        return RewardPrediction("neg_correction" if bad else "neutral", 0.99 if bad else 0.01, {})

    assert with_first_sentence(read, "Hold on, this skips what matters to me. What works for me: "
                                     "I prefer every step shown.").negative
    assert not with_first_sentence(read, "Clear, even if a bit long. Appreciate it.").negative
    assert not with_first_sentence(read, "Fix this: int main() { return 0; }").negative


def test_reward_node_reads_a_reaction_put_before_a_long_restated_preference(tmp_path):
    """Real graph and readers: the whole message reads as a new topic (the long restated
    preference outweighs the reaction); its first sentence reads the complaint."""
    _, g, cfg = _real_graph(tmp_path, "The answer is 42.")
    g.invoke({"messages": [("user", "Derive the formula for the area of a circle.")]}, cfg)
    text = ("Hold on, this skips what matters to me. What works for me: when we go through a long "
            "derivation together, I prefer that you show every intermediate result and say in one "
            "line why each step follows from the one before it.")
    out = g.invoke({"messages": [("user", text)]}, cfg)["reward"]
    assert out["value"] < 0 and out["label"].startswith("neg_")
