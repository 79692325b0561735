"""Memory tools: the user is the run's (context or configurable.user_id), never an argument.

Tools run through LangGraph's real `ToolNode` (what `create_react_agent` and `create_agent`
use) on the real embedder and store; the tool calls are written out, so no LLM is needed.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.store.memory import InMemoryStore

from vars_langgraph import VARSContext, VARSMemory
from vars_langgraph.memory.store import InvalidUserId


@pytest.fixture(params=["config_store", "in_memory_store"])
def memory(request: pytest.FixtureRequest, make_config, storage) -> VARSMemory:
    if request.param == "in_memory_store":
        if storage != "sqlite":
            pytest.skip("the store is given directly: the storage setting plays no part")
        return VARSMemory(make_config(storage="memory"), store=InMemoryStore())
    return VARSMemory(make_config(storage=storage))


def tool_graph(memory: VARSMemory):
    builder = StateGraph(MessagesState, context_schema=VARSContext)
    builder.add_node("tools", ToolNode(memory.tools))
    builder.add_edge(START, "tools")
    builder.add_edge("tools", END)
    return builder.compile()


def call(graph, name: str, args: dict[str, Any], *, user: str | None = None,
         context_user: str | None = None) -> str:
    msg = AIMessage("", tool_calls=[{"name": name, "args": args, "id": "call_1"}])
    config = {"configurable": {"thread_id": "t1", **({"user_id": user} if user else {})}}
    kwargs = {"context": VARSContext(user_id=context_user)} if context_user else {}
    out = graph.invoke({"messages": [msg]}, config, **kwargs)
    return out["messages"][-1].content


def test_schemas_have_no_user_argument(memory):
    for t in memory.tools:
        fields = set(t.tool_call_schema.model_json_schema().get("properties", {}))
        assert not fields & {"user_id", "user", "runtime"}, (t.name, fields)
    assert [t.name for t in memory.tools] == [
        "search_preferences", "remember_preference", "forget_preference"]


def test_another_users_id_in_arguments_is_ignored(memory):
    graph = tool_graph(memory)
    out = call(graph, "remember_preference",
               {"action": "answer in bullet points", "user_id": "bob"}, user="alice")
    assert out.startswith("Remembered [")
    assert [c["note"] for c in memory.cards("alice")] == ["In general, answer in bullet points."]
    assert memory.cards("bob") == []

    # bob's run cannot read alice's memory, whatever the arguments say
    found = call(graph, "search_preferences", {"query": "bullet points", "user_id": "alice"},
                 context_user="bob")
    assert found == "No stored preferences match."
    found = call(graph, "search_preferences", {"query": "bullet points", "user_id": "bob"},
                 context_user="alice")
    assert "bullet points" in found

    # ... nor delete it, even with the right card id
    card_id = memory.cards("alice")[0]["id"]
    out = call(graph, "forget_preference", {"preference_id": card_id, "user_id": "alice"},
               user="bob")
    assert out.startswith("No preference with id")
    assert len(memory.cards("alice")) == 1
    out = call(graph, "forget_preference", {"preference_id": f"[{card_id}]"}, user="alice")
    assert out.startswith("Forgot")
    assert memory.cards("alice") == []


def test_context_wins_over_configurable(memory):
    graph = tool_graph(memory)
    call(graph, "remember_preference", {"action": "use metric units", "condition": "cooking"},
         user="bob", context_user="alice")
    assert [c["note"] for c in memory.cards("alice")] == ["When cooking, use metric units."]
    assert memory.cards("bob") == []


def test_no_user_in_the_run_is_refused(memory):
    graph = tool_graph(memory)
    with pytest.raises(InvalidUserId):
        call(graph, "remember_preference", {"action": "x", "user_id": "alice"})
    assert memory.cards("alice") == []


def test_explicit_preference_merges_and_is_retrieved_by_recall(memory):
    graph = tool_graph(memory)
    call(graph, "remember_preference", {"action": "answer in bullet points"}, user="alice")
    call(graph, "remember_preference", {"action": "answer in bullet points."}, user="alice")
    cards = memory.cards("alice")
    assert len(cards) == 1 and len(cards[0]["sources"]) == 2  # near-duplicate merged
    assert cards[0]["confidence"] == 1.0 and cards[0]["is_global"]
    hits = memory.search("alice", "how should answers look?")
    assert hits and hits[0]["id"] == cards[0]["id"]
