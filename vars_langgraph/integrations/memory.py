"""`VARSMemory`: VARS as a drop-in, learning per-user preference memory for an existing agent.

One object (one `VARSEngine`: models, store, FAISS cache) that plugs into an agent as
`StateGraph` nodes (`recall` / `learn`), as one compiled subgraph, as `create_react_agent`
hooks, as `create_agent` middleware, and as memory tools. Wiring lives in `nodes/wiring.py`, prompt
merging in `hooks.py`, the middleware in `middleware.py`, the tools in `tools.py`.

How a turn maps onto the method (vars-method.md): the user's new message is the feedback on
the previous answer, so `recall` first runs reward + update for the previous turn (exactly as
the VARS graph does, before retrieval, so the policy and a session reset take effect at
once), then extract, retrieve, rerank, augment. `learn` runs after the model answered and
records the turn (query, candidates with their pi, chosen cards, answer) as the pending
feedback that the user's next message in this thread will reward.

By default (`background.enabled` unset) reward, update and the LLM extraction are recorded as
a durable job in `recall` and run by a background worker once `learn` saw the final answer
(background.py); explicit "I prefer ..." statements are stored at once by the fast path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.managed import RemainingSteps
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from vars_langgraph.background import HOT_PATH, background_enabled, get_learner, make_learn
from vars_langgraph.config import VARSConfig
from vars_langgraph.engine import VARSEngine
from vars_langgraph.integrations.hooks import (
    is_final_answer,
    last_human,
    preferences_block,
    turn_key,
    with_preferences,
)
from vars_langgraph.nodes.generate import pending_record
from vars_langgraph.nodes.wiring import ORDER, NodeFn, node_function, vars_node_functions
from vars_langgraph.state import VARSState, message_text, resolve_user_id, thread_id
from vars_langgraph.types import CardSource, Preference

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from vars_langgraph.integrations.middleware import VARSMiddleware

log = logging.getLogger(__name__)

TURN_KEYS = ("query", "candidates", "selected", "system_prompt")
READ_ONLY = ("retrieve", "rerank", "augment")
FRESH_TURN: dict[str, Any] = {"extracted": [], "candidates": [], "selected": [], "reward": None}
CACHE_TURNS = 512


class VARSMemoryState(VARSState, total=False):
    """`messages` plus the VARS keys of a turn; subclass it (or copy its keys) in your own
    state to see retrieved candidates, selected cards, reward and z norms per turn."""

    vars_turn: str  # the user message this turn's recall served (message id)


class VARSAgentState(VARSMemoryState, total=False):
    """State schema for `create_react_agent(..., state_schema=VARSAgentState)`: the agent's
    keys plus the VARS keys (optional; the hooks also work with the default state)."""

    remaining_steps: RemainingSteps


def _recall_nodes(engine: VARSEngine, background: bool) -> list[tuple[str, NodeFn]]:
    """The VARS graph's node functions before `generate`, in order: with `background`, the
    hot path's (`learn` records the job, background.py), else the inline graph's."""
    if not background:
        return vars_node_functions(engine, ORDER[:-1])
    learn = node_function(engine, "learn", make_learn(engine), memory=True)
    return [("learn", learn), *vars_node_functions(engine, HOT_PATH[:-1])]


class VARSMemory:
    """A per-user preference memory that learns, for any LangGraph or LangChain agent.

    >>> memory = VARSMemory(VARSConfig.from_yaml("configs/cpu.yaml"))
    >>> agent = create_react_agent(llm, tools + memory.tools,
    ...     pre_model_hook=memory.pre_model_hook, post_model_hook=memory.post_model_hook)
    >>> agent = create_agent(llm, tools, middleware=[memory.middleware()])  # LangChain v1

    The user is read from the run: `context={"user_id": ...}` (`context_schema`, LangGraph v1)
    or `config={"configurable": {"user_id": ...}}`; never from model output. One thread
    (`configurable.thread_id`) is one session.

    Args:
        config: VARS settings (default: the CPU defaults, `VARSConfig()`).
        store: any LangGraph `BaseStore` for the per-user memory (default: the one `config`
            names, SQLite in `config.data_dir`). Pass the agent's own store to keep one.
        engine: an existing `VARSEngine` to share (e.g. `build_graph(...).engine`); then leave
            `config`, `store` and `chat_model` out.
        chat_model: the model `subgraph()` answers with (default: `config.llm`); the hooks,
            middleware and nodes leave answering to the agent's own model.
    """

    def __init__(self, config: VARSConfig | None = None, *, store: BaseStore | None = None,
                 engine: VARSEngine | None = None, chat_model: BaseChatModel | None = None):
        if engine is not None:
            if store is not None or chat_model is not None or (
                    config is not None and config is not engine.config):
                raise ValueError("VARSMemory: pass engine= alone, or config/store/chat_model")
        else:
            from vars_langgraph.graph import default_index_dir

            config = config or VARSConfig()
            index_dir = None  # a store of the caller's: keep the FAISS cache in memory only
            if store is None:
                from vars_langgraph.storage import open_store

                store, index_dir = open_store(config), default_index_dir(config)
            engine = VARSEngine(config, store, index_dir=index_dir, chat_model=chat_model)
        self.engine = engine
        from vars_langgraph.integrations.store import RuntimeStore

        # default on; not with a RuntimeStore: a worker thread runs outside the graph's run
        self.background = background_enabled(engine.config,
                                             default=not isinstance(engine.store, RuntimeStore))
        self._recall_nodes = _recall_nodes(engine, self.background)
        self._read_nodes = vars_node_functions(engine, READ_ONLY)
        self._turns: LRUCache[tuple[str, str, str], dict[str, Any]] = LRUCache(CACHE_TURNS)
        self._guard = threading.Lock()

    @property
    def config(self) -> VARSConfig:
        return self.engine.config

    @property
    def store(self) -> BaseStore:
        return self.engine.store

    # ------------------------------------------------------------------ StateGraph nodes
    def recall(self, state: dict[str, Any], config: RunnableConfig,
               runtime: Runtime | None = None) -> dict[str, Any]:
        """Node to run before the model, once per user message: reward + update for the
        previous answer (this message is its feedback), then extract, retrieve, rerank and
        augment. Returns the VARS keys (`selected`, `candidates`, `system_prompt`, `reward`,
        `user_vector`, ...); give the model `memory.with_preferences(state)`."""
        messages = state.get("messages") or []
        human = last_human(messages)
        user_id = resolve_user_id(runtime, config)
        if human is None:
            return {}
        key = turn_key(human)
        if state.get("vars_turn") == key and "selected" in state:
            return {}  # already recalled for this message (a tool loop came back)
        note_thread = getattr(self.engine, "note_thread", None)  # the user's thread registry
        if note_thread is not None and (config or {}).get("configurable", {}).get("thread_id"):
            try:
                note_thread(user_id, thread_id(config))
            except Exception as e:
                if not self.config.fail_open:
                    raise
                log.warning("VARS could not record the thread: %r", e)
        s: dict[str, Any] = {"messages": messages}
        out: dict[str, Any] = dict(FRESH_TURN)  # nothing of the previous turn lingers
        for _, fn in self._recall_nodes:
            update = fn(s, config or {}, runtime) or {}
            s.update(update)
            out.update(update)
        out["vars_turn"] = key
        self._remember_turn(user_id, thread_id(config), key, out)
        return out

    def learn(self, state: dict[str, Any], config: RunnableConfig,
              runtime: Runtime | None = None) -> dict[str, Any]:
        """Node to run after the model: when the last message is a final answer (no tool
        calls), store this turn as the pending feedback of (user, thread); the reward and
        update for it run in `recall` when the user's next message arrives."""
        messages = state.get("messages") or []
        if not messages or not is_final_answer(messages[-1]):
            return {}
        user_id = resolve_user_id(runtime, config)
        try:
            turn = self.current_turn(state, config, runtime, user_id)
            if turn is None or not str(turn.get("query", "")).strip():
                return {}
            record = pending_record(self.engine, turn, message_text(messages[-1]))
            self.engine.memory.put_pending(user_id, thread_id(config), record)
        except Exception as e:
            if not self.config.fail_open:
                raise
            log.warning("VARS learn failed, this turn gets no feedback: %r", e)
        finally:
            if self.background:  # the answer is complete: run this turn's learning job now
                get_learner(self.engine).release(user_id, thread_id(config))
        return {}

    def with_preferences(self, state: dict[str, Any],
                         messages: list[AnyMessage] | None = None) -> list[AnyMessage]:
        """`messages` (default `state["messages"]`) with this turn's selected preferences in
        the system message: what your model node should send after `recall`."""
        msgs = state.get("messages", []) if messages is None else messages
        return with_preferences(msgs, state.get("selected") or [], self.config.prompt)

    def preferences_prompt(self, state: dict[str, Any]) -> str:
        """The rendered preference block of this turn alone ("" when nothing was selected)."""
        return preferences_block(state.get("selected") or [], self.config.prompt)

    def subgraph(self, *, name: str = "vars") -> CompiledStateGraph:
        """The whole VARS turn as one node (the seven nodes, answering with `chat_model`),
        compiled without checkpointer or store, so it runs on its parent's."""
        from vars_langgraph.graph import build_graph

        graph = build_graph(engine=self.engine, checkpointer=False, background=self.background)
        graph = graph.copy(update={"store": None, "name": name})
        graph.engine = self.engine
        return graph

    # ------------------------------------------------------------------ create_react_agent
    def pre_model_hook(self, state: dict[str, Any], config: RunnableConfig,
                       runtime: Runtime | None = None) -> dict[str, Any]:
        """`create_react_agent(pre_model_hook=...)`: runs `recall` once per user message and
        returns `llm_input_messages` (the history with the preferences in the system
        message; the stored `messages` are not changed)."""
        messages = state.get("messages") or []
        human = last_human(messages)
        if human is None:
            return {"llm_input_messages": list(messages)}
        update: dict[str, Any] = {}
        fresh = messages[-1] is human  # a new user message, not a return from tools
        turn = self.current_turn(state, config, runtime, read_only=not fresh)
        if turn is None:
            update = self.recall(state, config, runtime)
            turn = update
        return {**update, "llm_input_messages": with_preferences(
            messages, turn.get("selected") or [], self.config.prompt)}

    def post_model_hook(self, state: dict[str, Any], config: RunnableConfig,
                        runtime: Runtime | None = None) -> dict[str, Any]:
        """`create_react_agent(post_model_hook=...)`: `learn` after the final answer."""
        return self.learn(state, config, runtime)

    # ------------------------------------------------------------------ LangChain
    def middleware(self, *, tools: bool = False) -> VARSMiddleware:
        """`create_agent(..., middleware=[memory.middleware()])` (needs `langchain>=1`):
        recall in `before_model`, the preferences in the system message in
        `wrap_model_call`, learn in `after_model`; `tools=True` also gives the agent the
        memory tools (the same as passing `memory.tools` to `create_agent`)."""
        from vars_langgraph.integrations.middleware import VARSMiddleware

        return VARSMiddleware(self, tools=tools)

    @cached_property
    def tools(self) -> list[BaseTool]:
        """`search_preferences`, `remember_preference`, `forget_preference`, bound to the user
        of the run (context or `configurable.user_id`; never a tool argument)."""
        from vars_langgraph.integrations.tools import memory_tools

        return memory_tools(self)

    # ------------------------------------------------------------------ direct access
    def search(self, user_id: str, query: str, k: int = 5) -> list[dict[str, Any]]:
        """The user's `k` cards closest to `query` (id, note, confidence, score, global)."""
        if not query.strip() or k <= 0:
            return []
        qvec = self.engine.embed_query(query)
        return [{"id": c.id, "note": c.note, "confidence": round(c.confidence, 3),
                 "score": round(s, 4), "global": c.is_global}
                for c, s in self.engine.index.search(user_id, qvec, k)]

    def remember(self, user_id: str, action: str, condition: str = "general", *,
                 confidence: float = 1.0, thread: str = "", query: str = "") -> dict[str, Any]:
        """Store one preference explicitly (merged into a near-duplicate card if any)."""
        pref = Preference(condition=condition or "general", action=action, confidence=confidence)
        source = CardSource(thread_id=thread, turn=0, query=(query or action)[:500],
                            created_at=time.time())
        card = self.engine.add_preferences(user_id, [pref], source)[0]
        return card.public()

    def forget(self, user_id: str, card_id: str) -> bool:
        """Delete one of the user's cards; False when the user has no card with that id."""
        return self.engine.forget_card(user_id, card_id)

    def cards(self, user_id: str) -> list[dict[str, Any]]:
        """All of the user's cards, without embeddings."""
        return [c.public() for c in self.engine.memory.list_cards(user_id)]

    def forget_user(self, user_id: str) -> int:
        """Delete everything stored for the user; returns the number of items deleted."""
        return self.engine.forget_user(user_id)

    # ------------------------------------------------------------------ internals
    def current_turn(self, state: Mapping[str, Any], config: RunnableConfig, runtime: Runtime | None,
              user_id: str | None = None, *, read_only: bool = True) -> dict[str, Any] | None:
        """This turn's recall result: from the state (when its schema has the VARS keys),
        else from this process's cache; else, with `read_only`, retrieve + rerank + augment
        again without writing anything (reward, update and extract are not repeated)."""
        messages = state.get("messages") or []
        human = last_human(messages)
        if human is None:
            return None
        key = turn_key(human)
        if state.get("vars_turn") == key and "selected" in state:
            return {k: state.get(k) for k in TURN_KEYS}
        user_id = user_id or resolve_user_id(runtime, config)
        tid = thread_id(config)
        with self._guard:
            hit = self._turns.get((user_id, tid, key))
        if hit is not None or not read_only:
            return hit
        s: dict[str, Any] = {"messages": messages, "query": message_text(human)}
        for _, fn in self._read_nodes:
            s.update(fn(s, config or {}, runtime) or {})
        self._remember_turn(user_id, tid, key, s)
        return s

    def _remember_turn(self, user_id: str, tid: str, key: str, turn: dict[str, Any]) -> None:
        with self._guard:
            self._turns[(user_id, tid, key)] = {k: turn.get(k) for k in TURN_KEYS}


__all__ = ["VARSMemory", "VARSMemoryState", "VARSAgentState"]
