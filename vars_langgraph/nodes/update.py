"""update: REINFORCE on the user vector from the previous turn's reward; session reset."""

from __future__ import annotations

from typing import Any

import numpy as np
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from vars_langgraph.engine import VARSEngine
from vars_langgraph.learning import card_value, policy
from vars_langgraph.memory.consolidate import consolidate
from vars_langgraph.memory.store import UserMemory, clean_pending
from vars_langgraph.nodes.retrieve import MAX_QUERY_CHARS
from vars_langgraph.state import VARSState, resolve_user_id, thread_id

RESTATE_MIN = 0.5  # cosine of a complaint with a card it restates (tuning half)


def chosen_in_order(cands: list[dict[str, Any]]) -> list[int]:
    """Indices of the chosen candidates in draw order (records without `rank`: list order)."""
    picked = [(c.get("rank"), i) for i, c in enumerate(cands) if c.get("chosen")]
    return [i for _, i in sorted(picked, key=lambda t: (t[0] is None, t[0] or 0, t[1]))]


def restated_cards(engine: VARSEngine, ui: Any, message: str, k: int = 5) -> list[str]:
    """Cards the message restates: the nearest `k` with cosine >= `RESTATE_MIN`."""
    if not message.strip() or not len(ui):
        return []
    qvec = engine.embed_query(message[:MAX_QUERY_CHARS])
    sims, rows = ui.search_rows(qvec, k)
    return [ui.ids[r] for s, r in zip(sims.tolist(), rows.tolist(), strict=True)
            if r >= 0 and s >= RESTATE_MIN]


def learn_card_values(engine: VARSEngine, user: policy.UserVector, ui: Any,
                      pending: dict[str, Any], message: str, result: dict[str, Any]) -> int:
    """Update the values of the cards the previous turn injected and the cards this message
    restates (learning/card_value.py); returns how many changed."""
    reward = float(result.get("value") or 0.0)
    if result.get("label") == "neg_confusion":  # the answer was unclear: no note is to blame
        return 0
    injected = [i for i in pending.get("selected_ids", []) if i in ui.rows]
    restated = restated_cards(engine, ui, message) if reward < 0 else []
    goals = card_value.targets(injected, restated, reward)
    # a reaction credits or blames a card by how likely it applied to that question; a card
    # the complaint restates is the user's own word (full step)
    p_useful = {c["id"]: float(np.exp(c["rerank"])) for c in pending.get("candidates", [])
                if c.get("rerank") is not None}
    weights = {cid: 1.0 if cid in restated else p_useful.get(cid, 1.0) for cid in goals}
    changed = card_value.update(user.card_values, goals, float(result.get("gate") or 0.0),
                                card_value.VALUE_LR, restated, weights)
    return len(goals) if changed else 0


def make_update(engine: VARSEngine, memory: UserMemory | None = None):
    """`memory`: where the pending feedback is read and consumed (default the engine's own)."""
    pcfg = engine.config.policy
    mcfg = engine.config.memory
    memory = engine.memory if memory is None else memory

    def update(state: VARSState, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        user_id = resolve_user_id(runtime, config)
        tid = thread_id(config)
        result = dict(state.get("reward") or {})
        with engine.user_lock(user_id):
            user = engine.load_vector(user_id)
            new_session = policy.start_session(user, tid)
            pending = clean_pending(memory.get_pending(user_id, tid)) if result else None
            applied = False
            if pending and "value" in result:
                ui = engine.index.get(user_id)
                cands = [c for c in pending.get("candidates", []) if c["id"] in ui.rows]
                result["baseline"] = float(user.baseline)
                result["advantage"] = float(policy.advantage_of(user, result["value"], result["gate"]))
                if cands:
                    items = engine.item_vectors(ui.vectors([c["id"] for c in cands]))
                    pi = np.asarray([c["pi"] for c in cands], np.float64)
                    pi = pi / pi.sum() if pi.sum() > 0 else np.full(len(cands), 1 / len(cands))
                    applied = policy.reinforce_update(
                        user, items, pi, chosen_in_order(cands), result["value"], result["gate"],
                        pcfg)
                if pcfg.learning and card_value.VALUE_BETA:
                    result["card_values"] = learn_card_values(engine, user, ui, pending,
                                                              state.get("query", ""), result)
            if applied or new_session or pending:
                memory.commit_update(user_id, tid, user.to_dict(),
                                     drop_pending=pending is not None)
        if mcfg.consolidate and pending:  # after this turn's feedback, bounded
            changed = consolidate(engine, user_id, tid, user.card_values)
            if changed and result:
                result["consolidated"] = [{"id": c.id, "status": c.status,
                                           "reason": c.status_reason} for c in changed]
        if result:
            result["applied"] = applied
        return {"reward": result or None, "user_vector": user.norms()}

    return update
