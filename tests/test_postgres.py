"""Scaling out: Postgres shared by app processes, async with bounded concurrency, learning in
the background, pgvector retrieval.

Storage-layer tests run on real Postgres (CI's `.ci/postgres.sh`), real SQLite, real FAISS and
real MiniLM, with a keyword extractor and a scripted chat model (the LLMs are not under test
here); the `llm` test at the end runs the whole loop on the real llama.cpp server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage

from tests.pg import RuleExtractor, fresh_database, has_pgvector
from vars_langgraph import VARSConfig, VARSEngine, build_graph
from vars_langgraph.background import get_learner
from vars_langgraph.storage import open_checkpointer, open_store
from vars_langgraph.types import CardSource, Preference

PG_URL = os.environ.get("VARS_TEST_POSTGRES_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="VARS_TEST_POSTGRES_URL not set")
REPO = Path(__file__).resolve().parents[1]


def make_graph(config: VARSConfig, chat: Any = None):
    engine = VARSEngine(config, open_store(config), index_dir=config.data_path / "index",
                        extractor=RuleExtractor(),
                        chat_model=chat or FakeListChatModel(responses=["Sure."]))
    return build_graph(config, engine=engine, checkpointer=open_checkpointer(config))


def close(graph) -> None:
    for obj in (graph.engine.store, graph.checkpointer):
        getattr(obj, "close", lambda: None)()


def turn(graph, text: str, thread: str, user: str) -> dict[str, Any]:
    return graph.invoke({"messages": [("user", text)]},
                        {"configurable": {"thread_id": thread, "user_id": user}})


# two app processes, one Postgres ---------------------------------------------------------------
class App:
    """An app process (`python -m tests.pg serve`) talking JSON lines."""

    def __init__(self, url: str, data_dir: Path):
        env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.pg", "serve", url, str(data_dir)], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def ready(self) -> None:
        assert json.loads(self._line())["ready"]

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"app process exited with {self.proc.wait()}")
        return line

    def ask(self, **req: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@needs_pg
def test_a_card_learned_in_one_process_is_used_by_the_other(tmp_path, make_config):
    """Process A (a subprocess) and process B (this one), each with its own FAISS cache."""
    url = fresh_database(PG_URL, "two_processes")
    a = App(url, tmp_path / "a")  # loads its models while B starts: setup() races are covered
    try:
        b = make_graph(make_config(url, retrieval={"select_k": 1}))
        first = turn(b, "hello there", "b1", "alice")
        assert first["selected"] == []  # B has cached alice's (empty) card set
        rebuilds = b.engine.index.rebuilds
        a.ready()

        learned = a.ask(user="alice", thread="a1", text="Please always use bullet points")
        assert learned["extracted"] == ["use bullet points"]

        used = turn(b, "explain how DNS resolution works", "b1", "alice")
        assert "use bullet points" in used["system_prompt"]
        assert b.engine.index.rebuilds > rebuilds  # B's cache saw the new version token

        # feedback given in B moves the user vector that A reads, and A uses B's cards
        fb = turn(b, "No, that's not what I asked. Write python", "b1", "alice")
        assert fb["reward"]["value"] < 0 and fb["reward"]["applied"]
        assert a.ask(op="vector", user="alice")["vector"]["updates"] == 1
        out = a.ask(user="alice", thread="a1", text="write code to parse a CSV file")
        assert "use Python with type hints" in out["system_prompt"]
        # and nobody else sees alice's cards
        assert a.ask(user="bob", thread="a2", text="explain DNS")["selected"] == []
        close(b)
    finally:
        a.stop()


# the graph end to end on each backend -----------------------------------------------------------
def test_graph_on_backend_learns_and_survives_reopen(storage, make_config):
    config = make_config(storage, retrieval={"select_k": 1})
    g = make_graph(config)
    turn(g, "I want bullet points, and write python please", "s1", "alice")
    close(g)
    g = make_graph(config)  # a new process would do exactly this
    out = turn(g, "write a function that reverses a string", "s2", "alice")
    assert "use Python with type hints" in out["system_prompt"]
    out = turn(g, "No, that's not what I asked", "s2", "alice")
    assert out["reward"]["applied"] and g.engine.load_vector("alice").updates == 1
    state = g.get_state({"configurable": {"thread_id": "s2"}})
    assert len(state.values["messages"]) == 4  # the checkpointer kept the thread
    assert g.engine.memory.users() == ["alice"]
    close(g)


class SlowCountingChat(FakeListChatModel):
    """Scripted chat model that records how many calls overlap."""

    active: int = 0
    peak: int = 0
    lock: Any = None

    def _call(self, *args: Any, **kwargs: Any) -> str:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return super()._call(*args, **kwargs)


def test_async_many_users_bounded_concurrency(storage, make_config):
    config = make_config(storage, max_concurrency=2, retrieval={"select_k": 1})
    chat = SlowCountingChat(responses=["Sure."], lock=threading.Lock())
    g = make_graph(config, chat)
    users = [f"user{i}" for i in range(8)]

    async def one(u: str) -> dict[str, Any]:
        cfg = {"configurable": {"thread_id": f"t-{u}", "user_id": u}}
        await g.ainvoke({"messages": [("user", f"I like short answers, {u}")]}, cfg)
        nodes = []
        async for chunk in g.astream({"messages": [("user", "explain recursion")]}, cfg,
                                     stream_mode="updates"):
            nodes += list(chunk)
        return {"nodes": nodes, "state": (await g.aget_state(cfg)).values}

    async def main() -> list[dict[str, Any]]:
        return await asyncio.gather(*(one(u) for u in users))

    results = asyncio.run(main())
    assert chat.peak <= 2  # max_concurrency bounds the overlapping node runs
    for u, r in zip(users, results, strict=True):
        assert r["nodes"] == ["reward", "update", "extract", "retrieve", "rerank", "augment",
                              "generate"]
        assert "keep answers short" in r["state"]["system_prompt"]
        assert len(g.engine.memory.list_cards(u)) == 1  # each user only their own card
    close(g)


@needs_pg
def test_langgraph_async_postgres_classes_end_to_end(make_config):
    """`open_async_postgres`: LangGraph's AsyncPostgresStore + AsyncPostgresSaver on one async
    pool; the sync VARS nodes reach them from LangGraph's worker threads."""
    from vars_langgraph.storage.postgres import open_async_postgres

    url = fresh_database(PG_URL, "async_classes")
    config = make_config(url, retrieval={"select_k": 1})

    async def main() -> dict[str, Any]:
        async with open_async_postgres(url, config) as (store, saver):
            engine = VARSEngine(config, store, index_dir=config.data_path / "index",
                                extractor=RuleExtractor(),
                                chat_model=FakeListChatModel(responses=["Sure."]))
            g = build_graph(config, engine=engine, checkpointer=saver)
            cfg = {"configurable": {"thread_id": "s1", "user_id": "alice"}}
            await g.ainvoke({"messages": [("user", "I like bullet points")]}, cfg)
            cfg = {"configurable": {"thread_id": "s2", "user_id": "alice"}}
            out = await g.ainvoke({"messages": [("user", "explain DNS")]}, cfg)
            assert len((await g.aget_state(cfg)).values["messages"]) == 2
            return out

    out = asyncio.run(main())
    assert "use bullet points" in out["system_prompt"]


