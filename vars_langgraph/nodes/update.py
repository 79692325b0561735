"""update: REINFORCE on the user vector from the previous turn's reward; session reset."""

from __future__ import annotations

from typing import Any

import numpy as np
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from vars_langgraph.engine import VARSEngine
from vars_langgraph.learning import policy
from vars_langgraph.memory.store import clean_pending
from vars_langgraph.state import VARSState, resolve_user_id, thread_id


def chosen_in_order(cands: list[dict[str, Any]]) -> list[int]:
    """Indices of the chosen candidates in draw order (records without `rank`: list order)."""
    picked = [(c.get("rank"), i) for i, c in enumerate(cands) if c.get("chosen")]
    return [i for _, i in sorted(picked, key=lambda t: (t[0] is None, t[0] or 0, t[1]))]


def make_update(engine: VARSEngine):
    pcfg = engine.config.policy

    def update(state: VARSState, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        user_id = resolve_user_id(runtime, config)
        tid = thread_id(config)
        result = dict(state.get("reward") or {})
        with engine.user_lock(user_id):
            user = engine.load_vector(user_id)
            new_session = policy.start_session(user, tid)
            pending = clean_pending(engine.memory.get_pending(user_id, tid)) if result else None
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
            if applied or new_session or pending:
                engine.memory.commit_update(user_id, tid, user.to_dict(),
                                            drop_pending=pending is not None)
        if result:
            result["applied"] = applied
        return {"reward": result or None, "user_vector": user.norms()}

    return update
