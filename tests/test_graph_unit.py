"""Graph logic on real SQLite, FAISS and MiniLM, with a rule-based extractor and a scripted chat
model: these tests are about wiring, state, the learning loop and isolation, not the LLMs
(tests/test_integration.py runs the same loop on the real llama.cpp server)."""

import asyncio

import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage

from vars_langgraph import VARSConfig, VARSEngine, build_graph
from vars_langgraph.learning import card_value
from vars_langgraph.memory.store import InvalidUserId
from vars_langgraph.storage import open_checkpointer, open_store
from vars_langgraph.types import CardSource, Preference

RULES = {
    "bullet": ("when answering questions", "use bullet points"),
    "python": ("when writing code", "use Python with type hints"),
    "short": ("when explaining", "keep answers short"),
    "emoji": ("when chatting", "do not use emojis"),
}


class RuleExtractor:
    """Deterministic extractor for wiring tests: keyword -> preference."""

    def extract(self, turns):
        text = turns[-1][1].lower() if turns else ""
        return [Preference(condition=c, action=a, confidence=0.9)
                for k, (c, a) in RULES.items() if k in text]


def make_graph(tmp_path, **cfg):
    config = VARSConfig.from_dict({"data_dir": str(tmp_path), **cfg})
    engine = VARSEngine(config, open_store(config), index_dir=tmp_path / "index",
                        extractor=RuleExtractor(), chat_model=FakeListChatModel(responses=["ok."]))
    return build_graph(config, engine=engine, checkpointer=open_checkpointer(config))


def run(graph, text, thread, user):
    return graph.invoke({"messages": [("user", text)]},
                        {"configurable": {"thread_id": thread, "user_id": user}})


def test_graph_has_the_seven_nodes_in_order(tmp_path):
    g = make_graph(tmp_path)
    nodes = [n for n in g.get_graph().nodes if not n.startswith("__")]
    assert nodes == ["reward", "update", "extract", "retrieve", "rerank", "augment", "generate"]
    assert "reward --> update" in g.get_graph().draw_mermaid()


def test_every_node_function_has_one_signature_and_the_graph_uses_them(tmp_path):
    import inspect

    from vars_langgraph.nodes.wiring import ORDER, vars_node_functions

    graph = make_graph(tmp_path, fail_open=True)
    fns = vars_node_functions(graph.engine)
    assert [n for n, _ in fns] == list(ORDER) == [n for n in graph.get_graph().nodes
                                                   if not n.startswith("__")]
    for name, fn in fns:  # what LangGraph inspects to pass config and runtime by name
        assert list(inspect.signature(fn).parameters)[:3] == ["state", "config", "runtime"], name
    # called directly (as the drop-in memory does): a turn's recall without a graph
    state = {"messages": [HumanMessage("I like bullet points")]}
    config = {"configurable": {"thread_id": "t", "user_id": "alice"}}
    for _, fn in fns[:-1]:
        state.update(fn(state, config, None))
    assert any("bullet" in c["note"] for c in state["selected"])  # stated now, used now


def test_preference_reaches_a_later_session_and_not_another_user(tmp_path):
    # top-k (not sampled) selection: this test is about wiring, the top candidate must be used
    g = make_graph(tmp_path, retrieval={"select_k": 1}, policy={"selection": "top_k"})
    out = run(g, "Please always use bullet points and write Python code", "s1", "alice")
    assert {c["action"] for c in out["extracted"]} == {"use bullet points", "use Python with type hints"}
    out = run(g, "write a function that sorts a list", "s2", "alice")
    assert "use Python with type hints" in out["system_prompt"]
    assert [c["id"] for c in out["selected"]] == [out["candidates"][0]["id"]]
    assert all("pi" in c and "score" in c for c in out["candidates"])
    other = run(g, "write a function that sorts a list", "s3", "bob")
    assert other["candidates"] == [] and "User Preferences" not in other["system_prompt"]


