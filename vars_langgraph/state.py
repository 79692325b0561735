"""Graph state and run context of the VARS graph (what Studio shows for each turn)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypedDict

from langchain_core.messages import AnyMessage, BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.message import add_messages

from vars_langgraph.memory.store import InvalidUserId, check_user_id


@dataclass
class VARSContext:
    """Run context (`context_schema`): whose memory this run reads and writes."""

    user_id: str | None = None


class VARSState(TypedDict, total=False):
    """Conversation messages plus each stage's output of the current turn."""

    messages: Annotated[list[AnyMessage], add_messages]
    query: str  # the latest user message, as text
    extracted: list[dict[str, Any]]  # cards written or merged this turn
    candidates: list[dict[str, Any]]  # retrieved cards: dense, rerank, policy scores, pi
    selected: list[dict[str, Any]]  # the cards injected into the prompt
    system_prompt: str  # the rendered system message (augment)
    reward: dict[str, Any] | None  # reward of the previous turn (reward/update)
    user_vector: dict[str, Any]  # z_long/z_short norms, baseline, update count
    input_cut: dict[str, Any] | None  # the user's message cut to fit the context (generate)


class HasContext(Protocol):
    """What the user id is read from: LangGraph's `Runtime`, or a tool's `ToolRuntime`."""

    @property
    def context(self) -> Any: ...


def resolve_user_id(runtime: HasContext | None, config: RunnableConfig | None) -> str:
    """User id from the runtime context (LangGraph v1), else `configurable.user_id`."""
    return user_id_from(runtime.context if runtime is not None else None, config)


def user_id_from(ctx: Any, config: RunnableConfig | None) -> str:
    """User id from a run's context (a dict or an object with `user_id`), else
    `configurable.user_id`."""
    uid = ctx.get("user_id") if isinstance(ctx, dict) else getattr(ctx, "user_id", None)
    if uid is None and config:
        uid = (config.get("configurable") or {}).get("user_id")
    if uid is not None and not isinstance(uid, str):
        uid = str(uid)
    return check_user_id(uid)


def thread_id(config: RunnableConfig | None) -> str:
    """The conversation (session) id; one thread is one session."""
    tid = ((config or {}).get("configurable") or {}).get("thread_id")
    return str(tid) if tid is not None else "default"


def valid_text(text: str) -> str:
    """`text` as valid Unicode: lone surrogates (which no encoder, tokenizer or store takes)
    become U+FFFD (a split surrogate pair is joined)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def message_text(msg: BaseMessage | dict | str) -> str:
    """Plain text of a message whatever its content shape (str, content blocks, dict), as
    valid Unicode (`valid_text`)."""
    if isinstance(msg, str):
        return valid_text(msg)
    content = msg.get("content") if isinstance(msg, dict) else msg.content
    if isinstance(content, str):
        return valid_text(content)
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return valid_text("\n".join(parts))


def last_user_text(messages: list[AnyMessage]) -> str:
    for m in reversed(messages or []):
        if getattr(m, "type", None) == "human":
            return message_text(m)
    return ""


__all__ = [
    "VARSContext", "VARSState", "InvalidUserId", "resolve_user_id", "thread_id",
    "message_text", "last_user_text",
]
