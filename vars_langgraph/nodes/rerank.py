"""rerank: s_i = s0_i + v_i . z_eff + VALUE_BETA u_i (+ lexical_weight bm25_i), s0_i = log
P(useful) (calibrated reranker score), u_i the card's learned value; pi = softmax(s / tau); up
to k of the eligible cards chosen by the policy (global cards compete like any other):
eligible means s_i >= log min_p and, for a conditional card, a condition that matches the
query (`eligible`). An empty selection is valid."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from vars_langgraph.engine import VARSEngine
from vars_langgraph.learning import card_value, policy
from vars_langgraph.learning.calibration import Calibration, calibration_key, load_calibration
from vars_langgraph.memory.consolidate import is_one_off
from vars_langgraph.memory.store import canonical_vector
from vars_langgraph.models.extraction.postprocess import named_task
from vars_langgraph.models.extraction.rules import only_states
from vars_langgraph.nodes.retrieve import MAX_QUERY_CHARS
from vars_langgraph.state import VARSState, message_text, resolve_user_id
from vars_langgraph.types import PreferenceCard

MAX_CANDIDATES = 64  # notes an LLM or cross-encoder reranker scores per turn


def calibrations(engine: VARSEngine) -> tuple[Calibration, Calibration]:
    """(map of the configured backend, map of the embedding cosine) from the calibration file."""
    cfg = engine.config
    path = cfg.reranker.calibration_path
    emb_key = f"embedding:{cfg.embedding.model}"
    key = calibration_key(cfg)
    emb = load_calibration(emb_key, path)
    return (emb if key == emb_key else load_calibration(key, path)), emb


def base_scores(engine: VARSEngine, query: str, candidates: list[dict[str, Any]],
                cals: tuple[Calibration, Calibration] | None = None) -> np.ndarray:
    """s0 = log P(useful | query, note) for each candidate.

    The embedding backend reuses the dense cosine (no re-encode); with K <= k the reranker is
    skipped, as in the method, and the calibrated cosine is used. Cards beyond the reranker's
    budget (`MAX_CANDIDATES`) rank below every reranked card, in cosine order."""
    rcfg = engine.config.reranker
    backend_cal, emb_cal = cals or calibrations(engine)
    dense = np.array([c["dense"] for c in candidates], np.float64)
    glob = np.array([bool(c.get("global")) for c in candidates])
    bonus = rcfg.global_bonus
    reranker = engine.reranker if rcfg.backend not in ("embedding", "none") else None
    if reranker is None or len(candidates) <= engine.config.retrieval.select_k:
        return emb_cal.log_p(dense, glob, bonus)
    head = candidates[:MAX_CANDIDATES]
    raw = np.asarray(reranker.score(query, [c["note"] for c in head]), np.float64)
    s0 = backend_cal.log_p(raw, glob[: len(head)], bonus)
    if len(head) < len(candidates):
        tail = emb_cal.log_p(dense[len(head):], glob[len(head):], bonus)
        s0 = np.concatenate([s0, s0.min() - 1.0 + tail - tail.max()])
    return s0


# conditions that hold for any request: a card whose condition is near one of these (cosine
# >= CONDITION_GENERIC, chosen on the tuning half) is not gated by its condition
CONDITION_GENERIC = 0.3
GENERIC_CONDITIONS = ("responding to the user", "answering any question", "in general",
                      "any request")
_GENERIC: weakref.WeakKeyDictionary[VARSEngine, np.ndarray] = weakref.WeakKeyDictionary()
_GENERIC_LOCK = threading.Lock()


def generic_vectors(engine: VARSEngine) -> np.ndarray:
    """GENERIC_CONDITIONS embedded once per engine (float16-rounded, as stored conditions)."""
    with _GENERIC_LOCK:
        vecs = _GENERIC.get(engine)
    if vecs is None:
        vecs = np.stack([canonical_vector(v) for v in
                         engine.embedder.embed_documents(list(GENERIC_CONDITIONS))])
        with _GENERIC_LOCK:
            _GENERIC[engine] = vecs
    return vecs


def condition_vectors(engine: VARSEngine, user_id: str, ui: Any,
                      cards: dict[int, PreferenceCard]) -> np.ndarray:
    """The condition vectors of these cards (position -> card), in order: the ones stored
    with the cards (`UserIndex.condition_vectors`, no model call); a card stored without one
    (written before they were) is embedded here, once per process (`condition_embedder`),
    and the next card write stores it (`VARSEngine.note_conditions`)."""
    ids = [c.id for c in cards.values()]
    vecs, has = ui.condition_vectors(ids)
    if not has.all():
        miss = np.flatnonzero(~has).tolist()
        cs = list(cards.values())
        embs = engine.condition_embedder.embed_documents([cs[j].condition for j in miss])
        found = {}
        for j, e in zip(miss, embs, strict=True):
            vecs[j] = canonical_vector(e)
            found[cs[j].id] = (cs[j].condition, vecs[j])
        engine.note_conditions(user_id, found)
    return vecs


def condition_sims(engine: VARSEngine, ui: Any, qvec: np.ndarray,
                   candidates: list[dict[str, Any]], rows: list[int],
                   user_id: str) -> dict[int, float]:
    """Cosine of the query with the condition of each candidate in `rows` whose condition is
    specific (global cards, generic conditions and unreadable cards are left out: there is no
    condition to check)."""
    conds: dict[int, PreferenceCard] = {}
    for i in rows:
        c = candidates[i]
        if c.get("global"):
            continue
        card = ui.cards.get(c["id"])
        if card is not None and card.condition.strip():
            conds[i] = card
    if not conds:
        return {}
    vecs = condition_vectors(engine, user_id, ui, conds)
    generic = (vecs @ generic_vectors(engine).T).max(1)
    sims = vecs @ np.asarray(qvec, np.float32).ravel()
    return {i: sim for i, sim, g in zip(conds, sims.tolist(), generic.tolist(), strict=True)
            if g < CONDITION_GENERIC}


# two conditions this close (MiniLM cosine) are one task ("writing code" / "coding" 0.77,
# "math problems" / "doing math" 0.66; "logic puzzles" / "math problems" 0.55 are two)
SAME_TASK = 0.6


def other_tasks(engine: VARSEngine, ui: Any, candidates: list[dict[str, Any]],
                sims: dict[int, float], margin: float, user_id: str) -> set[int]:
    """The candidates (keys of `sims`) whose condition is another task than the one the query
    reads as: more than `margin` below the best-matching condition among them, and neither
    within `SAME_TASK` of it nor naming the same task (`named_task`). MiniLM puts every
    "... problems" condition near a problem the user pasted, but the user's own task still
    reads best (docs/memory-hygiene.md §12)."""
    if len(sims) < 2:
        return set()
    ids = list(sims)
    cards = {i: ui.cards[candidates[i]["id"]] for i in ids}
    vecs = condition_vectors(engine, user_id, ui, cards)
    best = max(ids, key=sims.__getitem__)
    same = vecs @ vecs[ids.index(best)]
    task = named_task(cards[best].condition)
    return {i for i, near in zip(ids, same.tolist(), strict=True)
            if sims[i] < sims[best] - margin and near < SAME_TASK
            and not (task and named_task(cards[i].condition) == task)}


STATEMENT_CHARS = 300  # a longer message holds a task too (a pasted problem with a preference)


def thread_topic(messages: Sequence[Any]) -> list[str]:
    """The thread's first and previous user messages (before the latest one): what a
    follow-up ("And in reverse?", "Walk me through the last step again") is about. A short
    message that only states preferences ("I mostly write TypeScript, no comments please") is
    no task: "Any tips to sleep better?" after it is not about code."""
    humans = [message_text(m) for m in messages if getattr(m, "type", None) == "human"][:-1]
    return list(dict.fromkeys(t for t in humans[:1] + humans[-1:] if t.strip() and not (
        len(t) <= STATEMENT_CHARS and only_states(t))))


def eligible(engine: VARSEngine, ui: Any, query: str, candidates: list[dict[str, Any]],
             s: np.ndarray, k: int, user_id: str, context: Sequence[str] = ()) -> np.ndarray:
    """Which candidates may be injected (docs/memory-hygiene.md): calibrated score s at least
    log `memory.min_p`; not a one-off request (`memory.consolidate.is_one_off`); for conditional
    cards among the best, a condition that matches the query (cosine >=
    `memory.condition_min`) or, when the query names no task, with one of the `context`
    messages (`thread_topic`: a follow-up is about its thread's task), or that names a task
    the query or those messages name (`named_task`: MiniLM puts "How do I reverse a list in
    Python?" at 0.10 from "writing code"); and, with `memory.condition_margin` set, whose
    condition is not another task than the best-matching one (`other_tasks`). An empty set is
    a valid answer."""
    mcfg = engine.config.memory
    ok = np.ones(len(candidates), bool)
    if mcfg.min_p > 0:
        ok &= s >= np.log(mcfg.min_p)
    if not mcfg.consolidate and mcfg.condition_min is None:
        return ok
    top = [int(i) for i in np.argsort(-np.where(ok, s, -np.inf), kind="stable")[: 3 * k]
           if ok[i]]
    if mcfg.consolidate:  # a request is not a preference: never injected (and archived later)
        for i in top:
            card = ui.cards.get(candidates[i]["id"])
            if card is not None and is_one_off(card):
                ok[i] = False
        top = [i for i in top if ok[i]]
    if mcfg.condition_min is not None and query.strip():
        qvec = engine.embed_query(query[:MAX_QUERY_CHARS])
        task = named_task(query[:MAX_QUERY_CHARS])  # by its words ("... in Python?": code)
        if task:  # a question that names its task is not a follow-up
            context = ()
        tasks = {task, *(named_task(t[:MAX_QUERY_CHARS]) for t in context)} - {None}
        sims = condition_sims(engine, ui, qvec, candidates, top[: 2 * k], user_id)
        for text in context if sims else ():  # a follow-up keeps its thread's task
            csims = condition_sims(engine, ui, engine.embed_query(text[:MAX_QUERY_CHARS]),
                                   candidates, list(sims), user_id)
            sims = {i: max(v, csims.get(i, v)) for i, v in sims.items()}
        below = {i for i, sim in sims.items() if sim < mcfg.condition_min}
        if mcfg.condition_margin is not None:
            below |= other_tasks(engine, ui, candidates, sims, mcfg.condition_margin, user_id)
        for i in below:
            card = ui.cards.get(candidates[i]["id"])
            ok[i] = card is not None and named_task(card.condition) in tasks
    return ok


def make_rerank(engine: VARSEngine):
    pcfg = engine.config.policy
    mcfg = engine.config.memory
    k = engine.config.retrieval.select_k
    cals: list[tuple[Calibration, Calibration]] = []
    rng = np.random.default_rng(pcfg.seed)
    rng_lock = threading.Lock()

    def rerank(state: VARSState, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        user_id = resolve_user_id(runtime, config)
        candidates = [dict(c) for c in state.get("candidates", [])]
        if candidates:
            ui = engine.index.get(user_id)
            candidates = [c for c in candidates if c["id"] in ui.rows]
        # the candidates' learned values only: a long-lived user has one per card ever injected
        user = engine.load_vector(user_id, [c["id"] for c in candidates])
        if not candidates:  # none, or all forgotten since retrieve ran (a concurrent forget)
            return {"candidates": [], "selected": [], "user_vector": user.norms()}
        if not cals:
            cals.append(calibrations(engine))
        s0 = base_scores(engine, state.get("query", ""), candidates, cals[0])
        items = engine.item_vectors(ui.vectors([c["id"] for c in candidates]))
        s = policy.scores(s0, items, policy.effective_z(user, pcfg))
        if pcfg.learning and card_value.VALUE_BETA:  # learned card values (learning/card_value.py)
            s = s + card_value.VALUE_BETA * np.array(
                [card_value.value_of(user.card_values, c["id"]) for c in candidates])
        if mcfg.lexical_weight:  # the user's own words (hybrid retrieval's BM25, in [0, 1])
            s = s + mcfg.lexical_weight * np.array([c.get("lexical", 0.0) for c in candidates])
        pi = policy.softmax(s, pcfg.tau)
        ok = eligible(engine, ui, state.get("query", ""), candidates, s, k, user_id,
                      thread_topic(state.get("messages", [])))
        sample = pcfg.selection == "sample" and pcfg.learning and int(ok.sum()) > k
        with rng_lock:
            picked = policy.select(s[ok], k, pcfg.tau, sample=sample, rng=rng)
        index = np.flatnonzero(ok)
        chosen = [int(index[i]) for i in picked]
        rank = {i: r for r, i in enumerate(chosen)}
        for i, c in enumerate(candidates):
            c.update(rerank=round(float(s0[i]), 6), score=round(float(s[i]), 6),
                     pi=float(pi[i]), chosen=i in rank, rank=rank.get(i))
        return {"candidates": candidates, "selected": [candidates[i] for i in chosen],
                "user_vector": user.norms()}

    return rerank