def test_negative_feedback_moves_z_long_and_positive_differs(tmp_path):
    g = make_graph(tmp_path, retrieval={"select_k": 1})
    run(g, "I like bullet points. Also write python. And keep it short", "s1", "alice")
    before = g.engine.load_vector("alice")
    out = run(g, "explain how a hash map works", "s1", "alice")
    assert out["reward"] is not None and out["selected"]
    out = run(g, "No, that's not what I asked, you forgot what I said", "s1", "alice")
    assert out["reward"]["value"] < 0 and out["reward"]["applied"]
    after = g.engine.load_vector("alice")
    assert np.linalg.norm(after.z_long - before.z_long) > 0
    assert after.updates == before.updates + 1 and after.baseline < 0
    # a new session resets z_short and keeps z_long
    out = run(g, "explain quicksort", "s2", "alice")
    assert out["user_vector"]["z_short_norm"] == 0.0
    assert out["user_vector"]["z_long_norm"] == pytest.approx(float(np.linalg.norm(after.z_long)), rel=1e-5)


def test_state_survives_a_new_process(tmp_path):
    g = make_graph(tmp_path)
    run(g, "use bullet points please", "s1", "alice")
    run(g, "no, wrong", "s1", "alice")
    z = g.engine.load_vector("alice").z_long.copy()
    g2 = make_graph(tmp_path)  # new engine, new connections on the same files
    assert np.allclose(g2.engine.load_vector("alice").z_long, z)
    out = run(g2, "give me a summary of the news", "s1", "alice")
    assert len(out["messages"]) == 6  # thread restored from the checkpointer
    assert "use bullet points" in out["system_prompt"]


def test_context_schema_and_configurable_user_ids_agree(tmp_path):
    g = make_graph(tmp_path)
    g.invoke({"messages": [("user", "I want bullet points")]}, {"configurable": {"thread_id": "a"}},
             context={"user_id": "alice"})
    out = g.invoke({"messages": [("user", "summarise this")]},
                   {"configurable": {"thread_id": "b", "user_id": "alice"}})
    assert "use bullet points" in out["system_prompt"]


def test_missing_user_id_or_empty_message_fails_before_any_write(tmp_path):
    g = make_graph(tmp_path)
    with pytest.raises(InvalidUserId):
        g.invoke({"messages": [("user", "use bullet points")]}, {"configurable": {"thread_id": "x"}})
    with pytest.raises(ValueError, match="non-empty"):
        run(g, "   ", "x", "alice")
    assert g.engine.memory.users() == []


def test_async_invoke_and_stream(tmp_path):
    g = make_graph(tmp_path)

    async def go():
        cfg = {"configurable": {"thread_id": "t", "user_id": "alice"}}
        out = await g.ainvoke({"messages": [("user", "use bullet points")]}, cfg)
        seen = [list(ev)[0] async for ev in g.astream({"messages": [("user", "hi")]}, cfg,
                                                      stream_mode="updates")]
        return out, seen

    out, seen = asyncio.run(go())
    assert out["messages"][-1].content == "ok."
    assert seen == ["reward", "update", "extract", "retrieve", "rerank", "augment", "generate"]


STYLES = ["keep answers short", "be friendly", "use bullet points", "avoid jargon",
          "do not use emojis", "use British spelling", "give the answer first",
          "include a concrete example", "use a formal tone", "ask before long answers",
          "cite sources at the end", "write numbers as digits"]


def general(action: str, confidence: float = 0.9) -> Preference:
    return Preference(condition="general", action=action, confidence=confidence)


def test_every_global_card_is_a_candidate_and_none_bypasses_the_budget(tmp_path):
    g = make_graph(tmp_path, retrieval={"select_k": 3})
    src = CardSource(thread_id="s0")
    g.engine.add_preferences("alice", [general(a, 0.95 - 0.05 * i) for i, a in enumerate(STYLES)],
                             src)
    g.engine.add_preferences("alice", [Preference(condition="when writing SQL",
                                                  action="assume PostgreSQL")], src)
    out = run(g, "write a query that lists all customers", "s1", "alice")
    cands = out["candidates"]
    assert sum(c["global"] for c in cands) == 12 and len(cands) == 13
    assert all("pi" in c and c["rerank"] <= 0 for c in cands)  # s0 = log P(useful)
    assert len(out["selected"]) == 3 and all(c["chosen"] for c in out["selected"])
    assert out["system_prompt"].count('\n- "') == 3  # nothing injected outside the budget


