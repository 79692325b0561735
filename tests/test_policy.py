"""The policy math of vars-method.md steps 3 and 7, on known numbers."""

import numpy as np
import pytest

from vars_langgraph.config import PolicyConfig
from vars_langgraph.learning import policy


def test_scores_add_affinity_with_effective_z():
    cfg = PolicyConfig(item_dim=2)
    user = policy.UserVector(np.array([1.0, 0.0], np.float32), np.array([0.0, 0.5], np.float32))
    z = policy.effective_z(user, cfg)
    assert z.tolist() == [2.0, 2.5]
    s = policy.scores(np.array([0.1, 0.2]), np.array([[1.0, 0.0], [0.0, 1.0]]), z)
    assert s == pytest.approx([2.1, 2.7])
    assert policy.effective_z(user, cfg.model_copy(update={"use_short": False})).tolist() == [2.0, 0.0]
    assert policy.effective_z(user, cfg.model_copy(update={"use_long": False})).tolist() == [0.0, 2.5]


def test_softmax_is_stable_and_tempered():
    p = policy.softmax(np.array([1000.0, 1000.0, 0.0]), tau=1.0)
    assert p == pytest.approx([0.5, 0.5, 0.0])
    flat = policy.softmax(np.array([1.0, 2.0]), tau=1e6)
    assert flat == pytest.approx([0.5, 0.5], abs=1e-5)
    assert policy.softmax(np.array([0.0, np.log(3.0)]), 1.0) == pytest.approx([0.25, 0.75])


def test_select_top_k_and_sampling():
    s = np.array([0.1, 3.0, 2.0, -1.0])
    assert policy.select(s, 2, 1.0) == [1, 2]
    assert policy.select(s, 10, 1.0) == [1, 2, 0, 3]
    picks = policy.select(s, 2, 1.0, sample=True, rng=np.random.default_rng(0))
    assert len(set(picks)) == 2 and all(0 <= i < 4 for i in picks)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_gradient_matches_finite_differences(tau):
    """grad = (A/tau)(v_chosen - mu) is the gradient of (A/k) sum_c log pi_c w.r.t. z."""
    rng = np.random.default_rng(1)
    items = rng.normal(size=(6, 4))
    s0 = rng.normal(size=6)
    z = rng.normal(size=4) * 0.3
    chosen, adv = [1, 4], 0.7

    def objective(zz):
        logits = (s0 + items @ zz) / tau
        logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        return adv * logp[chosen].mean()

    pi = policy.softmax(s0 + items @ z, tau)
    analytic = policy.policy_gradient(items, pi, chosen, adv, tau)
    eps = 1e-6
    numeric = np.array([(objective(z + eps * e) - objective(z - eps * e)) / (2 * eps)
                        for e in np.eye(4)])
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_reinforce_update_on_known_numbers():
    cfg = PolicyConfig(item_dim=2, eta_long=0.01, eta_short=0.05)  # paper constants (defaults x10)
    user = policy.UserVector(np.zeros(2, np.float32), np.array([1.0, 1.0], np.float32), baseline=0.2)
    items = np.array([[1.0, 0.0], [0.0, 1.0]])
    pi = np.array([0.25, 0.75])
    assert policy.reinforce_update(user, items, pi, [0], reward=-1.0, gate=0.9, cfg=cfg)
    a = 0.9 * (-1.0 - 0.2)  # A = g (r - b) = -1.08
    grad = a * (np.array([1.0, 0.0]) - np.array([0.25, 0.75]))  # tau = 1
    assert user.z_long == pytest.approx(0.01 * grad)
    assert user.z_short == pytest.approx(0.9 * np.array([1.0, 1.0]) + 0.05 * grad)
    assert user.baseline == pytest.approx(0.95 * 0.2 + 0.05 * -1.0)
    assert user.updates == 1


def test_update_skips_when_advantage_vanishes_or_nothing_chosen():
    cfg = PolicyConfig(item_dim=2)
    user = policy.UserVector.zeros(2)
    items, pi = np.eye(2), np.array([0.5, 0.5])
    assert not policy.reinforce_update(user, items, pi, [0], reward=0.0, gate=0.5, cfg=cfg)
    assert not policy.reinforce_update(user, items, pi, [], reward=1.0, gate=0.5, cfg=cfg)
    assert user.updates == 0 and not user.z_long.any()


