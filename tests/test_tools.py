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


# tool calls on the default local server -------------------------------------------------------
def test_textual_tool_calls_become_openai_tool_calls():
    """The server-side parser (models/_server_tools.py): only JSON calls of requested tools
    become tool_calls; prose, unknown tools and broken JSON stay text."""
    from vars_langgraph.models._server_tools import fix_request, parse_tool_calls, with_tool_calls

    names = {"remember_preference", "search_preferences"}
    one = parse_tool_calls('<tool_call>\n{"name": "remember_preference", "arguments": '
                           '{"action": "use bullets"}}\n</tool_call>', names)
    assert [c["function"]["name"] for c in one] == ["remember_preference"]
    assert one[0]["function"]["arguments"] == '{"action": "use bullets"}'
    two = parse_tool_calls('{"name": "search_preferences", "arguments": {"query": "x"}}\n'
                           '{"name": "remember_preference", "arguments": "{\\"action\\": \\"y\\"}"}',
                           names)
    assert [c["function"]["name"] for c in two] == ["search_preferences", "remember_preference"]
    for text in ("Sure! I will use bullets.", '{"name": "rm_rf", "arguments": {}}',
                 '{"name": "search_preferences", "arguments": {"query": ', "",
                 'Here: {"name": "search_preferences", "arguments": {}}'):
        assert parse_tool_calls(text, names) is None, text
    resp = {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": '{"name": "search_preferences", "arguments": {}}'}}]}
    msg = with_tool_calls(resp, names)["choices"][0]
    assert msg["finish_reason"] == "tool_calls" and msg["message"]["content"] is None
    fixed = fix_request(b'{"messages": [{"role": "assistant", "content": null, "tool_calls": []}]}')
    assert b'"content": ""' in fixed and fix_request(b"not json") == b"not json"


def test_a_repeated_call_becomes_the_answer():
    """What Qwen2.5-0.5B does with a tool (seen on the real server): the call, then an
    invented `{"response": ...}`; after the tool's result, the same call again and the
    answer. The first is one tool call; the repeat is the answer, unwrapped."""
    from vars_langgraph.models._server_tools import answered_calls, parse_tool_calls, with_tool_calls

    names = {"weather"}
    text = '{"name": "weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n{"response": "21 C"}'
    first = parse_tool_calls(text, names)
    assert [c["function"]["arguments"] for c in first] == ['{"city": "Paris"}']
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "It is 21 C in Paris."}]
    done = answered_calls(messages)
    assert done == {("weather", '{"city": "Paris"}')}
    resp = {"choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}]}
    choice = with_tool_calls(resp, names, done)["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == "21 C"
    other = text.replace("Paris", "Lyon")  # a new call is still made
    resp = {"choices": [{"index": 0, "message": {"role": "assistant", "content": other}}]}
    assert with_tool_calls(resp, names, done)["choices"][0]["message"]["tool_calls"]
    # a call without a result yet (no tool message) is not "answered"
    assert answered_calls(messages[:2]) == set()


def test_streamed_log_probs_are_reassembled():
    from vars_langgraph.models._server_tools import from_stream, sse_body

    def chunk(text, lp, finish=None):
        return {"id": "x", "created": 1, "model": "local", "choices": [{
            "index": 0, "delta": {"content": text}, "finish_reason": finish,
            "logprobs": {"content": [{"token": text, "logprob": lp, "top_logprobs": []}]}}]}

    body = sse_body(iter([chunk('{"', -0.1), chunk("a", -0.2, "length")]))
    out = from_stream(body)
    choice = out["choices"][0]
    assert choice["message"]["content"] == '{"a' and choice["finish_reason"] == "length"
    assert [t["logprob"] for t in choice["logprobs"]["content"]] == [-0.1, -0.2]
    assert out["object"] == "chat.completion"


@pytest.mark.llm
def test_create_agent_with_the_memory_middleware_calls_the_tool(make_config, llm_base_url):
    """The issue's case on the real local server: `create_agent(llm, [weather],
    middleware=[memory.middleware()])` asked for the weather makes a real tool call (the tool
    runs once) and ends with an answer, not the call's JSON."""
    from langchain.agents import create_agent
    from langchain_core.messages import ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    ran: list[str] = []

    @tool
    def weather(city: str) -> str:
        """The current temperature in a city, in degrees Celsius."""
        ran.append(city)
        return f"It is 21 degrees Celsius in {city}."

    memory = VARSMemory(make_config(storage="memory"), store=InMemoryStore())
    llm = ChatOpenAI(base_url=llm_base_url, api_key="x", model="local", temperature=0.0,
                     max_tokens=64)
    agent = create_agent(llm, [weather], middleware=[memory.middleware()])
    out = agent.invoke({"messages": [("user", "What's the weather in Paris?")]},
                       {"configurable": {"thread_id": "t1"}, "recursion_limit": 12},
                       context={"user_id": "alice"})
    assert ran and "paris" in ran[0].lower(), out["messages"]
    assert any(isinstance(m, ToolMessage) for m in out["messages"])
    final = out["messages"][-1]
    assert final.type == "ai" and not final.tool_calls
    assert '"name"' not in final.content, final.content


@pytest.mark.llm
def test_memory_tool_executes_on_the_default_local_server(make_config, llm_base_url):
    """A real tool call: Qwen2.5-0.5B on the local llama.cpp server, through ChatOpenAI's
    `bind_tools` (what create_agent/create_react_agent send); the call runs in a ToolNode and
    the follow-up request (assistant tool_calls with null content + the tool result) is
    accepted. Two model calls, 48 tokens each."""
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    memory = VARSMemory(make_config(storage="memory"), store=InMemoryStore())
    llm = ChatOpenAI(base_url=llm_base_url, api_key="x", model="local", temperature=0.0,
                     max_tokens=48, extra_body={"max_tokens": 48}).bind_tools(memory.tools)
    msgs = [SystemMessage("You are a helpful assistant with memory tools."),
            HumanMessage("Please remember that I want answers in bullet points.")]
    ai = llm.invoke(msgs)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "remember_preference", ai
    out = tool_graph(memory).invoke({"messages": [ai]},
                                    {"configurable": {"thread_id": "t1", "user_id": "alice"}})
    assert out["messages"][-1].content.startswith("Remembered [")
    assert any("bullet" in c["note"].lower() for c in memory.cards("alice"))
    follow = llm.invoke([*msgs, ai, out["messages"][-1]])  # the server accepts the tool turn
    assert isinstance(follow.content, str)
