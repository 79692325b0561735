"""The one embedding cache (`CachedEmbedder`): same vectors, each text encoded once, bounded."""

from __future__ import annotations

from pathlib import Path

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


def test_the_dimension_is_read_from_the_model_files_without_loading_it(tmp_path):
    """`import` checks vectors against the model's dimension without loading the model."""
    import json

    from vars_langgraph.config import EmbeddingConfig
    from vars_langgraph.models.embedder import load_embedder, resolve_model, stated_dim

    cfg = EmbeddingConfig()
    assert stated_dim(cfg) == load_embedder(cfg).dim == 384
    assert stated_dim(EmbeddingConfig(model="some-org/not-on-this-machine")) is None
    # a Dense layer changes the size: the files do not say it, so no answer
    root = tmp_path / "m"
    (root / "1_Pooling").mkdir(parents=True)
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384}))
    mods = json.loads((Path(resolve_model(cfg.model)) / "modules.json").read_text())
    (root / "modules.json").write_text(json.dumps(mods))
    assert stated_dim(EmbeddingConfig(model=str(root))) == 384
    mods.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (root / "modules.json").write_text(json.dumps(mods))
    assert stated_dim(EmbeddingConfig(model=str(root))) is None


def test_the_index_and_import_do_not_load_the_embedding_model(tmp_path):
    """`memories`, `export` and `import` of vectors of the right size need no model."""
    from vars_langgraph import VARSConfig, VARSEngine
    from vars_langgraph.storage import open_store
    from vars_langgraph.types import CardSource, Preference

    def engine(name: str) -> VARSEngine:
        cfg = VARSConfig(data_dir=str(tmp_path / name))
        return VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / name / "index")

    writer = engine("a")
    writer.add_preferences("u", [Preference(condition="writing code", action="use type hints")],
                           CardSource(query="I like type hints"))
    export = writer.memory.export_user("u")
    reader = engine("b")
    assert reader.dim == 384 and reader.index.get("u").cards == {}
    stats = reader.memory.import_checked(export, "v", dim=lambda: reader.dim,
                                         embed=lambda t: reader.embedder.embed_documents(t))
    assert stats["imported"] == 1 and stats["reembedded"] == 0
    assert [c.note for c in reader.memory.list_cards("v")] == ["When writing code, use type hints."]
    assert "embedder" not in reader.__dict__  # the cached_property was never computed