def test_ablation_switches_freeze_parts():
    items, pi = np.eye(2), np.array([0.5, 0.5])
    only_long = policy.UserVector.zeros(2)
    policy.reinforce_update(only_long, items, pi, [0], 1.0, 0.5, PolicyConfig(item_dim=2, use_short=False))
    assert only_long.z_long.any() and not only_long.z_short.any()
    only_short = policy.UserVector.zeros(2)
    policy.reinforce_update(only_short, items, pi, [0], 1.0, 0.5, PolicyConfig(item_dim=2, use_long=False))
    assert only_short.z_short.any() and not only_short.z_long.any()


def test_session_reset_clears_short_keeps_long():
    user = policy.UserVector(np.ones(3, np.float32), np.ones(3, np.float32), session_id="s1")
    assert not policy.start_session(user, "s1")
    assert user.z_short.any()
    assert policy.start_session(user, "s2")
    assert not user.z_short.any() and user.z_long.tolist() == [1.0, 1.0, 1.0]


def test_item_vectors_truncate_pad_and_project():
    e = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert policy.item_vectors(e, 2).tolist() == [[0, 1], [3, 4]]
    assert policy.item_vectors(e, 4).tolist() == [[0, 1, 2, 0], [3, 4, 5, 0]]
    proj = np.array([[1.0, 0.0, 0.0]])
    assert policy.item_vectors(e, 1, proj, mean=np.array([1.0, 1.0, 1.0])).tolist() == [[-1.0], [2.0]]


def test_stored_vector_with_nan_or_wrong_size_resets_safely():
    bad = {"z_long": [float("nan"), 1.0], "z_short": [1.0, 2.0, 3.0], "baseline": float("inf"),
           "updates": 3}  # z_short too wide (was: too narrow, which is now padded, see below)
    user = policy.UserVector.from_dict(bad, 2)
    assert user.z_long.tolist() == [0.0, 0.0] and user.z_short.tolist() == [0.0, 0.0]
    assert user.baseline == 0.0 and user.updates == 3
    good = policy.UserVector(np.array([0.5, -0.5], np.float32), np.zeros(2, np.float32), 0.1, 2, "t")
    assert policy.UserVector.from_dict(good.to_dict(), 2).z_long.tolist() == [0.5, -0.5]


def test_reading_some_cards_values_reads_those_only():
    """The rerank node reads the candidates' learned values, not one per card ever injected."""
    vec = policy.UserVector.zeros(2)
    vec.card_values = {"a": [0.5, 2.0, 1.0], "b": [-0.2, 1.0, 0.0], "c": [2.0, 1.0, 0.0]}
    d = vec.to_dict()
    d["card_values"]["bad"] = [float("nan"), 1.0, 0.0]
    some = policy.UserVector.from_dict(d, 2, card_ids=["a", "c", "bad", "gone"])
    assert some.card_values == {"a": [0.5, 2.0, 1.0], "c": [1.0, 1.0, 0.0]}
    assert set(policy.UserVector.from_dict(d, 2).card_values) == {"a", "b", "c"}


def test_narrower_stored_vector_is_padded_and_scores_as_before():
    """Vectors of the old 256-dim item space (first dims) keep their scores in the full width."""
    rng = np.random.default_rng(3)
    e = rng.normal(size=(5, 8)).astype(np.float32)
    old = policy.UserVector(rng.normal(size=4).astype(np.float32), np.zeros(4, np.float32))
    new = policy.UserVector.from_dict(old.to_dict(), 8)
    assert new.z_long.shape == (8,) and not new.z_long[4:].any()
    cfg_old, cfg_new = PolicyConfig(item_dim=4), PolicyConfig(item_dim=8)
    s_old = policy.scores(np.zeros(5), policy.item_vectors(e, 4), policy.effective_z(old, cfg_old))
    s_new = policy.scores(np.zeros(5), policy.item_vectors(e, 8), policy.effective_z(new, cfg_new))
    assert s_new == pytest.approx(s_old, rel=1e-5)


def _sequences(n, k):
    from itertools import permutations

    return list(permutations(range(n), k))


def _seq_prob(pi, seq):
    p, left = 1.0, np.asarray(pi, np.float64).copy()
    for c in seq:
        p *= left[c] / left.sum()
        left[c] = 0.0
    return p


