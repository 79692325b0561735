"""Isolation under load: 52 users, each with its own marker preferences, in concurrent threads
AND asyncio tasks through ONE graph, ONE SQLite store, ONE checkpointer and ONE FAISS index
for several hundred turns. No card of one user ever appears in another user's candidates,
selected cards, extracted cards, system prompt, the chat model's input, the pending feedback
or the REINFORCE update of the user vector.

Storage (SQLite files), FAISS and the embedder (MiniLM) are the real ones. The extractor is a
deterministic rule extractor ("PREF <topic> <marker>") and the chat model a scripted one that
answers "ok." and records its input, only because these tests are about isolation logic and
must be fast; `test_isolation_with_the_real_local_server` repeats a smaller run with the real
llama.cpp server (extractor and answers), marked `llm`.

User ids are chosen to stress namespaces: dots, '%', '_' (SQL LIKE wildcards) and prefixes of
one another; half the users pass their id in `configurable`, half in the runtime context.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from langgraph.config import get_config

from tests._reliability import MarkerExtractor, RecordingChat, marker, marker_owners, run_user_id
from tests.conftest import extractor_url
from vars_langgraph import VARSConfig, VARSEngine, build_graph
from vars_langgraph.learning import policy
from vars_langgraph.storage import open_checkpointer, open_store

N_USERS = 52
TOPICS = ["cooking", "travel", "music", "gardening"]
NEGATIVE = "no, that's not what I asked, you forgot what I said"


def user_id(u: int) -> str:
    """Ids that collide if namespaces, LIKE patterns or prefixes were mishandled."""
    return [f"user{u:03d}", f"u_{u:03d}", f"u%{u:03d}", f"u.{u:03d}@example.com",
            f"user{u:03d}.x"][u % 5]


def run_config(u: int, thread: str) -> tuple[dict, dict | None]:
    """(config, context): odd users pass the id in the runtime context only."""
    if u % 2:
        return {"configurable": {"thread_id": thread}}, {"user_id": user_id(u)}
    return {"configurable": {"thread_id": thread, "user_id": user_id(u)}}, None


def learn_script(u: int, first: int) -> list[str]:
    a, b = first, first + 1
    return [f"PREF {TOPICS[a]} {marker(u, a)} and PREF {TOPICS[b]} {marker(u, b)}",
            f"tell me about {TOPICS[a]}", NEGATIVE, f"and what about {TOPICS[b]}?"]


class Checker:
    """Collects every leak seen in a turn's output (checked in the worker, as it happens)."""

    def __init__(self):
        self.leaks: list[tuple[int, str, set[int]]] = []
        self.turns = 0
        self.recalled: list[tuple[int, int, str]] = []
        self._lock = threading.Lock()

    def check_update(self, u: int, node: str, update: dict | None) -> None:
        """One node's output (retrieve's candidates, rerank's, extract's cards, the prompt)."""
        for key, value in (update or {}).items():
            if key == "messages":
                continue
            owners = marker_owners(json.dumps(value, default=str)) - {u}
            if owners:
                with self._lock:
                    self.leaks.append((u, f"{node}.{key}", owners))

    def done(self) -> None:
        with self._lock:
            self.turns += 1


@pytest.fixture
def loaded(tmp_path, monkeypatch):
    cfg = VARSConfig.from_dict({"data_dir": str(tmp_path / "data"),
                                "retrieval": {"dedup_threshold": 0.99}, "max_concurrency": 8})
    chat = RecordingChat()
    engine = VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "data" / "index",
                        extractor=MarkerExtractor(), chat_model=chat)
    graph = build_graph(cfg, engine=engine, checkpointer=open_checkpointer(cfg))

    updates: list[tuple[str | None, np.ndarray]] = []
    real = policy.reinforce_update

    def spy(user, items, pi, chosen, reward, gate, pcfg):
        updates.append((run_user_id(get_config()), np.array(items, copy=True)))
        return real(user, items, pi, chosen, reward, gate, pcfg)

    monkeypatch.setattr(policy, "reinforce_update", spy)
    return graph, chat, updates


