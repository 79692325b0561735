"""Embedding function of the `langgraph dev` store index (`langgraph.json`: store.index.embed):
the VARS embedding model (default all-MiniLM-L6-v2, 384 dims), loaded on first use."""

from vars_langgraph.config import VARSConfig, config_file


def embed(texts: list[str]) -> list[list[float]]:
    """Texts -> L2-normalised vectors (what the VARS graphs use for cards and queries)."""
    from vars_langgraph.models.embedder import load_embedder

    config = VARSConfig.from_yaml(config_file())
    return load_embedder(config.embedding).embed_documents(list(texts)).tolist()
