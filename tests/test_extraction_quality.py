"""Extraction quality without an LLM: the label scorer, the complaint/one-off filter, the scope
check, the rule-based fast path, the extraction gate (real MiniLM), the merged dialogue window."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from vars_langgraph import VARSConfig, VARSEngine
from vars_langgraph.config import EmbeddingConfig
from vars_langgraph.models.embedder import load_embedder
from vars_langgraph.models.extraction.postprocess import (
    drop_context_copies,
    drop_feedback,
    drop_questions,
    drop_unstated,
    fix_scope,
    has_generality_marker,
    postprocess,
    sentence_of,
)
from vars_langgraph.models.extraction.prompts import dialogue_window
from vars_langgraph.models.extraction.rules import fast_preferences
from vars_langgraph.models.extraction_gate import LABELLED, load_gate, worth_extracting
from vars_langgraph.nodes.extract import make_extract
from vars_langgraph.storage import open_store
from vars_langgraph.types import Preference
from vars_langgraph_eval.extraction import is_unscoped, polarity_conflict, score_message

WATER = "no, that's not what I asked. Tell me the water temperature and steeping time."
BULLETS = "I prefer answers in bullet points, and please keep them short."


def P(condition: str, action: str) -> Preference:  # noqa: N802 - reads like a literal
    return Preference(condition=condition, action=action, confidence=0.9)


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(EmbeddingConfig())


# ---------------------------------------------------------------- scorer


def test_polarity_conflict_catches_inversions_only():
    assert polarity_conflict("show code in JavaScript", "don't show JavaScript")
    assert polarity_conflict("use emojis", "no emojis")
    assert not polarity_conflict("use pytest, not unittest", "don't show unittest examples")
    assert not polarity_conflict("give hints, not the final answer", "do not give the final answer")
    # a verb of offering frames the object, as "show" does; "audio-only" holds no contrast word
    assert not polarity_conflict("never suggest paid tools, I only use free software",
                                 "suggest only free software, no paid tools")
    assert not polarity_conflict("don't suggest podcasts or phone calls",
                                 "do not suggest audio-only options like podcasts or phone calls")
    assert polarity_conflict("recommend horror movies", "don't recommend horror movies")


def test_scorer_needs_action_polarity_and_condition(embedder):
    general = [{"condition": "general", "action": "use bullet points", "global": False}]
    assert score_message([P("answering", "use bullet points")], general, embedder).matched == 1
    wrong_cond = score_message([P("writing code", "write answers in bullet points")], general, embedder)
    assert (wrong_cond.matched, wrong_cond.matched_action) == (0, 1)
    python = [{"condition": "writing code", "action": "show code in Python, not JavaScript", "global": False}]
    inverted = score_message([P("general", "show code in JavaScript")], python, embedder)
    assert inverted.matched_action == 0  # polarity: JavaScript negated in the label
    unrelated = score_message([P("answering", "tell me the water temperature")], general, embedder)
    assert unrelated.matched_action == 0
    sql = [{"condition": "answering SQL questions", "action": "assume PostgreSQL", "global": False}]
    assert score_message([P("writing SQL queries", "assume PostgreSQL")], sql, embedder).matched == 1
    assert score_message([P("general", "assume PostgreSQL")], sql, embedder).matched == 0  # too broad
    assert is_unscoped(P("general", "x")) and not is_unscoped(P("writing code", "x"))


# ---------------------------------------------------------------- filters


def test_complaint_keeps_only_a_restated_preference():
    copied = [P("general", WATER), P("general", "tell me the water temperature and steeping time")]
    assert drop_feedback(copied, WATER) == []
    said = "No, I said bullet points."
    assert [p.action for p in drop_feedback([P("answering", "use bullet points")], said)] == [
        "use bullet points"
    ]
    assert drop_feedback([P("answering", "keep answers short")], "That was way too long.")
    assert drop_feedback([P("answering", "answer in Go")], "Wrong language, I need this one in Go.") == []


def test_one_off_requests_are_not_preferences():
    assert drop_feedback([P("answering", "make answers shorter")], "Make it shorter.") == []
    assert drop_feedback([P("answering", "skip the code")], "Just for this answer, skip the code.") == []
    assert drop_feedback([P("answering", "use bullet points")], "Use bullet points.")  # not one-off


def test_general_only_when_the_user_says_so():
    w = [("user", BULLETS)]
    out = fix_scope([P("general", "keep them short"), P("writing code", "use bullet points")], w)
    assert [(p.condition, p.is_global) for p in out] == [("answering", False), ("answering", False)]
    always = fix_scope([P("answering", "answer in under 100 words")], [("user", "Always answer briefly.")])
    assert always[0].is_global
    sql = fix_scope([P("writing SQL", "assume PostgreSQL")],
                    [("user", "For SQL questions, assume PostgreSQL.")])  # fmt: skip
    assert sql[0].condition == "writing SQL"  # grounded in the message: kept
    assert has_generality_marker("From now on, answer in Spanish") and not has_generality_marker(BULLETS)
    assert postprocess([P("general", WATER)], [("user", "How do I brew tea?"), ("user", WATER)]) == []


def test_a_card_restating_an_earlier_turn_is_not_stored_again():
    vegan = "I'm vegan, so never suggest dishes with meat or dairy."
    window = [("user", vegan), ("assistant", "Noted."), ("user", "What should I see in Lisbon?")]
    copy = P("suggesting dishes", "never suggest dishes with meat or dairy")
    new = P("visiting Lisbon", "suggest sights in Lisbon")
    assert drop_context_copies([copy, new], window) == [new]
    assert postprocess([copy], window) == []
    # the same card from the message that states it is kept
    assert drop_context_copies([copy], [("user", vegan)]) == [copy]


def test_a_card_copied_from_the_assistant_is_not_the_users():
    # a small model copies the assistant's acknowledgement or advice into the user's cards
    ack = [("assistant", "Noted, I'll keep that in mind."),
           ("user", "I stay away from escape rooms, small spaces make me anxious.")]
    echo = P("answering", "noted, I'll keep that in mind")
    own = P("answering", "avoid escape rooms")
    assert drop_context_copies([echo, own], ack) == [own]
    advice = [("assistant", "To grow as a guard, improve your physical fitness and keep notes."),
              ("user", "Thanks. Night shifts are hard on me, any tips?")]
    assert drop_context_copies([P("answering", "improve your physical fitness")], advice) == []
    # the user takes up what the assistant offered: theirs now
    offer = [("assistant", "Would bullet points help?"), ("user", "Yes, always do that.")]
    bullets = P("answering", "use bullet points")
    assert drop_context_copies([bullets], offer) == [bullets]


def test_statements_no_card_covers_are_kept_in_the_users_words():
    from vars_langgraph.models.extraction.rules import stated_preferences
    from vars_langgraph.nodes.extract import combine

    msg = ("I'm planning a dinner party for six. I usually prefer cooking one big pot. "
           "By the way, I tend to avoid chili since it upsets my stomach. "
           "Would a stew work?")
    screens = P("answering", "prefer cooking one big pot for dinners")
    notes = [p.action for p in stated_preferences(msg, [screens])]
    # the statement said in passing is kept; the one the card covers and the question are not
    assert notes == ['keep in mind the user said: "I tend to avoid chili since it upsets my '
                     'stomach."']
    assert len(stated_preferences(msg)) == 2
    cards = combine([("user", msg)], [screens])
    assert [c.action for c in cards][-1] == notes[0] and len(cards) == 2
    # one statement, two cards that each cover part of it: nothing quoted
    both = [P("general", "avoid nuts"), P("answering", "avoid cilantro")]
    assert stated_preferences("I'm allergic to nuts and I hate cilantro.", both) == []


def test_a_condition_must_name_a_situation_the_user_gave():
    from vars_langgraph.models.extraction.postprocess import not_a_situation, scope_to_task

    def fixed(cond: str, action: str, message: str) -> str:
        (card,) = scope_to_task(fix_scope([P(cond, action)], [("user", message)]))
        return card.condition

    # the action's own object: the card would wait for a question about multiplayer games
    assert fixed("recommending multiplayer games", "avoid multiplayer games",
                 "I strongly dislike multiplayer games.") == "answering"
    assert fixed("keyboard shortcuts with Cmd", "use Cmd shortcuts",
                 "I'm on a Mac, so keyboard shortcuts with Cmd would help.") == "answering"
    # who the user is: then the action's own task scopes it
    assert fixed("vegetarian", "leave meat out of any recipe suggestions",
                 "I'm vegetarian, keep that in mind for recipes.") == "suggesting recipes"
    assert fixed("ethical preference", "suggest cruelty-free brands",
                 "I only buy cruelty-free brands.") == "answering"
    # a situation the user gave stays
    for cond, action, message in (
            ("recommending books", "stick to non-fiction", "When recommending books, stick to non-fiction."),
            ("writing emails", "write in a formal tone", "My emails should be formal."),
            ("giving travel tips", "focus on budget options", "For travel tips, focus on budget options.")):
        assert not not_a_situation(P(cond, action), message)
        assert fixed(cond, action, message) == cond


def test_a_card_grounded_in_both_turns_is_kept():
    window = [("user", "I like short answers."), ("user", "Keep answers short, in bullets.")]
    card = P("answering", "keep answers short")
    assert drop_context_copies([card], window) == [card]


# ---------------------------------------------------------------- fast path


def test_fast_preferences_explicit_statements():
    notes = [p.note for p in fast_preferences(BULLETS)]
    assert notes == ["When answering, prefer answers in bullet points.",
                     "When answering, keep answers short."]
    (never,) = fast_preferences("Never apologize, just fix the problem.")
    assert never.is_global and never.action.startswith("never apologize")
    (sql,) = fast_preferences("For SQL questions, assume PostgreSQL.")
    assert sql.condition == "For SQL questions" and not sql.is_global
    (dont,) = fast_preferences("I don't like it when you repeat my question back to me.")
    assert dont.action == "do not repeat my question back to me"
    assert fast_preferences("Please add type hints whenever you write Python functions.")[0].condition == (
        "whenever you write Python functions"
    )


@pytest.mark.parametrize("text", [
    "What's the capital of Australia?", "Please summarize the main causes of World War I.",
    "Can you explain how a hash map works?", WATER, "Make it shorter.", "ok", "",
    "Write a haiku about autumn.", "No, I meant the other file.",
])  # fmt: skip
def test_fast_preferences_ignores_questions_tasks_and_complaints(text):
    assert fast_preferences(text) == []


# ---------------------------------------------------------------- gate


def test_gate_on_the_heldout_split(embedder):
    """Stated thresholds: on held-out, >= 60% of neutral messages skipped and >= 80% of preference
    messages passed to the LLM (measured: 86% and 86%, results/extraction.json)."""
    gate = load_gate(embedder)
    lines = [json.loads(ln) for ln in LABELLED.read_text().splitlines() if ln.strip()]
    held = [d for i, d in enumerate(lines) if i % 3 == 2]
    passed = [(d["has_preference"], gate.passes_text(d["text"])) for d in held]
    pos = [p for h, p in passed if h]
    neg = [p for h, p in passed if not h]
    assert sum(pos) / len(pos) >= 0.8
    assert sum(not p for p in neg) / len(neg) >= 0.6


class CountingExtractor:
    def __init__(self):
        self.calls = 0

    def extract(self, turns):
        self.calls += 1
        return [P("answering", "use bullet points")]


def test_neutral_message_skips_the_extractor(tmp_path, embedder):
    config = VARSConfig.from_dict({"data_dir": str(tmp_path), "extractor": {"gate": True}})
    counting = CountingExtractor()
    engine = VARSEngine(config, open_store(config), index_dir=tmp_path / "index", embedder=embedder,
                        extractor=counting)  # fmt: skip
    node = make_extract(engine)
    cfg = {"configurable": {"thread_id": "t", "user_id": "alice"}}
    out = node({"messages": [HumanMessage("What's the capital of Australia?")]}, cfg, None)
    assert out["extracted"] == [] and counting.calls == 0
    out = node({"messages": [HumanMessage("I prefer answers in bullet points.")]}, cfg, None)
    assert counting.calls == 1 and out["extracted"]
    assert worth_extracting([("user", "Thanks, that worked!")], embedder) is False


# ---------------------------------------------------------------- window


def test_one_dialogue_window_for_messages_and_pairs():
    msgs = [HumanMessage("a"), AIMessage("b"), HumanMessage(" "), HumanMessage("c"), AIMessage("d")]
    assert dialogue_window(msgs, 6) == [("user", "a"), ("assistant", "b"), ("user", "c")]
    assert dialogue_window([("human", "x"), ("ai", "y")], 6) == [("user", "x")]
    assert dialogue_window([("assistant", "b")], 6) == []
    assert dialogue_window([("user", "x" * 10_000)], 1)[0][1] == "x" * 4000


def test_stated_preferences_keep_first_person_taste_only():
    from vars_langgraph.models.extraction.rules import stated_preferences

    (p,) = stated_preferences("I'm a vegan and never eat anything that comes from animals.")
    assert "vegan" in p.action and not p.is_global
    for text in ("What's the capital of Australia?", "I love this, what about pandas?",
                 "No, that's not what I asked, I prefer short answers.", "Write a haiku about autumn.",
                 # pasted material: a quiz's options, a quoted passage
                 "Help me think through this:\nWhich scans image brain function?\nChoices:\n0. I only",
                 "Here's a problem I'm working on:\nAs a Jew, I have never believed in collective guilt."):
        assert stated_preferences(text) == [], text
    assert len(stated_preferences("I hate jazz.")) == 1  # short statements are the plainest
    (p,) = stated_preferences("I never eat anything spicy\nany ideas for dinner?")
    assert p.action.endswith('"I never eat anything spicy"')  # a line is a sentence


def test_extract_node_falls_back_to_rules_when_the_extractor_finds_nothing(tmp_path):
    from vars_langgraph.nodes.extract import make_extract
    from vars_langgraph.storage import open_store

    class Empty:
        def extract(self, turns):
            return []

    cfg = VARSConfig.from_dict({"data_dir": str(tmp_path), "storage": "memory"})
    engine = VARSEngine(cfg, open_store(cfg), extractor=Empty())
    node = make_extract(engine)
    run = {"configurable": {"thread_id": "t", "user_id": "u"}}
    out = node({"messages": [HumanMessage("I avoid market stalls because of hygiene worries.")]}, run, None)
    assert [c["action"] for c in out["extracted"]] == ["avoid market stalls because of hygiene worries"]
    out = node({"messages": [HumanMessage("How do I brew green tea?")]}, run, None)
    assert out["extracted"] == []


def test_background_extraction_skips_what_the_fast_path_stored():
    """One card per stated preference: the LLM's rewording of a fast-path card is dropped,
    a different preference of the same message is kept."""
    from vars_langgraph.background import _SkipFast
    from vars_langgraph.types import Preference

    class LLM:
        def extract(self, turns):
            return [Preference(condition="answering", action=a) for a in
                    ("keep answers in bullet points", "please keep them short", "use metric units")]

    embedder = load_embedder(EmbeddingConfig())
    skip = _SkipFast(LLM(), ["prefer answers in bullet points", "keep them short"], embedder)
    assert [p.action for p in skip.extract([])] == ["use metric units"]


def test_finish_sets_the_observed_confidence_and_drops_what_is_below_the_threshold():
    """Both built-in extractors end in `finish`: the one place `min_confidence` filters."""
    from vars_langgraph.config import ExtractorConfig
    from vars_langgraph.models.extraction.postprocess import finish

    out = ('{"preferences": [{"condition": "general", "action": "answer in bullet points", '
           '"confidence": 0.9}]}')
    window = [("user", "Always answer in bullet points.")]
    cfg = ExtractorConfig(prompt="finetuned", min_confidence=0.5)
    assert [p.confidence for p in finish(out, window, cfg, None)] == [0.9]  # the stated one
    assert [p.confidence for p in finish(out, window, cfg, 0.61234)] == [0.6123]
    assert finish(out, window, cfg, 0.4) == []
    assert finish(out, window, cfg.model_copy(update={"min_confidence": 0.95}), None) == []


def test_gate_fit_is_scikit_learns_logistic_regression():
    """One fitting path: the gate's weights come from scikit-learn (at fit time only)."""
    import numpy as np

    from vars_langgraph.models.extraction_gate import fit_logistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] - 0.5 * x[:, 2] + 0.1 * rng.normal(size=200)) > 0
    w, b = fit_logistic(x, y.astype(float), l2=0.1)
    assert w[0] > 0 > w[2] and abs(w[1]) < 0.5 * w[0]
    assert ((x @ w + b > 0) == y).mean() > 0.95