def test_sampling_frequencies_match_pi_and_sequential_draws():
    s = np.array([0.5, 0.0, -0.3, -1.0, 0.2])
    pi = policy.softmax(s, 0.7)
    rng = np.random.default_rng(0)
    n = 20000
    first = np.bincount([policy.select(s, 1, 0.7, sample=True, rng=rng)[0] for _ in range(n)],
                        minlength=5) / n
    assert first == pytest.approx(pi, abs=0.012)
    pairs = [tuple(policy.select(s, 2, 0.7, sample=True, rng=rng)) for _ in range(n)]
    for seq in [(0, 4), (4, 0), (1, 3), (3, 2)]:  # ordered draws without replacement from pi
        assert pairs.count(seq) / n == pytest.approx(_seq_prob(pi, seq), abs=0.01)
    assert all(len(set(p)) == 2 for p in pairs)


def test_sequence_gradient_is_unbiased_for_the_sampled_policy():
    """E[R(S) k grad_seq] over every ordered draw equals d E[R] / dz (exact enumeration)."""
    rng = np.random.default_rng(2)
    n, k, d, tau = 5, 2, 3, 0.8
    items, s0, z = rng.normal(size=(n, d)), rng.normal(size=n), rng.normal(size=d) * 0.3
    value = rng.normal(size=n)

    def reward(seq):
        return float(value[list(seq)].sum() + 0.5 * value[seq[0]] * value[seq[1]])

    def expected(zz):
        pi = policy.softmax(s0 + items @ zz, tau)
        return sum(_seq_prob(pi, q) * reward(q) for q in _sequences(n, k))

    pi = policy.softmax(s0 + items @ z, tau)
    estimate = sum(_seq_prob(pi, q) * k * policy.sequence_gradient(items, pi, list(q), reward(q), tau)
                   for q in _sequences(n, k))
    eps = 1e-6
    exact = np.array([(expected(z + eps * e) - expected(z - eps * e)) / (2 * eps) for e in np.eye(d)])
    assert estimate == pytest.approx(exact, rel=1e-5, abs=1e-8)
    # the reference formula is the same for one draw, and not an unbiased estimator for two
    assert policy.sequence_gradient(items, pi, [3], 0.7, tau) == pytest.approx(
        policy.policy_gradient(items, pi, [3], 0.7, tau))
    paper = sum(_seq_prob(pi, q) * policy.policy_gradient(items, pi, list(q), reward(q), tau)
                for q in _sequences(n, k))
    assert not np.allclose(paper, exact, rtol=1e-3)


def _bandit(selection, gradient, steps=400, seed=0):
    """6 arms (one-hot items), k = 2; only arm 5 pays (+1 when chosen) and s0 ranks it last."""
    cfg = PolicyConfig(item_dim=6, eta_long=0.3, use_short=False, tau=0.5, selection=selection,
                       gradient=gradient)  # type: ignore[arg-type]
    s0 = np.array([0.0, -0.1, -0.2, -0.3, -0.4, -1.5])
    items = np.eye(6)
    user = policy.UserVector.zeros(6)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        s = policy.scores(s0, items, policy.effective_z(user, cfg))
        chosen = policy.select(s, 2, cfg.tau, sample=selection == "sample", rng=rng)
        r = 1.0 if 5 in chosen else 0.0
        policy.reinforce_update(user, items, policy.softmax(s, cfg.tau), chosen, r, 1.0, cfg)
    return policy.select(policy.scores(s0, items, policy.effective_z(user, cfg)), 2, cfg.tau)


def test_sampling_learns_an_arm_that_s0_ranks_last_and_top_k_never_does():
    assert 5 in _bandit("sample", "sequence")
    assert 5 not in _bandit("top_k", "paper")  # deterministic top-k never tries it


def test_every_candidate_chosen_still_updates_as_the_reference_does():
    """K <= k: the reference formula still moves z (it reorders the injected cards among
    themselves); the exact sequence gradient's mean over draw orders is zero."""
    items, pi = np.eye(3), np.array([0.2, 0.3, 0.5])
    user = policy.UserVector.zeros(3)
    assert policy.reinforce_update(user, items, pi, [2, 1, 0], -1.0, 0.9,
                                   PolicyConfig(item_dim=3, gradient="paper"))
    assert np.linalg.norm(user.z_long) > 0
    mean = sum(_seq_prob(pi, q) * policy.sequence_gradient(items, pi, list(q), 1.0, 1.0)
               for q in _sequences(3, 3))
    assert mean == pytest.approx(np.zeros(3), abs=1e-12)


def test_selection_config():
    assert PolicyConfig().selection == "top_k" and PolicyConfig().gradient == "auto"
    assert PolicyConfig(selection="sample").selection == "sample"
    with pytest.raises(ValueError, match="sample"):  # the pre-release alias is gone
        PolicyConfig(sample=True)
    assert not PolicyConfig(use_long=False, use_short=False).learning
