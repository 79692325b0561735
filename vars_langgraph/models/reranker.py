"""Rerankers: a raw score for each (query, note) pair, higher is more useful.

- `EmbeddingReranker`: the cosine (CPU default; reuses the card embeddings).
- `LLMReranker`: log P("yes") of a few-shot yes/no judge, from the top log-probs
  (the method's Qwen3-Reranker signal, from any OpenAI-compatible chat endpoint).
- `CrossEncoderReranker`: a sentence-transformers CrossEncoder; log sigmoid(logit).

The rerank node maps every raw score to s0 = log P(useful) with the backend's fitted
calibration (vars_langgraph/learning/calibration.py), so the policy's constants mean the same thing
whatever the backend.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import openai

from vars_langgraph.config import LLMConfig, VARSConfig
from vars_langgraph.models.base import Embedder, Reranker
from vars_langgraph.models.llm import openai_client, resolve_llm

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

log = logging.getLogger(__name__)

MISSING_LOGPROB = math.log(1e-6)


class EmbeddingReranker:
    """scale * cos(query, note) with the memory's embedder (the graph uses scale 1: the raw
    cosine, calibrated afterwards)."""

    def __init__(self, embedder: Embedder, scale: float = 1.0):
        self.embedder = embedder
        self.scale = float(scale)

    def score(self, query: str, notes: Sequence[str]) -> np.ndarray:
        if not notes:
            return np.zeros(0, np.float32)
        q = self.embedder.embed_query(query)
        return self.score_embeddings(q, self.embedder.embed_documents(list(notes)))

    def score_embeddings(self, query_vec: np.ndarray, note_vecs: np.ndarray) -> np.ndarray:
        """Fast path for notes whose embeddings are already known (the cards')."""
        q = np.asarray(query_vec, np.float32).reshape(-1)
        n = np.asarray(note_vecs, np.float32)
        if n.size == 0:
            return np.zeros(0, np.float32)
        n = n.reshape(-1, q.shape[0])
        qn = q / max(float(np.linalg.norm(q)), 1e-12)
        nn = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        return (self.scale * (nn @ qn)).astype(np.float32)


JUDGE_SYSTEM = (
    "You decide whether a saved user preference applies to a new request. Answer yes if "
    "following the preference would change how the assistant should answer this request, "
    "otherwise no. Answer with one word: yes or no."
)
JUDGE_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("Write a bash script that renames all .txt files.",
     "When writing shell scripts, add a comment to each step.", "yes"),
    ("What is the capital of Peru?", "When writing Python code, use type hints.", "no"),
    ("Summarize this article about climate policy.",
     "When summarizing, keep it under five bullet points.", "yes"),
    ("Fix the off-by-one error in my loop.",
     "When suggesting recipes, avoid dairy.", "no"),
)  # fmt: skip


def _judge_prompt(query: str, note: str) -> str:
    return f"Request: {' '.join(query.split())}\nPreference: {' '.join(note.split())}\nApplies?"


class LLMReranker:
    """Few-shot yes/no judge over an OpenAI-compatible endpoint; s0 = log P("yes").

    Requests for one query share the prompt prefix (system, examples, query) so a llama.cpp
    server re-evaluates only the note; they run on a small thread pool.
    """

    def __init__(self, llm: LLMConfig, max_workers: int = 4, top_logprobs: int = 10):
        if not llm.base_url:
            raise ValueError("LLMReranker needs a resolved LLMConfig (use resolve_llm)")
        self.llm = llm
        self.client = openai_client(llm)
        self.max_workers = max(1, max_workers)
        self.top_logprobs = top_logprobs
        self._prefix: list[ChatCompletionMessageParam] = [{"role": "system", "content": JUDGE_SYSTEM}]
        for q, n, a in JUDGE_EXAMPLES:
            self._prefix.append({"role": "user", "content": _judge_prompt(q, n)})
            self._prefix.append({"role": "assistant", "content": a})

    def score(self, query: str, notes: Sequence[str]) -> np.ndarray:
        if not notes:
            return np.zeros(0, np.float32)
        if len(notes) == 1 or self.max_workers == 1:
            return np.array([self._score_one(query, n) for n in notes], np.float32)
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(notes))) as pool:
            return np.array(list(pool.map(lambda n: self._score_one(query, n), notes)), np.float32)

    def _score_one(self, query: str, note: str) -> float:
        messages: list[ChatCompletionMessageParam] = [
            *self._prefix, {"role": "user", "content": _judge_prompt(query, note)}]
        try:
            resp = self.client.chat.completions.create(
                model=self.llm.model, messages=messages, temperature=0.0, max_tokens=1,
                logprobs=True, top_logprobs=self.top_logprobs,
            )  # fmt: skip
        except openai.APIConnectionError as e:
            raise RuntimeError(f"reranker LLM unreachable at {self.llm.base_url}: {e}") from e
        except openai.APIStatusError as e:
            log.warning("reranker request failed (%s): %s", e.status_code, str(e)[:200])
            return MISSING_LOGPROB
        return yes_logprob(resp)


def yes_logprob(resp: Any) -> float:
    """log of the total probability of "yes"-tokens at the first position (log 1e-6 if none)."""
    try:
        first = resp.choices[0].logprobs.content[0]
    except (AttributeError, IndexError, TypeError):
        return MISSING_LOGPROB
    cands = {c.token: c.logprob for c in (first.top_logprobs or []) if c.logprob is not None}
    if first.logprob is not None:
        cands.setdefault(first.token, first.logprob)
    p = sum(math.exp(lp) for tok, lp in cands.items() if tok.strip().lower() == "yes")
    return math.log(p) if p > 1e-6 else MISSING_LOGPROB


class CrossEncoderReranker:
    """sentence-transformers CrossEncoder (e.g. bge-reranker, Qwen3-Reranker seq-cls)."""

    def __init__(self, model_name: str, device: str = "cpu", max_length: int = 512,
                 local_files_only: bool = False, batch_size: int = 16):  # fmt: skip
        import torch
        from sentence_transformers import CrossEncoder

        try:
            self.model = CrossEncoder(
                model_name, device=device, max_length=max_length,
                local_files_only=local_files_only, activation_fn=torch.nn.Identity(),
            )  # fmt: skip
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"cannot load cross-encoder '{model_name}': {e}") from e
        self.batch_size = batch_size

    def score(self, query: str, notes: Sequence[str]) -> np.ndarray:
        if not notes:
            return np.zeros(0, np.float32)
        logits = np.asarray(
            self.model.predict(
                [(query, n) for n in notes], batch_size=self.batch_size, show_progress_bar=False
            ),
            np.float64,
        )
        if logits.ndim == 2 and logits.shape[1] >= 2:  # [no, yes] classes -> log softmax
            m = logits.max(axis=1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
            return (logits[:, -1] - lse).astype(np.float32)
        x = logits.reshape(-1)
        return (-np.logaddexp(0.0, -x)).astype(np.float32)  # log sigmoid


DEFAULT_CROSS_ENCODER = "BAAI/bge-reranker-base"


def load_reranker(cfg: VARSConfig, embedder: Embedder) -> Reranker | None:
    """The configured reranker; None for backend "none"."""
    rc = cfg.reranker
    if rc.backend == "none":
        return None
    if rc.backend == "embedding":
        return EmbeddingReranker(embedder)
    if rc.backend == "llm":
        return LLMReranker(resolve_llm(rc.llm, cfg))
    if rc.backend == "cross_encoder":
        return CrossEncoderReranker(rc.model or DEFAULT_CROSS_ENCODER, device=cfg.embedding.device)
    raise ValueError(f"unknown reranker backend: {rc.backend}")