# learning in the background -------------------------------------------------------------------
def test_background_learning_off_the_hot_path(storage, make_config):
    config = make_config(storage, retrieval={"select_k": 1}, background={"enabled": True})
    g = make_graph(config)
    nodes = [n for n in g.get_graph().nodes if not n.startswith("__")]
    assert nodes == ["learn", "retrieve", "rerank", "augment", "generate"]
    learner = get_learner(g.engine)
    out = turn(g, "Please always use bullet points", "s1", "alice")
    assert isinstance(out["messages"][-1], AIMessage)
    assert learner.drain(30)
    assert [c.action for c in g.engine.memory.list_cards("alice")] == ["use bullet points"]
    out = turn(g, "explain how a hash map works", "s1", "alice")
    assert "use bullet points" in out["system_prompt"]  # learned last turn, used now
    turn(g, "No, that's not what I asked", "s1", "alice")
    assert learner.drain(30) and learner.failed == 0
    vec = g.engine.load_vector("alice")
    assert vec.updates == 1 and vec.baseline < 0
    assert learner.pending_jobs("alice") == []  # every job done and deleted
    # backpressure: with the queue full, a turn learns inline (nothing is dropped)
    while learner._room.acquire(blocking=False):
        pass
    turn(g, "write python for me from now on", "s2", "alice")
    assert learner.inline == 1
    assert "use Python with type hints" in [c.action for c in g.engine.memory.list_cards("alice")]
    close(g)


