"""retrieve: the policy's candidates, dense top-K of this user's cards for the query (FAISS)
plus every global card (up to `max_global`, most confident first). Nothing is injected here:
global cards compete in rerank like any other card. The work is `CardIndex.candidates` (one
version check, FAISS, candidates from the entry's per-row columns).

Hybrid (`memory.hybrid`, docs/memory-hygiene.md): the dense top-K and a BM25 top-K over each
card's note *and the user's own words it was learned from* (`memory/lexical.py`) are fused by
reciprocal rank fusion; the top K by fused rank (plus the global cards) are the candidates.
Each candidate carries `lexical` (its BM25 score over the best one, in [0, 1]) for rerank."""

from __future__ import annotations

from typing import Any

import numpy as np
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from vars_langgraph.engine import VARSEngine
from vars_langgraph.memory.lexical import rrf
from vars_langgraph.state import VARSState, last_user_text, resolve_user_id

MAX_QUERY_CHARS = 8000
MAX_LEXICAL_QUERY = 2000  # characters of the query BM25 reads


def hybrid_candidates(engine: VARSEngine, user_id: str, query: str, qvec: np.ndarray,
                      top_k: int, max_global: int) -> list[dict[str, Any]]:
    """Dense and BM25 rankings fused by RRF; the top K fused plus the global cards."""
    dense = engine.index.candidates(user_id, qvec, top_k, max_global)  # pgvector too
    ui = engine.index.get(user_id)
    lex = engine.lexical.search(user_id, ui, query[:MAX_LEXICAL_QUERY], top_k)
    if not lex:
        return dense
    best = lex[0][1]
    lexical = {cid: s / best for cid, s in lex}
    have = {c["id"] for c in dense}
    extra = [cid for cid, _ in lex if cid not in have and cid in ui.rows]
    if extra:
        sims = ui.vectors(extra) @ np.asarray(qvec, np.float32).ravel()
        for cid, sim in zip(extra, sims.tolist(), strict=True):
            c = ui.candidate(ui.rows[cid], float(sim))
            if c is not None:
                dense.append(c)
    by_dense = [c["id"] for c in sorted(dense, key=lambda c: -c["dense"]) if not c["global"]]
    fused = rrf([by_dense, [cid for cid, _ in lex]])
    for c in dense:
        c["lexical"] = round(lexical.get(c["id"], 0.0), 6)
        c["fused"] = fused.get(c["id"], 0.0)
    local = sorted((c for c in dense if not c["global"]), key=lambda c: -c["fused"])[:top_k]
    glob = [c for c in dense if c["global"]]
    return local + glob


def make_retrieve(engine: VARSEngine):
    rcfg = engine.config.retrieval
    mcfg = engine.config.memory

    def retrieve(state: VARSState, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        user_id = resolve_user_id(runtime, config)
        query = state.get("query") or last_user_text(state.get("messages", []))
        if not query.strip():
            return {"candidates": [], "selected": []}
        qvec = engine.embed_query(query[:MAX_QUERY_CHARS])
        if mcfg.hybrid:
            candidates = hybrid_candidates(engine, user_id, query, qvec, rcfg.top_k,
                                           rcfg.max_global)
        else:
            # one version check for the whole node; candidates built from the entry's columns
            candidates = engine.index.candidates(user_id, qvec, rcfg.top_k, rcfg.max_global)
        return {"query": query, "candidates": candidates, "selected": []}

    return retrieve
