"""Learning off the hot path: reward, update and extraction in a bounded background worker.

On by default in the CLI (`chat`) and in the drop-in `VARSMemory` (`background.enabled`
unset); `build_graph` alone keeps the method's inline order unless `enabled: true`. Then the
graph answers with

    START -> learn -> retrieve -> rerank -> augment -> generate -> END

where `learn` only *records* the turn's learning job in the store (one read, one write) and
holds it until the answer is complete (`generate` returned, or the drop-in's `learn` saw the
final answer); then a per-process worker runs the very same reward, update and extract node
functions as the inline graph. The user's answer never waits for the extractor, the judge or
the REINFORCE update, and the extractor's LLM calls never compete with this answer's.
What changes: a preference stated in this message is used in this answer only when the rule
based fast path (`fast_preferences`: explicit "I prefer ...", "please always ...") finds it;
what only the LLM extractor finds is used from the next turn on; and the user vector a turn
reads may not yet include the previous turn's update.

Nothing is lost if the process stops: the job record, which carries the previous turn's
pending feedback and the dialogue window, is written to the store *before* the answer is
generated, and deleted only after all three steps succeeded (a `stage` field records that the
vector update was committed, so a retried job never applies it twice; extraction is
idempotent: cards have deterministic ids and near-duplicates merge). Jobs left behind by a
stopped process are redone by the next worker that starts: at once when the job's owner
process (same host) is gone, else once `recover_after_s` old (another host may still run it);
or by `BackgroundLearner.recover()`.

Bounds: `workers` threads, one user's jobs always on the same thread and so in order;
at most `max_pending` queued jobs per process, beyond which a turn learns inline (backpressure,
never dropping work).

Also here: `node_slots`/`bounded`, the per-process bound on concurrently running VARS nodes
(`max_concurrency`) that `graph.py` applies to every node, for `invoke` from many threads and
for `ainvoke`/`astream` alike.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import queue
import socket
import threading
import time
import uuid
import weakref
import zlib
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import PutOp

from vars_langgraph.engine import VARSEngine
from vars_langgraph.memory.store import PAGE, ROOT, BadInput, UserMemory, unlabel
from vars_langgraph.models.extraction.postprocess import content_words
from vars_langgraph.models.extraction.prompts import dialogue_window
from vars_langgraph.models.extraction.rules import fast_preferences
from vars_langgraph.nodes import make_extract, make_generate, make_reward, make_update
from vars_langgraph.nodes.wiring import add_vars_nodes, bounded, fail_open, node_slots
from vars_langgraph.state import VARSState, last_user_text, resolve_user_id, thread_id
from vars_langgraph.types import CardSource, Preference

log = logging.getLogger(__name__)

JOB_PREFIX = "job:"
JOB_KIND = "vars-learn-job"
HOST = socket.gethostname()
EXIT_TIMEOUT_S = 30.0  # at interpreter exit, each learner waits this long for its queued jobs


def background_enabled(config: Any, default: bool) -> bool:
    """`background.enabled` when set; else `default` (True for the CLI and `VARSMemory`,
    False for `build_graph` alone, which keeps the method's inline order)."""
    enabled = getattr(getattr(config, "background", None), "enabled", None)
    return default if enabled is None else bool(enabled)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_gone(job: dict[str, Any]) -> bool:
    """True when the process that recorded the job ran on this host and has exited."""
    owner = job.get("owner") or {}
    pid = owner.get("pid")
    if owner.get("host") != HOST or not isinstance(pid, int) or pid == os.getpid():
        return False
    return not _pid_alive(pid)


# the job record and the view the worker runs the nodes on --------------------------------------
class _JobMemory(UserMemory):
    """`UserMemory` as the reward/update nodes see it inside a job: the pending feedback is the
    one the job carries, and consuming it marks the job (in the same batch as the vector)."""

    def __init__(self, memory: UserMemory, key: str, job: dict[str, Any]):
        super().__init__(memory.store)  # UserMemory is stateless: same store, same data
        self._key, self._job = key, job

    def get_pending(self, user_id: str, thread_id: str) -> dict[str, Any] | None:
        if self._job.get("stage") == "updated":
            return None
        pending = self._job.get("pending")
        return dict(pending) if pending else None

    def commit_update(self, user_id: str, thread_id: str, vector: dict[str, Any],
                      drop_pending: bool) -> None:
        if _forgotten(self, user_id, self._job):
            raise _Forgotten
        self._job = {**self._job, "stage": "updated"}
        self.store.batch([
            PutOp(self.ns(user_id, "state"), "vector", vector, index=False),
            PutOp(self.ns(user_id, "pending"), self._key, self._job, index=False),
        ])


class _Forgotten(Exception):
    """The job's user was forgotten after the job was recorded: the job is dropped."""


def _forgotten(memory: UserMemory, user_id: str, job: dict[str, Any]) -> bool:
    gen = job.get("generation")
    return isinstance(gen, int) and memory.generation(user_id) != gen


def _messages(job: dict[str, Any]) -> list[Any]:
    """The job's dialogue window as messages; empty user messages in front keep the turn
    number the extract node records (it counts user messages; it skips empty ones)."""
    window = [(r, t) for r, t in job.get("window", [])]
    msgs: list[Any] = [HumanMessage("") for _ in range(
        max(0, int(job.get("turn", 0)) - sum(1 for r, _ in window if r == "user")))]
    for role, text in window:
        msgs.append(HumanMessage(text) if role == "user" else AIMessage(text))
    return msgs


# the worker -----------------------------------------------------------------------------------
class BackgroundLearner:
    """Per-process worker for one engine: `workers` lanes, users hashed onto lanes."""

    def __init__(self, engine: VARSEngine):
        self.engine = engine
        cfg = engine.config.background
        self.cfg = cfg
        self._room = threading.BoundedSemaphore(max(1, cfg.max_pending))
        self._lanes: list[queue.Queue] = [queue.Queue() for _ in range(max(1, cfg.workers))]
        self._idle = threading.Condition()
        self._outstanding = 0
        self._closed = False
        self.done = 0
        self.failed = 0
        self.inline = 0
        self._held: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
        self._held_lock = threading.Lock()
        self.last: dict[tuple[str, str], dict[str, Any]] = {}  # (user, thread) -> last job's result
        self._threads = [
            threading.Thread(target=self._loop, args=(q,), daemon=True, name=f"vars-learn-{i}")
            for i, q in enumerate(self._lanes)
        ]
        for t in self._threads:
            t.start()
        _LIVE.add(self)

    # hot path ---------------------------------------------------------------------------------
    def record(self, user_id: str, tid: str, messages: list[Any],
               fast: list[str] | None = None) -> tuple[str, dict[str, Any]]:
        """Write this turn's job (taking over the thread's pending feedback) to the store;
        `fast`: the actions the fast path stores for this turn (the extraction skips them)."""
        mem = self.engine.memory
        window = dialogue_window(messages)
        gen = self.engine.session_generation(user_id, tid)
        job = {
            "kind": JOB_KIND, "thread_id": tid, "user_id": user_id,
            "turn": sum(1 for m in messages if getattr(m, "type", "") == "human"),
            "window": [list(x) for x in window],
            "pending": mem.get_pending(user_id, tid),
            "stage": "recorded", "created_at": time.time(),
            "owner": {"host": HOST, "pid": os.getpid()}, "fast": list(fast or []),
            # the forget generation the session started under: a forget after it drops the job
            "generation": mem.generation(user_id) if gen is None else gen,
        }
        key = f"{JOB_PREFIX}{time.time():017.6f}:{uuid.uuid4().hex[:12]}"
        ns = mem.ns(user_id, "pending")
        ops = [PutOp(ns, key, job, index=False)]
        if job["pending"] is not None:
            ops.append(PutOp(ns, tid or "-", None))  # the job owns it now
        mem.store.batch(ops)
        return key, job

    def submit(self, user_id: str, key: str, job: dict[str, Any]) -> bool:
        """Queue a recorded job; False (run it inline) when `max_pending` jobs are queued."""
        if self._closed or not self._room.acquire(blocking=False):
            return False
        with self._idle:
            self._outstanding += 1
        lane = zlib.crc32(user_id.encode()) % len(self._lanes)
        self._lanes[lane].put((user_id, key, job))
        return True

    def hold(self, user_id: str, tid: str, key: str, job: dict[str, Any]) -> None:
        """Keep a recorded job until `release(user, thread)`: after the answer is complete.
        Jobs held earlier for the same thread are released first (their answer is done)."""
        self.release(user_id, tid)
        with self._held_lock:
            self._held.setdefault((user_id, tid), []).append((key, job))

    def release(self, user_id: str | None = None, tid: str | None = None) -> int:
        """Queue the held jobs of (user, thread) (None, None: all), in order; a job that finds
        the queue full runs inline (backpressure). Returns how many were released."""
        with self._held_lock:
            if user_id is None:
                items = [(k[0], x) for k, v in self._held.items() for x in v]
                self._held.clear()
            else:
                items = [(user_id, x) for x in self._held.pop((user_id, tid or ""), [])]
        for uid, (key, job) in items:
            if not self.submit(uid, key, job):
                self.inline += 1
                self._run_logged(uid, key, job)
        return len(items)

    def _run_logged(self, user_id: str, key: str, job: dict[str, Any]) -> None:
        try:
            self.run_job(user_id, key, job)
        except Exception as e:  # noqa: BLE001 - the job stays in the store for recovery
            self.failed += 1
            log.warning("VARS learning failed for user %r (kept for retry): %r", user_id, e)

    # worker side ------------------------------------------------------------------------------
    def run_job(self, user_id: str, key: str, job: dict[str, Any]) -> None:
        """Reward, update and extract of one recorded turn, then delete the job record."""
        engine = self.engine
        memory = _JobMemory(engine.memory, key, job)
        gen = job.get("generation")
        config: RunnableConfig = {"configurable": {"thread_id": job.get("thread_id") or "default",
                                                   "user_id": user_id}}
        state: dict[str, Any] = {"messages": _messages(job)}
        try:
            if _forgotten(engine.memory, user_id, job):
                raise _Forgotten
            if last_user_text(state["messages"]).strip():
                state.update(make_reward(engine, memory)(state, config, None))
                state.update(make_update(engine, memory)(state, config, None))
                extractor = _SkipFast(engine.extractor, job["fast"], engine.embedder) \
                    if job.get("fast") else engine.extractor
                # the job's card writes carry its forget generation; the session noted the thread
                extract = make_extract(engine, extractor=extractor, note_thread=False,
                                       generation=gen if isinstance(gen, int) else None)
                state.update(extract(state, config, None))
        except _Forgotten:  # forget wins: nothing of this job is written
            log.info("VARS learning job of a forgotten session of user %r dropped", user_id)
            state = {}
        engine.memory.store.delete(engine.memory.ns(user_id, "pending"), key)
        self.last[(user_id, str(job.get("thread_id") or ""))] = {
            "turn": job.get("turn"), "reward": state.get("reward"),
            "extracted": state.get("extracted", []), "finished_at": time.time()}

    def _loop(self, q: queue.Queue) -> None:
        while True:
            item = q.get()
            if item is None:
                return
            try:
                self.run_job(*item)
                self.done += 1
            except Exception as e:  # noqa: BLE001 - the job stays in the store for recovery
                self.failed += 1
                # after close (interpreter exit) its model server may be gone: not a fault
                (log.info if self._closed else log.warning)(
                    "VARS background learning failed for user %r (kept for retry): %r", item[0], e)
            finally:
                self._room.release()
                with self._idle:
                    self._outstanding -= 1
                    self._idle.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued job has run; True if none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._outstanding:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop taking jobs, finish the queued ones (up to `timeout`), stop the threads.
        Jobs not finished stay in the store and are recovered later."""
        self.release()
        self._closed = True
        ok = self.drain(timeout)
        for q in self._lanes:
            q.put(None)
        return ok

    def pending_jobs(self, user_id: str) -> list[tuple[str, dict[str, Any]]]:
        mem = self.engine.memory
        return sorted((k, v) for k, v in mem._items(user_id, "pending")
                      if k.startswith(JOB_PREFIX) and v.get("kind") == JOB_KIND)

    def _all_jobs(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every recorded job of every user: one filtered store search per page."""
        store, out, offset = self.engine.memory.store, [], 0
        while True:
            items = store.search((ROOT,), filter={"kind": JOB_KIND}, limit=PAGE, offset=offset)
            # the user is the namespace the job sits in, never the job's own `user_id` field
            # (an imported or tampered record must not write into another user's memory)
            out += [(unlabel(it.namespace[1]), it.key, it.value) for it in items
                    if len(it.namespace) == 3 and it.namespace[2] == "pending"
                    and it.key.startswith(JOB_PREFIX)]
            if len(items) < PAGE:
                return sorted(out, key=lambda x: x[1])
            offset += PAGE

    def recover(self, min_age_s: float = 0.0, users: list[str] | None = None) -> int:
        """Queue (or run) jobs left in the store by a stopped process: those at least
        `min_age_s` old, and those whose owner process on this host has exited (any age).
        Returns how many."""
        n = 0
        now = time.time()
        jobs = self._all_jobs() if users is None else \
            [(u, k, j) for u in users for k, j in self.pending_jobs(u)]
        for uid, key, job in jobs:
            if now - float(job.get("created_at", 0)) < min_age_s and not owner_gone(job):
                continue
            n += 1
            if not self.submit(uid, key, job):
                self.run_job(uid, key, job)
        return n


_LIVE: weakref.WeakSet[BackgroundLearner] = weakref.WeakSet()
_GUARD = threading.Lock()


@atexit.register
def close_all() -> None:  # pragma: no cover - exit path
    """Finish every live learner's queued jobs (up to 5 s each); the rest stay in the store.
    Idempotent: the local server's exit handler calls it before stopping the server."""
    for learner in list(_LIVE):
        learner.close(timeout=EXIT_TIMEOUT_S)


def get_learner(engine: VARSEngine) -> BackgroundLearner:
    """The engine's learner (created on first use; recovers stale jobs in the background)."""
    learner = engine.learner
    if learner is None:
        with _GUARD:
            learner = engine.learner
            if learner is None:
                learner = engine.learner = BackgroundLearner(engine)
                age = engine.config.background.recover_after_s
                threading.Thread(target=_recover_quietly, args=(learner, age), daemon=True,
                                 name="vars-learn-recover").start()
    return learner


def _recover_quietly(learner: BackgroundLearner, age: float) -> None:
    try:
        n = learner.recover(min_age_s=age)
        if n:
            log.info("VARS background: recovered %d learning jobs", n)
    except Exception as e:  # noqa: BLE001
        log.warning("VARS background: recovery failed: %r", e)


# the graph node -------------------------------------------------------------------------------
def make_learn(engine: VARSEngine):
    """The hot-path node that replaces reward, update and extract when background is on."""

    def learn(state: VARSState, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        user_id = resolve_user_id(runtime, config)
        messages = state.get("messages", [])
        query = last_user_text(messages)
        if not query.strip():
            raise BadInput("the last message must be a non-empty user message")
        learner = get_learner(engine)
        tid = thread_id(config)
        prefs = _fast(engine, query)
        key, job = learner.record(user_id, tid, messages, fast=[_norm(p.action) for p in prefs])
        learner.hold(user_id, tid, key, job)  # released once the answer is complete
        return {"query": query,
                "extracted": fast_path(engine, user_id, tid, job["turn"], query, prefs)}

    return learn


def _norm(text: str) -> str:
    return " ".join("".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split())


def _fast(engine: VARSEngine, query: str) -> list[Preference]:
    if not engine.config.extractor.enabled:
        return []
    try:
        return list(fast_preferences(query))
    except Exception as e:  # noqa: BLE001 - the recorded job's LLM extraction still runs
        log.warning("VARS fast preference path failed (the background extraction remains): %r", e)
        return []


class _SkipFast:
    """The engine's extractor minus preferences that say what the fast path already stored for
    this turn (the same action in other words: "keep answers in bullet points" after "prefer
    answers in bullet points"; one card, not two)."""

    SAME_ACTION = 0.8  # cosine of the two actions' embeddings
    SAME_WORDS = 0.6  # or Jaccard overlap of their content words

    def __init__(self, extractor: Any, fast: list[str], embedder: Any):
        self._extractor, self._fast, self._embedder = extractor, sorted(set(fast)), embedder
        self.with_rules = getattr(extractor, "with_rules", False)  # gated and joined as the inner

    def extract(self, turns: Any) -> list[Preference]:
        prefs = [p for p in self._extractor.extract(turns) if _norm(p.action) not in self._fast]
        if not prefs or not self._fast:
            return prefs
        fast = self._embedder.embed_documents(self._fast)
        mine = self._embedder.embed_documents([p.action for p in prefs])
        sims = (mine @ fast.T).max(axis=1)
        return [p for p, sim in zip(prefs, sims, strict=True)
                if sim < self.SAME_ACTION and _word_overlap(p.action, self._fast) < self.SAME_WORDS]


def _word_overlap(action: str, others: list[str]) -> float:
    """Largest Jaccard overlap of content words between `action` and any of `others`."""
    mine = content_words(action)
    return max((len(mine & w) / len(mine | w) for w in map(content_words, others) if mine | w),
               default=0.0)


def fast_path(engine: VARSEngine, user_id: str, tid: str, turn: int, query: str,
              prefs: list[Preference] | None = None) -> list[dict]:
    """Store the explicit preferences of this message at once (rule based, no LLM), so they
    shape this very answer; the job's LLM extraction later skips the same actions and merges
    near-duplicates."""
    prefs = _fast(engine, query) if prefs is None else prefs
    try:
        if not prefs:
            return []
        source = CardSource(thread_id=tid, turn=turn, query=query[:500])
        return [c.public() for c in engine.add_preferences(user_id, prefs, source)]
    except Exception as e:  # noqa: BLE001 - the recorded job's LLM extraction still runs
        log.warning("VARS fast preference path failed (the background extraction remains): %r", e)
        return []


def releasing(engine: VARSEngine, fn: Any) -> Any:
    """Wrap `generate`: when it returns (or fails), release this turn's held learning job."""

    @functools.wraps(fn)
    def wrapped(state: Any, config: RunnableConfig, runtime: Runtime) -> Any:
        try:
            return fn(state, config, runtime)
        finally:
            try:
                get_learner(engine).release(resolve_user_id(runtime, config), thread_id(config))
            except Exception as e:  # noqa: BLE001 - the job is in the store: recovered later
                log.warning("VARS could not queue background learning: %r", e)

    return wrapped


HOT_PATH = ("retrieve", "rerank", "augment", "generate")


def add_background_nodes(builder: Any, engine: VARSEngine, prefix: str = "") -> list[str]:
    """`learn` then the hot-path nodes; returns their names in order (graph.py wires them)."""
    fn = make_learn(engine)
    if engine.config.fail_open:
        fn = fail_open("learn", fn)
    builder.add_node(prefix + "learn", bounded(fn, node_slots(engine)))
    names = add_vars_nodes(builder, engine, HOT_PATH[:-1], prefix=prefix)
    if isinstance(builder, StateGraph):  # `generate` releases the job when the answer is done
        builder.add_node(prefix + "generate",
                         bounded(releasing(engine, make_generate(engine)), node_slots(engine)))
        names.append(prefix + "generate")
    return [prefix + "learn", *names]