def _seen(checker: Checker, u: int, mode: str, data: dict, out: dict) -> None:
    if mode == "updates":
        for node, update in data.items():
            checker.check_update(u, node, update)
    else:
        out.clear()
        out.update(data)


def sync_turn(graph, checker: Checker, u: int, thread: str, text: str) -> dict:
    """One turn, every node's output checked as it streams; returns the final state."""
    config, context = run_config(u, thread)
    out: dict = {}
    for mode, data in graph.stream({"messages": [("user", text)]}, config, context=context,
                                   stream_mode=["updates", "values"]):
        _seen(checker, u, mode, data, out)
    checker.check_update(u, "final", out)
    checker.done()
    return out


async def async_turn(graph, checker: Checker, u: int, thread: str, text: str) -> dict:
    config, context = run_config(u, thread)
    out: dict = {}
    async for mode, data in graph.astream({"messages": [("user", text)]}, config,
                                          context=context, stream_mode=["updates", "values"]):
        _seen(checker, u, mode, data, out)
    checker.check_update(u, "final", out)
    checker.done()
    return out


def run_threads_and_tasks(sync_jobs, async_jobs, workers: int = 8) -> None:
    """Run the sync jobs on a thread pool while an event loop runs the async jobs."""
    errors: list[BaseException] = []

    async def all_tasks():
        res = await asyncio.gather(*(job() for job in async_jobs), return_exceptions=True)
        errors.extend(r for r in res if isinstance(r, BaseException))

    loop_thread = threading.Thread(target=lambda: asyncio.run(all_tasks()))
    loop_thread.start()
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(job) for job in sync_jobs]:
            try:
                f.result()
            except BaseException as e:  # noqa: BLE001 - collected and raised below
                errors.append(e)
    loop_thread.join()
    if errors:
        raise errors[0]


def test_no_card_crosses_users_under_concurrent_load(loaded):
    graph, chat, updates = loaded
    engine = graph.engine
    checker = Checker()

    # phase 1: every user learns two preferences in a thread AND two more in an async task, at
    # the same time (the same user is served by both paths concurrently)
    def sync_learn(u):
        def job():
            for text in learn_script(u, 0):
                sync_turn(graph, checker, u, f"A-{u}", text)
        return job

    def async_learn(u):
        async def job():
            for text in learn_script(u, 2):
                await async_turn(graph, checker, u, f"B-{u}", text)
        return job

    run_threads_and_tasks([sync_learn(u) for u in range(N_USERS)],
                          [async_learn(u) for u in range(N_USERS)])

    # phase 2: recall in new sessions, half the users on threads, half in async tasks
    def recall(out_list, u, j, out):
        out_list.append((u, j, out["system_prompt"]))

    def sync_recall(u):
        def job():
            for j in (0, 3):
                recall(checker.recalled, u, j,
                       sync_turn(graph, checker, u, f"C-{u}", f"tell me about {TOPICS[j]}"))
        return job

    def async_recall(u):
        async def job():
            for j in (1, 2):
                recall(checker.recalled, u, j,
                       await async_turn(graph, checker, u, f"D-{u}", f"tell me about {TOPICS[j]}"))
        return job

    run_threads_and_tasks([sync_recall(u) for u in range(N_USERS)],
                          [async_recall(u) for u in range(N_USERS)])

    assert checker.turns == N_USERS * 12 >= 600
    assert checker.leaks == []

    # the chat model's whole input (system prompt + thread history) of every call
    assert len(chat.calls) == checker.turns
    for uid, msgs in chat.calls:
        u = next(i for i in range(N_USERS) if user_id(i) == uid)
        assert marker_owners(json.dumps(msgs)) <= {u}, uid

    # every user has exactly its own four cards: none lost, none merged across users
    all_rows, owners = [], []
    for u in range(N_USERS):
        cards = engine.memory.list_cards(user_id(u))
        assert sorted(marker_owners(c.note).pop() for c in cards) == [u] * 4
        assert {c.user_id for c in cards} == {user_id(u)}
        assert sorted(c.action for c in cards) == sorted(
            f"mention the code word {marker(u, j)}" for j in range(4))
        ids = {c.id for c in cards}
        assert set(engine.index.get(user_id(u)).cards) == ids
        for tid in ("A", "B", "C", "D"):  # the pending feedback refers to own cards only
            pending = engine.memory.get_pending(user_id(u), f"{tid}-{u}") or {}
            assert {c["id"] for c in pending.get("candidates", [])} <= ids
            assert set(pending.get("selected_ids", [])) <= ids
        rows = engine.item_vectors(np.asarray([c.embedding for c in cards], np.float32))
        all_rows.append(rows)
        owners += [user_id(u)] * len(rows)

    # every REINFORCE update used item vectors of the updating user's own cards only
    table = np.concatenate(all_rows)
    assert len(updates) >= N_USERS
    for uid, items in updates:
        assert uid is not None
        for row in items:
            nearest = int(np.argmin(np.linalg.norm(table - row, axis=1)))
            assert np.allclose(table[nearest], row, atol=1e-6)
            assert owners[nearest] == uid

    # recall works (the test is not vacuous): each recall prompt holds own markers, and
    # mostly the marker of the topic asked about
    assert len(checker.recalled) == 4 * N_USERS
    assert all(marker_owners(p) == {u} for u, _, p in checker.recalled)
    hits = sum(marker(u, j) in p for u, j, p in checker.recalled)
    assert hits >= 0.9 * len(checker.recalled)

    # the index files on disk agree with the store, per user (a restart loads them)
    engine.index.flush()
    cfg = engine.config
    fresh = VARSEngine(cfg, open_store(cfg), index_dir=cfg.data_path / "index",
                       embedder=engine.embedder)
    for u in range(N_USERS):
        ui = fresh.index.get(user_id(u))
        assert {marker_owners(c.note).pop() for c in ui.cards.values()} == {u}
    assert fresh.index.rebuilds == 0
    assert sorted(engine.memory.users()) == sorted(user_id(u) for u in range(N_USERS))


