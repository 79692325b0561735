"""How the chosen preferences reach a model's input, for every drop-in path.

Message helpers only (no storage, no models): find the user's latest message, tell a final
answer from a tool call, and merge the rendered preference block into the system message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AnyMessage, BaseMessage, SystemMessage

from vars_langgraph.config import PromptConfig
from vars_langgraph.nodes.augment import render_system_prompt
from vars_langgraph.state import message_text


def last_human(messages: Sequence[Any]) -> BaseMessage | None:
    """The latest user message (the one this turn answers), or None."""
    for m in reversed(messages or []):
        if getattr(m, "type", None) == "human":
            return m
    return None


def turn_key(message: BaseMessage) -> str:
    """Identifies a user turn: the message id (add_messages sets one), else a content hash."""
    if getattr(message, "id", None):
        return str(message.id)
    return "sha1:" + hashlib.sha1(message_text(message).encode()).hexdigest()[:16]


def is_final_answer(message: Any) -> bool:
    """An assistant message that answers the user (not one that only calls tools)."""
    return getattr(message, "type", None) == "ai" and not getattr(message, "tool_calls", None)


def preferences_block(selected: Sequence[dict[str, Any]], cfg: PromptConfig) -> str:
    """The rendered "User Preferences" block alone (no base prompt); "" when none selected."""
    return render_system_prompt(list(selected or []), cfg, base="").strip()


def merge_system(system: SystemMessage | None, selected: Sequence[dict[str, Any]],
                 cfg: PromptConfig) -> SystemMessage | None:
    """The agent's system message with the preference block appended (unchanged if none).

    Without a system message the block follows `cfg.base_system`, exactly as the VARS graph
    renders it."""
    return with_block(system, selected, cfg) if selected else system


def with_block(system: SystemMessage | None, selected: Sequence[dict[str, Any]],
               cfg: PromptConfig) -> SystemMessage:
    """`merge_system` for a non-empty selection."""
    if system is None:
        return SystemMessage(render_system_prompt(list(selected), cfg))
    if isinstance(system.content, str):
        return SystemMessage(render_system_prompt(list(selected), cfg, base=system.content),
                             id=system.id)
    block = {"type": "text", "text": "\n\n" + preferences_block(selected, cfg)}
    return SystemMessage([*system.content, block], id=system.id)


def with_preferences(messages: Sequence[AnyMessage], selected: Sequence[dict[str, Any]],
                     cfg: PromptConfig) -> list[AnyMessage]:
    """`messages` with the preferences in the (first) system message, ready for a model."""
    msgs = list(messages or [])
    if not selected:
        return msgs
    if msgs and isinstance(msgs[0], SystemMessage):
        return [with_block(msgs[0], selected, cfg), *msgs[1:]]
    return [with_block(None, selected, cfg), *msgs]
