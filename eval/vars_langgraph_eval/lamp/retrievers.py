"""Profile retrievers for LaMP: none, BM25 (bm25s), recency, dense (the embedder) and the VARS
policy (cards from profile items, a user vector learned from per-item feedback).

Every retriever maps a `Request` (query, one document per profile item) to profile indices,
best first. Learned retrievers (ROPG) and the selector (RSPG) live in `ropg.py` / `rspg.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vars_langgraph.config import PolicyConfig
from vars_langgraph.learning.policy import (
    UserVector,
    effective_z,
    item_vectors,
    reinforce_update,
    scores,
    select,
    softmax,
)
from vars_langgraph.models.base import Embedder
from vars_langgraph.models.embedder import CachedEmbedder
from vars_langgraph_eval.lamp.data import Question, normalise_task
from vars_langgraph_eval.lamp.prompts import corpus, retrieval_query


@dataclass
class Request:
    """What a retriever sees: the task, the input, its query and one document per item."""

    task: str
    question: Question
    query: str
    docs: list[str]

    @property
    def profile(self) -> list[dict[str, Any]]:
        return self.question.profile


def make_request(task: str, q: Question, use_date: bool = False) -> Request:
    """Official query and corpus for a question (`use_date`: ROPG's ' date: ...' suffix)."""
    t = normalise_task(task)
    return Request(t, q, retrieval_query(t, q.input), corpus(t, q.profile, use_date))


class Retriever(Protocol):
    """Ranks a request's profile items; returns at most k indices, best first."""

    name: str

    def retrieve(self, req: Request, k: int) -> list[int]: ...


class NoRetriever:
    """No personalisation: the input alone."""

    name = "none"

    def retrieve(self, req: Request, k: int) -> list[int]:
        return []


class BM25Retriever:
    """BM25 on whitespace tokens (`x.split()`), as rank_bm25.BM25Okapi in the official code.

    bm25s 'robertson' scoring (k1 1.5, b 0.75); a query word repeated n times counts n times,
    as in BM25Okapi. Differences: idf is floored at 0 (BM25Okapi: 0.25 x mean idf) and scores
    lack the constant (k1 + 1) factor, which does not change the order. Ties: as get_top_n.
    """

    name = "bm25"

    def scores(self, req: Request) -> np.ndarray:
        import bm25s

        n = len(req.docs)
        toks = req.query.split()
        if n == 0 or not toks:
            return np.zeros(n)
        index = bm25s.BM25(method="robertson", k1=1.5, b=0.75)
        index.index([d.split() for d in req.docs], show_progress=False)
        counts = Counter(toks)
        out = np.zeros(n)
        for c in sorted(set(counts.values())):
            group = [t for t, m in counts.items() if m == c]
            out += c * np.asarray(index.get_scores(group), dtype=np.float64)
        return out

    def retrieve(self, req: Request, k: int) -> list[int]:
        if not req.docs or k <= 0:
            return []
        return [int(i) for i in np.argsort(self.scores(req))[::-1][:k]]


def _date_key(p: dict[str, Any]) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(p["date"]).split("-"))
    except (KeyError, ValueError):
        return (0,)  # undated items count as the oldest (the official code would fail)


class RecencyRetriever:
    """The k most recent items by date (YYYY-MM-DD as an int tuple), most recent first."""

    name = "recency"

    def retrieve(self, req: Request, k: int) -> list[int]:
        if k <= 0:
            return []
        order = sorted(range(len(req.profile)), key=lambda i: _date_key(req.profile[i]))
        return order[-k:][::-1]


