"""Answers, not echoes (issue 12): a multi-turn chat on the CPU default model must answer each
message instead of copying an injected note, its own earlier answer or the user's message.

The rules are the ones `benchmarks/conversations.py` scores with (loaded from that file, so the
test and the benchmark cannot drift apart). The LLM test runs the issue's own four-turn chat
through the real graph on the session's llama.cpp server, with the shipped decoding defaults
(a fixed seed, 48 new tokens).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from tests._reliability import RecordingChat
from vars_langgraph import build_graph
from vars_langgraph.config import LLMConfig
from vars_langgraph.state import message_text
from vars_langgraph.types import CardSource, Preference

_spec = importlib.util.spec_from_file_location(
    "conversations_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "conversations.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

NOTE = "In general, please keep them short."


def test_copy_rules():
    assert bench.echo_of(NOTE, [NOTE], [])["echo_note"]
    assert bench.echo_of("In general, please keep it short.", [NOTE], [])["echo_note"]  # ratio
    ack = bench.echo_of("Understood, I will keep my answers short.", [NOTE], [])
    assert not ack["echo"]
    prev = "Heat water to 80 C, add the leaves and steep them for two to three minutes."
    again = bench.echo_of(prev + " Enjoy!", [], [prev])
    assert again["echo_answer"] and not again["echo_note"]
    assert bench.echo_of("I prefer short answers.", [], [], "I prefer short answers.")["echo_user"]
    assert bench.echo_of("   ", [], [])["echo"]  # an empty answer answers nothing
    fresh = bench.echo_of("Use water at 75 degrees and steep for two minutes.", [NOTE], [prev])
    assert not fresh["echo"]


def test_checks_and_terms():
    assert bench.check({"type": "bullets"}, "- a\n- b")
    assert not bench.check({"type": "bullets"}, "a sentence only")
    assert bench.check({"type": "numbered"}, "1. a\n2) b")
    assert not bench.check({"type": "max_words", "n": 3}, "one two three four")
    assert bench.check({"type": "ends_with_question"}, "Answer.\nAnything else?")
    # a key term the user already wrote does not count for the answer
    assert bench.term_hits("Tea: steep it.", ["tea", "steep"], "How do I brew tea?") == ["steep"]
    with pytest.raises(ValueError):
        bench.check({"type": "nope"}, "x")


def test_split_is_fixed_and_disjoint():
    rows = bench.load()
    assert len(rows) >= 20
    parts = bench.split_ids([r["id"] for r in rows])
    assert not set(parts["tune"]) & set(parts["report"])
    assert len(parts["tune"]) == bench.N_TUNE and len(parts["report"]) == len(rows) - bench.N_TUNE
    assert parts == bench.split_ids(list(reversed([r["id"] for r in rows])))


def test_prompt_history_layout():
    """Earlier answers cut or left out, the last N user turns kept, the latest message intact."""
    from langchain_core.messages import AIMessage, HumanMessage

    from vars_langgraph.config import PromptConfig
    from vars_langgraph.nodes.generate import prompt_messages

    hist = []
    for i in range(5):
        hist += [HumanMessage(f"question {i}"), AIMessage(f"answer {i} " + "word " * 100)]
    hist.append(HumanMessage("question 5"))

    def layout(**kw):
        msgs = prompt_messages("S", hist, 8192, 512, PromptConfig(**kw))
        return [(m.type, m.content) for m in msgs]

    out = layout(history_turns=3, history_answer_chars=0)
    assert out == [("system", "S"), ("human", "question 3"), ("human", "question 4"),
                   ("human", "question 5")]
    out = layout(history_turns=2, history_answer_chars=30)
    assert [t for t, _ in out] == ["system", "human", "ai", "human"]
    assert out[2][1].startswith("answer 4 word") and out[2][1].endswith("\u2026")
    assert len(out[2][1]) <= 32
    assert layout(history_turns=None, history_answer_chars=None)[1:] == \
        [(m.type, m.content) for m in hist]


CHAT = [
    "I prefer answers in bullet points, and please keep them short.",
    "How do I brew green tea?",
    "no, that's not what I asked. Tell me the water temperature and steeping time.",
    "Thanks. And how many times can I re-steep the same leaves?",
]


@pytest.mark.llm
def test_four_turn_chat_does_not_echo(llm_base_url, make_config):
    cfg = make_config(llm_url=llm_base_url, extractor={"enabled": False},
                      background={"enabled": False},
                      llm={"temperature": LLMConfig().temperature, "seed": 3})
    graph = build_graph(cfg)
    graph.engine.add_preferences("alice", [
        Preference(condition="in general", action="please keep them short", confidence=0.9),
        Preference(condition="in general", action="answer in bullet points", confidence=0.9),
    ], CardSource(thread_id="earlier"))
    run = {"configurable": {"thread_id": "first-chat", "user_id": "alice"}}
    earlier: list[str] = []
    for text in CHAT:
        out = graph.invoke({"messages": [("user", text)]}, run)
        answer = message_text(out["messages"][-1])
        notes = [c["note"] for c in out["selected"]]
        assert NOTE in notes  # the note was injected
        verdict = bench.echo_of(answer, notes, earlier, text)
        assert not verdict["echo"], (text, answer, verdict)
        earlier.append(answer)


def test_copy_guard_rule():
    from vars_langgraph.nodes.generate import copies

    assert copies(NOTE, [NOTE]) and copies("In general, please keep them short. Sure.", [NOTE])
    assert not copies("Steep green tea at 80 C for two minutes.", [NOTE])
    assert not copies("ok.", ["ok."]) and not copies("Yes, sure.", ["Yes, sure."])
    # a short answer is a copy when it is a piece of a source (seen on the 0.5B)
    diet = "In general, suggest only vegetarian food, no meat."
    assert copies('" vegetarian food, no meat."', [diet], notes=[diet])
    assert not copies("Try a lentil curry.", [diet], notes=[diet])
    assert not copies("No meat, promised.", [diet], notes=[diet])
    # a short answer may repeat an earlier answer or the user (a second confirmation)
    assert not copies("Sure, will do.", ["Sure, will do."], notes=[diet])


def test_echo_sources_cover_the_header_and_a_short_user_message():
    """Seen on the 0.5B: "I will follow the notes that fit the question, without repeating or
    quoting them." (the header) and the user's own words given back as the answer."""
    from langchain_core.messages import AIMessage, HumanMessage

    from vars_langgraph.nodes.generate import copies, echo_sources

    said = "I prefer answers in bullet points, and please keep them short."
    state = {"selected": [{"note": NOTE}],
             "messages": [HumanMessage("hi"), AIMessage("Hello there, how can I help?"),
                          HumanMessage(said)]}
    src = echo_sources(state)
    assert copies("I will follow the notes that fit the question, without repeating or "
                  "quoting them.", src)
    assert copies(said, src) and copies("Hello there, how can I help you?", src)
    assert not copies("Sure: bullet points, and I will keep answers short from now on.", src)
    long_text = "Fix the grammar in this paragraph please: " + "the cat sat on the mat. " * 20
    assert long_text not in echo_sources({"messages": [HumanMessage(long_text)]})
    assert "## User Preferences" not in " ".join(echo_sources({"messages": [HumanMessage(said)]}))


