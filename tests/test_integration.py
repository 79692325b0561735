"""The whole VARS loop on the real stack: SQLite files, FAISS, MiniLM and a real llama.cpp
OpenAI-compatible server (Qwen2.5-Coder-0.5B) doing extraction and generation."""

from __future__ import annotations

import numpy as np
import pytest

from vars_langgraph import build_graph

pytestmark = pytest.mark.llm


def turn(graph, text: str, thread: str, user: str) -> dict:
    return graph.invoke({"messages": [("user", text)]},
                        {"configurable": {"thread_id": thread, "user_id": user}})


def test_multi_session_learning_on_the_real_stack(make_config, llm_base_url):
    # SQLite, the default; the same loop on Postgres with the real server is
    # tests/test_postgres.py::test_end_to_end_real_llm_async_background
    cfg = make_config(storage="sqlite", llm_url=llm_base_url)
    graph = build_graph(cfg)

    # session 1: alice states preferences; the real extractor stores them as cards
    out = turn(graph, "When you write code for me, I prefer Python with type hints.", "s1", "alice")
    assert out["extracted"], "the extractor found no preference in an explicit statement"
    assert out["messages"][-1].content.strip()
    turn(graph, "Also, I prefer answers in bullet points.", "s1", "alice")
    cards = graph.engine.memory.list_cards("alice")
    assert any("type hint" in c.note.lower() for c in cards)
    assert any("bullet" in c.note.lower() for c in cards)

    # bob shares the graph, store and index; he never sees alice's cards
    out = turn(graph, "Write a function that reverses a string.", "b1", "bob")
    assert "type hint" not in out["system_prompt"].lower()
    assert all(c["id"] not in {x.id for x in cards} for c in out["candidates"])

    # a new process (fresh graph on the same data dir), a new session days later
    del graph
    graph = build_graph(cfg)
    out = turn(graph, "Write a function that checks if a number is prime.", "s2", "alice")
    assert "type hint" in out["system_prompt"].lower(), out["system_prompt"]
    before = graph.engine.load_vector("alice")
    chosen_by_policy = [c for c in out["candidates"] if c.get("chosen")]

    # negative feedback: the reward node scores the previous turn and update moves z_long
    out = turn(graph, "No, that's not what I asked.", "s2", "alice")
    assert out["reward"]["value"] < 0
    after = graph.engine.load_vector("alice")
    assert chosen_by_policy, "the code preference should be chosen by the policy, not global"
    assert out["reward"]["applied"]
    assert np.linalg.norm(after.z_long - before.z_long) > 0
    assert after.updates == before.updates + 1