@pytest.mark.llm
def test_isolation_with_the_real_local_server(tmp_path, llm_base_url):
    """A smaller concurrent run with the real extractor and answering model (llama.cpp)."""
    cfg = VARSConfig.from_dict({
        "data_dir": str(tmp_path / "data"),
        "llm": {"base_url": llm_base_url, "max_tokens": 16, "temperature": 0.0},
        "extractor": {"llm": {"base_url": extractor_url(llm_base_url)}},  # its own, as by default
    })
    graph = build_graph(cfg)
    checker = Checker()
    n = 2  # two users served at once; each real turn costs seconds on a 2-core CPU
    statements = [f"I always want you to end every answer with the code word {marker(u, 0)}."
                  for u in range(n)]

    def script(u):
        def job():
            sync_turn(graph, checker, u, f"L-{u}", statements[u])
            sync_turn(graph, checker, u, f"M-{u}", "What is the capital of France?")
        return job

    with ThreadPoolExecutor(n) as pool:
        for f in [pool.submit(script(u)) for u in range(n)]:
            f.result()
    assert checker.turns == 2 * n and checker.leaks == []
    for u in range(n):
        for c in graph.engine.memory.list_cards(user_id(u)):
            assert marker_owners(c.note) <= {u} and c.user_id == user_id(u)
    learned = sum(bool(graph.engine.memory.list_cards(user_id(u))) for u in range(n))
    assert learned >= 1  # the real extractor stored something, so the check above is not vacuous


