"""rerank: s_i = s0_i (reranker) + v_i . z_eff (user vector); pi = softmax(s / tau); pick k."""

from __future__ import annotations

from typing import Any

import numpy as np
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from vars_langgraph import policy
from vars_langgraph.engine import VARSEngine
from vars_langgraph.state import VARSState, resolve_user_id


def base_scores(engine: VARSEngine, query: str, candidates: list[dict[str, Any]]) -> np.ndarray:
    """s0 for each candidate. The embedding backend reuses the dense cosine (no re-encode);
    with K <= k the reranker is skipped, as in the method."""
    dense = np.array([c["dense"] for c in candidates], np.float64)
    rcfg = engine.config.reranker
    if rcfg.backend in ("embedding", "none") or len(candidates) <= engine.config.retrieval.select_k:
        return rcfg.scale * dense
    reranker = engine.reranker
    if reranker is None:
        return rcfg.scale * dense
    head = candidates[: rcfg.max_candidates]
    s0 = np.asarray(reranker.score(query, [c["note"] for c in head]), np.float64)
    if len(head) < len(candidates):  # tail below the reranker's budget: below every head score
        tail = rcfg.scale * dense[len(head):]
        s0 = np.concatenate([s0, s0.min() - 1.0 + tail - tail.max()])
    return s0


def make_rerank(engine: VARSEngine):
    pcfg = engine.config.policy
    k = engine.config.retrieval.select_k

    def rerank(state: VARSState, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        user_id = resolve_user_id(runtime, config)
        user = engine.load_vector(user_id)
        candidates = [dict(c) for c in state.get("candidates", [])]
        selected = list(state.get("selected", []))  # global cards chosen by retrieve
        if not candidates:
            return {"candidates": [], "selected": selected, "user_vector": user.norms()}
        cards = engine.index.get(user_id).cards
        candidates = [c for c in candidates if c["id"] in cards]
        if not candidates:  # all forgotten since retrieve ran (a concurrent forget)
            return {"candidates": [], "selected": selected, "user_vector": user.norms()}
        s0 = base_scores(engine, state.get("query", ""), candidates)
        items = engine.item_vectors(np.asarray([cards[c["id"]].embedding for c in candidates]))
        s = policy.scores(s0, items, policy.effective_z(user, pcfg))
        pi = policy.softmax(s, pcfg.tau)
        chosen = policy.select(s, k, pcfg.tau, sample=pcfg.sample)
        for i, c in enumerate(candidates):
            c.update(rerank=round(float(s0[i]), 6), score=round(float(s[i]), 6),
                     pi=float(pi[i]), chosen=i in chosen)
        selected += [candidates[i] for i in chosen]
        return {"candidates": candidates, "selected": selected, "user_vector": user.norms()}

    return rerank
