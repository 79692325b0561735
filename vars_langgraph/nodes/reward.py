"""reward: score the previous turn from this user message (the learned classifier by default,
keyword cues, or an LLM judge).

The state's `reward` carries, per turn: value r, gate g, the similarities the gate read, and
(added by update) the baseline b and the advantage A = g (r - b) that drove the update."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from vars_langgraph.engine import VARSEngine
from vars_langgraph.learning import reward as rw
from vars_langgraph.memory.store import BadInput, UserMemory, clean_pending
from vars_langgraph.models.reward_classifier import RewardPrediction
from vars_langgraph.nodes.retrieve import MAX_QUERY_CHARS
from vars_langgraph.state import VARSState, last_user_text, resolve_user_id, thread_id

JUDGE_MIN_CONFIDENCE = 0.6  # a less confident verdict of the LLM judge counts as no reward

log = logging.getLogger(__name__)


def judge(engine: VARSEngine, prev_query: str, answer: str, query: str) -> rw.JudgeVerdict | None:
    """Ask the configured judge model for a verdict on (q_t, a_t, q_{t+1})."""
    from vars_langgraph.models.llm import openai_client, resolve_llm

    llm = resolve_llm(engine.config.reward.judge, engine.config)
    user = f"Query: {prev_query}\nAnswer: {answer}\nNext message: {query}"
    resp = openai_client(llm).chat.completions.create(
        model=llm.model, temperature=0, max_tokens=128,
        messages=[{"role": "system", "content": rw.JUDGE_PROMPT}, {"role": "user", "content": user}],
    )
    return rw.parse_verdict(resp.choices[0].message.content or "")


def classify(engine: VARSEngine, query: str, sim_q: float | None) -> tuple[float | None, str | None, str]:
    """(r, label, reader) from the learned readers: the linear classifier, and with
    `reward.backend: finetuned` the fine-tuned reader beside it (`reward_reader.combine`) when it
    is fitted; (None, None, "keyword") when none loads (the caller uses the keyword reward). A
    message whose first sentence reads a complaint is one (`reward_reader.with_first_sentence`)."""
    from vars_langgraph.models.reward_classifier import load_classifier, reward_value
    from vars_langgraph.models.reward_reader import combine, load_reader, with_first_sentence

    clf = reader = None
    try:
        clf = load_classifier(engine.embedder)
    except Exception as e:  # noqa: BLE001 - the fine-tuned reader or the keyword reward still reads
        log.warning("reward classifier unavailable (%s)", e)
    if engine.config.reward.backend == "finetuned":
        try:
            reader = load_reader(engine.config)  # None (logged once) until it is fitted
        except Exception as e:  # noqa: BLE001 - a damaged fit: the linear classifier still reads
            log.warning("fine-tuned reaction reader unavailable (%s); using the classifier", e)

    used = {"classifier"}  # which readers gave the reading

    def read(text: str) -> RewardPrediction | None:
        linear = clf.predict(text, sim_q) if clf is not None else None
        tuned = None
        if reader is not None:
            try:
                tuned = reader.predict(text)
            except Exception as e:  # noqa: BLE001 - a damaged fit: the linear classifier still reads
                log.warning("fine-tuned reaction reader failed (%s); using the classifier", e)
        if tuned is None:
            return linear
        used.add("finetuned")
        return combine(tuned, linear)

    pred = with_first_sentence(read, query[:MAX_QUERY_CHARS])
    if pred is None:
        return None, None, "keyword"
    return reward_value(pred, sim_q), pred.label, "finetuned" if "finetuned" in used else "classifier"


def answer_link(engine: VARSEngine, user_id: str, pending: dict[str, Any], qvec: np.ndarray,
                query: str, thread: str) -> float:
    """How closely the message reads against the answer it follows and the user's stored cards
    (a statement that restates one, or answers what the answer proposed, is a reaction). Cards
    learned from this very message are not before it: the rules store a statement's card on the
    answer's path, before a background reward reads it (a source of this thread and message
    written after the answer was recorded)."""
    said, since = query[:500], pending.get("created_at")  # as `CardSource` keeps the query
    since = float(since) if isinstance(since, int | float) and np.isfinite(since) else np.inf
    stored = [sim for card, sim in engine.index.search(user_id, qvec, 4)
              if not any(s.thread_id == thread and s.query == said and s.created_at >= since
                         for s in card.sources)]
    answer = str(pending.get("answer") or "")
    sim_a = float(engine.embed_query(answer[:MAX_QUERY_CHARS]) @ qvec) if answer.strip() else 0.0
    return max([sim_a, *stored[:1]])


def make_reward(engine: VARSEngine, memory: UserMemory | None = None):
    """`memory`: where the pending feedback is read (default the engine's own)."""
    cfg = engine.config.reward
    memory = engine.memory if memory is None else memory

    def reward(state: VARSState, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        user_id = resolve_user_id(runtime, config)
        query = last_user_text(state.get("messages", []))
        if not query.strip():
            raise BadInput("the last message must be a non-empty user message")
        pending = clean_pending(memory.get_pending(user_id, thread_id(config)))
        if not pending:
            return {"query": query, "reward": None}
        qvec = engine.embed_query(query[:MAX_QUERY_CHARS])
        prev = np.asarray(pending.get("query_embedding") or [], np.float32)
        sim_q = float(prev @ qvec) if prev.shape == qvec.shape else None
        ui = engine.index.get(user_id)
        ids = [i for i in pending.get("selected_ids", []) if i in ui.rows]
        sim_next = float(np.max(ui.vectors(ids) @ qvec)) if ids else 0.0
        out: dict[str, Any] = {"sim_queries": sim_q, "sim_notes_query": pending.get("sim_notes_query"),
                               "sim_notes_next": sim_next, "backend": cfg.backend}
        if cfg.backend == "llm_judge":
            verdict = judge(engine, pending.get("query", ""), pending.get("answer", ""), query)
            if verdict is None or verdict.confidence < JUDGE_MIN_CONFIDENCE \
                    or verdict.label == "topic_shift":
                out.update(value=0.0, gate=0.0, label=verdict.label if verdict else None)
            else:
                out.update(value=verdict.reward, gate=verdict.confidence, label=verdict.label)
        else:
            value, label, reader = (classify(engine, query, sim_q)
                                    if cfg.backend in ("classifier", "finetuned")
                                    else (None, None, "keyword"))
            if value is None:
                value = rw.keyword_reward(query, sim_q)
            if value < 0 and (why := rw.not_a_reaction(query, lambda: max(
                    sim_q or 0.0, sim_next,
                    answer_link(engine, user_id, pending, qvec, query, thread_id(config))))):
                value, label = 0.0, "neutral"  # a new preference or request: no complaint
                out[why] = True
            out["backend"] = reader
            out.update(value=value, label=label,
                       gate=rw.gate(value, float(pending.get("sim_notes_query", 0.0)), sim_next))
        return {"query": query, "reward": out}

    return reward
