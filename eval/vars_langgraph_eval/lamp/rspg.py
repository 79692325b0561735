"""RSPG: pick, per input, which retriever (or none) personalises the prompt (Salemi et al. 2024).

A small MLP over frozen embeddings scores each retriever in a pool for an input:
pre-generation from [input, mean of its retrieved items, their product, retriever one-hot];
post-generation also from the output generated with it. Trained from per-retriever feedback
(the metric of each retriever's output) by matching softmax(feedback / T); picks the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from vars_langgraph_eval.lamp.retrievers import EmbeddingCache, Request
from vars_langgraph_eval.lamp.ropg import one_thread

Mode = Literal["pre", "post"]


@dataclass
class SelectorInput:
    """One input seen through every retriever of the pool (rows follow the pool's order)."""

    query: np.ndarray  # (d,) input (retrieval query) embedding
    docs: np.ndarray  # (R, d) mean embedding of each retriever's items (zeros: none retrieved)
    outputs: np.ndarray | None = None  # (R, d) embedding of each retriever's output (post)
    utilities: np.ndarray | None = None  # (R,) feedback, higher is better (training only)


def selector_input(
    req: Request, picks: Sequence[Sequence[int]], emb: EmbeddingCache,
    outputs: Sequence[str] | None = None, utilities: Sequence[float] | None = None,
) -> SelectorInput:
    """Build the features of one request from each pool retriever's picks (and outputs)."""
    docs = np.zeros((len(picks), emb.dim), np.float32)
    for r, idx in enumerate(picks):
        if len(idx):
            docs[r] = emb.docs([req.docs[i] for i in idx]).mean(axis=0)
    outs = emb.docs(list(outputs)) if outputs is not None else None
    u = np.asarray(utilities, np.float32) if utilities is not None else None
    return SelectorInput(emb.query(req.query), docs, outs, u)


class RSPGSelector(nn.Module):
    """Scores every retriever of a fixed pool for an input; `mode` 'pre' or 'post'."""

    def __init__(self, dim: int, pool: Sequence[str], mode: Mode = "pre", hidden: int = 128):
        super().__init__()
        if mode not in ("pre", "post"):
            raise ValueError(f"RSPG mode must be 'pre' or 'post', not {mode!r}")
        self.dim, self.pool, self.mode, self.hidden = dim, list(pool), mode, hidden
        width = 3 * dim + len(self.pool) + (2 * dim if mode == "post" else 0)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def features(self, batch: Sequence[SelectorInput]) -> torch.Tensor:
        """(B, R, width) features of a batch."""
        q = torch.tensor(np.stack([b.query for b in batch]), dtype=torch.float32)
        d = torch.tensor(np.stack([b.docs for b in batch]), dtype=torch.float32)
        n_b, n_r = d.shape[:2]
        if n_r != len(self.pool):
            raise ValueError(f"inputs have {n_r} retrievers, the selector's pool {len(self.pool)}")
        qr = q[:, None, :].expand(-1, n_r, -1)
        onehot = torch.eye(n_r)[None].expand(n_b, -1, -1)
        parts = [qr, d, qr * d, onehot]
        if self.mode == "post":
            if any(b.outputs is None for b in batch):
                raise ValueError("post-generation RSPG needs each retriever's output")
            o = torch.tensor(np.stack([b.outputs for b in batch]), dtype=torch.float32)
            parts += [o, qr * o]
        return torch.cat(parts, dim=-1)

    def forward(self, batch: Sequence[SelectorInput]) -> torch.Tensor:
        """(B, R) scores."""
        return self.mlp(self.features(batch)).squeeze(-1)

    def choose(self, x: SelectorInput) -> int:
        """Index (in the pool) of the retriever to use for this input."""
        with torch.no_grad():
            return int(self.eval()([x])[0].argmax())

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        cfg = {"dim": self.dim, "pool": self.pool, "mode": self.mode, "hidden": self.hidden}
        torch.save({"config": cfg, "state": self.state_dict()}, p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> RSPGSelector:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        model = cls(**blob["config"])
        model.load_state_dict(blob["state"])
        return model.eval()


def train_selector(
    model: RSPGSelector, data: Sequence[SelectorInput], epochs: int = 30, lr: float = 1e-3,
    temperature: float = 0.1, batch_size: int = 32, seed: int = 0,
) -> list[float]:
    """Minimise CE(softmax(feedback / T), softmax(scores)) per input; returns epoch losses."""
    with one_thread():
        return _train(model, data, epochs, lr, temperature, batch_size, seed)


def _train(model, data, epochs, lr, temperature, batch_size, seed) -> list[float]:
    data = [x for x in data if x.utilities is not None]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for _ in range(epochs):
        total = 0.0
        order = torch.randperm(len(data), generator=gen).tolist()
        for i in range(0, len(order), batch_size):
            batch = [data[j] for j in order[i:i + batch_size]]
            u = torch.tensor(np.stack([b.utilities for b in batch]), dtype=torch.float32)
            target = torch.softmax(u / temperature, dim=-1)
            loss = -(target * torch.log_softmax(model(batch), dim=-1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        history.append(total / max(len(data), 1))
    model.eval()
    return history


def selection_quality(model: RSPGSelector, data: Sequence[SelectorInput]) -> float:
    """Mean feedback of the retrievers the model picks (the quantity RSPG maximises)."""
    picks = [model.choose(x) for x in data]
    return float(np.mean([x.utilities[p] for x, p in zip(data, picks, strict=True)]))