def test_a_card_read_from_a_question_is_dropped_unless_it_is_about_the_answers_form():
    """The 0.5B made cards of questions ("When answering, stop words in NLP."); a polite
    question about the answer's form is still a preference."""
    msg = "I'm always looking to improve. Should I take an advanced pottery course, or not?"
    pottery, improve = P("general", "take an advanced pottery course"), P("general", "improve")
    assert sentence_of(pottery, msg) == "Should I take an advanced pottery course, or not?"
    assert sentence_of(P("general", "use metric units"), msg) == ""
    assert drop_questions([pottery, improve], msg) == [improve]
    assert drop_questions([P("general", "stop words in NLP")], "Stop words in NLP, what are they?") == []
    short = P("general", "keep it short")
    assert drop_questions([short], "Can you keep it short? I don't need an essay.") == [short]
    horror, french = P("general", "do not recommend horror movies"), P("general", "answer in French")
    assert drop_questions([horror], "Would you mind not recommending horror movies?") == [horror]
    assert drop_questions([french], "Could you always answer in French?") == [french]
    assert drop_questions([P("general", "explain compound interest")],
                          "I never got it. Can you explain compound interest?") == []
    # through the checks every extractor output goes through
    assert postprocess([pottery, improve], [("user", msg)]) == [improve]


