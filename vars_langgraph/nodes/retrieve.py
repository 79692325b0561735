"""retrieve: dense top-K of this user's cards for the query (FAISS), plus global cards."""

from __future__ import annotations

from typing import Any

import numpy as np
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
        hits = engine.index.search(user_id, qvec, rcfg.top_k + rcfg.max_global)
        candidates, global_cards = [], []
        for card, sim in hits:
            row = {"id": card.id, "note": card.note, "dense": round(sim, 6),
                   "confidence": card.confidence, "global": card.is_global}
            (global_cards if card.is_global else candidates).append(row)
        if rcfg.max_global:
            # global cards bypass retrieval: all of them count, most confident first
            ui = engine.index.get(user_id)
            seen = {g["id"] for g in global_cards}
            for c in ui.cards.values():
                if c.is_global and c.id not in seen:
                    sim = float(np.dot(np.asarray(c.embedding, np.float32), qvec))
                    global_cards.append({"id": c.id, "note": c.note, "dense": round(sim, 6),
                                         "confidence": c.confidence, "global": True})
            global_cards.sort(key=lambda g: -g["confidence"])
        return {
            "query": query,
            "candidates": candidates[: rcfg.top_k],
            "selected": global_cards[: rcfg.max_global],
        }

    return retrieve
