"""`vars-langgraph eval collab`: the multi-session learning benchmark on MultiSessionCollab.

Every method runs the real VARS graph (extract -> store -> retrieve -> rerank -> augment ->
generate, and reward/update on the next message) on its own SQLite store, FAISS indexes and the
real MiniLM embeddings, with the same users, problems and simulator. Methods differ only in
config:

| method | what changes |
|---|---|
| none | extraction off: no cards, a plain prompt |
| all | every card of the user in the prompt (K = k = all; no reranking, no vector) |
| rag | dense top-K + reranker, top-k by s0 alone (z_long and z_short off) |
| vars | s = s0 + v . (beta_L z_long + beta_S z_short), REINFORCE updates |
| vars_long | z_long only |
| vars_short | z_short only |

Per session (user x session) it records: enforcement turns, user words, precision and recall of
the injected preferences against the ones that apply, the mean reward, cards, |z_long|.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vars_langgraph.config import PolicyConfig, VARSConfig, _merge
from vars_langgraph_eval.collab import (
    Problem,
    UserProfile,
    applicable_preferences,
    assign_scopes,
    default_data_dir,
    filter_split,
    kind_weights,
    load_profiles,
    load_tasks,
    note_scope,
    scope_allows,
    task_kind,
)
from vars_langgraph_eval.simulator import (
    MEASURED_NOISE,
    USER_PROMPT_FILE,
    CachingEmbedder,
    ExtractionNoise,
    LLMSimulator,
    PreferenceMatcher,
    ScriptedExtractor,
    ScriptedSettings,
    ScriptedSimulator,
    UserMessage,
    extraction_error_rates,
    load_user_prompt,
    openai_completer,
    scripted_agent,
)
from vars_langgraph_eval.stats import percentile

log = logging.getLogger(__name__)

ALL = 100_000
# the baselines keep the memory as it was before issue 23 (docs/memory-hygiene.md): dense
# top-K, top-k by s0, no selection threshold or condition gate, no consolidation
PLAIN_MEMORY = {"hybrid": False, "min_p": 0.0, "condition_min": None, "condition_margin": None,
                "consolidate": False, "lexical_weight": 0.0}
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("no memory (extraction off)", {"extractor": {"enabled": False}}),
    "all": ("all memories in the prompt (reference, unbounded budget)",
            {"retrieval": {"top_k": ALL, "max_global": ALL},
             "policy": {"use_long": False, "use_short": False}, "memory": PLAIN_MEMORY}),
    "rag": ("retrieval + rerank, no user vector",
            {"policy": {"use_long": False, "use_short": False}, "memory": PLAIN_MEMORY}),
    "vars": ("VARS full (z_long + z_short)", {"policy": {"use_long": True, "use_short": True}}),
    "vars_long": ("VARS, z_long only", {"policy": {"use_long": True, "use_short": False}}),
    "vars_short": ("VARS, z_short only", {"policy": {"use_long": False, "use_short": True}}),
}
CURVES = ("enforcements", "user_words", "preference_words", "precision", "recall",
          "recall_stated", "reward", "turns", "cards", "z_long_norm", "selection_changed",
          "vector_changed",
          "vector_shift", "note_tokens", "enforce_signal")


@dataclass
class RunSettings:
    profiles: str
    tasks: str
    sessions: int = 20
    users: int | None = None
    seed: int = 0
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    simulator: str = "scripted"
    extractor: str = "scripted"
    agent: str = "fixed"
    datasets: list[str] | None = None
    max_turns: int = 10
    match_threshold: float = 0.52
    vars_overrides: dict[str, Any] = field(default_factory=dict)
    config_file: str | None = None
    sim_base_url: str | None = None
    sim_model: str | None = None
    sim_prompt: str | None = None
    sim_max_tokens: int = 1024
    split: str = "report"  # tune | report | all (collab.profile_split)
    # the scripted user's phrase pool; None: "tune" on --split tune, else "report"
    phrases: str | None = None
    p_scoped: float = 0.5  # share of unscoped profile preferences given a task-kind scope
    kind_primary: float = 0.5  # weight of each user's primary task kind
    noise: ExtractionNoise = field(default_factory=ExtractionNoise)


# ------------------------------------------------------------------------------- config


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """["policy.eta_long=0.1", "retrieval.select_k=5"] -> nested dict (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def method_config(method: str, settings: RunSettings, data_dir: Path) -> VARSConfig:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    import yaml

    base: dict[str, Any] = {}
    if settings.config_file:
        base = yaml.safe_load(Path(settings.config_file).read_text()) or {}
    # --set and the method's own settings are keyword overrides, so they win over VARS_* env
    # variables: with VARS_DATA_DIR set, every method still gets its own store.
    overrides = _merge(settings.vars_overrides, METHODS[method][1])
    if "seed" in PolicyConfig.model_fields:  # sampled selection: reproducible per run seed
        overrides = _merge({"policy": {"seed": settings.seed}}, overrides)
    overrides = _merge(overrides, {"data_dir": str(data_dir), "storage": "sqlite"})
    cfg = VARSConfig.from_dict(base, **overrides)
    if method == "all":  # beyond the package's prompt budget on purpose: the reference
        cfg.retrieval = cfg.retrieval.model_copy(update={"select_k": ALL})
    return cfg


# ------------------------------------------------------------------------------- results


@dataclass
class SessionRecord:
    user: str
    session: int
    problem: str
    enforcements: int = 0
    user_words: int = 0
    preference_words: int = 0
    turns: int = 0
    timed_out: bool = False
    injected: int = 0
    injected_relevant: int = 0
    applicable_hits: int = 0
    applicable_total: int = 0
    stated_hits: int = 0
    stated_total: int = 0
    rewards: list[float] = field(default_factory=list)
    cards: int = 0
    z_long_norm: float = 0.0
    ranked_turns: int = 0  # turns with more candidates than slots (the policy had a choice)
    changed_turns: int = 0  # ... of which the injected set differs from RAG's top-k by s0
    vector_turns: int = 0  # ... of which the top-k by s differs from the top-k by s0
    shifts: list[float] = field(default_factory=list)  # max |s - s0| over candidates per turn
    kind: str = ""  # task kind of the problem
    note_tokens: list[int] = field(default_factory=list)  # prompt tokens of the notes, per turn
    enforce_turns: int = 0  # enforcement messages whose reward reached the update
    signal_turns: int = 0  # ... of which produced a learning signal (|A| > 0)

    def metrics(self) -> dict[str, float | None]:
        return {
            "enforcements": float(self.enforcements),
            "user_words": float(self.user_words),
            "preference_words": float(self.preference_words),
            "precision": (self.injected_relevant / self.injected) if self.injected else None,
            "recall": (self.applicable_hits / self.applicable_total)
            if self.applicable_total else None,
            "recall_stated": (self.stated_hits / self.stated_total) if self.stated_total else None,
            "reward": float(np.mean(self.rewards)) if self.rewards else None,
            "turns": float(self.turns),
            "cards": float(self.cards),
            "z_long_norm": self.z_long_norm,
            "selection_changed": (self.changed_turns / self.ranked_turns)
            if self.ranked_turns else None,
            "vector_changed": (self.vector_turns / self.ranked_turns)
            if self.ranked_turns else None,
            "vector_shift": float(np.mean(self.shifts)) if self.shifts else None,
            "note_tokens": float(np.mean(self.note_tokens)) if self.note_tokens else None,
            "enforce_signal": (self.signal_turns / self.enforce_turns)
            if self.enforce_turns else None,
        }


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and not math.isnan(x)]
    return float(np.mean(vals)) if vals else None


