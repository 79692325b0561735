"""rerank: s_i = s0_i + v_i . z_eff, s0_i = log P(useful) (calibrated reranker score);
pi = softmax(s / tau); k cards chosen by the policy (global cards compete like any other)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from vars_langgraph.engine import VARSEngine
from vars_langgraph.learning import policy
from vars_langgraph.learning.calibration import Calibration, calibration_key, load_calibration
from vars_langgraph.state import VARSState, resolve_user_id


def calibrations(engine: VARSEngine) -> tuple[Calibration, Calibration]:
    """(map of the configured backend, map of the embedding cosine) from the calibration file."""
    cfg = engine.config
    path = cfg.reranker.calibration_path
    emb_key = f"embedding:{cfg.embedding.model}"
    key = calibration_key(cfg)
    emb = load_calibration(emb_key, path)
    return (emb if key == emb_key else load_calibration(key, path)), emb


def base_scores(engine: VARSEngine, query: str, candidates: list[dict[str, Any]],
                cals: tuple[Calibration, Calibration] | None = None) -> np.ndarray:
    """s0 = log P(useful | query, note) for each candidate.

    The embedding backend reuses the dense cosine (no re-encode); with K <= k the reranker is
    skipped, as in the method, and the calibrated cosine is used. Cards beyond the reranker's
    budget (`max_candidates`) rank below every reranked card, in cosine order."""
    rcfg = engine.config.reranker
    backend_cal, emb_cal = cals or calibrations(engine)
    dense = np.array([c["dense"] for c in candidates], np.float64)
    glob = np.array([bool(c.get("global")) for c in candidates])
    bonus = rcfg.global_bonus
    reranker = engine.reranker if rcfg.backend not in ("embedding", "none") else None
    if reranker is None or len(candidates) <= engine.config.retrieval.select_k:
        return emb_cal.log_p(dense, glob, bonus)
    head = candidates[: rcfg.max_candidates]
    raw = np.asarray(reranker.score(query, [c["note"] for c in head]), np.float64)
    s0 = backend_cal.log_p(raw, glob[: len(head)], bonus)
    if len(head) < len(candidates):
        tail = emb_cal.log_p(dense[len(head):], glob[len(head):], bonus)
        s0 = np.concatenate([s0, s0.min() - 1.0 + tail - tail.max()])
    return s0


def make_rerank(engine: VARSEngine):
    pcfg = engine.config.policy
    k = engine.config.retrieval.select_k
    cals: list[tuple[Calibration, Calibration]] = []
    rng = np.random.default_rng(pcfg.seed)
    rng_lock = threading.Lock()

    def rerank(state: VARSState, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        user_id = resolve_user_id(runtime, config)
        user = engine.load_vector(user_id)
        candidates = [dict(c) for c in state.get("candidates", [])]
        if not candidates:
            return {"candidates": [], "selected": [], "user_vector": user.norms()}
        ui = engine.index.get(user_id)
        candidates = [c for c in candidates if c["id"] in ui.rows]
        if not candidates:  # all forgotten since retrieve ran (a concurrent forget)
            return {"candidates": [], "selected": [], "user_vector": user.norms()}
        if not cals:
            cals.append(calibrations(engine))
        s0 = base_scores(engine, state.get("query", ""), candidates, cals[0])
        items = engine.item_vectors(ui.vectors([c["id"] for c in candidates]))
        s = policy.scores(s0, items, policy.effective_z(user, pcfg))
        pi = policy.softmax(s, pcfg.tau)
        sample = pcfg.selection == "sample" and pcfg.learning and len(candidates) > k
        with rng_lock:
            chosen = policy.select(s, k, pcfg.tau, sample=sample, rng=rng)
        rank = {i: r for r, i in enumerate(chosen)}
        for i, c in enumerate(candidates):
            c.update(rerank=round(float(s0[i]), 6), score=round(float(s[i]), 6),
                     pi=float(pi[i]), chosen=i in rank, rank=rank.get(i))
        return {"candidates": candidates, "selected": [candidates[i] for i in chosen],
                "user_vector": user.norms()}

    return rerank