def test_a_global_card_beyond_the_tenth_can_be_chosen(tmp_path):
    g = make_graph(tmp_path, retrieval={"select_k": 2}, policy={"selection": "top_k"})
    src = CardSource(thread_id="s0")
    g.engine.add_preferences("alice", [general(a, 0.95 - 0.05 * i) for i, a in enumerate(STYLES)],
                             src)
    ui = g.engine.index.get("alice")
    assert len(ui.global_ids) == 12
    least = min(ui.global_ids, key=lambda i: ui.cards[i].confidence)  # the 12th by confidence
    user = g.engine.load_vector("alice")
    user.z_long = 2.0 * g.engine.item_vectors(ui.vectors([least]))[0]  # a vector that favours it
    g.engine.save_vector("alice", user)
    out = run(g, "tell me about the weather", "s1", "alice")
    assert least in [c["id"] for c in out["selected"]]


def test_after_a_complaint_with_only_general_notes_injected_z_long_moves(tmp_path):
    g = make_graph(tmp_path, retrieval={"select_k": 2}, policy={"selection": "top_k"})
    src = CardSource(thread_id="s0")
    g.engine.add_preferences("alice", [general("keep answers short"), general("be friendly")], src)
    g.engine.add_preferences("alice", [Preference(condition="when writing SQL", action="assume PostgreSQL"),
                                       Preference(condition="when cooking", action="leave out meat")],
                             src)
    out = run(g, "How long should green tea steep?", "s1", "alice")
    assert [c["global"] for c in out["selected"]] == [True, True]
    out = run(g, "No, that's not what I asked. Tell me the water temperature.", "s1", "alice")
    rew = out["reward"]
    assert rew["applied"] and rew["value"] < 0 and rew["advantage"] < 0
    assert {"gate", "baseline", "advantage"} <= set(rew)
    assert out["user_vector"]["z_long_norm"] > 0


@pytest.mark.parametrize("selection,junk", [
    ("sample", "no, that is not what I asked, tell me more"),
    ("top_k", "explain how things work and why they happen"),  # s0 ranks it first
])
def test_a_bad_global_card_is_learned_away(tmp_path, monkeypatch, selection, junk):
    """The user complains whenever a junk "always" card is injected and thanks otherwise; the
    policy learns to leave it out (at first it is chosen)."""
    g = make_graph(tmp_path, retrieval={"select_k": 2},
                   policy={"eta_long": 0.5, "eta_short": 0.0, "tau": 0.5, "seed": 0,
                           "selection": selection},
                   memory={"consolidate": False})
    monkeypatch.setattr(card_value, "VALUE_BETA", 0.0)  # the vector alone
    src = CardSource(thread_id="s0")
    g.engine.add_preferences("alice", [general(junk, 0.99),
                                       general("keep answers short"), general("be friendly"),
                                       general("use bullet points")], src)
    bad = next(c.id for c in g.engine.index.get("alice").cards.values() if junk in c.note)
    questions = ["explain how a hash map works", "how do vaccines work", "what is inflation",
                 "why is the sky blue", "how do I bake bread", "what is a black hole"]
    hits = []
    for t in range(36):
        out = run(g, questions[t % len(questions)], "s1", "alice")
        hits.append(bad in [c["id"] for c in out["selected"]])
        run(g, "No, that's wrong, redo it" if hits[-1] else "Thanks, great, that helps", "s1", "alice")
    assert hits[0] and sum(hits[-12:]) <= 3, hits  # chosen first (s0 ranks it first), then learned away


def test_draw_order_survives_the_pending_record():
    """The sequence gradient reads the draw order: `rank` must come back from the stored
    pending record (validated by clean_pending) and order the chosen cards."""
    from vars_langgraph.memory.store import clean_pending
    from vars_langgraph.nodes.update import chosen_in_order

    record = {"query": "q", "query_embedding": [0.0], "selected_ids": ["b", "a"],
              "candidates": [{"id": "a", "pi": 0.5, "chosen": True, "rank": 1},
                             {"id": "c", "pi": 0.2, "chosen": False, "rank": None},
                             {"id": "b", "pi": 0.3, "chosen": True, "rank": 0},
                             {"id": "d", "pi": 0.0, "chosen": True, "rank": True}]}  # junk rank
    cands = clean_pending(record)["candidates"]
    assert [c["rank"] for c in cands] == [1, None, 0, None]
    assert [cands[i]["id"] for i in chosen_in_order(cands)] == ["b", "a", "d"]
