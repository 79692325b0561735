"""Add VARS memory to a LangChain v1 agent: `create_agent(model, tools, middleware=[...])`.

    python examples/add_to_agent.py

The first example to read; `add_to_react_agent.py` shows the same for an existing
`langgraph.prebuilt.create_react_agent` agent (pre/post-model hooks). On CPU this starts the
local llama.cpp server (Qwen2.5-Coder-0.5B); set VARS_LLM__BASE_URL to use any
OpenAI-compatible server instead. Alice states a preference on Monday; on Friday, in a new
thread, the model's system message carries it while the agent calls its tool.
"""

from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from vars_langgraph import VARSConfig, VARSMemory
from vars_langgraph.models.llm import chat_model, resolve_llm

config = VARSConfig.from_dict({"storage": "memory", "llm": {"max_tokens": 96, "temperature": 0}})
llm = chat_model(resolve_llm(config.llm, config))  # stands for your agent's model (any BaseChatModel)


@tool
def weather(city: str) -> str:
    """The current temperature in a city, in degrees Celsius."""
    return f"It is 21 degrees Celsius in {city}."


# The agent you have (any model, tools, checkpointer):
#   agent = create_agent(llm, [weather], checkpointer=InMemorySaver())
# The same agent with VARS memory (two lines):
memory = VARSMemory(config)  # 1
agent = create_agent(llm, [weather], middleware=[memory.middleware()],  # 2
                     checkpointer=InMemorySaver())
# `memory.middleware(tools=True)` also lets the model search / remember / forget preferences.


class ShowSystemMessage(BaseCallbackHandler):
    """Prints the system message the agent's model receives."""

    def on_chat_model_start(self, serialized, messages, **kwargs) -> None:  # noqa: ANN001
        system = [m.content for m in messages[0] if m.type == "system"]
        print("  (the model's system message)", *(system or ["none"]), sep="\n  ")


def ask(text: str, thread: str) -> None:
    run = {"configurable": {"thread_id": thread}, "callbacks": [ShowSystemMessage()]}
    print(f"[{thread}] alice> {text}")
    out = agent.invoke({"messages": [("user", text)]}, run, context={"user_id": "alice"})
    calls = [c["name"] for m in out["messages"] for c in getattr(m, "tool_calls", None) or []]
    print(f"[{thread}] tool calls: {calls or 'none'}")
    print(f"[{thread}] agent> {out['messages'][-1].content}\n")


if __name__ == "__main__":
    ask("Please always give me temperatures in Fahrenheit.", "monday")
    print("alice's memory:", [c["note"] for c in memory.cards("alice")], "\n")
    ask("What's the weather in Paris?", "friday")
