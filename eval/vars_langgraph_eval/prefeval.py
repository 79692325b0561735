"""`vars-langgraph eval prefeval`: PrefEval (Zhao et al., ICLR 2025) with this memory and its
rivals side by side.

Each simulated user states several PrefEval preferences from different topics (explicitly, in a
persona conversation, or by picking an option), then chats N unrelated turns (PrefEval's
distractors), then asks each preference's question. Every turn goes through a real graph on
its own SQLite store, FAISS index and MiniLM embeddings; the assistant turns of the stated
conversations and the distractors are PrefEval's recorded replies (as in PrefEval), so only the
questions are answered by a model, and only when a judge is configured.
Each question is asked on its own thread, forked from the conversation after the distractors
(the questions do not see each other's history; the store keeps what earlier questions wrote).

| method | prompt memory |
|---|---|
| none | nothing: the conversation history only, trimmed to the context window |
| vars | VARS with the configured defaults (extract -> retrieve -> rerank + user vector) |
| rag | VARS without the user vector |
| all | every card of the user |
| lgstore | LangGraph `BaseStore.search` over the raw user messages (same MiniLM), top-k |
| dense3 (reference) | dense top-k over the raw preference statements only (no graph) |

CPU metrics: preference in prompt (a card learned from the preference's turns, by card
provenance, or for lgstore the raw statement, reached the prompt of its question), the same
counting the trimmed history too, extraction coverage, notes and memory tokens per prompt,
cards created per distractor turn, latency per turn. With `--judge-base-url`: the answer is
generated and scored by PrefEval's four checks (prefeval_judge.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

import numpy as np
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langgraph.graph.message import add_messages

from vars_langgraph.types import Preference
from vars_langgraph_eval.prefeval_data import (
    FORMS,
    Item,
    SimUser,
    build_users,
    default_data_dir,
    list_topics,
    load_distractors,
    load_items,
    split_topics,
)
from vars_langgraph_eval.stats import percentile

log = logging.getLogger(__name__)

ALL = 100_000
METHODS: dict[str, str] = {
    "none": "no memory: conversation history only, trimmed to the context window",
    "vars": "VARS, configured defaults",
    "rag": "VARS retrieval + rerank, no user vector",
    "all": "every card of the user in the prompt",
    "lgstore": "LangGraph BaseStore.search over raw user messages (MiniLM), top-k",
}
OVERRIDES: dict[str, dict[str, Any]] = {
    "none": {"extractor": {"enabled": False}},
    "vars": {},
    "rag": {"policy": {"use_long": False, "use_short": False}},
    # every card the memory keeps, past the selection's gates: the extraction ceiling
    "all": {"retrieval": {"top_k": ALL, "select_k": ALL, "max_global": ALL},
            "policy": {"use_long": False, "use_short": False},
            "memory": {"min_p": 0.0, "condition_min": None, "condition_margin": None}},
    "lgstore": {"extractor": {"enabled": False}},
}
REFERENCE = "dense3"
DENSE_K = 3  # the reference is issue 11's yardstick: dense top-3 over the raw statements
QUESTION_STUB = "(answer not generated: no judge configured)"


@dataclass
class Settings:
    data_dir: str
    forms: list[str] = field(default_factory=lambda: ["explicit", "implicit-persona"])
    topics: list[str] = field(default_factory=list)
    topic_split: str = "report"
    inter_turns: list[int] = field(default_factory=lambda: [0, 10, 300])
    users: int = 3
    prefs_per_user: int = 10
    seed: int = 0
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    extractor: str = "config"
    store_k: int | None = None  # lgstore top-k (default: retrieval.select_k)
    config_file: str | None = None
    vars_overrides: dict[str, Any] = field(default_factory=dict)
    judge_base_url: str | None = None
    judge_model: str = "local"
    judge_prompts: str | None = None
    extraction_cache: str | None = None


# ----------------------------------------------------------------------- model stand-ins


class ReplayChat(BaseChatModel):
    """The answering model of the benchmark: replays PrefEval's recorded assistant turn when one
    is queued, else asks `live` (the configured chat model) or returns a stub."""

    queue: list[str] = []
    live: Any = None

    @property
    def _llm_type(self) -> str:
        return "prefeval-replay"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        if self.queue:
            text = self.queue.pop(0)
        elif self.live is not None:
            return ChatResult(generations=[ChatGeneration(message=self.live.invoke(messages))])
        else:
            text = QUESTION_STUB
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])


class CachingExtractor:
    """Wraps the extractor: the same window (same turns) gives the same preferences (greedy
    decoding), so each distinct window is extracted once across methods, users and N. Records
    the seconds of every real extraction. With `path`, `extract` results also persist in a JSON
    file (`--extraction-cache`), so a rerun with the same extractor skips the LLM calls. Cards
    read from that file go through today's output checks (`postprocess`, which every model
    output goes through) when the extractor is the built-in one, so a cache written before a
    check was added gives what a fresh run would (a card an older check dropped stays dropped)."""

    def __init__(self, inner: Any, path: str | Path | None = None):
        self.inner = inner
        self.with_rules = getattr(inner, "with_rules", False)  # the graph treats it as the inner
        self._cache: dict[tuple[str, ...], Any] = {}
        self.seconds: list[float] = []
        self.hits = 0
        self.path = Path(path) if path else None
        self._disk: dict[str, list[dict[str, Any]]] = {}
        if self.path and self.path.exists():
            self._disk = json.loads(self.path.read_text())

    def _cached(self, name: str, turns: Sequence[tuple[str, str]]) -> Any:
        key = (name, *(f"{r}\x00{t}" for r, t in turns))
        if key in self._cache:
            self.hits += 1
            return self._cache[key]
        disk_key = json.dumps(key[1:])
        if name == "extract" and disk_key in self._disk:
            self.hits += 1
            out = [Preference(**p) for p in self._disk[disk_key]]
            if self.with_rules:
                from vars_langgraph.models.extraction.postprocess import postprocess

                out = postprocess(out, [tuple(t) for t in turns])
        else:
            t0 = time.perf_counter()
            out = getattr(self.inner, name)(turns)
            self.seconds.append(time.perf_counter() - t0)
            if name == "extract" and self.path:
                self._disk[disk_key] = [p.model_dump() for p in out]
                self.path.write_text(json.dumps(self._disk))
        self._cache[key] = out
        return out

    def extract(self, turns: Sequence[tuple[str, str]]) -> Any:
        return self._cached("extract", turns)

    def extract_detailed(self, turns: Sequence[tuple[str, str]]) -> Any:
        return self._cached("extract_detailed", turns)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# ----------------------------------------------------------------------- LangGraph store baseline


class StoreState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    selected: list[dict[str, Any]]
    system_prompt: str


def build_store_graph(store: Any, chat: Any, k: int, prompt_cfg: Any, reserve: int) -> Any:
    """What a LangGraph user does today: every user message goes into the graph's `BaseStore`
    (semantic index), and `store.search(query=...)` puts the top-k earlier messages into the
    system prompt, rendered like VARS notes."""
    from langgraph.graph import END, START, StateGraph

    from vars_langgraph.nodes.augment import render_system_prompt
    from vars_langgraph.nodes.generate import prompt_messages
    from vars_langgraph.state import last_user_text

    def respond(state: StoreState, config: RunnableConfig) -> dict[str, Any]:
        conf = config.get("configurable", {})
        ns = ("prefeval", str(conf["user_id"]), "messages")
        msgs = state.get("messages", [])
        text = last_user_text(msgs)
        turn = sum(1 for m in msgs if getattr(m, "type", "") == "human")
        hits = store.search(ns, query=text[:8000], limit=k) if k else []
        store.put(ns, f"{conf['thread_id']}:{turn}",
                  {"text": text, "thread": str(conf["thread_id"]), "turn": turn})
        selected = [{"id": h.key, "note": h.value["text"], "thread": h.value["thread"],
                     "turn": h.value["turn"]} for h in hits]
        system = render_system_prompt(selected, prompt_cfg)
        reply = chat.invoke(prompt_messages(system, msgs, prompt_cfg.max_context_tokens, reserve,
                                            prompt=prompt_cfg))
        return {"messages": [reply], "selected": selected, "system_prompt": system}

    b = StateGraph(StoreState)
    b.add_node("respond", respond)
    b.add_edge(START, "respond")
    b.add_edge("respond", END)
    return b.compile(store=store, name="lgstore")


# ----------------------------------------------------------------------- one method, one setting


def method_config(method: str, settings: Settings, data_dir: Path) -> Any:
    import yaml

    from vars_langgraph.config import VARSConfig, _merge

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    base: dict[str, Any] = {}
    if settings.config_file:
        base = yaml.safe_load(Path(settings.config_file).read_text()) or {}
    data = _merge(_merge(base, settings.vars_overrides), OVERRIDES[method])
    return VARSConfig.from_dict(_merge(data, {"data_dir": str(data_dir), "storage": "sqlite"}))


def _keep_gate(config: Any, extractor: CachingExtractor | None) -> Any:
    """The extraction gate runs by default for the built-in LLM extractors only (checked by
    type); the cache wrapper hides the type, so say it explicitly unless the config does."""
    ecfg = config.extractor
    if extractor is None or "gate" not in type(ecfg).model_fields or ecfg.gate is not None:
        return config
    from vars_langgraph.models.extraction.llm_backend import LLMExtractor
    from vars_langgraph.models.extraction.transformers_backend import TransformersExtractor

    builtin = (LLMExtractor, TransformersExtractor)
    if not isinstance(extractor.inner, builtin):
        return config
    return config.model_copy(update={"extractor": ecfg.model_copy(update={"gate": True})})


def _memory_tokens(system: str, base: str) -> int:
    if not system or system == base:
        return 0
    return max(0, count_tokens_approximately([SystemMessage(system)])
               - count_tokens_approximately([SystemMessage(base)]))


class Conversation:
    """Runs one method's graph over users' conversations and records each question."""

    def __init__(self, method: str, settings: Settings, work: Path, embedder: Any,
                 extractor: CachingExtractor | None, live_chat: Any):
        self.method = method
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        self.config = _keep_gate(method_config(method, settings, work), extractor)
        self.replay = ReplayChat(live=live_chat)
        self.store_k = settings.store_k or self.config.retrieval.select_k
        self.engine = None
        if method == "lgstore":
            from langgraph.store.memory import InMemoryStore

            store = InMemoryStore(index={
                "dims": embedder.dim, "fields": ["text"],
                "embed": lambda texts: np.asarray(embedder.embed_documents(list(texts))).tolist()})
            self.graph = build_store_graph(store, self.replay, self.store_k, self.config.prompt,
                                           self.config.llm.max_tokens)
            self._closers: list[Any] = []
        else:
            from vars_langgraph.engine import VARSEngine
            from vars_langgraph.graph import build_graph
            from vars_langgraph.storage import open_store

            store = open_store(self.config)
            self.engine = VARSEngine(self.config, store, index_dir=work / "index",
                                     embedder=embedder, extractor=extractor,
                                     chat_model=self.replay)
            self.graph = build_graph(self.config, engine=self.engine, checkpointer=False)
            self._closers = [getattr(store, "conn", None)]
        self.turn_ms: dict[str, list[float]] = {"statement": [], "distractor": [], "question": []}

    def close(self) -> None:
        for c in self._closers:
            if c is not None:
                c.close()

    def invoke(self, user_id: str, thread: str, history: list[BaseMessage], text: str,
               reply: str | None, phase: str) -> tuple[list[BaseMessage], dict[str, Any]]:
        self.replay.queue = [reply] if reply is not None else []
        cfg = {"configurable": {"thread_id": thread, "user_id": user_id}}
        t0 = time.perf_counter()
        out = self.graph.invoke({"messages": [*history, HumanMessage(text)]}, cfg)
        self.turn_ms[phase].append(1000 * (time.perf_counter() - t0))
        return list(out["messages"]), out

    def cards(self, user_id: str) -> dict[str, Any]:
        return dict(self.engine.index.get(user_id).cards) if self.engine else {}

    def run_user(self, user: SimUser, items: list[Item], distractors: list[tuple[str, str]],
                 judge: Any, bar: Any) -> dict[str, Any]:
        uid, main = user.user_id, f"{user.user_id}-main"
        history: list[BaseMessage] = []
        turns: dict[str, set[int]] = {}
        texts: dict[str, set[str]] = {}
        n = 0
        for it in items:
            for utext, reply in it.turns:
                n += 1
                turns.setdefault(it.key, set()).add(n)
                texts.setdefault(it.key, set()).add(utext)
                history, _ = self.invoke(uid, main, history, utext, reply, "statement")
                bar.update(1)
        after_statements = self.cards(uid)
        covered: dict[str, bool | None] = {
            it.key: any(self._from(c, main, turns[it.key]) for c in after_statements.values())
            if self.engine is not None and self.config.extractor.enabled else None
            for it in items}
        for utext, reply in distractors:
            history, _ = self.invoke(uid, main, history, utext, reply, "distractor")
            bar.update(1)
        after_distractors = self.cards(uid)
        questions = []
        for j, it in enumerate(items):
            msgs, out = self.invoke(uid, f"{uid}-q{j:02d}", history, it.question,
                                    None if judge else QUESTION_STUB, "question")
            questions.append(self._record(uid, main, it, turns[it.key], texts[it.key], msgs, out,
                                          covered[it.key], judge))
            bar.update(1)
        return {"user": uid, "questions": questions,
                "cards_after_statements": len(after_statements),
                "cards_after_distractors": len(after_distractors),
                "distractor_turns": len(distractors),
                "new_cards_in_distractors": len(set(after_distractors) - set(after_statements))}

    @staticmethod
    def _from(card: Any, thread: str, turns: set[int]) -> bool:
        return any(s.thread_id == thread and s.turn in turns for s in card.sources)

    def _record(self, uid: str, main: str, it: Item, turns: set[int], texts: set[str],
                msgs: list[BaseMessage], out: dict[str, Any], covered: bool | None,
                judge: Any) -> dict[str, Any]:
        """One question's record. It names the item, cards and store hits by key, never by
        text: PrefEval's texts (CC BY-NC) must not travel with results into a repository."""
        from vars_langgraph.nodes.generate import prompt_messages

        selected = out.get("selected", []) or []
        own: list[dict[str, Any]] = []  # the preference's own cards: candidate? chosen? score
        if self.method == "lgstore":
            hit = any(s["thread"] == main and s["turn"] in turns for s in selected)
        else:
            cards = self.cards(uid)
            hit = any(s["id"] in cards and self._from(cards[s["id"]], main, turns) for s in selected)
            cands = {c["id"]: c for c in out.get("candidates", []) or []}
            for cid, card in cards.items():
                if self._from(card, main, turns):
                    c = cands.get(cid, {})
                    own.append({"id": cid, "candidate": cid in cands,
                                "score": c.get("score"), "dense": c.get("dense"),
                                "chosen": bool(c.get("chosen"))})
        system = out.get("system_prompt") or self.config.prompt.base_system
        prompt = prompt_messages(system, msgs[:-1], self.config.prompt.max_context_tokens,
                                 self.config.llm.max_tokens, prompt=self.config.prompt)
        in_history = any(m.type == "human" and m.content in texts for m in prompt[1:-1])
        rec = {"item": it.key, "topic": it.topic, "card_in_prompt": hit,
               "in_history": in_history, "in_prompt": hit or in_history,
               "covered": covered, "notes": len(selected),
               "own_cards": own, "selected": [x.get("id") or f"{x.get('thread')}#{x.get('turn')}"
                                              for x in selected],
               "memory_tokens": _memory_tokens(system, self.config.prompt.base_system),
               "prompt_tokens": count_tokens_approximately(prompt)}
        if judge is not None:
            from vars_langgraph_eval.prefeval_judge import judge_answer

            answer = str(msgs[-1].content)
            rec["answer"] = answer
            rec["verdict"] = judge_answer(judge["complete"], it.preference, it.question, answer,
                                          judge["prompts"]).to_dict()
        return rec


