"""VARSMemory dropped into real agents (a real ChatOpenAI on the local llama.cpp server).

Every path runs the same conversation: alice states a preference and follows up in thread
t1, asks something new in thread t2, and bob asks in his own thread. The model input is
captured by a callback handler on the agent's model: alice's preference must reach it in
t2, and nothing of alice's may reach bob's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.store.memory import InMemoryStore

from vars_langgraph import VARSContext, VARSMemory
from vars_langgraph.integrations import VARSMemoryState
from vars_langgraph.state import message_text

pytestmark = pytest.mark.llm

PREFERENCE = "I prefer answers in bullet points."
FOLLOW_UP = "Thanks, that helps. What is a unit test?"
NEW_TOPIC = "What are the benefits of code review?"
HEADER = "## User Preferences"


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


def converse(invoke, memory: VARSMemory, capture: CaptureInput, alice: str, bob: str) -> None:
    """The shared scenario; `invoke(text, user, thread)` runs one turn of the agent."""
    out1 = invoke(PREFERENCE, alice, "t1")
    assert any("bullet" in c["note"].lower() for c in memory.cards(alice)), memory.cards(alice)
    pending = memory.engine.memory.get_pending(alice, "t1")
    assert pending and pending["query"] == PREFERENCE  # learn ran after the final answer
    assert pending["answer"] == message_text(out1["messages"][-1])[:2000]

    out2 = invoke(FOLLOW_UP, alice, "t1")  # the follow-up is the feedback on turn 1
    assert memory.engine.memory.get_pending(alice, "t1")["query"] == FOLLOW_UP
    if "reward" in out2:  # agents whose state carries the VARS keys show it
        assert isinstance(out2["reward"]["value"], float)

    n = len(capture.inputs)
    invoke(NEW_TOPIC, alice, "t2")
    assert len(capture.inputs) > n
    seen = capture.system()
    assert HEADER in seen and "bullet" in seen.lower(), seen  # stated in t1, used in t2

    invoke(NEW_TOPIC, bob, "b1")
    assert HEADER not in capture.system() and "bullet" not in capture.system().lower()
    assert memory.cards(bob) == []


def test_create_react_agent_hooks(make_config, llm_base_url):
    from langgraph.prebuilt import create_react_agent

    capture = CaptureInput()
    memory = VARSMemory(make_config(llm_url=llm_base_url))  # the config's SQLite store
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


def test_create_agent_middleware(make_config, llm_base_url):
    pytest.importorskip("langchain.agents", reason="langchain>=1 (create_agent) not installed")
    from langchain.agents import create_agent

    capture = CaptureInput()
    store = InMemoryStore()  # the agent's own store, shared with VARS
    memory = VARSMemory(make_config(llm_url=llm_base_url), store=store)
    agent = create_agent(agent_model(llm_base_url, capture), [],
                         system_prompt="You are a concise assistant.",
                         middleware=[memory.middleware(tools=False)],
                         context_schema=VARSContext, checkpointer=InMemorySaver(), store=store)

    def invoke(text: str, user: str, thread: str) -> dict[str, Any]:
        return asyncio.run(agent.ainvoke({"messages": [("user", text)]},
                                         {"configurable": {"thread_id": thread}},
                                         context=VARSContext(user_id=user)))

    converse(invoke, memory, capture, "alice", "bob")
    assert capture.system().startswith("You are a concise assistant.")  # merged, not replaced


def test_own_state_graph_recall_and_learn_nodes(make_config, llm_base_url):
    capture = CaptureInput()
    store = InMemoryStore()
    memory = VARSMemory(make_config(llm_url=llm_base_url), store=store)
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


def test_subgraph_as_one_node(make_config, llm_base_url):
    capture = CaptureInput()
    memory = VARSMemory(make_config(llm_url=llm_base_url),
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