def aggregate(records: list[SessionRecord], sessions: int) -> dict[str, Any]:
    by_session: dict[int, list[dict[str, float | None]]] = {s: [] for s in range(sessions)}
    for r in records:
        by_session[r.session].append(r.metrics())
    curves = {m: [_mean([row[m] for row in by_session[s]]) for s in range(sessions)]
              for m in CURVES}
    allm = [r.metrics() for r in records]
    last = [r.metrics() for r in records if r.session >= sessions - 5]
    first = [r.metrics() for r in records if r.session < 5]
    early = [r.metrics() for r in records if 2 <= r.session < 7]  # sessions 3-7
    summary = {m: _mean([row[m] for row in allm]) for m in CURVES}
    for name, rows in (("first_5", first), ("last_5", last)):
        for m in ("precision", "recall", "note_tokens"):
            summary[f"{m}_{name}"] = _mean([row[m] for row in rows])
    summary.update({
        "enforcements_first_5": _mean([row["enforcements"] for row in first]),
        "enforcements_sessions_3_7": _mean([row["enforcements"] for row in early]),
        "enforcements_last_5": _mean([row["enforcements"] for row in last]),
        "clean_session_rate": _mean([float(r.enforcements == 0) for r in records]),
        "timeout_rate": _mean([float(r.timed_out) for r in records]),
    })
    return {"curves": curves, "summary": summary}


# ------------------------------------------------------------------------------- running


class _Quiet:
    def __init__(self, total: int, desc: str):
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *a: Any, **k: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _Quiet(total, desc)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="session", dynamic_ncols=True, leave=True)