# ----------------------------------------------------------------------- reference: dense top-k


def dense_reference(users: list[SimUser], items: dict[str, Item], embedder: Any,
                    k: int) -> list[dict[str, Any]]:
    """Dense top-k over the raw user statements of the preferences only (no graph, no noise)."""
    out = []
    for u in users:
        its = [items[f"{t}#{i}"] for t, i in u.picks]
        texts = [(it.key, t) for it in its for t, _ in it.turns]
        docs = np.asarray(embedder.embed_documents([t for _, t in texts]), np.float32)
        for it in its:
            q = np.asarray(embedder.embed_query(it.question), np.float32)
            top = np.argsort(-(docs @ q))[:k]
            hit = any(texts[i][0] == it.key for i in top)
            out.append({"item": it.key, "topic": it.topic, "card_in_prompt": hit,
                        "in_history": False, "in_prompt": hit, "covered": True,
                        "notes": int(len(top)), "memory_tokens": None, "prompt_tokens": None})
    return out


# ----------------------------------------------------------------------- aggregation


def _mean(xs: Sequence[Any]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def summarize(users: list[dict[str, Any]], turn_ms: dict[str, list[float]] | None) -> dict[str, Any]:
    qs = [q for u in users for q in u["questions"]]
    out: dict[str, Any] = {
        "questions": len(qs),
        "card_in_prompt": _mean([q["card_in_prompt"] for q in qs]),
        "in_prompt": _mean([q["in_prompt"] for q in qs]),
        "in_history": _mean([q["in_history"] for q in qs]),
        "coverage": _mean([q["covered"] for q in qs]),
        "notes": _mean([q["notes"] for q in qs]),
        "memory_tokens": _mean([q["memory_tokens"] for q in qs]),
        "prompt_tokens": _mean([q["prompt_tokens"] for q in qs]),
    }
    dt = sum(u.get("distractor_turns", 0) for u in users)
    out["new_cards_per_distractor_turn"] = (
        sum(u.get("new_cards_in_distractors", 0) for u in users) / dt if dt else None)
    verdicts = [q["verdict"] for q in qs if "verdict" in q]
    if verdicts:
        out["judge"] = {k: _mean([v[k] for v in verdicts])
                        for k in ("follows", "acknowledges", "hallucinates", "violates", "helpful")}
    if turn_ms is not None:
        every = [x for v in turn_ms.values() for x in v]
        out["turn_ms"] = {"p50": percentile(every, 50), "p95": percentile(every, 95), "turns": len(every),
                          **{f"{ph}_p50": percentile(v, 50) for ph, v in turn_ms.items()},
                          **{f"{ph}_p95": percentile(v, 95) for ph, v in turn_ms.items()}}
    return out


# ----------------------------------------------------------------------- the benchmark


def _load(settings: Settings) -> tuple[dict[str, dict[str, Item]], list[tuple[str, str]], list[str]]:
    data = Path(settings.data_dir)
    topics = settings.topics
    if not topics:
        tune, report = split_topics(list_topics(data))
        topics = {"tuning": tune, "report": report, "all": tune + report}[settings.topic_split]
    by_form = {f: {it.key: it for t in topics for it in load_items(data, f, t)}
               for f in settings.forms}
    return by_form, load_distractors(data), sorted(topics)


def make_extractor(settings: Settings, config: Any) -> CachingExtractor:
    if settings.extractor == "scripted":
        from vars_langgraph_eval.simulator import ScriptedExtractor

        return CachingExtractor(ScriptedExtractor())
    from vars_langgraph.models.extraction import load_extractor

    return CachingExtractor(load_extractor(config), settings.extraction_cache)


def _judge(settings: Settings, config: Any) -> tuple[Any, Any]:
    """(judge dict, live chat model) when a judge is configured, else (None, None)."""
    if not settings.judge_base_url:
        return None, None
    from vars_langgraph.models.llm import chat_model, resolve_llm
    from vars_langgraph_eval.prefeval_judge import load_prompts, openai_judge

    url = settings.judge_base_url
    if url == "local":
        from vars_langgraph.models.local_server import local_base_url

        url = local_base_url(config)
    judge = {"complete": openai_judge(url, settings.judge_model),
             "prompts": load_prompts(settings.judge_prompts), "base_url": url}
    return judge, chat_model(resolve_llm(config.llm, config))


def run_benchmark(settings: Settings, out_dir: Path, *, embedder: Any = None,
                  extractor: Any = None, progress: bool = True,
                  keep_data: bool = False) -> dict[str, Any]:
    """Run every (form, N, method); write results.json, summary.md and a PNG into `out_dir`."""
    from vars_langgraph_eval.prefeval_report import markdown, plot
    from vars_langgraph_eval.simulator import CachingEmbedder

    out_dir.mkdir(parents=True, exist_ok=True)
    by_form, distractors, topics = _load(settings)
    if max(settings.inter_turns) > len(distractors):
        raise ValueError(f"--inter-turns {max(settings.inter_turns)}: only {len(distractors)} "
                         "distractor turns in the data")
    first = next(iter(by_form.values()))
    pools: dict[str, int] = {}
    for it in first.values():
        pools[it.topic] = pools.get(it.topic, 0) + 1
    users = build_users(pools, settings.users, settings.prefs_per_user, settings.seed)
    base_cfg = method_config("vars", settings, Path(os.devnull))
    if embedder is None:
        from vars_langgraph.models.embedder import load_embedder

        embedder = load_embedder(base_cfg.embedding)
    inner = embedder
    embedder = CachingEmbedder(inner)
    if getattr(inner, "name", None):  # the extraction gate keys its fitted weights on the name
        embedder.name = inner.name
    extractor = CachingExtractor(extractor) if extractor is not None else None
    if extractor is None and any(m in ("vars", "rag", "all") for m in settings.methods):
        extractor = make_extractor(settings, base_cfg)
    judge, live = _judge(settings, base_cfg)
    k = settings.store_k or base_cfg.retrieval.select_k
    runs: list[dict[str, Any]] = []
    work = out_dir / "work"
    try:
        for form in settings.forms:
            items = by_form[form]
            ref = dense_reference(users, items, embedder, DENSE_K)
            runs.append({"form": form, "inter_turns": None, "method": REFERENCE,
                         "summary": summarize([{"questions": ref}], None)})
            per_user_turns = sum(len(items[f"{t}#{i}"].turns) + 1 for u in users for t, i in u.picks)
            for n in settings.inter_turns:
                for method in settings.methods:
                    runs.append(_run_one(method, form, n, settings, users, items, distractors[:n],
                                         work / f"{form}-{n}-{method}", embedder, extractor,
                                         judge, live, progress,
                                         per_user_turns + n * len(users)))
                    partial = _results(settings, topics, users, runs, extractor, judge, k)
                    (out_dir / "results.partial.json").write_text(json.dumps(partial, indent=1))
    finally:
        if not keep_data:
            shutil.rmtree(work, ignore_errors=True)
    results = _results(settings, topics, users, runs, extractor, judge, k)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    (out_dir / "results.partial.json").unlink(missing_ok=True)
    png = plot(results, out_dir / "prefeval.png")
    (out_dir / "summary.md").write_text(markdown(results, png))
    return results


def _results(settings: Settings, topics: list[str], users: list[SimUser],
             runs: list[dict[str, Any]], extractor: Any, judge: Any, k: int) -> dict[str, Any]:
    return {"settings": asdict(settings), "topics": topics, "users": [asdict(u) for u in users],
            "runs": runs, "extraction": _extraction_info(extractor), "machine": _machine(),
            "store_k": k,
            "judge": {"base_url": judge["base_url"], "model": settings.judge_model,
                      "prompts": settings.judge_prompts or "built-in restatement"}
            if judge else None}


def _run_one(method: str, form: str, n: int, settings: Settings, users: list[SimUser],
             items: dict[str, Item], distractors: list[tuple[str, str]], work: Path,
             embedder: Any, extractor: Any, judge: Any, live: Any, progress: bool,
             total: int) -> dict[str, Any]:
    conv = Conversation(method, settings, work, embedder,
                        extractor if method in ("vars", "rag", "all") else None, live)
    bar = _bar(total, f"{form[:12]:>12} N={n:<3} {method:>7}", progress)
    t0 = time.perf_counter()
    try:
        per_user = [conv.run_user(u, [items[f"{t}#{i}"] for t, i in u.picks], distractors,
                                  judge, bar) for u in users]
    finally:
        bar.close()
        conv.close()
    return {"form": form, "inter_turns": n, "method": method, "description": METHODS[method],
            "seconds": round(time.perf_counter() - t0, 1),
            "summary": summarize(per_user, conv.turn_ms), "per_user": per_user}


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="turn", dynamic_ncols=True, disable=not enabled)


