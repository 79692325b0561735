"""`VARSMiddleware`: VARS memory for LangChain v1's `create_agent` (needs `langchain>=1`).

`before_model` recalls once per user message, `wrap_model_call` appends the selected
preferences to the request's system message, `after_model` learns from the final answer.
Use `VARSMemory.middleware()` to make one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NotRequired

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain_core.runnables.config import run_in_executor
from langgraph.config import get_config
from langgraph.runtime import Runtime

from vars_langgraph.integrations.hooks import merge_system

if TYPE_CHECKING:
    from vars_langgraph.integrations.memory import VARSMemory


class VARSMiddlewareState(AgentState):
    """The agent's state plus the VARS keys of the current turn (shown in Studio)."""

    query: NotRequired[str]
    extracted: NotRequired[list[dict[str, Any]]]
    candidates: NotRequired[list[dict[str, Any]]]
    selected: NotRequired[list[dict[str, Any]]]
    system_prompt: NotRequired[str]
    reward: NotRequired[dict[str, Any] | None]
    user_vector: NotRequired[dict[str, Any]]
    vars_turn: NotRequired[str]


class VARSMiddleware(AgentMiddleware):
    """`create_agent(model, tools, middleware=[memory.middleware()])`."""

    state_schema = VARSMiddlewareState

    def __init__(self, memory: VARSMemory, *, tools: bool = False):
        super().__init__()
        self.memory = memory
        self.tools = list(memory.tools) if tools else []

    @property
    def name(self) -> str:
        return "VARSMemory"

    # hooks ------------------------------------------------------------------------------------
    def before_model(self, state: Any, runtime: Runtime) -> dict[str, Any] | None:
        return self.memory.recall(state, get_config(), runtime) or None

    async def abefore_model(self, state: Any, runtime: Runtime) -> dict[str, Any] | None:
        return await run_in_executor(None, self.before_model, state, runtime)

    def wrap_model_call(self, request: ModelRequest,
                        handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        return handler(self._with_preferences(request))

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        if request.state.get("vars_turn") is None:  # no turn in the state: may read the store
            request = await run_in_executor(None, self._with_preferences, request)
        else:
            request = self._with_preferences(request)
        return await handler(request)

    def after_model(self, state: Any, runtime: Runtime) -> dict[str, Any] | None:
        return self.memory.learn(state, get_config(), runtime) or None

    async def aafter_model(self, state: Any, runtime: Runtime) -> dict[str, Any] | None:
        return await run_in_executor(None, self.after_model, state, runtime)

    # ------------------------------------------------------------------------------------------
    def _with_preferences(self, request: ModelRequest) -> ModelRequest:
        turn = self.memory.current_turn(request.state, get_config(), request.runtime)
        selected = (turn or {}).get("selected") or []
        if not selected:
            return request
        system = merge_system(request.system_message, selected, self.memory.config.prompt)
        return request.override(system_message=system)


__all__ = ["VARSMiddleware", "VARSMiddlewareState"]