def assign_problems(profiles: list[UserProfile], problems: list[Problem], sessions: int,
                    seed: int, primary: float = 0.5) -> dict[str, list[Problem]]:
    """Each user gets a seeded mix of task kinds (`collab.kind_weights`: a primary kind with
    weight `primary`) and its own seeded order over each kind's problems; a session draws its
    kind from the mix, then the next problem of that kind. Identical for every method."""
    by_kind: dict[str, list[Problem]] = {}
    for pr in problems:
        by_kind.setdefault(task_kind(pr.dataset), []).append(pr)
    out = {}
    for p in profiles:
        weights = kind_weights(p.user_id, list(by_kind), seed, primary)
        kinds, w = list(weights), list(weights.values())
        orders = {k: random.Random(f"{seed}:{p.user_id}:{k}:problems").sample(v, len(v))
                  for k, v in by_kind.items()}
        used = dict.fromkeys(by_kind, 0)
        rnd = random.Random(f"{seed}:{p.user_id}:sessions")
        seq = []
        for _ in range(sessions):
            k = rnd.choices(kinds, weights=w)[0]
            seq.append(orders[k][used[k] % len(orders[k])])
            used[k] += 1
        out[p.user_id] = seq
    return out


def select_users(profiles: list[UserProfile], n: int | None, seed: int) -> list[UserProfile]:
    if not n or n >= len(profiles):
        return list(profiles)
    idx = sorted(random.Random(f"{seed}:users").sample(range(len(profiles)), n))
    return [profiles[i] for i in idx]


