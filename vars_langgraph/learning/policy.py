"""The VARS policy math, pure numpy and no I/O: item vectors, scores, softmax, REINFORCE.

Equation numbers refer to `vars-method.md` step 3 (scoring) and step 7 (update).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from vars_langgraph.config import PolicyConfig

# the method's constants (vars-method.md, steps 3 and 7)
BETA_LONG = 2.0  # z_eff = BETA_LONG z_long + BETA_SHORT z_short
BETA_SHORT = 5.0
DECAY_SHORT = 0.1  # lambda: z_short's decay per update
ALPHA_BASELINE = 0.05  # the reward baseline's moving-average rate


@dataclass
class UserVector:
    """Per-user state: z_long, z_short (R^item_dim), reward baseline b, bookkeeping."""

    z_long: np.ndarray
    z_short: np.ndarray
    baseline: float = 0.0
    updates: int = 0
    session_id: str | None = None
    history: list[float] = field(default_factory=list)  # recent rewards, newest last
    # learned card values (learning/card_value.py): card id -> [u, updates, restated]; stored
    # in the vector item so one store batch commits both (they survive a crash together)
    card_values: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def zeros(cls, dim: int) -> UserVector:
        return cls(np.zeros(dim, np.float32), np.zeros(dim, np.float32))

    def to_dict(self) -> dict:
        return {
            "z_long": self.z_long.astype(float).tolist(),
            "z_short": self.z_short.astype(float).tolist(),
            "baseline": float(self.baseline),
            "updates": int(self.updates),
            "session_id": self.session_id,
            "history": [float(r) for r in self.history[-50:]],
            "card_values": {k: [float(x) for x in v] for k, v in self.card_values.items()},
        }

    @classmethod
    def from_dict(cls, d: dict | None, dim: int, card_ids: Collection[str] | None = None) -> UserVector:
        """Load a stored vector; missing, too wide or non-finite parts reset to zero.

        With `card_ids`, only those cards' learned values are read (the rerank node's view of
        a long-lived user: one value per card ever injected, not read on every turn); such a
        vector is for reading only, never to be saved.

        A narrower stored vector is zero-padded: vectors written when item vectors were the
        first 256 embedding dims score every card exactly as before in the full width."""
        if not isinstance(d, dict) or not d:
            return cls.zeros(dim)

        def vec(key: str) -> np.ndarray:
            try:
                v = np.asarray(d.get(key) or [], dtype=np.float32)
            except (TypeError, ValueError):
                return np.zeros(dim, np.float32)
            if v.ndim != 1 or len(v) > dim or not np.all(np.isfinite(v)):
                return np.zeros(dim, np.float32)
            return np.pad(v, (0, dim - len(v))) if len(v) < dim else v

        def finite(x: object) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool) and bool(np.isfinite(x))

        b = d.get("baseline", 0.0)
        updates = d.get("updates", 0)
        history = d.get("history")
        session = d.get("session_id")
        return cls(
            z_long=vec("z_long"),
            z_short=vec("z_short"),
            baseline=float(b) if finite(b) else 0.0,
            updates=max(0, int(updates)) if finite(updates) else 0,
            session_id=session if isinstance(session, str) else None,
            history=[float(r) for r in history if finite(r)] if isinstance(history, list) else [],
            card_values=_card_values(d.get("card_values"), card_ids),
        )

    def norms(self) -> dict[str, float]:
        return {
            "z_long_norm": float(np.linalg.norm(self.z_long)),
            "z_short_norm": float(np.linalg.norm(self.z_short)),
            "baseline": float(self.baseline),
            "updates": int(self.updates),
        }


def _card_values(raw: object, card_ids: Collection[str] | None = None) -> dict[str, list[float]]:
    """Stored card values (of `card_ids` only, when given), malformed entries dropped:
    {id: [u in [-1, 1], n >= 0, restated]}."""
    if not isinstance(raw, dict):
        return {}
    if card_ids is not None:
        raw = {k: raw[k] for k in card_ids if k in raw}
    out = {}
    for k, v in raw.items():
        if (isinstance(k, str) and isinstance(v, list) and len(v) == 3
                and all(isinstance(x, int | float) and not isinstance(x, bool)
                        and np.isfinite(x) for x in v)):
            out[k] = [float(min(1.0, max(-1.0, v[0]))), float(max(0, v[1])), float(max(0, v[2]))]
    return out


def item_vectors(
    embeddings: np.ndarray, dim: int, projection: np.ndarray | None = None,
    mean: np.ndarray | None = None,
) -> np.ndarray:
    """v_i = P (e_i - mean) (step 3); without a PCA matrix, the first `dim` dims of e_i.

    Embeddings narrower than `dim` are zero-padded, so z has a fixed width per config.
    """
    e = np.asarray(embeddings, dtype=np.float32)
    if e.ndim == 1:
        e = e[None, :]
    if projection is not None:
        centred = e - (mean if mean is not None else 0.0)
        return (centred @ projection.T).astype(np.float32)
    if e.shape[1] >= dim:
        return e[:, :dim].copy()
    return np.pad(e, ((0, 0), (0, dim - e.shape[1])))


def effective_z(user: UserVector, cfg: PolicyConfig) -> np.ndarray:
    """z_eff = beta_L z_long + beta_S z_short (step 3), honouring the ablation switches."""
    z = np.zeros_like(user.z_long)
    if cfg.use_long:
        z = z + BETA_LONG * user.z_long
    if cfg.use_short:
        z = z + BETA_SHORT * user.z_short
    return z


def scores(base: np.ndarray, items: np.ndarray, z_eff: np.ndarray) -> np.ndarray:
    """s_i = s0_i + v_i . z_eff (step 3)."""
    return np.asarray(base, np.float64) + items.astype(np.float64) @ z_eff.astype(np.float64)


def softmax(s: np.ndarray, tau: float) -> np.ndarray:
    """pi = softmax(s / tau), numerically stable."""
    x = np.asarray(s, np.float64) / tau
    x = x - x.max()
    p = np.exp(x)
    return p / p.sum()


def select(
    s: np.ndarray, k: int, tau: float, sample: bool = False, rng: np.random.Generator | None = None
) -> list[int]:
    """Top-k by score (eval), or k draws without replacement from pi (training), in draw order.

    Sampling uses the Gumbel-top-k trick: the k largest s_i / tau + Gumbel noise are exactly
    k sequential draws from softmax(s / tau), each renormalised over the cards not yet drawn."""
    n = len(s)
    k = min(k, n)
    if k <= 0:
        return []
    x = np.asarray(s, np.float64)
    if sample:
        rng = rng or np.random.default_rng()
        x = x / tau + rng.gumbel(size=n)
    return [int(i) for i in np.argsort(-x, kind="stable")[:k]]


def policy_gradient(
    items: np.ndarray, pi: np.ndarray, chosen: list[int], advantage: float, tau: float
) -> np.ndarray:
    """grad = (A / tau) (v_chosen - mu), mu = sum_i pi_i v_i (step 7, the reference formula)."""
    v_chosen = items[chosen].mean(axis=0)
    mu = pi @ items
    return (advantage / tau) * (v_chosen - mu)


def sequence_gradient(
    items: np.ndarray, pi: np.ndarray, chosen: list[int], advantage: float, tau: float
) -> np.ndarray:
    """(A / (k tau)) sum_j (v_{c_j} - mu_j): A/k times the gradient of log P(c_1, .., c_k), the
    probability of the drawn sequence under sampling without replacement from pi (`select`).

    mu_j is the mean item vector under pi renormalised over the cards not drawn before step j.
    With k = 1 it equals `policy_gradient`; for sampled selections it is unbiased."""
    p = np.asarray(pi, np.float64).copy()
    grad = np.zeros(items.shape[1], np.float64)
    for c in chosen:
        total = p.sum()
        if total <= 0:
            break
        grad += items[c] - (p @ items) / total
        p[c] = 0.0
    return (advantage / (tau * len(chosen))) * grad


def advantage_of(user: UserVector, reward: float, gate: float) -> float:
    """A = g (r - b) (step 7)."""
    return gate * (reward - user.baseline)


def reinforce_update(
    user: UserVector,
    items: np.ndarray,
    pi: np.ndarray,
    chosen: list[int],
    reward: float,
    gate: float,
    cfg: PolicyConfig,
) -> bool:
    """Apply one REINFORCE step in place; returns False when skipped (|A| < 1e-6 or none chosen).

    When every candidate was chosen the step still runs, as in the reference code: it then only
    changes how these cards rank among themselves (for the exact sequence gradient it is a
    zero-mean term), which matters once the user has more cards than slots.

    A = g (r - b); z_long += eta_L grad; z_short = (1 - lambda) z_short + eta_S grad;
    b = (1 - alpha) b + alpha r (step 7). `chosen` is in draw order; grad is
    `sequence_gradient` or the reference `policy_gradient` (cfg.gradient; "auto": the former
    when selection is sampled).
    """
    advantage = advantage_of(user, reward, gate)
    if not chosen or abs(advantage) < 1e-6 or len(items) == 0:
        return False
    seq = cfg.gradient == "sequence" or (cfg.gradient == "auto" and cfg.selection == "sample")
    fn = sequence_gradient if seq else policy_gradient
    grad = fn(items, pi, chosen, advantage, cfg.tau).astype(np.float32)
    if not np.all(np.isfinite(grad)):
        return False
    if cfg.use_long:
        user.z_long = user.z_long + cfg.eta_long * grad
    if cfg.use_short:
        user.z_short = (1.0 - DECAY_SHORT) * user.z_short + cfg.eta_short * grad
    user.baseline = (1.0 - ALPHA_BASELINE) * user.baseline + ALPHA_BASELINE * reward
    user.updates += 1
    user.history.append(float(reward))
    return True


def start_session(user: UserVector, session_id: str) -> bool:
    """Session end resets z_short (z_long kept). Returns True when a new session began."""
    if user.session_id == session_id:
        return False
    user.z_short = np.zeros_like(user.z_short)
    user.session_id = session_id
    return True
