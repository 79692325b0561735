"""retrieve: the policy's candidates, dense top-K of this user's cards for the query (FAISS)
plus every global card (up to `max_global`, most confident first). Nothing is injected here:
global cards compete in rerank like any other card."""

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
        ui = engine.index.get(user_id)  # one version check for the whole node
        hits = ui.search(qvec, rcfg.top_k)
        candidates = [{"id": card.id, "note": card.note, "dense": round(sim, 6),
                       "confidence": card.confidence, "global": card.is_global}
                      for card, sim in hits]
        room = rcfg.max_global - sum(c["global"] for c in candidates)
        seen = {c["id"] for c in candidates}
        extra = [cid for cid in ui.global_ids if cid not in seen and cid in ui.cards]
        if extra and room > 0:
            sims = ui.vectors(extra) @ np.asarray(qvec, np.float32)
            order = sorted(range(len(extra)), key=lambda i: (-ui.cards[extra[i]].confidence, -sims[i]))
            for i in order[:room]:
                c = ui.cards[extra[i]]
                candidates.append({"id": c.id, "note": c.note, "dense": round(float(sims[i]), 6),
                                   "confidence": c.confidence, "global": True})
        candidates.sort(key=lambda c: -c["dense"])
        return {"query": query, "candidates": candidates, "selected": []}

    return retrieve
