"""ROPG: a retriever learned from the downstream metric (Salemi et al., SIGIR 2024).

A small scoring model over frozen embeddings, s(q, d) = scale x cos(f(q), f(d)) with a
residual adapter f(x) = x + W2 gelu(W1 x) (W2 = 0 at start, so it begins as dense retrieval).
Feedback: the utility of each candidate item alone (metric of the output generated with it).
RL: sample from the softmax over candidates, reward = utility - utility without personalisation,
REINFORCE (the cousin of VARS's update in `policy.py`). KD: cross-entropy between the
softmax of utilities / T and the model's softmax / T. Trains on the CPU in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vars_langgraph.learning.policy import select
from vars_langgraph_eval.lamp.data import Question
from vars_langgraph_eval.lamp.generate import Generator, generate_all
from vars_langgraph_eval.lamp.metrics import utility
from vars_langgraph_eval.lamp.prompts import Tokenizer, build_prompt
from vars_langgraph_eval.lamp.retrievers import EmbeddingCache, Request, Retriever, make_request

BatchGenerator = Callable[[Sequence[str]], list[str]]


@dataclass
class ItemFeedback:
    """Per-input training data: query and candidate embeddings, each candidate's utility and
    the utility of the output generated without any profile item (the RL baseline)."""

    query: np.ndarray  # (d,)
    docs: np.ndarray  # (C, d)
    utilities: np.ndarray  # (C,)
    baseline: float


class ROPGScorer(nn.Module):
    """s(q, d) = scale x cos(f(q), f(d)), f(x) = x + W2 gelu(W1 x)."""

    def __init__(self, dim: int, hidden: int = 256, scale: float = 20.0):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(scale))))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x + self.down(nn.functional.gelu(self.up(x))), dim=-1)

    def forward(self, query: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """query (B, d), docs (B, C, d) -> scores (B, C)."""
        q, d = self.encode(query), self.encode(docs)
        return self.log_scale.exp() * torch.einsum("bd,bcd->bc", q, d)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": {"dim": self.dim, "hidden": self.hidden},
                    "state": self.state_dict()}, p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> ROPGScorer:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        model = cls(**blob["config"])
        model.load_state_dict(blob["state"])
        return model.eval()


def reinforce_surrogate(
    s: torch.Tensor, chosen: Sequence[int], advantage: float, tau: float = 1.0
) -> torch.Tensor:
    """-A x mean_{i in chosen} log pi_i, pi = softmax(s / tau).

    Its gradient in s is -(A / tau)(onehot_mean(chosen) - pi); for linear scores s = V z this is
    minus VARS's `policy_gradient` (step 7), so a descent step is VARS's ascent step.
    """
    logp = torch.log_softmax(s / tau, dim=-1)
    return -advantage * logp[list(chosen)].mean()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run a tiny model on one thread: on a busy CPU, thread synchronisation costs more than
    the arithmetic (20x on this project's 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tensors(batch: Sequence[ItemFeedback]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.tensor(np.stack([b.query for b in batch]), dtype=torch.float32)
    d = torch.tensor(np.stack([b.docs for b in batch]), dtype=torch.float32)
    u = torch.tensor(np.stack([b.utilities for b in batch]), dtype=torch.float32)
    return q, d, u


def _by_size(data: Sequence[ItemFeedback]) -> dict[int, list[ItemFeedback]]:
    groups: dict[int, list[ItemFeedback]] = {}
    for x in data:
        if len(x.utilities) > 1:
            groups.setdefault(len(x.utilities), []).append(x)
    return groups


def train_kd(
    model: ROPGScorer, data: Sequence[ItemFeedback], epochs: int = 20, lr: float = 1e-3,
    temperature: float = 0.1, batch_size: int = 32, seed: int = 0,
) -> list[float]:
    """ROPG-KD: minimise CE(softmax(u / T), softmax(s / T)) per input; returns epoch losses.

    (The official trainer passes probabilities to CrossEntropyLoss as if they were logits;
    here the target distribution is matched with a proper cross-entropy.)
    """
    with one_thread():
        return _train_kd(model, data, epochs, lr, temperature, batch_size, seed)


def _train_kd(model, data, epochs, lr, temperature, batch_size, seed) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for _ in range(epochs):
        total, n = 0.0, 0
        for group in _by_size(data).values():
            order = torch.randperm(len(group), generator=gen).tolist()
            for i in range(0, len(order), batch_size):
                q, d, u = _tensors([group[j] for j in order[i:i + batch_size]])
                target = torch.softmax(u / temperature, dim=-1)
                logp = torch.log_softmax(model(q, d) / temperature, dim=-1)
                loss = -(target * logp).sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, n = total + float(loss.detach()) * len(q), n + len(q)
        history.append(total / max(n, 1))
    return history


def train_rl(
    model: ROPGScorer, data: Sequence[ItemFeedback], epochs: int = 20, lr: float = 1e-3,
    tau: float = 1.0, samples: int = 1, batch_size: int = 32, seed: int = 0,
) -> list[float]:
    """ROPG-RL: per input, sample `samples` items from pi (VARS's `select(sample=True)`),
    reward = their mean utility - the no-profile utility, REINFORCE; returns the mean sampled
    utility per epoch (it rises as the policy learns)."""
    with one_thread():
        return _train_rl(model, data, epochs, lr, tau, samples, batch_size, seed)


def _train_rl(model, data, epochs, lr, tau, samples, batch_size, seed) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    history = []
    model.train()
    for _ in range(epochs):
        rewards: list[float] = []
        for group in _by_size(data).values():
            order = rng.permutation(len(group))
            for i in range(0, len(order), batch_size):
                batch = [group[j] for j in order[i:i + batch_size]]
                q, d, _ = _tensors(batch)
                s = model(q, d)
                loss = s.new_zeros(())
                for b, x in enumerate(batch):
                    chosen = select(s[b].detach().numpy(), samples, tau, sample=True, rng=rng)
                    gained = float(np.mean(x.utilities[chosen]))
                    rewards.append(gained)
                    loss = loss + reinforce_surrogate(s[b], chosen, gained - x.baseline, tau)
                opt.zero_grad()
                (loss / len(batch)).backward()
                opt.step()
        history.append(float(np.mean(rewards)) if rewards else 0.0)
    return history


def top1_utility(model: ROPGScorer, data: Sequence[ItemFeedback]) -> float:
    """Mean utility of the item the model ranks first (how good its retrieval is)."""
    model.eval()
    with torch.no_grad():
        picks = [int(model(*_tensors([x])[:2])[0].argmax()) for x in data]
    return float(np.mean([x.utilities[p] for x, p in zip(data, picks, strict=True)]))


class ROPGRetriever:
    """Ranks all profile items with a trained `ROPGScorer` over the cached embeddings."""

    def __init__(self, model: ROPGScorer, embeddings: EmbeddingCache, name: str = "ropg"):
        self.model = model.eval()
        self.emb = embeddings
        self.name = name

    def scores(self, req: Request) -> np.ndarray:
        if not req.docs:
            return np.zeros(0)
        q = torch.tensor(self.emb.query(req.query))[None]
        d = torch.tensor(self.emb.docs(req.docs))[None]
        with torch.no_grad():
            return self.model(q, d)[0].numpy()

    def retrieve(self, req: Request, k: int) -> list[int]:
        if not req.docs or k <= 0:
            return []
        return [int(i) for i in np.argsort(-self.scores(req), kind="stable")[:k]]


def collect_item_feedback(
    task: str,
    questions: Sequence[Question],
    golds: dict[str, str],
    generate: Generator | BatchGenerator,
    embeddings: EmbeddingCache,
    first_stage: Retriever,
    ctx_size: int = 8,
    tokenizer: Tokenizer | None = None,
    max_length: int = 512,
    use_date: bool = False,
    batched: bool = False,
) -> list[ItemFeedback]:
    """Generate once per candidate item (top `ctx_size` of `first_stage`) and once without
    profile for each question; the utilities become ROPG's training signal.

    `generate` maps one prompt to text, or (batched=True) a list of prompts to texts.
    """
    reqs = [make_request(task, q, use_date) for q in questions]
    cands = [first_stage.retrieve(r, ctx_size) for r in reqs]
    prompts: list[str] = []
    for r, c in zip(reqs, cands, strict=True):
        prompts.append(build_prompt(task, r.question.input, [], tokenizer, max_length))
        prompts += [build_prompt(task, r.question.input, [r.profile[i]], tokenizer, max_length)
                    for i in c]
    texts = generate(prompts) if batched else generate_all(prompts, generate, desc="ROPG feedback")
    outs = iter(texts)
    data = []
    for r, c in zip(reqs, cands, strict=True):
        gold = golds[r.question.id]
        base = utility(task, next(outs), gold)
        utils = np.array([utility(task, next(outs), gold) for _ in c], dtype=np.float32)
        if len(c) == 0:
            continue
        data.append(ItemFeedback(embeddings.query(r.query), embeddings.docs([r.docs[i] for i in c]),
                                 utils, base))
    return data


def save_feedback(path: str | Path, data: Sequence[ItemFeedback]) -> None:
    """Store collected feedback (JSON) so training can be repeated without the LLM."""
    Path(path).write_text(json.dumps([
        {"query": x.query.tolist(), "docs": x.docs.tolist(), "utilities": x.utilities.tolist(),
         "baseline": x.baseline} for x in data]))


def load_feedback(path: str | Path) -> list[ItemFeedback]:
    return [ItemFeedback(np.asarray(x["query"], np.float32), np.asarray(x["docs"], np.float32),
                         np.asarray(x["utilities"], np.float32), float(x["baseline"]))
            for x in json.loads(Path(path).read_text())]
