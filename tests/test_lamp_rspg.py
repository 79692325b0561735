"""RSPG: pre-generation selection learns from the input, post-generation from the outputs."""

import numpy as np
import pytest
import torch

from tests.test_lamp_fakes import HashEmbedder, lamp2_user
from vars_langgraph_eval.lamp.retrievers import EmbeddingCache, make_request
from vars_langgraph_eval.lamp.rspg import (
    RSPGSelector,
    SelectorInput,
    selection_quality,
    selector_input,
    train_selector,
)

DIM, POOL = 16, ["none", "bm25", "dense"]


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def by_input(n, seed):
    """The best retriever depends on where the input lies (one direction per retriever)."""
    rng = np.random.default_rng(seed)
    dirs = np.random.default_rng(7).normal(size=(len(POOL), DIM))
    out = []
    for _ in range(n):
        q = unit(rng.normal(size=DIM))
        u = np.zeros(len(POOL), np.float32)
        u[int(np.argmax(dirs @ q))] = 1.0
        out.append(SelectorInput(q, unit(rng.normal(size=(len(POOL), DIM))),
                                 unit(rng.normal(size=(len(POOL), DIM))), u))
    return out


def by_output(n, seed):
    """Which retriever helped is visible only in its output (good outputs share a direction)."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(8).normal(size=DIM)
    out = []
    for _ in range(n):
        o = unit(rng.normal(size=(len(POOL), DIM)))
        u = (o @ w > 0).astype(np.float32)
        out.append(SelectorInput(unit(rng.normal(size=DIM)),
                                 unit(rng.normal(size=(len(POOL), DIM))), o, u))
    return out


def best_fixed(data):
    return float(np.max(np.mean([x.utilities for x in data], axis=0)))


def test_pre_generation_selector_beats_any_fixed_retriever():
    torch.manual_seed(0)
    train, test = by_input(300, 1), by_input(150, 2)
    sel = RSPGSelector(DIM, POOL, "pre", hidden=32)
    losses = train_selector(sel, train, epochs=30, lr=5e-3)
    assert losses[-1] < losses[0]
    assert selection_quality(sel, test) > best_fixed(test) + 0.2


def test_post_generation_selector_reads_the_outputs():
    torch.manual_seed(0)
    train, test = by_output(300, 3), by_output(150, 4)
    post = RSPGSelector(DIM, POOL, "post", hidden=32)
    pre = RSPGSelector(DIM, POOL, "pre", hidden=32)
    train_selector(post, train, epochs=30, lr=5e-3)
    train_selector(pre, train, epochs=30, lr=5e-3)
    assert selection_quality(post, test) > 0.8  # a fixed choice gets about 0.5
    assert selection_quality(post, test) > selection_quality(pre, test) + 0.15


def test_selector_features_save_and_load(tmp_path):
    cache = EmbeddingCache(HashEmbedder())
    r = make_request("LaMP_2", lamp2_user("u", "comedy"))
    x = selector_input(r, [[], [0, 1], [2]], cache, ["comedy", "action", "comedy"])
    assert x.docs.shape == (3, HashEmbedder.dim) and not x.docs[0].any()
    sel = RSPGSelector(HashEmbedder.dim, POOL, "post")
    assert sel.features([x]).shape == (1, 3, 5 * HashEmbedder.dim + 3)
    again = RSPGSelector.load(sel.save(tmp_path / "s.pt"))
    assert again.pool == POOL and again.mode == "post"
    assert torch.allclose(sel([x]), again([x]))
    with pytest.raises(ValueError, match="output"):
        sel([selector_input(r, [[], [0], [1]], cache)])