def test_notes_run_together_are_an_echo():
    """Seen on the 0.5B in a chat: the answer to a statement was two injected notes run
    together, each under the share a copy of one note needs."""
    from langchain_core.messages import HumanMessage

    from vars_langgraph.nodes.generate import copies, echo_sources

    one, two = ("In general, suggest only vegan food, no animal products.",
                "When answering, prefer short answers, two or three bullet points at most.")
    state = {"selected": [{"note": one}, {"note": two}],
             "messages": [HumanMessage("By the way, I am learning Italian.")]}
    answer = f"{one} {two}"
    assert not any(copies(answer, [src]) for src in (one, two))  # neither note alone
    assert copies(answer, echo_sources(state))
    assert not copies("Lentil soup: onion, carrot, lentils; ready in 30 minutes.", echo_sources(state))


def test_a_note_quoted_in_the_answer_to_a_statement_is_an_echo():
    """Seen on the 0.5B: '"Always" is followed by "In general, never suggest morning
    routines."' to a message that only stated that preference; a question's answer may quote a
    note ("What are my preferences?")."""
    from langchain_core.messages import HumanMessage

    from vars_langgraph.nodes.generate import only_states, quotes_a_note

    note = "In general, never plan anything before noon."
    answer = '"Always" is followed by "In general, never plan anything before noon."'
    assert quotes_a_note(answer, [note])
    assert only_states(HumanMessage("I work late, so please never plan anything before noon."))
    assert not quotes_a_note("Sure, nothing before noon from now on.", [note])
    assert not quotes_a_note("In general, yes.", ["In general, yes."])  # under four words


