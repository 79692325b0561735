"""Memory tools an agent can call: search, remember and forget the user's preferences.

The user is the one of the run (`ToolRuntime`: context, else `configurable.user_id`); no tool
has a user argument, and arguments a model adds (e.g. `user_id`) are dropped by the schema,
so a model cannot read or write another user's memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime

from vars_langgraph.state import resolve_user_id, thread_id

if TYPE_CHECKING:
    from vars_langgraph.integrations.memory import VARSMemory

MAX_RESULTS = 20


def run_user(runtime: ToolRuntime[Any, Any]) -> str:
    """The user of the run this tool call belongs to."""
    return resolve_user_id(runtime, runtime.config)


def memory_tools(memory: VARSMemory) -> list[BaseTool]:
    """The three memory tools over `memory` (also `VARSMemory.tools`)."""

    @tool
    def search_preferences(query: str, runtime: ToolRuntime[Any, Any], limit: int = 5) -> str:
        """Search the current user's remembered preferences about how to answer them.

        Args:
            query: what the preferences should be about, e.g. "code style" or "answer length".
            limit: how many to return (1-20).
        """
        hits = memory.search(run_user(runtime), query, max(1, min(int(limit), MAX_RESULTS)))
        if not hits:
            return "No stored preferences match."
        return "\n".join(f"- [{h['id']}] {h['note']} (confidence {h['confidence']:.2f}, "
                         f"similarity {h['score']:.2f})" for h in hits)

    @tool
    def remember_preference(action: str, runtime: ToolRuntime[Any, Any],
                            condition: str = "general") -> str:
        """Remember a preference the current user stated about how to answer them.

        Args:
            action: what to do, e.g. "answer in bullet points".
            condition: when it applies, e.g. "writing Python code"; "general" for always.
        """
        cfg = runtime.config or {}
        card = memory.remember(run_user(runtime), action, condition, thread=thread_id(cfg),
                               query=f"{condition}: {action}")
        # the last sentence keeps small models from calling the tool again in a loop
        return f"Remembered [{card['id']}] {card['note']} It is stored; now answer the user."

    @tool
    def forget_preference(preference_id: str, runtime: ToolRuntime[Any, Any]) -> str:
        """Forget one of the current user's preferences by its id (from search_preferences).

        Args:
            preference_id: the id shown in brackets by search_preferences.
        """
        if memory.forget(run_user(runtime), preference_id.strip().strip("[]")):
            return f"Forgot preference {preference_id}."
        return f"No preference with id {preference_id} (search_preferences lists the ids)."

    return [search_preferences, remember_preference, forget_preference]