def test_a_card_the_user_did_not_state_is_dropped():
    """Persona chats: the 0.5B made cards of what the user said about their day or task."""
    patrol = P("answering", "stay alert during night patrol")
    msg = "Hey there, I'm on my shift and it's quiet. Got any tips for staying alert tonight?"
    assert drop_unstated([patrol], msg) == []
    monitor = P("answering", "consider a 27-inch monitor with 4K resolution")
    assert drop_unstated([monitor], "I'm thinking about a 27-inch monitor with 4K resolution.") == []
    report = P("answering", "write your first incident report tomorrow")
    assert drop_unstated([report], "I've been assigned to write my first incident report tomorrow.") == []
    # kept: a stance word, an instruction (a clause starting with the card's verb), an
    # identity, the answer's form
    kept = [
        (P("answering", "avoid museums"), "Honestly, I can't stand museums."),
        (P("answering", "skip the pleasantries"), "Skip the pleasantries."),
        (P("travel tips", "focus on budget options"), "For travel tips, focus on budget options."),
        (P("answering", "use medical terminology"), "I'm a nurse, so medical terminology is fine."),
        (P("answering", "keep answers short"), "Short answers."),
        (P("answering", "do not recommend European car brands"),
         "I have no interest in European car brands after my last one broke down."),
    ]
    for card, text in kept:
        assert drop_unstated([card], text) == [card], text
    assert postprocess([patrol], [("user", msg)]) == []