class MethodRunner:
    """Runs one method over all users and sessions on a fresh store in `data_dir`."""

    def __init__(self, method: str, settings: RunSettings, data_dir: Path, embedder: Any,
                 simulator: Any, matcher: PreferenceMatcher, progress: bool = True,
                 transcript: Path | None = None):
        from langgraph.checkpoint.memory import InMemorySaver

        from vars_langgraph.engine import VARSEngine
        from vars_langgraph.graph import build_graph
        from vars_langgraph.storage import open_store

        self.method, self.settings = method, settings
        if data_dir.exists():
            shutil.rmtree(data_dir)
        self.config = method_config(method, settings, data_dir)
        self.store = open_store(self.config)
        extractor = ScriptedExtractor(noise=settings.noise, seed=settings.seed) \
            if settings.extractor == "scripted" else None
        chat = scripted_agent() if settings.agent == "fixed" else None
        self.engine = VARSEngine(self.config, self.store, index_dir=data_dir / "index",
                                 embedder=embedder, extractor=extractor, chat_model=chat)
        self.graph = build_graph(self.config, engine=self.engine, checkpointer=InMemorySaver())
        self.simulator, self.matcher = simulator, matcher
        self.progress = progress
        self.transcript = transcript.open("w") if transcript else None
        self.turn_seconds: list[float] = []
        self._stated: dict[str, set[str]] = {}  # preferences each user has said so far

    def close(self) -> None:
        if self.transcript:
            self.transcript.close()
        conn = getattr(self.store, "conn", None)
        if conn is not None:
            conn.close()

    def run(self, users: list[UserProfile], problems: dict[str, list[Problem]]) -> list[SessionRecord]:
        total = len(users) * self.settings.sessions
        bar = _progress(total, f"{self.method:>10}", self.progress)
        records: list[SessionRecord] = []
        enf = 0
        try:
            for profile in users:
                for s in range(self.settings.sessions):
                    rec = self.run_session(profile, problems[profile.user_id][s], s)
                    records.append(rec)
                    enf += rec.enforcements
                    bar.update(1)
                    bar.set_postfix(enf_per_session=f"{enf / len(records):.2f}")
        finally:
            bar.close()
        return records

    def _invoke(self, profile: UserProfile, session: int, text: str) -> dict[str, Any]:
        cfg = {"configurable": {"thread_id": f"{profile.user_id}-{self.method}-s{session:03d}",
                                "user_id": profile.user_id}}
        t0 = time.perf_counter()
        out = self.graph.invoke({"messages": [("user", text)]}, cfg)
        self.turn_seconds.append(time.perf_counter() - t0)
        return out

    def run_session(self, profile: UserProfile, problem: Problem, session: int) -> SessionRecord:
        rec = SessionRecord(profile.user_id, session, problem.key, kind=problem.kind)
        applicable = {p.key for p in applicable_preferences(profile, problem)}
        sim = self.simulator.start_session(profile, problem, session)
        stated_before = self._stated_so_far(profile)
        msg: UserMessage | None = sim.opening()
        while msg is not None:
            out = self._invoke(profile, session, msg.text)
            rec.turns += 1
            rec.user_words += msg.words
            rec.preference_words += msg.words - msg.problem_words
            rec.enforcements += msg.kind == "enforce"
            reward = out.get("reward") or {}
            if reward.get("value") is not None:
                rec.rewards.append(float(reward["value"]))
            if msg.kind == "enforce" and reward.get("value") is not None:
                rec.enforce_turns += 1
                rec.signal_turns += learning_signal(reward)
            for key in msg.stated:
                self._stated.setdefault(profile.user_id, set()).add(key)
            if msg.kind == "close":
                self._log(profile, session, msg, out, None, problem.kind)
                break
            notes = [c["note"] for c in out.get("selected", [])]
            matched = self.matcher.match(profile, notes)
            # a note carries a preference where its own condition allows this problem's kind
            carried = {m for m, n in zip(matched, notes, strict=True)
                       if m and scope_allows(note_scope(n), problem.kind)}
            rec.note_tokens.append(sum(note_tokens(n) for n in notes))
            rec.injected += len(notes)
            rec.injected_relevant += sum(1 for m in matched if m in applicable)
            rec.applicable_hits += len(applicable & carried)
            rec.applicable_total += len(applicable)
            known = applicable & stated_before
            rec.stated_hits += len(known & carried)
            rec.stated_total += len(known)
            self._policy_effect(rec, out.get("candidates", []))
            answer = _text(out.get("messages", [])[-1]) if out.get("messages") else ""
            self._log(profile, session, msg, out, sorted(carried), problem.kind,
                      sorted(applicable), matched)
            if rec.turns >= self.settings.max_turns:
                rec.timed_out = True
                break
            msg = sim.react(carried, answer)
        ui = self.engine.index.get(profile.user_id)
        rec.cards = len(ui)
        rec.z_long_norm = float(np.linalg.norm(self.engine.load_vector(profile.user_id).z_long))
        return rec

    def _policy_effect(self, rec: SessionRecord, candidates: list[dict[str, Any]]) -> None:
        """Did the policy inject something other than RAG's choice? RAG's choice is the top-k
        by s0 over the same candidates in the same turn. `changed` compares it with what was
        injected (the vector and, in sampling mode, the draw); `vector_changed` with the top-k
        by s (the vector's effect on the ranking alone). Also the largest |s - s0|."""
        scored = [c for c in candidates if c.get("rerank") is not None and c.get("score") is not None]
        if not scored:
            return
        rec.shifts.append(max(abs(c["score"] - c["rerank"]) for c in scored))
        k = sum(1 for c in scored if c.get("chosen"))
        if 0 < k < len(scored):
            rec.ranked_turns += 1
            by_s0 = set(sorted(range(len(scored)), key=lambda i: -scored[i]["rerank"])[:k])
            by_s = set(sorted(range(len(scored)), key=lambda i: -scored[i]["score"])[:k])
            chosen = {i for i, c in enumerate(scored) if c.get("chosen")}
            rec.changed_turns += by_s0 != chosen
            rec.vector_turns += by_s0 != by_s

    def _stated_so_far(self, profile: UserProfile) -> set[str]:
        return set(self._stated.get(profile.user_id, set()))

    def _log(self, profile: UserProfile, session: int, msg: UserMessage, out: dict[str, Any],
             carried: list[str] | None, task_kind: str, applicable: list[str] | None = None,
             matched: list[str | None] | None = None) -> None:
        """One turn of the transcript: with the problem's task kind, the preferences that apply
        to it and, per injected note, the preference it was matched to (None: no preference)."""
        if not self.transcript:
            return
        reward = out.get("reward") or {}
        cands = [c for c in out.get("candidates", []) if c.get("rerank") is not None]
        k = sum(1 for c in cands if c.get("chosen"))
        rag_ids = [c["id"] for c in sorted(cands, key=lambda c: -c["rerank"])[:k]]
        row = {"user": profile.user_id, "session": session, "task_kind": task_kind,
               "applicable": applicable, "kind": msg.kind, "user_text": msg.text,
               "stated": msg.stated, "extracted": [c["note"] for c in out.get("extracted", [])],
               "injected": [{"note": c["note"], "dense": c.get("dense"), "s0": c.get("rerank"),
                             "score": c.get("score"), "pi": c.get("pi"),
                             "global": c.get("global"), "preference": m}
                            for c, m in zip(out.get("selected", []),
                                            matched or [None] * len(out.get("selected", [])),
                                            strict=True)],
               "rag_choice": [c["note"] for c in cands if c["id"] in rag_ids],
               "candidates": len(cands),
               "carried": carried, "reward": reward.get("value"), "gate": reward.get("gate"),
               "advantage": reward.get("advantage"), "applied": reward.get("applied"),
               "signal": learning_signal(reward) if reward else None,
               "user_vector": out.get("user_vector")}
        self.transcript.write(json.dumps(row) + "\n")