def _extraction_info(extractor: CachingExtractor | None) -> dict[str, Any] | None:
    if extractor is None:
        return None
    s = extractor.seconds
    return {"extractor": type(extractor.inner).__name__, "calls": len(s),
            "cache_hits": extractor.hits, "seconds_p50": percentile(s, 50), "seconds_p95": percentile(s, 95)}


def _machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "loadavg_at_end": load}


# ----------------------------------------------------------------------- CLI


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="vars-langgraph eval prefeval",
        description="PrefEval preference following: none / vars / rag / all / lgstore on the same "
                    "simulated users (CPU metrics; answers judged with --judge-base-url).")
    ap.add_argument("--data", help="PrefEval directory (default: $PREFEVAL_DATA, else "
                    "../shared/data/prefeval beside the repository)")
    ap.add_argument("--form", default="explicit,implicit-persona",
                    help=f"comma-separated from {','.join(FORMS)} (default explicit,implicit-persona)")
    ap.add_argument("--topics", default="report",
                    help="report | tuning | all (the fixed split, see prefeval_data.split_topics) "
                         "or a comma-separated list of topic names (default: report)")
    ap.add_argument("--inter-turns", default="0,10,300", help="distractor turns N (0,10,300)")
    ap.add_argument("--users", type=int, default=3, help="simulated users (3)")
    ap.add_argument("--prefs-per-user", type=int, default=10,
                    help="preferences per user, from different topics (10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated from {','.join(METHODS)}")
    ap.add_argument("--extractor", choices=("config", "scripted"), default="config",
                    help="config: the configured LLM extractor (default); scripted: the collab "
                         "benchmark's rule-based stand-in (label such results)")
    ap.add_argument("--store-k", type=int, default=None,
                    help="top-k of lgstore (default: retrieval.select_k; the dense reference is top-3)")
    ap.add_argument("--config", help="VARS YAML config for every method")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a VARS config value for every method (repeatable)")
    ap.add_argument("--judge-base-url", help="OpenAI-compatible judge endpoint ('local': the local "
                    "llama.cpp server); answers are then generated by the configured llm")
    ap.add_argument("--judge-model", default="local")
    ap.add_argument("--judge-prompts", help="PrefEval's error_type/ directory: use its original "
                    "prompt files (CC BY-NC 4.0) instead of the built-in restatements")
    ap.add_argument("--out", default="results/prefeval", help="output directory")
    ap.add_argument("--extraction-cache", metavar="FILE",
                    help="keep the configured extractor's outputs in this JSON file and reuse them "
                    "(a rerun with the same extractor and data makes no LLM extraction calls)")
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def settings_from_args(args: argparse.Namespace) -> Settings:
    from vars_langgraph_eval.runner import parse_set

    data = args.data or default_data_dir()
    if data is None or not Path(data).is_dir():
        raise FileNotFoundError(f"no PrefEval directory ({data}): pass --data DIR or set "
                                "PREFEVAL_DATA")
    forms, methods = _csv(args.form), _csv(args.methods)
    bad = [f for f in forms if f not in FORMS] + [m for m in methods if m not in METHODS]
    if bad or not forms or not methods:
        raise ValueError(f"unknown form/method {bad}; forms: {','.join(FORMS)}; "
                         f"methods: {','.join(METHODS)}")
    try:
        turns = [int(x) for x in _csv(args.inter_turns)]
    except ValueError as e:
        raise ValueError(f"--inter-turns expects integers, got {args.inter_turns!r}") from e
    if not turns or min(turns) < 0 or args.users < 1 or args.prefs_per_user < 1:
        raise ValueError("--inter-turns must be >= 0; --users and --prefs-per-user >= 1")
    split, topics = "report", []
    if args.topics in ("report", "tuning", "all"):
        split = args.topics
    else:
        topics = _csv(args.topics)
        known = set(list_topics(Path(data)))
        if set(topics) - known:
            raise ValueError(f"unknown topics {sorted(set(topics) - known)}; have {sorted(known)}")
    return Settings(data_dir=str(data), forms=forms, topics=topics, topic_split=split,
                    inter_turns=turns, users=args.users, prefs_per_user=args.prefs_per_user,
                    seed=args.seed, methods=methods, extractor=args.extractor,
                    store_k=args.store_k, config_file=args.config,
                    vars_overrides=parse_set(args.set), judge_base_url=args.judge_base_url,
                    judge_model=args.judge_model, judge_prompts=args.judge_prompts,
                    extraction_cache=args.extraction_cache)


def prefeval_main(argv: list[str] | None = None, *, embedder: Any = None,
                  extractor: Any = None) -> int:
    """Entry point of `vars-langgraph eval prefeval`. Returns a process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        settings = settings_from_args(args)
        out = Path(args.out)
        run_benchmark(settings, out, embedder=embedder, extractor=extractor,
                      progress=not args.no_progress, keep_data=args.keep_data)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((out / "summary.md").read_text())
    print(f"results: {out / 'results.json'}")
    return 0
