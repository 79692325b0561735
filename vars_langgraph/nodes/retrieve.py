"""retrieve: the policy's candidates, dense top-K of this user's cards for the query (FAISS)
plus every global card (up to `max_global`, most confident first). Nothing is injected here:
global cards compete in rerank like any other card. The work is `CardIndex.candidates` (one
version check, FAISS, candidates from the entry's per-row columns)."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from vars_langgraph.engine import VARSEngine
from vars_langgraph.state import VARSState, last_user_text, resolve_user_id

MAX_QUERY_CHARS = 8000


def make_retrieve(engine: VARSEngine):
    rcfg = engine.config.retrieval

    def retrieve(state: VARSState, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        user_id = resolve_user_id(runtime, config)
        query = state.get("query") or last_user_text(state.get("messages", []))
        if not query.strip():
            return {"candidates": [], "selected": []}
        qvec = engine.embed_query(query[:MAX_QUERY_CHARS])
        # one version check for the whole node; candidates built from the entry's columns
        candidates = engine.index.candidates(user_id, qvec, rcfg.top_k, rcfg.max_global)
        return {"query": query, "candidates": candidates, "selected": []}

    return retrieve
