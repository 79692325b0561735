"""Two users share one agent; each one's preferences shape only their own answers.

    python examples/two_users.py

The user comes from the run's context (`context_schema=VARSContext`, LangGraph v1); the
same works with `config={"configurable": {"user_id": ...}}`. On CPU this starts the local
llama.cpp server; set VARS_LLM__BASE_URL to use another OpenAI-compatible server.
"""

import warnings

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import create_react_agent

from vars_langgraph import VARSConfig, VARSContext, VARSMemory
from vars_langgraph.integrations import VARSAgentState

# create_react_agent is deprecated in favour of LangChain's create_agent (see docs/dropin.md)
warnings.filterwarnings("ignore", message="create_react_agent has been moved")

config = VARSConfig.from_dict({"storage": "memory", "llm": {"max_tokens": 64, "temperature": 0}})
memory = VARSMemory(config)
agent = create_react_agent(
    memory.engine.chat_model, [], checkpointer=InMemorySaver(),
    pre_model_hook=memory.pre_model_hook, post_model_hook=memory.post_model_hook,
    state_schema=VARSAgentState,  # optional: keeps the VARS keys (selected, reward...) in state
    context_schema=VARSContext,
)


def ask(user: str, thread: str, text: str) -> None:
    out = agent.invoke({"messages": [("user", text)]}, {"configurable": {"thread_id": thread}},
                       context=VARSContext(user_id=user))
    notes = [c["note"] for c in out.get("selected", [])]
    print(f"[{user}/{thread}] {text}\n  preferences used: {notes or 'none'}\n"
          f"  answer: {out['messages'][-1].content}\n")


if __name__ == "__main__":
    ask("alice", "a1", "I prefer answers in bullet points.")
    ask("alice", "a2", "What are the benefits of code review?")
    ask("bob", "b1", "What are the benefits of code review?")
    for user in ("alice", "bob"):
        print(user, "remembers:", [c["note"] for c in memory.cards(user)])