def test_background_jobs_survive_a_stop_and_apply_once(storage, make_config):
    config = make_config(storage, retrieval={"select_k": 1}, background={"enabled": True})
    g = make_graph(config)
    learner = get_learner(g.engine)
    turn(g, "Please always use bullet points", "s1", "alice")
    turn(g, "explain how a hash map works", "s1", "alice")
    assert learner.drain(30)
    # the process "stops" right after recording the next job: it is in the store, not run
    from langchain_core.messages import HumanMessage

    state = g.get_state({"configurable": {"thread_id": "s1"}}).values
    msgs = [*state["messages"], HumanMessage("No, that's not what I asked, write python")]
    learner.record("alice", "s1", msgs)
    assert len(learner.pending_jobs("alice")) == 1
    close(g)

    g = make_graph(config)  # a new process: its worker recovers the job
    learner = get_learner(g.engine)
    assert learner.recover(min_age_s=3600) == 0  # a fresh job may still be running elsewhere
    assert learner.recover(min_age_s=0) == 1 and learner.drain(30)
    vec = g.engine.load_vector("alice")
    assert vec.updates == 1 and vec.baseline < 0  # the feedback was not lost
    assert "use Python with type hints" in [c.action for c in g.engine.memory.list_cards("alice")]
    assert learner.pending_jobs("alice") == []
    # a job whose update was already committed is not applied twice
    key, job = learner.record("alice", "s1", msgs)
    job = {**job, "pending": {"candidates": [], "query": "x"}, "stage": "updated"}
    learner.run_job("alice", key, job)
    assert g.engine.load_vector("alice").updates == 1
    close(g)


# pgvector ---------------------------------------------------------------------------------------
@needs_pg
@pytest.mark.parametrize("reads", ["direct", "public_api"])
def test_pgvector_retrieval_matches_faiss(make_config, monkeypatch, reads):
    """pgvector search gives FAISS's hits, cards written before pgvector was on included;
    `public_api`: the stores have no direct reader of LangGraph's tables (what `setup()`
    leaves on an unknown schema), so reads go through search/get and the backfill re-puts
    the cards through `batch`."""
    if reads == "public_api":
        import vars_langgraph.storage.postgres as pg

        monkeypatch.setattr(pg, "tables_for_postgres", lambda pool: None)
    if not has_pgvector(PG_URL):
        if os.environ.get("CI"):  # .ci/postgres.sh has pgvector (pgserver): CI must run this path
            pytest.fail("the CI Postgres server has no pgvector")
        pytest.skip("the Postgres server has no pgvector")
    url = fresh_database(PG_URL, f"pgvector_{reads}")
    g_faiss = make_graph(make_config(url))
    assert (g_faiss.engine.store.tables is None) == (reads == "public_api")
    turn(g_faiss, "I like bullet points and python, keep it short", "s1", "alice")  # pre-pgvector
    g_vec = make_graph(make_config(url, postgres={"retrieval": "pgvector"}))
    assert type(g_vec.engine.index).__name__ == "PgVectorCardIndex"
    turn(g_vec, "Also, bullet points for the answers about python code please", "s2", "bob")
    for user in ("alice", "bob"):
        q = g_vec.engine.embed_query("how do I write a sorting function")
        want = g_faiss.engine.index.search(user, q, 10)
        got = g_vec.engine.index.search(user, q, 10)
        assert [c.id for c, _ in got] == [c.id for c, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-4)
    close(g_faiss)
    close(g_vec)


