"""extract: read the recent dialogue, emit preference cards, store them (merging duplicates)."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from vars_langgraph.engine import VARSEngine
from vars_langgraph.state import (
    VARSState,
    last_user_text,
    message_text,
    resolve_user_id,
    thread_id,
)
from vars_langgraph.types import CardSource

MAX_TURN_CHARS = 4000  # per message fed to the extractor; huge messages are cut, not refused


def dialogue_window(messages: list[Any], turns: int) -> list[tuple[str, str]]:
    """The last `turns` user/assistant messages as (role, text), ending with the user's."""
    out: list[tuple[str, str]] = []
    for m in messages:
        role = {"human": "user", "ai": "assistant"}.get(getattr(m, "type", ""))
        text = message_text(m).strip()
        if role and text:
            out.append((role, text[-MAX_TURN_CHARS:]))
    return out[-turns:]


def make_extract(engine: VARSEngine):
    cfg = engine.config.extractor

    def extract(state: VARSState, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        user_id = resolve_user_id(runtime, config)
        engine.note_thread(user_id, thread_id(config))  # once per process: for forget --threads
        messages = state.get("messages", [])
        query = last_user_text(messages)
        if not cfg.enabled or not query.strip():
            return {"query": query, "extracted": []}
        prefs = engine.extractor.extract(dialogue_window(messages, cfg.window_turns))
        prefs = [p for p in prefs if p.confidence >= cfg.min_confidence]
        turn = sum(1 for m in messages if getattr(m, "type", "") == "human")
        source = CardSource(thread_id=thread_id(config), turn=turn, query=query[:500])
        cards = engine.add_preferences(user_id, prefs, source)
        return {"query": query, "extracted": [c.public() for c in cards]}

    return extract