def test_an_action_that_only_points_back_is_dropped():
    """Seen in a chat: "I'm vegetarian, keep that in mind for recipes." also gave the card
    "keep that in mind for recipes"; a persona's "Actually, I love that idea!" gave "prefer that
    idea". The statement pointed at is a card of its own."""
    text = "I'm vegetarian, keep that in mind for recipes."
    diet = P("suggesting recipes", "suggest only vegetarian food, no meat")
    pointer = P("answering", "keep that in mind for recipes")
    assert postprocess([diet, pointer], [("user", text)]) == [diet]
    assert postprocess([P("answering", "prefer that idea")],
                       [("user", "Actually, I love that idea!")]) == []
    kept = P("answering", "keep in mind that I use a Mac")
    assert postprocess([kept], [("user", "Please keep in mind that I use a Mac.")]) == [kept]


def test_praise_of_the_answer_and_topic_wishes_give_no_card():
    """Seen in PrefEval persona chats (tuning topics): "I like your ideas!" and "I like that
    idea." are praise of the last answer, "I'd love to learn more about training sessions" a
    wish about this conversation; the rules stored them as standing preferences. A standing
    preference next to them is still read."""
    from vars_langgraph.models.extraction.rules import fast_preferences

    for text in ("We train three times a week. I like your ideas!", "I like that idea.",
                 "I like your idea of working on side projects though.",
                 "How interesting! I'd love to learn more about setting up training sessions."):
        assert fast_preferences(text) == [], text
    assert [p.action for p in fast_preferences("I like your ideas! I prefer short answers, though.")] == [
        "prefer short answers, though"]
    assert postprocess([P("answering", "prefer your suggestions")],
                       [("user", "I like your suggestions.")]) == []


def test_always_elsewhere_in_a_long_message_scopes_nothing():
    """"... my kids are always asking me to play video games" made every card of the message
    "In general" (a slot in every prompt). A marker scopes its own sentence, or a message whose
    sentence is nothing but one ("Bullet points. Always.")."""
    from vars_langgraph.models.extraction.rules import fast_preferences

    text = ("What a nice idea! I love the idea of making lunches look fun for children. "
            "By the way, my children are always asking me to play board games with them.")
    assert [p.is_global for p in fast_preferences(text)] == [False]
    assert [p.note for p in fast_preferences("Use bullet points. Always.")] == [
        "In general, use bullet points."]
    assert [p.note for p in fast_preferences("From now on, please use bullet points and keep it short.")] == [
        "In general, use bullet points.", "In general, keep it short."]