def learning_signal(reward: dict[str, Any]) -> bool:
    """Did this reward move the vector? The update applied (it skips turns with nothing
    selected or every candidate chosen) and |A| > 0 where the reward node reports A."""
    if "applied" in reward and not reward["applied"]:
        return False
    adv = reward.get("advantage")
    if adv is not None:
        return abs(float(adv)) > 1e-6
    return bool(reward.get("applied"))


def note_tokens(note: str) -> int:
    """Prompt tokens of one injected note, estimated as ceil(characters / 4) plus the bullet."""
    return math.ceil(len(note) / 4) + 1


def _text(msg: Any) -> str:
    from vars_langgraph.state import message_text

    return message_text(msg)


def paired_difference(a: list[SessionRecord], b: list[SessionRecord], metric: str = "enforcements",
                      last: int | None = None, sessions: int | None = None, seed: int = 0,
                      n_boot: int = 2000) -> dict[str, float] | None:
    """Mean over users of (a - b) per-user means, with a 95% bootstrap CI over users."""

    def per_user(recs: list[SessionRecord]) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for r in recs:
            if last and sessions and r.session < sessions - last:
                continue
            v = r.metrics()[metric]
            if v is not None:
                out.setdefault(r.user, []).append(v)
        return {u: float(np.mean(v)) for u, v in out.items()}

    ua, ub = per_user(a), per_user(b)
    users = sorted(set(ua) & set(ub))
    if not users:
        return None
    d = np.array([ua[u] - ub[u] for u in users])
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    return {"mean": float(d.mean()), "ci_low": percentile(boots, 2.5),
            "ci_high": percentile(boots, 97.5), "users": len(users),
            "better": int((d < 0).sum()), "worse": int((d > 0).sum())}


def make_simulator(settings: RunSettings) -> Any:
    if settings.simulator == "scripted":
        phrases = settings.phrases or ("tune" if settings.split == "tune" else "report")
        return ScriptedSimulator(seed=settings.seed, settings=ScriptedSettings(phrases=phrases))
    if settings.simulator == "llm":
        base_url = settings.sim_base_url
        model = settings.sim_model
        if base_url is None:
            cfg = method_config("vars", settings, Path(os.devnull))
            base_url = cfg.llm.base_url
            model = model or cfg.llm.model
            if base_url is None:
                from vars_langgraph.models.local_server import local_base_url

                base_url = local_base_url(cfg)
        return LLMSimulator(openai_completer(base_url, model or "local",
                                             api_key=os.environ.get("VARS_SIM_API_KEY",
                                                                    "not-needed"),
                                             max_tokens=settings.sim_max_tokens),
                            prompt=load_user_prompt(settings.sim_prompt))
    raise ValueError(f"unknown simulator {settings.simulator!r} (scripted, llm)")


def run_benchmark(settings: RunSettings, out_dir: Path, *, embedder: Any = None,
                  simulator: Any = None, progress: bool = True, keep_data: bool = False,
                  transcripts: bool = False) -> dict[str, Any]:
    """Run every method; write results.json, summary.md and the PNG plots into `out_dir`."""
    from vars_langgraph_eval.plots import plot_results

    out_dir.mkdir(parents=True, exist_ok=True)
    profiles = filter_split(load_profiles(settings.profiles), settings.split)
    if not profiles:
        raise ValueError(f"no profiles in split {settings.split!r} of {settings.profiles}")
    profiles = select_users(profiles, settings.users, settings.seed)
    problems = load_tasks(settings.tasks, settings.datasets)
    kinds = sorted({task_kind(p.dataset) for p in problems})
    profiles = [assign_scopes(p, kinds, settings.seed, settings.p_scoped, settings.kind_primary)
                for p in profiles]
    assigned = assign_problems(profiles, problems, settings.sessions, settings.seed,
                               settings.kind_primary)
    if embedder is None:
        from vars_langgraph.models.embedder import load_embedder

        embedder = load_embedder(method_config("vars", settings, Path(os.devnull)).embedding)
    embedder = CachingEmbedder(embedder)
    simulator = simulator or make_simulator(settings)
    matcher = PreferenceMatcher(embedder, settings.match_threshold)
    work = out_dir / "work"
    results: dict[str, Any] = {}
    records: dict[str, list[SessionRecord]] = {}
    for method in settings.methods:
        t0 = time.perf_counter()
        tr = out_dir / "transcripts" / f"{method}.jsonl" if transcripts else None
        if tr:
            tr.parent.mkdir(parents=True, exist_ok=True)
        runner = MethodRunner(method, settings, work / method, embedder, simulator, matcher,
                              progress=progress, transcript=tr)
        try:
            recs = runner.run(profiles, assigned)
        finally:
            runner.close()
        records[method] = recs
        agg = aggregate(recs, settings.sessions)
        turns = np.asarray(runner.turn_seconds) * 1000
        results[method] = {
            "method": method,
            "description": METHODS[method][0],
            "enforcements_per_session": agg["summary"]["enforcements"],
            "summary": agg["summary"],
            "curves": agg["curves"],
            "per_user": _per_user(recs),
            "timing": {"seconds": round(time.perf_counter() - t0, 2),
                       "turn_ms_p50": percentile(turns, 50),
                       "turn_ms_p95": percentile(turns, 95),
                       "turns": len(turns)},
            "config": {"run": _run_info(settings, profiles, problems),
                       "vars": runner.config.model_dump(mode="json")},
        }
    if "rag" in records:
        for m in records:
            if m == "rag":
                continue
            results[m]["vs_rag"] = {
                "enforcements_all": paired_difference(records[m], records["rag"],
                                                      seed=settings.seed),
                "enforcements_last_5": paired_difference(
                    records[m], records["rag"], last=5, sessions=settings.sessions,
                    seed=settings.seed),
            }
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    plots = plot_results(results, out_dir)
    (out_dir / "summary.md").write_text(markdown_summary(results, settings, plots))
    if not keep_data:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _per_user(recs: list[SessionRecord]) -> dict[str, dict[str, list[Any]]]:
    out: dict[str, dict[str, list[Any]]] = {}
    for r in sorted(recs, key=lambda r: (r.user, r.session)):
        row = out.setdefault(r.user, {"problems": [], **{m: [] for m in CURVES}})
        row["problems"].append(r.problem)
        for k, v in r.metrics().items():
            row[k].append(None if v is None else round(v, 4))
    return out