def test_dropin_paths_and_tools_keep_users_apart(tmp_path):
    """The drop-in paths (recall/learn nodes in a user's own StateGraph, `create_react_agent`
    hooks, `create_agent` middleware) and the memory tools, on ONE shared engine/store/index,
    with users served concurrently from threads and asyncio tasks."""
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, create_react_agent

    from vars_langgraph.integrations import VARSMemory, VARSMemoryState

    cfg = VARSConfig.from_dict({"data_dir": str(tmp_path / "data"),
                                "retrieval": {"dedup_threshold": 0.99},
                                "background": {"enabled": False}})  # inline: counts per turn
    engine = VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "data" / "index",
                        extractor=MarkerExtractor(), chat_model=RecordingChat())
    memory = VARSMemory(engine=engine)
    chat = RecordingChat()

    b = StateGraph(VARSMemoryState)
    b.add_node("recall", memory.recall)
    b.add_node("model", lambda state, config: {
        "messages": [chat.invoke(memory.with_preferences(state), config)]})
    b.add_node("learn", memory.learn)
    b.add_edge(START, "recall")
    b.add_edge("recall", "model")
    b.add_edge("model", "learn")
    b.add_edge("learn", END)
    own_graph = b.compile(checkpointer=InMemorySaver(), store=engine.store)
    with pytest.warns(Warning):  # create_react_agent is deprecated in LangGraph v1, still works
        react = create_react_agent(chat, tools=[], pre_model_hook=memory.pre_model_hook,
                                   post_model_hook=memory.post_model_hook,
                                   checkpointer=InMemorySaver())
    agent = create_agent(chat, tools=[], middleware=[memory.middleware(tools=False)],
                         checkpointer=InMemorySaver())
    paths = [own_graph, react, agent]
    tb = StateGraph(MessagesState)
    tb.add_node("tools", ToolNode(memory.tools))
    tb.add_edge(START, "tools")
    tb.add_edge("tools", END)
    tool_graph = tb.compile(store=engine.store)

    n = 24
    checker = Checker()
    tool_outputs: list[tuple[int, str]] = []

    def script(u: int) -> list[str]:
        return [f"PREF {TOPICS[0]} {marker(u, 0)} and PREF {TOPICS[1]} {marker(u, 1)}",
                f"tell me about {TOPICS[0]}", NEGATIVE, f"tell me about {TOPICS[1]}"]

    def tool_turn(u: int) -> None:
        victim = (u + 1) % n
        ai = AIMessage("", tool_calls=[
            {"name": "search_preferences", "args": {"query": TOPICS[0], "user_id": user_id(victim)},
             "id": "s"},
            {"name": "remember_preference", "id": "r",
             "args": {"action": f"say {marker(u, 9)}", "user_id": user_id(victim)}},
            {"name": "forget_preference", "id": "f",
             "args": {"preference_id": engine.memory.list_cards(user_id(victim))[0].id
                      if engine.memory.list_cards(user_id(victim)) else "x"}},
        ])
        config, context = run_config(u, f"tools-{u}")
        out = tool_graph.invoke({"messages": [ai]}, config, context=context)
        for m in out["messages"][1:]:
            tool_outputs.append((u, m.content))

    def sync_job(u):
        def job():
            for text in script(u):
                config, context = run_config(u, f"dropin-{u}")
                out = paths[u % 3].invoke({"messages": [("user", text)]}, config, context=context)
                checker.check_update(u, f"path{u % 3}", out)
                checker.done()
            tool_turn(u)
        return job

    def async_job(u):
        async def job():
            for text in script(u):
                config, context = run_config(u, f"dropin-async-{u}")
                out = await paths[(u + 1) % 3].ainvoke({"messages": [("user", text)]}, config,
                                                       context=context)
                checker.check_update(u, f"apath{(u + 1) % 3}", out)
                checker.done()
        return job

    run_threads_and_tasks([sync_job(u) for u in range(n)], [async_job(u) for u in range(n)])

    assert checker.turns == 8 * n and checker.leaks == []
    assert len(chat.calls) == checker.turns
    for uid, msgs in chat.calls:  # every model input: own preferences only
        u = next(i for i in range(n) if user_id(i) == uid)
        assert marker_owners(json.dumps(msgs)) <= {u}, uid
    prompts = [json.dumps(msgs) for _, msgs in chat.calls]
    assert sum("User Preferences" in p for p in prompts) >= 4 * n  # not vacuous
    for u, text in tool_outputs:  # the tools only ever saw the run's user
        assert marker_owners(text) <= {u}, (u, text)
    for u in range(n):
        cards = engine.memory.list_cards(user_id(u))
        assert {c.user_id for c in cards} == {user_id(u)}
        owners = {o for c in cards for o in marker_owners(c.note)}
        assert owners == {u}, (u, owners)  # includes its own remembered MK..Q9Z card
        assert any(marker(u, 9) in c.note for c in cards)
