"""Small protocols every model backend implements; backends are chosen by VARSConfig."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from vars_langgraph.types import Preference


@runtime_checkable
class Embedder(Protocol):
    """Text -> L2-normalised float32 vectors of width `dim`."""

    dim: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, note) pairs; higher is more useful. Returns shape (len(notes),)."""

    def score(self, query: str, notes: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class Extractor(Protocol):
    """Dialogue window [(role, text), ...] -> preferences. Never raises on bad model output."""

    def extract(self, turns: Sequence[tuple[str, str]]) -> list[Preference]: ...