@needs_pg
def test_pgvector_top_k_is_filled_with_active_cards(make_config):
    """Archived cards stay in Postgres (kept for the user) but must not take top-K slots."""
    if not has_pgvector(PG_URL):
        if os.environ.get("CI"):
            pytest.fail("the CI Postgres server has no pgvector")
        pytest.skip("the Postgres server has no pgvector")
    url = fresh_database(PG_URL, "pgvector_archived")
    cfg = make_config(url, postgres={"retrieval": "pgvector"})
    engine = VARSEngine(cfg, open_store(cfg), extractor=RuleExtractor())
    near = [("writing python code", a) for a in (
        "add type hints", "use f-strings", "prefer list comprehensions", "follow PEP 8 naming",
        "add docstrings to python functions", "print the python traceback when debugging")]
    far = [("planning a trip", "book trains over flights"),
           ("suggesting recipes", "keep them vegetarian"),
           ("recommending movies", "avoid horror"), ("explaining math", "show each step")]
    engine.add_preferences("alice", [Preference(condition=c, action=a) for c, a in near + far],
                           CardSource(thread_id="s1"))
    cards = engine.memory.list_cards("alice")
    assert len(cards) == 10
    archived = [c.model_copy(update={"status": "archived", "status_reason": "test"})
                for c in cards if "python" in c.note]
    engine.memory.put_cards("alice", archived)
    q = engine.embed_query("how do I write a python function")
    got = engine.index.candidates("alice", q, 3, 0)
    assert len(got) == 3 and not any("python" in c["note"] for c in got)
    assert len(engine.memory.list_cards("alice")) == 10  # every card kept in the store


@needs_pg
def test_card_write_lock_is_a_per_user_advisory_lock(make_config):
    """Postgres storage serialises one user's card writes across processes with an advisory
    lock (not the data dir's file lock): a second holder for the same user waits, another
    user does not, and the lock is re-entrant within a thread."""
    url = fresh_database(PG_URL, "locks")
    a, b = (VARSEngine(make_config(url), open_store(make_config(url)), extractor=RuleExtractor())
            for _ in range(2))
    order: list[str] = []
    held = threading.Event()

    def hold() -> None:
        with a.card_write_lock("alice"), a.card_write_lock("alice"):  # re-entrant
            held.set()
            time.sleep(0.5)
            order.append("a-release")

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(10)
    t0 = time.perf_counter()
    with b.card_write_lock("bob"):
        assert time.perf_counter() - t0 < 0.4  # another user: no wait
    with b.card_write_lock("alice"):
        order.append("b-acquired")
    t.join()
    assert order == ["a-release", "b-acquired"]
    for e in (a, b):
        e.store.close()


# the real stack -----------------------------------------------------------------------------------
@pytest.mark.llm
@needs_pg
def test_end_to_end_real_llm_async_background(make_config, llm_base_url):
    """Real llama.cpp server (generation and extraction) on Postgres, async, learning in the
    background: a stated preference is learned off the hot path and shapes a later session in
    another graph (another process would do the same). One extraction: the LLM is slow here."""
    url = fresh_database(PG_URL, "real_llm")
    config = make_config(url, llm_url=llm_base_url, background={"enabled": True})
    graph = build_graph(config)
    learner = get_learner(graph.engine)

    async def first() -> None:
        cfg = {"configurable": {"thread_id": "s1", "user_id": "alice"}}
        out = await graph.ainvoke({"messages": [("user", "I prefer answers in bullet points.")]},
                                  cfg)
        assert out["messages"][-1].content.strip()
        assert await asyncio.to_thread(learner.drain, 400)

    asyncio.run(first())
    cards = graph.engine.memory.list_cards("alice")
    assert any("bullet" in c.note.lower() for c in cards), [c.note for c in cards]
    close(graph)

    later = build_graph(make_config(url, llm_url=llm_base_url, extractor={"enabled": False}))
    out = asyncio.run(later.ainvoke({"messages": [("user", "What is a hash map?")]},
                                    {"configurable": {"thread_id": "s2", "user_id": "alice"}}))
    assert "bullet" in out["system_prompt"].lower(), out["system_prompt"]
    assert out["messages"][-1].content.strip()
    close(later)
