"""Profile retrievers: BM25 against a hand BM25Okapi, recency order, dense and the VARS policy."""

import math

import numpy as np

from tests.test_lamp_fakes import HashEmbedder
from vars_langgraph.config import PolicyConfig
from vars_langgraph.learning.policy import effective_z, item_vectors
from vars_langgraph_eval.lamp.data import Question
from vars_langgraph_eval.lamp.retrievers import (
    BM25Retriever,
    DenseRetriever,
    EmbeddingCache,
    NoRetriever,
    RecencyRetriever,
    Request,
    VARSPolicyRetriever,
    make_request,
    profile_feedback,
)


def okapi(query, docs, k1=1.5, b=0.75):
    """rank_bm25.BM25Okapi scores by hand (all idf positive in these tests)."""
    toks = [d.split() for d in docs]
    avg = sum(map(len, toks)) / len(toks)
    out = []
    for t in toks:
        s = 0.0
        for q in query.split():
            n = sum(q in d for d in toks)
            idf = math.log(len(toks) - n + 0.5) - math.log(n + 0.5)
            tf = t.count(q)
            s += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(t) / avg))
        out.append(s)
    return np.array(out)


def req(query, docs, profile=None):
    profile = profile or [{"id": str(i)} for i in range(len(docs))]
    return Request("LaMP_4", Question("q", "x", profile), query, docs)


def test_bm25_matches_okapi_up_to_its_constant_factor():
    docs = ["red apple pie", "green apple tart apple", "blue sky", "red car fast",
            "slow boat", "old tree"]
    q = "apple apple red pie"  # repeated words count twice, as in BM25Okapi
    ours = BM25Retriever().scores(req(q, docs))
    assert np.allclose(ours * 2.5, okapi(q, docs), atol=1e-5)  # (k1 + 1) = 2.5
    assert BM25Retriever().retrieve(req(q, docs), 2) == [0, 1]
    assert BM25Retriever().retrieve(req("", docs), 2) == [5, 4]  # ties: get_top_n order


def test_recency_most_recent_first_and_undated_oldest():
    prof = [{"id": "a", "date": "2019-05-01"}, {"id": "b", "date": "2021-01-01"},
            {"id": "c"}, {"id": "d", "date": "2020-12-31"}]
    assert RecencyRetriever().retrieve(req("q", ["", "", "", ""], prof), 3) == [1, 3, 0]
    assert NoRetriever().retrieve(req("q", ["x"]), 4) == []


def test_dense_ranks_by_cosine_and_caches_documents():
    class Counting(HashEmbedder):
        calls = 0

        def embed_documents(self, texts):
            Counting.calls += len(texts)
            return super().embed_documents(texts)

    cache = EmbeddingCache(Counting())
    docs = ["funny laugh joke", "explosion chase", "funny film"]
    r = DenseRetriever(cache)
    assert r.retrieve(req("funny laugh", docs), 2) == [0, 2]
    r.retrieve(req("chase", docs), 1)
    assert Counting.calls == 3  # second request hit the cache


def test_profile_feedback_rules():
    assert profile_feedback("LaMP_2", {"tag": "comedy"}, {"tag": "comedy"}) == 1.0
    assert profile_feedback("LaMP_2", {"tag": "comedy"}, {"tag": "action"}) == 0.0
    assert profile_feedback("LaMP_3", {"score": "5"}, {"score": "2"}) == 0.25
    assert profile_feedback("LaMP_5", {"title": "a b"}, {"title": "a c"}) == 0.5


def _tag_margin(retriever, q):
    """Mean of v . z_eff over majority-tag items minus minority-tag items."""
    r = make_request("LaMP_2", q)
    e = retriever.emb.docs(r.docs)
    v = item_vectors(e - e.mean(axis=0), retriever.cfg.item_dim)
    retriever.retrieve(r, 4)
    s = v @ effective_z(retriever.last_user, retriever.cfg)
    fav = np.array([p["tag"] == "comedy" for p in q.profile])
    return float(s[fav].mean() - s[~fav].mean())


def likes_comedy(task, held_out, candidate):
    """Per-item feedback that depends on the item only: comedy items help this user."""
    return float(candidate["tag"] == "comedy")


def mixed_user(n_items=24, seed=0):
    """Half comedy, half action; each description is one tag word among five shared fillers,
    so similarity to a pseudo-query barely tells the tags apart but item vectors do."""
    rng = np.random.default_rng(seed)
    pool = [f"w{i}" for i in range(30)]
    prof = []
    for j in range(n_items):
        tag = "comedy" if j % 2 else "action"
        words = ["laugh" if tag == "comedy" else "explosion", *rng.choice(pool, 5, replace=False)]
        prof.append({"id": str(j), "tag": tag, "description": " ".join(words)})
    return Question("u", "tags: [comedy, action] description: w1 w2 w3", prof)


def test_vars_policy_learns_the_user_from_per_item_feedback():
    q = mixed_user()
    cache = EmbeddingCache(HashEmbedder())
    learned = VARSPolicyRetriever(cache, feedback=likes_comedy)  # the paper's constants
    assert learned.last_user is None
    assert _tag_margin(learned, q) > 0  # items like the useful ones now score higher
    assert learned.last_user.updates > 0
    # The direction comes from the feedback, not the geometry: inverted feedback flips it.
    inverted = VARSPolicyRetriever(cache, feedback=lambda t, a, b: 1 - likes_comedy(t, a, b))
    assert _tag_margin(inverted, q) < 0


def test_vars_policy_user_vector_changes_the_ranking():
    q = mixed_user()
    cache = EmbeddingCache(HashEmbedder())
    r = make_request("LaMP_2", q)
    comedies = lambda idx: sum(q.profile[i]["tag"] == "comedy" for i in idx)  # noqa: E731
    dense = DenseRetriever(cache).retrieve(r, 4)
    strong = PolicyConfig(eta_long=0.5, eta_short=0.5)
    vars_top = VARSPolicyRetriever(cache, strong, feedback=likes_comedy).retrieve(r, 4)
    assert comedies(vars_top) >= 3
    assert comedies(vars_top) > comedies(dense)