def _run_info(settings: RunSettings, profiles: list[UserProfile],
              problems: list[Problem]) -> dict[str, Any]:
    info = asdict(settings)
    info.update(user_ids=[p.user_id for p in profiles], n_problems=len(problems),
                applicable="a preference applies to problems of its scope (a task kind or all)",
                scopes={p.user_id: [q.scope for q in p.preferences] for p in profiles},
                python=platform.python_version(), machine=platform.machine(),
                cpus=os.cpu_count())
    return info


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "–"
    return f"{v:.{nd}f}"


def _percent(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def markdown_summary(results: dict[str, Any], settings: RunSettings,
                     plots: Sequence[Path] = ()) -> str:
    methods = list(results)
    nz = settings.noise
    n_users = len(results[methods[0]]["per_user"]) if methods else 0
    lines = [
        f"# MultiSessionCollab, {settings.simulator} simulator: {n_users} users "
        f"(split {settings.split}) x {settings.sessions} sessions, seed {settings.seed}",
        "",
        f"Scripted user's phrase pool: "
        f"{settings.phrases or ('tune' if settings.split == 'tune' else 'report')}.",
        "",
        f"Scoped preferences: p_scoped {settings.p_scoped}, primary task kind weight "
        f"{settings.kind_primary}; " + (
            f"scripted extractor noise: miss {nz.miss}, wrong condition {nz.wrong_condition}, "
            f"general {nz.general}, junk {nz.junk} ({Path(nz.source).name})"
            if settings.extractor == "scripted" else f"extractor: {settings.extractor}")
        + ". `all` is a reference (every card in the prompt, at its note-token cost), not a "
        "method at the same budget.",
        "",
        "| method | enforcements / session | first 5 | last 5 | clean sessions | user words / "
        "session | precision | recall | recall (stated) | reward | note tokens / turn "
        "| injected != RAG's top-k | vector changed top-k | enforcements with signal "
        "| turn p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        s = results[m]["summary"]
        t = results[m]["timing"]
        lines.append(
            f"| {m} | {_fmt(s['enforcements'])} | {_fmt(s['enforcements_first_5'])} | "
            f"{_fmt(s['enforcements_last_5'])} | {_fmt(s['clean_session_rate'])} | "
            f"{_fmt(s['user_words'], 1)} | "
            f"{_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['recall_stated'])} | "
            f"{_fmt(s['reward'])} | {_fmt(s['note_tokens'], 1)} | "
            f"{_percent(s['selection_changed'])} | {_percent(s['vector_changed'])} | "
            f"{_percent(s['enforce_signal'])} | "
            f"{_fmt(t['turn_ms_p50'], 0)} |")
    cmp_rows = [(m, results[m]["vs_rag"]) for m in methods if "vs_rag" in results[m]]
    if cmp_rows:
        lines += ["", "Paired difference in enforcements per session against RAG (mean over "
                  "users, 95% bootstrap CI; negative = fewer enforcements than RAG):", "",
                  "| method | all sessions | last 5 sessions | users better / worse (last 5) |",
                  "|---|---|---|---|"]
        for m, c in cmp_rows:
            a, b = c["enforcements_all"], c["enforcements_last_5"]
            if a and b:
                lines.append(f"| {m} | {a['mean']:+.3f} [{a['ci_low']:+.3f}, {a['ci_high']:+.3f}]"
                             f" | {b['mean']:+.3f} [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}] | "
                             f"{b['better']} / {b['worse']} |")
    lines += ["", "First 5 vs last 5 sessions (enforcements / session; injected-note precision and "
              "recall of the applicable preferences; note tokens / turn):", "",
              "| method | enforcements first 5 | sessions 3-7 | last 5 | precision first 5 | "
              "last 5 | recall first 5 | last 5 | note tokens first 5 | last 5 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        s = results[m]["summary"]
        lines.append(
            f"| {m} | {_fmt(s['enforcements_first_5'])} | "
            f"{_fmt(s.get('enforcements_sessions_3_7'))} | {_fmt(s['enforcements_last_5'])} | "
            f"{_fmt(s.get('precision_first_5'))} | {_fmt(s.get('precision_last_5'))} | "
            f"{_fmt(s.get('recall_first_5'))} | {_fmt(s.get('recall_last_5'))} | "
            f"{_fmt(s.get('note_tokens_first_5'), 1)} | {_fmt(s.get('note_tokens_last_5'), 1)} |")
    if {"rag", "all"} <= set(methods):
        last5 = {m: results[m]["summary"]["enforcements_last_5"] for m in methods}
        gap = last5["rag"] - last5["all"]
        rows = [m for m in methods if m not in ("rag", "all", "none")]
        if gap and rows:
            lines += ["", "Share of the last-5 gap between RAG and `all` closed: " + ", ".join(
                f"{m} {100 * (last5['rag'] - last5[m]) / gap:.0f}%" for m in rows) + "."]
    sessions = settings.sessions
    for key, title in (("precision", "Injected-note precision"),
                       ("recall", "Recall of the applicable preferences")):
        lines += ["", f"{title}, by session (mean over users):", "",
                  "| session | " + " | ".join(methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for i in range(sessions):
            lines.append(f"| {i + 1} | " + " | ".join(
                _fmt(results[m]["curves"][key][i]) for m in methods) + " |")
    picks = sorted({0, *range(4, sessions, 5), sessions - 1})
    lines += ["", "Enforcements per session, by session (mean over users):", "",
              "| session | " + " | ".join(methods) + " |",
              "|---|" + "---|" * len(methods)]
    for s in picks:
        lines.append(f"| {s + 1} | " + " | ".join(
            _fmt(results[m]["curves"]["enforcements"][s]) for m in methods) + " |")
    if plots:
        lines += ["", "Plots: " + ", ".join(p.name for p in plots)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="vars-langgraph eval collab",
        description="Multi-session learning benchmark on MultiSessionCollab profiles: "
                    "none / all / rag / vars / vars_long / vars_short on the same users and "
                    "problems.")
    ap.add_argument("--profiles", help="user_profiles.json (any file of that format); default "
                    "../shared/data/multisessioncollab/user_profiles.json beside the repo")
    ap.add_argument("--tasks", help="directory of <dataset>/*.json problem sets; default: "
                    "'tasks' beside the profiles file")
    ap.add_argument("--datasets", help="comma-separated datasets under --tasks (default: all)")
    ap.add_argument("--sessions", type=int, default=20, help="sessions per user (default 20)")
    ap.add_argument("--users", type=int, default=None,
                    help="number of users, a seeded sample of the file (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated, from {','.join(METHODS)}")
    ap.add_argument("--simulator", choices=("scripted", "llm"), default="scripted")
    ap.add_argument("--extractor", choices=("scripted", "config"), default=None,
                    help="scripted: rule-based extractor (default with --simulator scripted); "
                         "config: the configured LLM extractor (default with --simulator llm)")
    ap.add_argument("--agent", choices=("fixed", "config"), default=None,
                    help="fixed: a fixed acknowledgement (scripted simulator only, its answers "
                         "are never read); config: the configured chat model")
    ap.add_argument("--max-turns", type=int, default=10, help="user turns per session (10)")
    ap.add_argument("--config", help="VARS YAML config for every method (default: built-in)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a VARS config value for every method, e.g. "
                         "--set retrieval.select_k=5 (repeatable)")
    ap.add_argument("--match-threshold", type=float, default=0.52,
                    help="cosine for a note to count as carrying a preference (0.52)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch CPU threads for the embedder (default: torch's own choice; 1 is "
                         "faster when other processes load the CPU)")
    ap.add_argument("--sim-base-url", help="OpenAI-compatible URL for --simulator llm "
                    "(default: the config's llm URL, else the local llama.cpp server)")
    ap.add_argument("--sim-model", help="model name for --simulator llm")
    ap.add_argument("--sim-prompt", help="user-simulator prompt for --simulator llm (default: "
                    "the benchmark's prompts/user_system_prompt_profile_with_preferences.txt "
                    "beside the profiles file)")
    ap.add_argument("--sim-max-tokens", type=int, default=1024,
                    help="tokens per simulator reply (1024; a CPU smoke run: 200)")
    ap.add_argument("--phrases", choices=("report", "tune", "keyword"), default=None,
                    help="the scripted user's phrase pool (default: tune with --split tune, else "
                         "report; keyword: the first round's phrases, which share the reward's cues)")
    ap.add_argument("--split", choices=("tune", "report", "all"), default="report",
                    help="which half of the profiles (fixed by a hash of the id; tune on "
                         "'tune', report on 'report'; default report)")
    ap.add_argument("--p-scoped", type=float, default=0.5,
                    help="share of preferences scoped to one task kind (0.5)")
    ap.add_argument("--kind-primary", type=float, default=0.5,
                    help="weight of each user's primary task kind in its problem mix (0.5)")
    ap.add_argument("--noise", choices=("measured", "off"), default="measured",
                    help="scripted extractor errors: the rates measured in the committed "
                         "results/extraction.json (default, pinned), or none; --noise-* override "
                         "single rates")
    ap.add_argument("--noise-file", help="take the rates from this benchmarks/extraction.py "
                    "output instead (e.g. results/extraction.json after a re-measurement)")
    for name in ("miss", "wrong-condition", "general", "junk"):
        ap.add_argument(f"--noise-{name}", type=float, default=None,
                        help=f"rate of '{name}' errors (overrides the measured one)")
    ap.add_argument("--out", default="results/collab", help="output directory")
    ap.add_argument("--keep-data", action="store_true", help="keep each method's store/index")
    ap.add_argument("--transcripts", action="store_true",
                    help="write every turn to <out>/transcripts/<method>.jsonl")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    profiles = args.profiles
    if not profiles:
        d = default_data_dir()
        if d is None:
            raise FileNotFoundError("no profiles file: pass --profiles FILE (default "
                                    "../shared/data/multisessioncollab/user_profiles.json)")
        profiles = str(d / "user_profiles.json")
    tasks = args.tasks or str(Path(profiles).resolve().parent / "tasks")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    if args.sessions < 1 or (args.users is not None and args.users < 1):
        raise ValueError("--sessions and --users must be >= 1")
    scripted = args.simulator == "scripted"
    noise = ExtractionNoise()
    if args.noise == "measured":
        noise = extraction_error_rates(args.noise_file) if args.noise_file else \
            replace(MEASURED_NOISE)
    for name in ("miss", "wrong_condition", "general", "junk"):
        v = getattr(args, f"noise_{name}")
        if v is not None:
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"--noise-{name.replace('_', '-')} must be in [0, 1]")
            setattr(noise, name, v)
            noise.source = f"{noise.source} + overrides"
    for name in ("p_scoped", "kind_primary"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1]")
    sim_prompt = args.sim_prompt
    if sim_prompt is None and not scripted:
        sim_prompt = str(Path(profiles).resolve().parent / "prompts" / USER_PROMPT_FILE)
    return RunSettings(
        profiles=str(profiles), tasks=str(tasks), sessions=args.sessions, users=args.users,
        seed=args.seed, methods=methods, simulator=args.simulator,
        extractor=args.extractor or ("scripted" if scripted else "config"),
        agent=args.agent or ("fixed" if scripted else "config"),
        datasets=[d.strip() for d in args.datasets.split(",")] if args.datasets else None,
        max_turns=args.max_turns, match_threshold=args.match_threshold,
        vars_overrides=parse_set(args.set), config_file=args.config,
        sim_base_url=args.sim_base_url, sim_model=args.sim_model, sim_prompt=sim_prompt,
        sim_max_tokens=args.sim_max_tokens,
        split=args.split, phrases=args.phrases, p_scoped=args.p_scoped,
        kind_primary=args.kind_primary, noise=noise)


def collab_main(argv: list[str] | None = None, *, embedder: Any = None,
                simulator: Any = None) -> int:
    """Entry point of `vars-langgraph eval collab`. Returns a process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `vars-langgraph ... -- --opt`: the separator is not ours
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    try:
        settings = settings_from_args(args)
        if settings.agent == "fixed" and settings.simulator != "scripted":
            raise ValueError("--agent fixed only makes sense with --simulator scripted")
        out = Path(args.out)
        results = run_benchmark(settings, out, embedder=embedder, simulator=simulator,
                                progress=not args.no_progress, keep_data=args.keep_data,
                                transcripts=args.transcripts)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((out / "summary.md").read_text())
    print(f"results: {out / 'results.json'}")
    return 0 if results else 1

