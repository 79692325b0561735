"""ROPG: the REINFORCE surrogate is VARS's update; RL and KD learn a better retriever."""

import numpy as np
import pytest
import torch

from tests.test_lamp_fakes import HashEmbedder
from vars_langgraph.learning.policy import policy_gradient, softmax
from vars_langgraph_eval.lamp.retrievers import EmbeddingCache, make_request
from vars_langgraph_eval.lamp.ropg import (
    ItemFeedback,
    ROPGRetriever,
    ROPGScorer,
    load_feedback,
    reinforce_surrogate,
    save_feedback,
    top1_utility,
    train_kd,
    train_rl,
)


def test_surrogate_gradient_is_minus_the_vars_policy_gradient():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(6, 5))
    z = torch.tensor(rng.normal(size=5), requires_grad=True)
    s = torch.tensor(items) @ z
    chosen, advantage, tau = [1, 4], 0.7, 0.5
    reinforce_surrogate(s, chosen, advantage, tau).backward()
    pi = softmax(s.detach().numpy(), tau)
    expected = policy_gradient(items, pi, chosen, advantage, tau)
    assert np.allclose(z.grad.numpy(), -expected)


def synthetic(n, seed, dim=16, ctx=8):
    """Inputs whose useful items share a hidden direction w (independent of the query)."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(123).normal(size=dim)
    out = []
    for _ in range(n):
        q = rng.normal(size=dim)
        d = rng.normal(size=(ctx, dim))
        u = (d @ w > 0).astype(np.float32)
        unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
        out.append(ItemFeedback(unit(q), unit(d), u, baseline=0.5))
    return out


@pytest.mark.parametrize("variant", ["kd", "rl"])
def test_ropg_learns_a_better_retriever_than_its_dense_start(variant):
    torch.manual_seed(0)
    train, held_out = synthetic(120, 1), synthetic(60, 2)
    model = ROPGScorer(16, hidden=32)
    before = top1_utility(model, held_out)
    if variant == "kd":
        losses = train_kd(model, train, epochs=25, lr=1e-2)
        assert losses[-1] < losses[0]
    else:
        rewards = train_rl(model, train, epochs=25, lr=1e-2)
        assert np.mean(rewards[-5:]) > np.mean(rewards[:5])
    after = top1_utility(model, held_out)
    assert after > before + 0.15, (before, after)  # about 0.54 -> 0.8


def test_retriever_save_load_and_feedback_round_trip(tmp_path):
    model = ROPGScorer(HashEmbedder.dim, hidden=8)
    torch.nn.init.normal_(model.down.weight)
    path = model.save(tmp_path / "m.pt")
    again = ROPGScorer.load(path)
    cache = EmbeddingCache(HashEmbedder())
    from tests.test_lamp_fakes import lamp2_user

    r = make_request("LaMP_2", lamp2_user("u", "comedy"))
    a, b = ROPGRetriever(model, cache), ROPGRetriever(again, cache)
    assert np.allclose(a.scores(r), b.scores(r))
    assert a.retrieve(r, 3) == b.retrieve(r, 3) and len(a.retrieve(r, 3)) == 3
    data = synthetic(2, 0)
    save_feedback(tmp_path / "f.json", data)
    back = load_feedback(tmp_path / "f.json")
    assert np.allclose(back[1].docs, data[1].docs) and back[0].baseline == 0.5