def test_an_answer_about_the_notes_is_asked_again():
    """Seen on the 0.5B: "Based on the notes provided, ..." instead of an answer."""
    from vars_langgraph.nodes.generate import about_the_notes

    assert about_the_notes("Based on the notes provided, I recommend short answers for tea.")
    assert about_the_notes("Follow the instructions provided in the user's earlier conversations.")
    assert about_the_notes("I will follow the notes that fit the question.")
    assert not about_the_notes("Here are the notes from the meeting: budget, hiring, dates.")
    assert not about_the_notes("Take notes during the lecture and review them weekly.")
    # the 0.5B's other phrasings (four-turn chat, benchmarks/four_turn_chat.py)
    assert about_the_notes("Based on the given preferences, I would brew green tea in bullets.",
                           "How do I brew green tea?")
    assert about_the_notes("To brew green tea, follow the instructions provided in the user "
                           "preferences.", "How do I brew green tea?")
    assert not about_the_notes("Based on your preferences, try a lentil soup.", "Dinner idea?")
    assert about_the_notes("Based on the user's preference, I recommend a vegetarian pasta dish.",
                           "Hmm, that's way too much text.")
    # stating a preference is not asking about the notes (seen on the 0.5B)
    assert about_the_notes("Based on the user's preferences, I will follow the notes to suggest "
                           "short answers.", "I'm vegetarian and I prefer short answers.")
    # unless the user asked about them
    assert not about_the_notes("Your preferences: bullet points and short answers.",
                               "What are my preferences?")
    assert not about_the_notes("Based on the notes provided in class, the exam covers ch. 3.",
                               "Here are my lecture notes. What does the exam cover?")
    assert not about_the_notes("People's music preferences vary by age.", "Why do tastes differ?")


def test_exclusions_read_from_notes():
    from vars_langgraph.nodes.generate import breaks_exclusion, excluded_terms

    diet = ["In general, suggest only vegetarian food, no meat.", "When answering, use bullets."]
    assert breaks_exclusion("A dinner with lean proteins like chicken breast or tofu.", diet)
    assert breaks_exclusion("- Grilled salmon\n- Rice", diet) == ["salmon"]
    assert not breaks_exclusion("Pasta with mushrooms, no meat, or a meat-free chili.", diet)
    assert not breaks_exclusion("A stir-fry: swap the chicken for tofu.", diet)
    assert breaks_exclusion("Peanut butter toast", ["I'm allergic to peanuts."]) == ["peanut"]
    assert breaks_exclusion("Add some cheese.", ["no dairy please"]) == ["cheese"]
    assert excluded_terms(["The user is not vegetarian."]) == set()
    assert excluded_terms(["Keep it short, no more than three bullets."]) == set()
    assert not excluded_terms(["When answering, use bullet points."])


