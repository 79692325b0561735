"""Memory hygiene (issue 23): consolidation (supersede, one-off requests, retirement, merge),
learned card values, selection by value and hybrid retrieval. Real SQLite/Postgres, FAISS and
MiniLM embeddings; the update and rerank nodes are the graph's own functions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage

import vars_langgraph.memory.consolidate as cons
from vars_langgraph import VARSConfig, VARSEngine
from vars_langgraph.learning import card_value
from vars_langgraph.memory.consolidate import consolidate, contradicts, is_one_off
from vars_langgraph.memory.store import PARTS, clean_pending
from vars_langgraph.nodes.extract import combine
from vars_langgraph.nodes.rerank import make_rerank
from vars_langgraph.nodes.retrieve import make_retrieve
from vars_langgraph.nodes.update import learn_card_values, make_update
from vars_langgraph.storage import open_store
from vars_langgraph.types import CardSource, Preference

ROOT = Path(__file__).resolve().parents[1]
U = "hygiene-user"


@pytest.fixture(scope="module")
def embedder():
    from vars_langgraph.models.embedder import load_embedder

    return load_embedder(VARSConfig().embedding)


def _engine(make_config, storage, embedder, **memory) -> VARSEngine:
    cfg = make_config(storage, memory=memory) if memory else make_config(storage)
    return VARSEngine(cfg, open_store(cfg), index_dir=str(cfg.data_path / "index"),
                      embedder=embedder)


def _add(engine, condition, action, thread="t1", query="", conf=0.9):
    src = CardSource(thread_id=thread, turn=1, query=query or action)
    return engine.add_preferences(U, [Preference(condition=condition, action=action,
                                                 confidence=conf)], src)[0]


def _raw_rows(engine) -> int:
    """Every stored item of the user, whatever its status (store search, no filtering)."""
    return sum(len(engine.store.search(engine.memory.ns(U, p), limit=10**6)) for p in PARTS)


def _status(engine, card_id):
    return engine.memory.get_card(U, card_id).status


def test_contradiction_supersedes_and_import_of_old_export_undoes_it(make_config, storage,
                                                                      embedder):
    engine = _engine(make_config, storage, embedder)
    old = _add(engine, "choosing food", "I am vegetarian and eat no fish or meat",
               query="I'm vegetarian.")
    before = engine.memory.export_user(U)
    rows = _raw_rows(engine)
    new = _add(engine, "choosing food", "I eat fish now", thread="t2", query="I eat fish now.")
    changed = consolidate(engine, U, "t2", {})
    assert [c.id for c in changed] == [old.id]
    card = engine.memory.get_card(U, old.id)
    assert card.status == "superseded" and card.replaced_by == new.id
    assert "I eat fish now" in card.status_reason
    assert _raw_rows(engine) >= rows + 1  # superseded, not deleted
    ids = [c.id for c, _ in engine.index.search(U, embedder.embed_query("food I eat"), 10)]
    assert old.id not in ids and new.id in ids  # out of retrieval
    exported = engine.memory.export_user(U)
    assert exported["cards"][old.id]["status"] == "superseded"  # export keeps it
    engine.memory.import_user(before)  # the user restores the old export
    engine.index.invalidate(U)
    assert _status(engine, old.id) == "active"
    ids = [c.id for c, _ in engine.index.search(U, embedder.embed_query("food I eat"), 10)]
    assert old.id in ids


def test_a_change_on_another_subject_supersedes_nothing(make_config, embedder):
    """"Actually, I love that idea!" marks a change, and its card's note is near any other
    "When answering, prefer ..." note (MiniLM 0.5 by the shared frame), but it shares no
    subject with "prefer traditional board games": both stay (PrefEval's persona talk)."""
    engine = _engine(make_config, "sqlite", embedder)
    games = _add(engine, "answering", "prefer traditional board games",
                 query="I usually prefer traditional board games for our group.")
    _add(engine, "answering", "prefer that idea", thread="t2", query="Actually, I love that idea!")
    assert consolidate(engine, U, "t2", {}) == []
    assert _status(engine, games.id) == "active"


def test_paraphrases_merge_keeping_sources(make_config, storage, embedder, monkeypatch):
    monkeypatch.setattr(cons, "MERGE_MIN", 0.8)
    engine = _engine(make_config, storage, embedder)
    a = _add(engine, "answering", "use bullet points in answers", query="Use bullet points.")
    b = _add(engine, "answering", "format answers as bullet points", thread="t2",
             query="Please format answers as bullet points.")
    sim = float(np.dot(*embedder.embed_documents([a.note, b.note])))
    assert 0.8 <= sim < engine.config.retrieval.dedup_threshold, sim  # the dedup missed it
    consolidate(engine, U, "t2", {})
    cards = {c.id: c for c in engine.memory.list_cards(U)}
    assert cards[a.id].status == "archived" and cards[a.id].replaced_by == b.id
    assert {s.query for s in cards[b.id].sources} == {"Use bullet points.",
                                                      "Please format answers as bullet points."}


def test_one_off_request_gives_no_standing_card(make_config, storage, embedder):
    engine = _engine(make_config, storage, embedder)
    req = _add(engine, "answering", "give me an actual recipe, no meat",
               query="That's not helpful. Give me an actual recipe, no meat.")
    pref = _add(engine, "answering", "I prefer short answers", query="I prefer short answers.")
    rule = _add(engine, "solving math problems", "show every step of the derivation")
    task = _add(engine, "working on: Let l = [1,2,3,4]", "Let l = [1,2,3,4]")
    hard = _add(engine, "answering", "find it difficult to stay engaged in solo learning",
                query="I find it difficult to stay engaged in solo learning.")  # a statement
    assert is_one_off(req) and is_one_off(task)
    assert not is_one_off(pref) and not is_one_off(rule) and not is_one_off(hard)
    assert consolidate(engine, U, "t1", {}) == []  # same conversation: the request stands
    _add(engine, "math", "show every step", thread="t2")  # a new card: a new store version
    changed = consolidate(engine, U, "t2", {})
    assert sorted(c.id for c in changed) == sorted([req.id, task.id])
    card = engine.memory.get_card(U, req.id)
    assert card.status == "archived" and "one-off" in card.status_reason
    assert _status(engine, pref.id) == "active"


def test_card_drawing_complaints_is_retired_and_shown_with_why(make_config, storage, embedder,
                                                              capsys):
    engine = _engine(make_config, storage, embedder)
    junk = _add(engine, "working on: a geometry problem", "solve the triangle problem")
    good = _add(engine, "answering", "I prefer answers in bullet points")
    update = make_update(engine)
    rows = _raw_rows(engine)
    config = {"configurable": {"thread_id": "t1", "user_id": U}}
    consolidated = []
    for i in range(4):  # the junk card is injected and every turn draws a complaint
        engine.memory.put_pending(U, "t1", {"query": f"q{i}", "selected_ids": [junk.id],
                                            "candidates": [{"id": junk.id, "pi": 1.0,
                                                            "chosen": True, "rank": 0}]})
        out = update({"reward": {"value": -1.0, "gate": 0.9},
                      "query": "No, that's not what I asked for. I said I prefer answers in "
                               "bullet points."}, config, None)
        consolidated += out["reward"].get("consolidated", [])
    values = engine.load_vector(U).card_values
    assert values[junk.id][0] < cons.RETIRE_VALUE  # pushed down
    assert values[good.id][0] > 0 and values[good.id][2] >= 1  # restated: credited up
    assert [c["id"] for c in consolidated] == [junk.id]
    assert _status(engine, junk.id) == "archived" and _status(engine, good.id) == "active"
    assert _raw_rows(engine) >= rows  # nothing deleted
    from vars_langgraph.cli import main

    assert main(["--data-dir", engine.config.data_dir, "memories", "--user", U, "--json"]) == 0 \
        if storage == "sqlite" else True
    if storage == "sqlite":
        data = json.loads(capsys.readouterr().out)
        row = next(c for c in data["cards"] if c["id"] == junk.id)
        assert row["status"] == "archived" and "retired: learned value" in row["status_reason"]
        assert row["value"] < 0


def test_opposite_stances_on_different_things_of_one_topic_are_no_contradiction(
        make_config, storage, embedder):
    """Two preferences that share a topic word but not their subject ("learning by listening"
    / "online learning platforms") both stay: the newer one's "avoid" is no reversal of the
    older one's "prefer" (seen in PrefEval's tuning topics: the older card was superseded)."""
    engine = _engine(make_config, storage, embedder)
    older = _add(engine, "answering",
                 "prefer learning through listening rather than reading or visual methods")
    newer = _add(engine, "answering", "avoid online learning platforms that rely heavily on "
                 "pre-recorded video lectures", thread="t2")
    consolidate(engine, U, "t2", {})
    assert _status(engine, older.id) == _status(engine, newer.id) == "active"
    assert contradicts(newer, older) is False


def test_forget_still_deletes_archived_cards(make_config, storage, embedder):
    engine = _engine(make_config, storage, embedder)
    old = _add(engine, "choosing food", "I am vegetarian and eat no fish or meat")
    _add(engine, "choosing food", "I eat fish now", thread="t2")
    consolidate(engine, U, "t2", {})
    assert _status(engine, old.id) == "superseded"
    engine.forget_user(U)
    assert _raw_rows(engine) == 0


def test_card_value_rule():
    values: dict[str, list[float]] = {}
    goals = card_value.targets(["a", "b"], ["c"], -1.0)
    assert goals == {"a": -1.0, "b": -1.0, "c": 1.0}
    assert card_value.update(values, goals, 1.0, 0.5, ["c"])
    assert values == {"a": [-0.5, 1, 0], "b": [-0.5, 1, 0], "c": [0.5, 1, 1]}
    assert card_value.targets(["a"], [], 0.5) == {"a": 0.5}
    assert card_value.targets(["a"], [], 0.0) == {}
    assert not card_value.update(values, {"a": 1.0}, 0.0, 0.5)  # no gate, no change


def test_a_happy_turn_credits_a_card_by_how_likely_it_applied(make_config, embedder):
    """A positive reward says the answer was fine, not which note made it so: the card the
    question needed (high calibrated P(useful), kept in the pending record) gains more value
    than a filler card injected beside it."""
    engine = _engine(make_config, "sqlite", embedder)
    needed = _add(engine, "cooking dinner", "suggest only vegetarian recipes")
    filler = _add(engine, "writing code", "add type hints to every function")
    pending = clean_pending({"selected_ids": [needed.id, filler.id], "candidates": [
        {"id": needed.id, "pi": 0.6, "chosen": True, "rerank": float(np.log(0.9))},
        {"id": filler.id, "pi": 0.4, "chosen": True, "rerank": float(np.log(0.2))}]})
    user = engine.load_vector(U)
    n = learn_card_values(engine, user, engine.index.get(U), pending, "Perfect, thanks!",
                          {"value": 0.5, "gate": 1.0})
    assert n == 2
    u = {cid: card_value.value_of(user.card_values, cid) for cid in (needed.id, filler.id)}
    step = card_value.VALUE_LR * 0.5
    assert u[needed.id] == pytest.approx(0.9 * step) and u[filler.id] == pytest.approx(0.2 * step)
    del pending["candidates"][1]["rerank"]  # a record written before P was kept: full credit
    learn_card_values(engine, user, engine.index.get(U), pending, "Great.",
                      {"value": 0.5, "gate": 1.0})
    full = u[filler.id] + card_value.VALUE_LR * (0.5 - u[filler.id])
    assert card_value.value_of(user.card_values, filler.id) == pytest.approx(full)


def test_confusion_blames_no_note(make_config, embedder):
    """"I don't follow, what's a closure?" says the answer was unclear, not that a note was
    wrong: the injected cards keep their values; a correction still lowers them."""
    engine = _engine(make_config, "sqlite", embedder)
    card = _add(engine, "writing code", "add type hints to every function")
    pending = clean_pending({"selected_ids": [card.id], "candidates": [
        {"id": card.id, "pi": 1.0, "chosen": True, "rerank": float(np.log(0.5))}]})
    user = engine.load_vector(U)
    ui = engine.index.get(U)
    assert learn_card_values(engine, user, ui, pending, "I don't follow, what's a closure?",
                             {"value": -0.6, "gate": 1.0, "label": "neg_confusion"}) == 0
    assert card_value.value_of(user.card_values, card.id) == 0.0
    assert learn_card_values(engine, user, ui, pending, "No, that's the wrong function.",
                             {"value": -0.8, "gate": 1.0, "label": "neg_correction"}) == 1
    # blamed by how likely it applied (P 0.5), as a happy turn credits it
    assert card_value.value_of(user.card_values, card.id) == pytest.approx(-0.5 * card_value.VALUE_LR)


def _chooser(engine):
    """query (after the thread's earlier user messages) -> the ids of the cards retrieve +
    rerank put in its prompt."""
    retrieve, rerank = make_retrieve(engine), make_rerank(engine)
    config = {"configurable": {"thread_id": "t1", "user_id": U}}

    def chosen(query, earlier=()):
        said = [m for t in earlier for m in (HumanMessage(t), AIMessage("..."))]
        state = {"query": query, "messages": [*said, HumanMessage(query)]}
        state.update(retrieve(state, config, None))
        return [c["id"] for c in rerank(state, config, None)["selected"]]

    return chosen


@pytest.mark.parametrize("said", [
    "I live in Canada, so give prices in CAD please.",
    "I work nights, so suggest things I can do during the day.",
    "Write in British English.",
    "As a high school teacher, I need explanations I can reuse in class.",
    "My daughter is 6, keep stories age-appropriate.",
])
def test_a_standing_instruction_the_rules_read_is_not_archived_as_a_request(make_config, embedder,
                                                                            said):
    """An instruction that follows from a fact about the user ("give prices in CAD") reads
    like a request by its verb; stored as a request it would never reach a prompt."""
    engine = _engine(make_config, "sqlite", embedder)
    cards = engine.add_preferences(U, combine([("user", said)], []),
                                   CardSource(thread_id="t1", turn=1, query=said))
    assert cards and not any(is_one_off(c) for c in cards), [c.note for c in cards]


def test_condition_counts_and_empty_selection_is_valid(make_config, embedder):
    engine = _engine(make_config, "sqlite", embedder, condition_min=0.18, min_p=0.3)
    code = _add(engine, "writing code", "add type hints to every function")
    math = _add(engine, "solving math problems", "show every step of the derivation")
    chosen = _chooser(engine)
    picked = chosen("Solve the equation 3x + 5 = 20 for x, a math problem.")
    assert math.id in picked and code.id not in picked
    assert chosen("Write a Python function that parses a CSV file.") == [code.id]
    engine.config.memory.min_p = 0.99  # nothing is that likely to apply: no notes at all
    assert chosen("Solve the equation 3x + 5 = 20 for x, a math problem.") == []


def test_a_query_that_names_the_cards_task_passes_the_condition_gate(make_config, embedder):
    """MiniLM puts a Python question far from "writing code" (cosine ~0.1); the task the query
    names by its words lets the card through, and only for that task."""
    engine = _engine(make_config, "sqlite", embedder, condition_min=0.3)
    code = _add(engine, "writing code", "add type hints to every function")
    chosen = _chooser(engine)
    assert chosen("How do I reverse a list in Python?") == [code.id]
    assert chosen("What is the derivative of x^2 sin x?") == []
    engine.config.memory.condition_min = None  # no gate: the card competes everywhere
    assert chosen("What is the derivative of x^2 sin x?") == [code.id]


def test_a_card_for_another_task_waits_when_the_users_own_task_reads_better(make_config, embedder):
    """The user's words around a pasted problem lift every "... problems" condition past
    condition_min; the condition that reads best among the user's own names the task, and a
    card of another task waits. Cards of one task ("writing code", "writing Python") stay."""
    engine = _engine(make_config, "sqlite", embedder)  # the defaults
    logic = _add(engine, "logic puzzles", "explain the reasoning as a list of numbered deductions")
    math = _add(engine, "math problems", "show every step of the derivation")
    code = _add(engine, "writing code", "add type hints to every function")
    python = _add(engine, "writing Python", "use pytest for the tests")
    chosen = _chooser(engine)
    equation = "Here's a problem I'm working on: solve 3x + 5 = 20 for x."
    function = "Here's a problem I'm working on: write a function that reverses a string."
    assert chosen(equation) == [math.id]
    assert sorted(chosen(function)) == sorted([code.id, python.id])
    engine.config.memory.condition_margin = None  # the gate alone lets the other tasks in
    assert {logic.id, code.id} <= set(chosen(equation))
    assert math.id in chosen(function)


def test_a_follow_up_keeps_its_threads_task(make_config, embedder):
    """"And in descending order?" names no task: the condition is read against the thread's
    first and previous user messages too. A question that names its own task is not a
    follow-up."""
    engine = _engine(make_config, "sqlite", embedder, condition_min=0.3)
    code = _add(engine, "writing code", "add type hints to every function")
    chosen = _chooser(engine)
    follow_up = "And in descending order?"
    assert chosen(follow_up) == []
    assert chosen(follow_up, ["How do I sort a list in Python?"]) == [code.id]
    assert chosen(follow_up, ["How do I sort a list in Python?", "What does key= do?"]) == [code.id]
    assert chosen("What is the derivative of x^2 sin x?",
                  ["How do I sort a list in Python?"]) == []
    assert chosen(follow_up, ["What is the derivative of x^2 sin x?"]) == []


def test_a_statement_of_preferences_is_not_the_threads_task(make_config, embedder):
    """Seen in a chat: after "I mostly write TypeScript, and I like code without comments", the
    code cards rode along on "Any tips to sleep better?" as if it followed up a code task."""
    from langchain_core.messages import AIMessage, HumanMessage

    from vars_langgraph.nodes.rerank import thread_topic

    said = "I mostly write Kotlin, and I like code without comments."
    msgs = [HumanMessage(said), AIMessage("Noted."), HumanMessage("Any tips to sleep better?")]
    assert thread_topic(msgs) == []
    task = "How do I sort a list in Python?"
    assert thread_topic([HumanMessage(task), AIMessage("Use sorted()."), HumanMessage("And in reverse?")]) \
        == [task]
    engine = _engine(make_config, "sqlite", embedder, condition_min=0.3)
    code = _add(engine, "writing code", "write code in Kotlin")
    chosen = _chooser(engine)
    assert chosen("Any tips to sleep better?", thread_topic(msgs)) == []
    assert chosen("And in reverse?", [task]) == [code.id]


def test_garbled_card_surfaces_through_the_users_words(make_config, embedder):
    engine = _engine(make_config, "sqlite", embedder, lexical_weight=1.0)
    for dish in ("pasta", "risotto", "curry", "soup", "salad", "tacos", "stew", "pizza"):
        _add(engine, "cooking dinner", f"I like quick {dish} recipes for dinner")
    garbled = _add(engine, "xq", "zzkj blorf quux",
                   query="I always want my recipes to use lentils and chickpeas.")
    retrieve, rerank = make_retrieve(engine), make_rerank(engine)
    config = {"configurable": {"thread_id": "t1", "user_id": U}}
    query = "Any good recipes with lentils and chickpeas?"
    state = {"query": query, "messages": [("user", query)]}
    state.update(retrieve(state, config, None))
    cand = {c["id"]: c for c in state["candidates"]}
    assert cand[garbled.id]["lexical"] == 1.0  # the best BM25 match, by the user's words
    assert garbled.id in [c["id"] for c in rerank(state, config, None)["selected"]]
    engine.config.memory.hybrid = False  # dense alone ranks it last
    state = {"query": query, "messages": [("user", query)]}
    state.update(retrieve(state, config, None))
    assert garbled.id not in [c["id"] for c in rerank(state, config, None)["selected"]]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_card_value_updates_survive_sigkill(tmp_path):
    """A child process runs the update node in a loop (each turn: pending feedback, a reward,
    the card values and the vector committed in one batch) and is SIGKILLed at random; every
    acknowledged value update is in the store, and no half-written one."""
    data = tmp_path / "data"
    ack = tmp_path / "ack.txt"
    rng = np.random.default_rng(3)
    last = 0
    for round_ in range(4):
        child = subprocess.Popen([sys.executable, "-m", "tests._value_child", str(data), str(ack)],
                                 cwd=ROOT, env=_child_env())
        try:
            t_end = time.monotonic() + 60
            while time.monotonic() < t_end and (not ack.exists() or
                                                 "READY" not in ack.read_text()):
                time.sleep(0.02)
            time.sleep(float(rng.uniform(0.2, 0.8)))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        acked = [int(x.split()[1]) for x in ack.read_text().split("\n") if x.startswith("VAL")]
        last = max([last, *acked])
        from tests._value_child import CARD, expected, make

        engine = make(str(data))
        u, n, _ = engine.load_vector("value-user").card_values[CARD]
        assert n >= last, (round_, n, last)  # nothing acknowledged is lost
        assert u == pytest.approx(expected(int(n)), abs=1e-9)  # and nothing half-written
        engine.store.conn.close()
    assert last > 0


def test_lexical_index_follows_new_and_archived_cards(make_config, embedder):
    """The BM25 side is cached per store version: new cards are found through a small delta
    index (no full re-index), archived ones are never returned, and nothing stale breaks."""
    engine = _engine(make_config, "sqlite", embedder)
    cache = engine.lexical
    first = _add(engine, "cooking", "I am vegetarian and eat no fish or meat",
                 query="I'm vegetarian, no meat please.")
    for topic in ("hiking trips", "python code", "tax forms", "guitar chords", "chess openings",
                  "french grammar", "bird watching", "car repair", "gardening"):
        _add(engine, topic, f"keep answers about {topic} short")

    def found(query):
        return [cid for cid, _ in cache.search(U, engine.index.get(U), query, 5)]

    assert found("vegetarian meat")[0] == first.id
    builds = cache.rebuilds
    late = _add(engine, "baking", "use grams, not cups", query="For baking, use grams.")
    assert found("grams for baking")[0] == late.id and cache.rebuilds == builds  # delta
    _add(engine, "cooking", "I eat fish now", thread="t2", query="I eat fish now.")
    consolidate(engine, U, "t2", {})
    assert _status(engine, first.id) == "superseded"
    assert first.id not in found("vegetarian meat fish")
