"""VARSMemory dropped into real agents (a real ChatOpenAI on the local llama.cpp server).

Every LLM path runs the same conversation: alice states a preference and follows up in thread
t1, asks something new in thread t2, and bob asks in his own thread. The model input is
captured by a callback handler on the agent's model: alice's preference must reach it in
t2, and nothing of alice's may reach bob's. The unit tests at the end check the hook logic
(tool loops, missing user, prompt merging) with a deterministic extractor and a scripted model.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.store.memory import InMemoryStore

from vars_langgraph import VARSContext, VARSMemory
from vars_langgraph.background import get_learner
from vars_langgraph.integrations import VARSMemoryState
from vars_langgraph.state import message_text

# create_react_agent is deprecated in favour of create_agent; both are supported drop-in paths
pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")

PREFERENCE = "I prefer answers in bullet points."
FOLLOW_UP = "Thanks, that helps. What is a unit test?"
NEW_TOPIC = "What are the benefits of code review?"
HEADER = "## User Preferences"
# the CPU extractor over-extracts on purpose (see README); with a few cards per user, k = 8
# makes every card of the user a candidate for the prompt, so the checks do not hinge on
# which junk cards a neutral question produced
TEST_CONFIG = {"retrieval": {"select_k": 8}}


class CaptureInput(BaseCallbackHandler):
    """Records every message list the chat model is called with."""

    def __init__(self) -> None:
        self.inputs: list[list[Any]] = []

    def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], **kw: Any) -> None:
        self.inputs.append(list(messages[0]))

    def system(self, i: int = -1) -> str:
        return "\n".join(message_text(m) for m in self.inputs[i] if m.type == "system")


def agent_model(url: str, capture: CaptureInput) -> ChatOpenAI:
    # langchain-openai sends max_completion_tokens, which llama.cpp ignores: repeat max_tokens
    return ChatOpenAI(base_url=url, api_key="not-needed", model="local", temperature=0.0,
                      max_tokens=48, extra_body={"max_tokens": 48}, callbacks=[capture])


def drained(memory: VARSMemory) -> None:
    """Wait for the background learning (the drop-in default) to finish its queued jobs."""
    if memory.background:
        assert get_learner(memory.engine).drain(400)


def converse(invoke, memory: VARSMemory, capture: CaptureInput, alice: str, bob: str) -> None:
    """The shared scenario; `invoke(text, user, thread)` runs one turn of the agent. Learning
    runs in the background (the default): the explicit preference is stored by the fast path
    before the answer, the rest after it."""
    assert memory.background
    out1 = invoke(PREFERENCE, alice, "t1")
    stated = [c for c in memory.cards(alice) if "bullet" in c["note"].lower()]
    assert stated, memory.cards(alice)  # at once, not after the background extraction
    pending = memory.engine.memory.get_pending(alice, "t1")
    assert pending and pending["query"] == PREFERENCE  # learn ran after the final answer
    assert pending["answer"] == message_text(out1["messages"][-1])[:2000]

    out2 = invoke(FOLLOW_UP, alice, "t1")  # the follow-up is the feedback on turn 1
    assert memory.engine.memory.get_pending(alice, "t1")["query"] == FOLLOW_UP
    assert out2.get("reward") is None  # computed after the answer, by the worker
    drained(memory)
    assert isinstance(get_learner(memory.engine).last[(alice, "t1")]["reward"]["value"], float)

    n = len(capture.inputs)
    invoke(NEW_TOPIC, alice, "t2")
    assert len(capture.inputs) > n
    seen = capture.system()
    assert HEADER in seen, seen  # stated in thread t1, in the model's input in thread t2
    assert any(json.dumps(c["note"], ensure_ascii=False) in seen for c in stated), seen

    invoke(NEW_TOPIC, bob, "b1")
    seen_by_bob = capture.system()
    alice_notes = {c["note"] for c in memory.cards(alice)}
    assert not any(json.dumps(n, ensure_ascii=False) in seen_by_bob for n in alice_notes)
    assert "bullet" not in seen_by_bob.lower(), seen_by_bob
    # bob's memory holds only what his own message gave the extractor, never alice's cards
    drained(memory)
    for card in memory.cards(bob):
        assert card["user_id"] == bob and card["note"] not in alice_notes
        assert {s["thread_id"] for s in card["sources"]} == {"b1"}


@pytest.mark.llm
def test_create_react_agent_hooks(make_config, llm_base_url):
    from langgraph.prebuilt import create_react_agent

    capture = CaptureInput()
    memory = VARSMemory(make_config(**TEST_CONFIG, llm_url=llm_base_url))  # the config's SQLite store
    agent = create_react_agent(agent_model(llm_base_url, capture), [],
                               pre_model_hook=memory.pre_model_hook,
                               post_model_hook=memory.post_model_hook,
                               checkpointer=InMemorySaver())

    def invoke(text: str, user: str, thread: str) -> dict[str, Any]:
        return agent.invoke({"messages": [("user", text)]},
                            {"configurable": {"thread_id": thread, "user_id": user}})

    converse(invoke, memory, capture, "alice", "bob")
    # the stored conversation is untouched: preferences only go into the model input
    state = agent.get_state({"configurable": {"thread_id": "t2"}}).values
    assert [m.type for m in state["messages"]] == ["human", "ai"]


@pytest.mark.llm
def test_create_agent_middleware(make_config, llm_base_url):
    pytest.importorskip("langchain.agents", reason="langchain>=1 (create_agent) not installed")
    from langchain.agents import create_agent

    capture = CaptureInput()
    store = InMemoryStore()  # the agent's own store, shared with VARS
    memory = VARSMemory(make_config(**TEST_CONFIG, llm_url=llm_base_url), store=store)
    agent = create_agent(agent_model(llm_base_url, capture), [],
                         system_prompt="You are a concise assistant.",
                         middleware=[memory.middleware(tools=False)],
                         context_schema=VARSContext, checkpointer=InMemorySaver(), store=store)

    loop = asyncio.new_event_loop()  # one loop: the model's async HTTP client lives in it

    def invoke(text: str, user: str, thread: str) -> dict[str, Any]:
        return loop.run_until_complete(agent.ainvoke({"messages": [("user", text)]},
                                                     {"configurable": {"thread_id": thread}},
                                                     context=VARSContext(user_id=user)))

    try:
        converse(invoke, memory, capture, "alice", "bob")
    finally:
        loop.close()
    assert capture.system().startswith("You are a concise assistant.")  # merged, not replaced


@pytest.mark.llm
def test_own_state_graph_recall_and_learn_nodes(make_config, llm_base_url):
    capture = CaptureInput()
    store = InMemoryStore()
    memory = VARSMemory(make_config(**TEST_CONFIG, llm_url=llm_base_url), store=store)
    llm = agent_model(llm_base_url, capture)

    def model(state: VARSMemoryState) -> dict[str, Any]:
        return {"messages": [llm.invoke(memory.with_preferences(state))]}

    builder = StateGraph(VARSMemoryState, context_schema=VARSContext)
    builder.add_node("recall", memory.recall)
    builder.add_node("model", model)
    builder.add_node("learn", memory.learn)
    builder.add_edge(START, "recall")
    builder.add_edge("recall", "model")
    builder.add_edge("model", "learn")
    builder.add_edge("learn", END)
    graph = builder.compile(checkpointer=InMemorySaver(), store=store)

    def invoke(text: str, user: str, thread: str) -> dict[str, Any]:
        return graph.invoke({"messages": [HumanMessage(text)]},
                            {"configurable": {"thread_id": thread}}, context={"user_id": user})

    converse(invoke, memory, capture, "alice", "bob")
    out = graph.get_state({"configurable": {"thread_id": "t2"}}).values
    assert any("bullet" in c["note"].lower() for c in out["selected"])
    assert HEADER in out["system_prompt"] and "z_long_norm" in out["user_vector"]


@pytest.mark.llm
def test_subgraph_as_one_node(make_config, llm_base_url):
    capture = CaptureInput()
    memory = VARSMemory(make_config(**TEST_CONFIG, llm_url=llm_base_url),
                        chat_model=agent_model(llm_base_url, capture))
    builder = StateGraph(VARSMemoryState, context_schema=VARSContext)
    builder.add_node("assistant", memory.subgraph())
    builder.add_edge(START, "assistant")
    builder.add_edge("assistant", END)
    graph = builder.compile(checkpointer=InMemorySaver())

    def invoke(text: str, user: str, thread: str) -> dict[str, Any]:
        return graph.invoke({"messages": [("user", text)]},
                            {"configurable": {"thread_id": thread, "user_id": user}})

    converse(invoke, memory, capture, "alice", "bob")
    msgs = graph.get_state({"configurable": {"thread_id": "t1"}}).values["messages"]
    assert [type(m) for m in msgs] == [HumanMessage, AIMessage, HumanMessage, AIMessage]


# ---------------------------------------------------------------- hook logic, no LLM


class CountingExtractor:
    """Deterministic stand-in for the LLM extractor: "bullet" in the last user message."""

    def __init__(self) -> None:
        self.calls = 0

    def extract(self, turns):
        from vars_langgraph.types import Preference

        self.calls += 1
        if turns and "bullet" in turns[-1][1].lower():
            return [Preference(condition="general", action="answer in bullet points",
                               confidence=0.9)]
        return []


class ScriptedModel(BaseChatModel):
    """Answers from a script (a tool call, then text) and records its inputs."""

    script: list[AIMessage]
    inputs: list[list[Any]] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # noqa: ANN001
        self.inputs.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=self.script.pop(0))])

    def bind_tools(self, tools, **kwargs):  # noqa: ANN001
        return self


@tool
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


@pytest.fixture
def unit_memory(make_config) -> tuple[VARSMemory, CountingExtractor]:
    from vars_langgraph import VARSEngine

    extractor = CountingExtractor()
    engine = VARSEngine(make_config(storage="memory"), InMemoryStore(), extractor=extractor)
    return VARSMemory(engine=engine), extractor


@pytest.mark.parametrize("schema", ["default", "VARSAgentState"])
def test_tool_loop_recalls_once_and_learns_from_the_final_answer(unit_memory, schema):
    from langgraph.prebuilt import create_react_agent

    from vars_langgraph.integrations import VARSAgentState

    memory, extractor = unit_memory
    memory.remember("alice", "answer in bullet points")
    model = ScriptedModel(script=[
        AIMessage("", tool_calls=[{"name": "word_count", "args": {"text": "a b c"}, "id": "c1"}]),
        AIMessage("Three words."),
    ], inputs=[])
    agent = create_react_agent(model, [word_count], pre_model_hook=memory.pre_model_hook,
                               post_model_hook=memory.post_model_hook,
                               state_schema=None if schema == "default" else VARSAgentState,
                               checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1", "user_id": "alice"}}
    out = agent.invoke({"messages": [("user", "How many words in 'a b c'?")]}, config)
    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai"]
    drained(memory)
    assert extractor.calls == 1  # the second model call (after the tool) did not recall again
    assert len(model.inputs) == 2
    for seen in model.inputs:  # both model calls carry the preference
        assert seen[0].type == "system" and "bullet points" in seen[0].content
    pending = memory.engine.memory.get_pending("alice", "t1")
    assert pending["answer"] == "Three words." and pending["query"].startswith("How many")
    assert [m.type for m in agent.get_state(config).values["messages"]][-1] == "ai"


def test_learn_without_the_turn_in_state_or_cache_recomputes_read_only(unit_memory):
    memory, extractor = unit_memory
    memory.remember("alice", "answer in bullet points")
    other = VARSMemory(engine=memory.engine)  # e.g. another process: empty turn cache
    state = {"messages": [HumanMessage("What is Python?", id="h1"), AIMessage("A language.")]}
    config = {"configurable": {"thread_id": "t9", "user_id": "alice"}}
    assert other.learn(state, config) == {}
    pending = memory.engine.memory.get_pending("alice", "t9")
    assert pending["query"] == "What is Python?" and pending["selected_ids"]
    assert extractor.calls == 0  # read-only: no extraction, no reward, no update


def test_no_user_id_is_refused_by_every_entry_point(unit_memory):
    from vars_langgraph.memory.store import InvalidUserId

    memory, _ = unit_memory
    state = {"messages": [HumanMessage("hi", id="h1"), AIMessage("hello")]}
    config = {"configurable": {"thread_id": "t1"}}
    for fn in (memory.recall, memory.learn, memory.pre_model_hook, memory.post_model_hook):
        with pytest.raises(InvalidUserId):
            fn(state, config)


def test_preferences_merge_into_the_agents_system_message(unit_memory):
    from langchain_core.messages import SystemMessage

    memory, _ = unit_memory
    selected = [{"id": "1", "note": "In general, answer in bullet points.", "global": True}]
    state = {"selected": selected, "messages": [SystemMessage("You are terse."),
                                                HumanMessage("hi")]}
    merged = memory.with_preferences(state)
    assert len(merged) == 2 and merged[0].content.startswith("You are terse.")
    assert '"In general, answer in bullet points."' in merged[0].content
    blocks = memory.with_preferences(state, [SystemMessage([{"type": "text", "text": "Hi."}])])
    assert blocks[0].content[0]["text"] == "Hi." and HEADER in blocks[0].content[1]["text"]
    bare = memory.with_preferences({"selected": selected, "messages": [HumanMessage("hi")]})
    assert bare[0].content.startswith(memory.config.prompt.base_system)
    assert memory.with_preferences({"selected": [], "messages": [HumanMessage("hi")]})[0].type \
        == "human"
    assert memory.preferences_prompt(state).startswith(HEADER)


def test_runtime_store_puts_vars_data_in_the_running_graphs_store(make_config):
    from vars_langgraph import VARSEngine
    from vars_langgraph.integrations import RuntimeStore

    runtime_store = RuntimeStore()
    memory = VARSMemory(engine=VARSEngine(make_config(storage="memory"), runtime_store,
                                          extractor=CountingExtractor()))
    agent_store = InMemoryStore()
    builder = StateGraph(VARSMemoryState)
    builder.add_node("recall", memory.recall)
    builder.add_edge(START, "recall")
    builder.add_edge("recall", END)
    graph = builder.compile(store=agent_store)
    out = graph.invoke({"messages": [HumanMessage("I like bullet points.")]},
                       {"configurable": {"thread_id": "t1", "user_id": "alice"}})
    assert [c["note"] for c in out["selected"]] == ["In general, answer in bullet points."]
    assert agent_store.search(("vars", "alice", "cards"))
    assert runtime_store.fallback.search(("vars", "alice", "cards")) == []
    assert memory.cards("alice") == []  # outside a run: the fallback store


def test_middleware_wiring_names_and_tools(unit_memory):
    pytest.importorskip("langchain.agents", reason="langchain>=1 (create_agent) not installed")
    from langchain.agents import create_agent

    memory, extractor = unit_memory
    memory.remember("alice", "answer in bullet points")
    model = ScriptedModel(script=[AIMessage("Fine.")], inputs=[])
    agent = create_agent(model, [], system_prompt="You are terse.",
                         middleware=[memory.middleware(tools=True)], checkpointer=InMemorySaver())
    nodes = set(agent.get_graph().nodes)
    assert {"VARSMemory.before_model", "model", "VARSMemory.after_model", "tools"} <= nodes
    out = agent.invoke({"messages": [("user", "hi")]},
                       {"configurable": {"thread_id": "t1", "user_id": "alice"}})
    system = model.inputs[0][0]
    assert system.type == "system" and system.content.startswith("You are terse.")
    assert "bullet points" in system.content and out["vars_turn"] and out["selected"]
    assert memory.engine.memory.get_pending("alice", "t1")["answer"] == "Fine."
    drained(memory)
    assert extractor.calls == 1


def test_background_is_the_drop_in_default_and_learns_after_the_answer(unit_memory):
    """The LLM extractor runs after the model answered (the job is held until `learn`), and a
    RuntimeStore-backed memory stays inline (a worker thread is outside the graph's run)."""
    from vars_langgraph import VARSEngine
    from vars_langgraph.integrations import RuntimeStore

    memory, extractor = unit_memory
    assert memory.background
    state = {"messages": [HumanMessage("Use bullet points, please.", id="h1")]}
    config = {"configurable": {"thread_id": "t1", "user_id": "alice"}}
    memory.recall(state, config)
    learner = get_learner(memory.engine)
    assert learner.drain(5) and extractor.calls == 0  # held: the answer is not there yet
    assert len(learner.pending_jobs("alice")) == 1  # but already durable in the store
    memory.learn({"messages": [*state["messages"], AIMessage("- ok")]}, config)
    assert learner.drain(30) and extractor.calls == 1 and learner.pending_jobs("alice") == []
    assert any("bullet" in c["note"] for c in memory.cards("alice"))
    inline = VARSMemory(engine=VARSEngine(memory.config, RuntimeStore(), extractor=extractor))
    assert not inline.background