class EmbeddingCache:
    """The retrievers' view of an embedder: `docs`/`query` through the one embedding cache
    (`models.embedder.CachedEmbedder`; profiles repeat across inputs)."""

    def __init__(self, embedder: Embedder, max_items: int = 50_000):
        self.embedder = embedder
        self.dim = int(embedder.dim)
        self._cached = CachedEmbedder(embedder, max_items)

    def docs(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached.embed_documents(texts)

    def query(self, text: str) -> np.ndarray:
        return self._cached.embed_query(text)


class DenseRetriever:
    """Cosine similarity of the configured embedder (the papers use Contriever here)."""

    name = "dense"

    def __init__(self, embeddings: EmbeddingCache):
        self.emb = embeddings

    def scores(self, req: Request) -> np.ndarray:
        if not req.docs:
            return np.zeros(0)
        return self.emb.docs(req.docs) @ self.emb.query(req.query)

    def retrieve(self, req: Request, k: int) -> list[int]:
        if not req.docs or k <= 0:
            return []
        return [int(i) for i in np.argsort(-self.scores(req), kind="stable")[:k]]


# ---- VARS policy -------------------------------------------------------------------------------

# What a held-out profile item asks (its pseudo-query) and what it answers (its label), per task.
_PSEUDO_QUERY = {1: "title", 2: "description", 3: "text", 4: "text", 5: "abstract", 6: "text",
                 7: "text"}
_LABEL = {1: "title", 2: "tag", 3: "score", 4: "title", 5: "title", 6: "title", 7: "text"}


def profile_feedback(task: str, held_out: dict[str, Any], candidate: dict[str, Any]) -> float:
    """Usefulness in [0, 1] of `candidate` for predicting `held_out`'s own label.

    LaMP-2: same tag; LaMP-3: 1 - |score difference| / 4; others: ROUGE-1 F between the
    labels (titles; LaMP-1 and LaMP-7 have no label and compare titles / tweet texts).
    """
    from vars_langgraph_eval.lamp.metrics import rouge_pair

    n = int(normalise_task(task)[-1])
    a, b = held_out.get(_LABEL[n], ""), candidate.get(_LABEL[n], "")
    if n == 2:
        return float(str(a).strip() == str(b).strip())
    if n == 3:
        try:
            return 1.0 - abs(float(a) - float(b)) / 4.0
        except (TypeError, ValueError):
            return 0.0
    return rouge_pair(str(b), str(a))["rouge-1"]


Feedback = Callable[[str, dict[str, Any], dict[str, Any]], float]


class VARSPolicyRetriever:
    """VARS's policy over profile cards: s_i = s0_i + v_i . z_eff, top-k (vars-method.md step 3).

    Cards are the profile items (note = the retrieval document), s0 = scale x cosine to the
    query, v_i the item vectors of the centred embeddings. The user vector is learned before
    answering, from per-item feedback on the profile itself: each of up to `pseudo_queries`
    held-out items is a pseudo-query, k cards are sampled from pi among its `candidates`
    nearest others, and the reward 2 x mean feedback - 1 drives `reinforce_update` (step 7).
    """

    name = "vars"

    def __init__(
        self,
        embeddings: EmbeddingCache,
        policy: PolicyConfig | None = None,
        candidates: int = 16,
        pseudo_queries: int = 32,
        epochs: int = 2,
        scale: float = 10.0,
        feedback: Feedback = profile_feedback,
        seed: int = 0,
    ):
        self.emb = embeddings
        self.cfg = policy or PolicyConfig()
        self.candidates = candidates
        self.pseudo_queries = pseudo_queries
        self.epochs = epochs
        self.scale = scale
        self.feedback = feedback
        self.seed = seed
        self.last_user: UserVector | None = None

    def _items(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        e = self.emb.docs(req.docs)
        return e, item_vectors(e - e.mean(axis=0), self.cfg.item_dim)

    def learn_user(self, req: Request, k: int, e: np.ndarray, v: np.ndarray) -> UserVector:
        """REINFORCE on leave-one-out pseudo-queries from the profile (per-item feedback)."""
        n = int(normalise_task(req.task)[-1])
        user = UserVector.zeros(v.shape[1])
        prof = req.profile
        if len(prof) < 2:
            return user
        rng = np.random.default_rng(self.seed)
        held = rng.permutation(len(prof))[: self.pseudo_queries]
        field = _PSEUDO_QUERY[n]
        q = self.emb.docs([str(prof[j].get(field, req.docs[j])) for j in held])
        for _ in range(self.epochs):
            for qi, j in enumerate(held):
                others = np.array([i for i in range(len(prof)) if i != j])
                s0_all = self.scale * (e[others] @ q[qi])
                cand = others[np.argsort(-s0_all, kind="stable")[: self.candidates]]
                s0 = self.scale * (e[cand] @ q[qi])
                s = scores(s0, v[cand], effective_z(user, self.cfg))
                pi = softmax(s, self.cfg.tau)
                chosen = select(s, k, self.cfg.tau, sample=True, rng=rng)
                fb = [self.feedback(req.task, prof[j], prof[cand[c]]) for c in chosen]
                reward = 2.0 * float(np.mean(fb)) - 1.0
                reinforce_update(user, v[cand], pi, chosen, reward, 1.0, self.cfg)
        return user

    def retrieve(self, req: Request, k: int) -> list[int]:
        if not req.docs or k <= 0:
            return []
        e, v = self._items(req)
        user = self.learn_user(req, k, e, v)
        self.last_user = user
        s0 = self.scale * (e @ self.emb.query(req.query))
        s = scores(s0, v, effective_z(user, self.cfg))
        return select(s, k, self.cfg.tau)
