"""The one embedding cache (`CachedEmbedder`): same vectors, each text encoded once, bounded."""

from __future__ import annotations

import numpy as np

from vars_langgraph.models.embedder import CachedEmbedder


class Counting:
    dim = 4
    name = "counting"

    def __init__(self) -> None:
        self.docs: list[str] = []
        self.queries: list[str] = []

    def embed_documents(self, texts):
        self.docs += list(texts)
        return np.array([[len(t), 1, 0, 0] for t in texts], np.float32)

    def embed_query(self, text):
        self.queries.append(text)
        return np.array([len(text), 0, 1, 0], np.float32)


def test_each_text_is_encoded_once_with_the_same_vectors():
    inner = Counting()
    cached = CachedEmbedder(inner)
    first = cached.embed_documents(["a", "bb", "a"])
    again = cached.embed_documents(["bb", "a", "ccc"])
    assert inner.docs == ["a", "bb", "ccc"]
    np.testing.assert_array_equal(first[1], again[0])
    np.testing.assert_array_equal(again, inner.embed_documents(["bb", "a", "ccc"]))
    assert (cached.hits, cached.misses) == (3, 3)
    assert cached.embed_documents([]).shape == (0, 4)
    assert cached.name == "counting"  # the rest is the wrapped embedder's


def test_queries_and_documents_are_cached_apart():
    inner = Counting()
    cached = CachedEmbedder(inner)
    q = cached.embed_query("hi")
    d = cached.embed_documents(["hi"])[0]
    assert not np.array_equal(q, d)
    cached.embed_query("hi")
    assert inner.queries == ["hi"]


def test_the_cache_is_bounded_lru():
    inner = Counting()
    cached = CachedEmbedder(inner, max_items=2)
    cached.embed_query("a")
    cached.embed_query("b")
    cached.embed_query("a")  # a is now the most recent
    cached.embed_query("c")  # evicts b
    cached.embed_query("a")
    cached.embed_query("b")
    assert inner.queries == ["a", "b", "c", "b"]
    cached.clear()
    cached.embed_query("a")
    assert inner.queries[-1] == "a"


def test_embed_query_is_encode_with_the_query_prompt():
    """Queries go through `SentenceTransformer.encode()` (real MiniLM), the prompt added once."""
    from vars_langgraph.config import EmbeddingConfig
    from vars_langgraph.models.embedder import SentenceTransformerEmbedder

    text = "How should I structure a pytest fixture for a database?"
    for prompt in (None, "query: "):
        emb = SentenceTransformerEmbedder(EmbeddingConfig(query_prompt=prompt))
        want = emb.model.encode([text], prompt=prompt, normalize_embeddings=True)[0]
        got = emb.embed_query(text)
        assert got.dtype == np.float32 and abs(float(np.linalg.norm(got)) - 1.0) < 1e-5
        np.testing.assert_allclose(got, want, atol=1e-6)
    plain = SentenceTransformerEmbedder(EmbeddingConfig())
    assert not np.allclose(plain.embed_query(text), want, atol=1e-3)  # the prompt matters