class Replies(RecordingChat):
    replies: list[str]

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        from langchain_core.outputs import ChatGeneration, ChatResult

        text = self.replies.pop(0) if self.replies else self.reply
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


@pytest.mark.parametrize(("second", "kept"), [("Lentil curry with rice.", "Lentil curry"),
                                               ("Beef tacos.", "Beef tacos")])
def test_an_answer_that_breaks_an_excluding_note_is_asked_again(tmp_path, second, kept):
    """Seen on the 0.5B with "I'm vegetarian" injected: "... lean proteins like chicken
    breast or tofu". Asked again once with the note beside the question; the second answer is
    kept (what a streamed chat showed last), never a third call."""
    from types import SimpleNamespace

    from langchain_core.messages import HumanMessage

    from vars_langgraph import VARSConfig
    from vars_langgraph.nodes.generate import make_generate

    chat = Replies(replies=["Chicken stir-fry with rice.", second])
    engine = SimpleNamespace(config=VARSConfig.from_dict({"data_dir": str(tmp_path)}),
                             chat_model=chat, server_facts={})
    note = "In general, suggest only vegetarian food, no meat."
    state = {"messages": [HumanMessage("What should I make for dinner?")],
             "selected": [{"note": note}, {"note": "When answering, keep answers short."}]}
    out = make_generate(engine)(state, {"configurable": {"user_id": "u"}}, None)
    assert message_text(out["messages"][0]).startswith(kept)
    assert len(chat.calls) == 2
    reminder = chat.calls[1][1][-1][1].split("(Keep in mind:")[1]
    assert note in reminder and "keep answers short" not in reminder


def test_a_reminder_given_back_is_asked_once_more_without_notes(tmp_path):
    """Seen on the 0.5B in a chat: the answer after the reminder was the vegetarian note itself.
    A third call asks again with the conversation, no notes, and what to leave out."""
    from types import SimpleNamespace

    from langchain_core.messages import AIMessage, HumanMessage

    from vars_langgraph import VARSConfig
    from vars_langgraph.nodes.generate import make_generate

    note = "In general, suggest only vegetarian food, no meat."
    chat = Replies(replies=["Eggs with bacon and toast.", note, "Oatmeal with berries."])
    engine = SimpleNamespace(config=VARSConfig.from_dict({"data_dir": str(tmp_path)}),
                             chat_model=chat, server_facts={})
    state = {"messages": [HumanMessage("Plan my meals."), AIMessage("Breakfast, lunch, dinner?"),
                          HumanMessage("Breakfast idea?")],
             "selected": [{"note": note}, {"note": "When answering, keep answers short."}]}
    out = make_generate(engine)(state, {"configurable": {"user_id": "u"}}, None)
    assert message_text(out["messages"][0]) == "Oatmeal with berries."
    assert len(chat.calls) == 3
    last = chat.calls[2][1]  # the conversation kept (a follow-up needs it), the notes not
    assert note not in str(last) and "(Answer without bacon.)" in last[-1][1]
    assert "Plan my meals." in str(last)  # as the prompt's history layout keeps it



def test_a_statement_copied_twice_is_confirmed_instead():
    """Seen on this machine's llama.cpp build: the 0.5B answered "I prefer answers in bullet
    points, and please keep them short." with "I prefer answers in bullet points." on both
    tries. Only a message that states preferences and asks nothing gets the confirmation."""
    from langchain_core.messages import HumanMessage

    from vars_langgraph.nodes.generate import CONFIRMATION, copies, only_states

    said = "I prefer answers in bullet points, and please keep them short."
    assert copies("I prefer answers in bullet points.", [said])
    assert only_states(HumanMessage(said))
    assert not only_states(HumanMessage("I prefer bullet points. How do I brew green tea?"))
    assert not only_states(HumanMessage("How do I brew green tea"))
    assert not copies(CONFIRMATION, [said, NOTE], notes=[NOTE])
