"""Per-card value u in [-1, 1], learned from the same feedback as the user vector.

MemRL keeps a utility Q per memory and moves it toward the reward of the episodes that used it
(Q <- Q + alpha (r - Q)); RMM's retrospective reflection credits the memories the answer
actually relied on. Here, for the turn t the reward r (gate g) scored, with the cards injected
into its prompt (`injected`) and the cards the next user message restates (`restated`: cosine
with the message >= `nodes.update.RESTATE_MIN`):

    target = +1      for a restated card on a complaint (r < 0): the user needed it
    target = -1      for an injected card on a complaint that restates something else
    target = r       for an injected card on a positive turn (r > 0)
    u <- u + w * lr * g * (target - u),   n <- n + 1   (lr = `VALUE_LR`)

w = 1, except on a positive turn: w = P(useful), the card's calibrated base score for the
question it was injected for. A happy turn says the answer was fine, not which notes made it
so; full credit to every injected card made filler cards (injected often, needed rarely) win
over a newer card the question needs (docs/memory-hygiene.md §9).

Neutral turns (r = 0) and cards neither injected nor restated are untouched. u enters the
score as s += VALUE_BETA * u (rerank) and drives retirement (memory/consolidate.py). Pure
functions; the update node stores the values in the vector item (one store batch).
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_CARDS = 50_000  # values kept per user (least-updated dropped first)
# chosen on the collab tuning half (docs/memory-hygiene.md)
VALUE_BETA = 2.0  # s += VALUE_BETA * u in the rerank score (0: values not used)
VALUE_LR = 0.3  # the step toward the target


def targets(injected: Iterable[str], restated: Iterable[str], reward: float) -> dict[str, float]:
    """Each affected card's target for this turn's reward (see module doc)."""
    injected, restated = list(injected), set(restated)
    out: dict[str, float] = {}
    if reward < 0:
        for cid in injected:
            if cid not in restated:
                out[cid] = -1.0
        for cid in restated:
            out[cid] = 1.0
    elif reward > 0:
        for cid in injected:
            out[cid] = min(1.0, float(reward))
    return out


def update(values: dict[str, list[float]], goals: dict[str, float], gate: float,
           lr: float, restated: Iterable[str] = (),
           weights: dict[str, float] | None = None) -> bool:
    """Move each card's value toward its target in place (the step scaled by the card's
    `weights`, default 1); False when nothing changed."""
    step = lr * max(0.0, min(1.0, gate))
    if step <= 0 or not goals:
        return False
    restated = set(restated)
    weights = weights or {}
    for cid, goal in goals.items():
        u, n, k = values.get(cid, [0.0, 0.0, 0.0])
        w = max(0.0, min(1.0, weights.get(cid, 1.0)))
        u = max(-1.0, min(1.0, u + w * step * (goal - u)))
        values[cid] = [u, n + 1, k + (cid in restated and goal > 0)]
    if len(values) > MAX_CARDS:
        for cid in sorted(values, key=lambda c: values[c][1])[: len(values) - MAX_CARDS]:
            del values[cid]
    return True


def value_of(values: dict[str, list[float]], card_id: str) -> float:
    v = values.get(card_id)
    return float(v[0]) if v else 0.0
