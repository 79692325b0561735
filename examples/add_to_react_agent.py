"""Add VARS memory to an existing `create_react_agent` agent (two lines, marked below).

    python examples/add_to_react_agent.py

For agents already built with `langgraph.prebuilt.create_react_agent` (deprecated by
LangGraph in favour of LangChain v1's `create_agent`; new agents: `add_to_agent.py`).
On CPU this starts the local llama.cpp server (Qwen2.5-Coder-0.5B); set VARS_LLM__BASE_URL to
use any OpenAI-compatible server instead. Alice states a preference on Monday; on Friday, in a
new thread, the model's input carries it. The explicit preference is stored before the first
answer (the fast path); the LLM extraction runs in the background after it.
"""

import warnings

from langchain_core.callbacks import BaseCallbackHandler
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import create_react_agent

from vars_langgraph import VARSConfig, VARSMemory
from vars_langgraph.models.llm import chat_model, resolve_llm

# this path is for existing create_react_agent agents; new ones use create_agent (add_to_agent.py)
warnings.filterwarnings("ignore", message="create_react_agent has been moved")

config = VARSConfig.from_dict({"storage": "memory", "llm": {"max_tokens": 64, "temperature": 0}})
llm = chat_model(resolve_llm(config.llm, config))  # stands for your agent's model (any BaseChatModel)
# Your agent's tools go here (none in this demo, to keep it short on CPU). They work on the CPU
# default too: the local server returns the model's tool calls as OpenAI tool_calls.
TOOLS: list = []


# The agent you have (any model, tools, checkpointer):
#   agent = create_react_agent(llm, tools, checkpointer=InMemorySaver())
# The same agent with VARS memory:
memory = VARSMemory(config)  # 1
agent = create_react_agent(llm, TOOLS, checkpointer=InMemorySaver(),  # 2
                           pre_model_hook=memory.pre_model_hook,
                           post_model_hook=memory.post_model_hook)
# `TOOLS + memory.tools` also lets the model search / remember / forget the user's preferences.


class ShowSystemMessage(BaseCallbackHandler):
    """Prints the system message the agent's model receives."""

    def on_chat_model_start(self, serialized, messages, **kwargs) -> None:  # noqa: ANN001
        system = [m.content for m in messages[0] if m.type == "system"]
        print("  (the model's system message)", *(system or ["none"]), sep="\n  ")


def ask(text: str, thread: str) -> None:
    config = {"configurable": {"thread_id": thread, "user_id": "alice"},
              "callbacks": [ShowSystemMessage()]}
    print(f"[{thread}] alice> {text}")
    out = agent.invoke({"messages": [("user", text)]}, config)
    print(f"[{thread}] agent> {out['messages'][-1].content}\n")


if __name__ == "__main__":
    ask("I prefer answers in bullet points.", "monday")
    print("alice's memory:", [c["note"] for c in memory.cards("alice")], "\n")
    ask("What are the benefits of code review?", "friday")
