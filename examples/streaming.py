"""Stream a VARS turn: each node's result as it finishes, then the answer token by token.

    python examples/streaming.py

Uses the full VARS graph (`build_graph`) with `stream_mode=["updates", "messages"]`, once
synchronously and once with `astream`: one graph serves both. A fully async app can open
LangGraph's async store and checkpointer instead and build the graph inside its event loop:

    async with vars_langgraph.storage.open_async_storage(config) as (store, checkpointer):
        graph = build_graph(config, store=store, checkpointer=checkpointer)

On CPU this starts the local llama.cpp server; set VARS_LLM__BASE_URL to use another
OpenAI-compatible server.
"""

import asyncio

from vars_langgraph import VARSConfig, VARSMemory, build_graph

config = VARSConfig.from_dict({"storage": "memory", "llm": {"max_tokens": 64, "temperature": 0}})
memory = VARSMemory(config)
graph = build_graph(engine=memory.engine)  # the same engine drives the drop-in paths too


def show(mode: str, chunk) -> None:
    if mode == "messages":
        token, meta = chunk
        if meta.get("langgraph_node") == "generate":
            print(token.content, end="", flush=True)
        return
    for node, update in chunk.items():
        if node == "extract":
            print(f"[extract] cards: {[c['note'] for c in update.get('extracted', [])]}")
        elif node == "rerank":
            print(f"[rerank] selected: {[c['note'] for c in update.get('selected', [])]}")
        elif node == "update" and update.get("reward"):
            print(f"[update] reward: {update['reward']}")
        elif node == "generate":
            print()
        else:
            print(f"[{node}] done")


def turn(text: str, thread: str) -> None:
    print(f"\nalice> {text}")
    cfg = {"configurable": {"thread_id": thread, "user_id": "alice"}}
    for mode, chunk in graph.stream({"messages": [("user", text)]}, cfg,
                                    stream_mode=["updates", "messages"]):
        show(mode, chunk)


async def aturn(text: str, thread: str) -> None:
    print(f"\nalice> {text}")
    cfg = {"configurable": {"thread_id": thread, "user_id": "alice"}}
    async for mode, chunk in graph.astream({"messages": [("user", text)]}, cfg,
                                           stream_mode=["updates", "messages"]):
        show(mode, chunk)


if __name__ == "__main__":
    turn("I prefer answers in bullet points.", "s1")
    asyncio.run(aturn("What are the benefits of code review?", "s2"))
