"""The storage API (issue 14, item 3): LangGraph's own classes in both shapes (sync, async via
`open_async_storage`), the explicit `StoreFeatures` interface, the async bridge of the sync
checkpointers, no private LangGraph API, and the `postgres` extra's message when it is missing."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.store.memory import InMemoryStore

from tests.pg import RuleExtractor, fresh_database
from vars_langgraph import VARSConfig, VARSEngine, build_graph
from vars_langgraph.integrations.store import RuntimeStore
from vars_langgraph.memory.index import CardIndex
from vars_langgraph.memory.store import UserMemory
from vars_langgraph.storage import (
    StoreFeatures,
    VARSSqliteSaver,
    VARSSqliteStore,
    open_async_storage,
    open_checkpointer,
    open_store,
    store_features,
)
from vars_langgraph.storage.bridge import bridged_methods
from vars_langgraph.storage.features import DEFAULTS
from vars_langgraph.types import CardSource, Preference

PG_URL = os.environ.get("VARS_TEST_POSTGRES_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="VARS_TEST_POSTGRES_URL not set")
ROOT = Path(__file__).resolve().parents[1]
PREF = Preference(condition="when answering questions", action="use bullet points", confidence=0.9)
SRC = CardSource(thread_id="t", turn=0)


def config_for(tmp_path: Path, storage: str = "sqlite") -> VARSConfig:
    return VARSConfig.from_dict({"data_dir": str(tmp_path / "data"), "storage": storage,
                                 "retrieval": {"select_k": 1}})


# the interface ----------------------------------------------------------------------------
def test_other_stores_get_the_documented_defaults(tmp_path):
    store = InMemoryStore()
    f = store_features(store)
    assert f is DEFAULTS and not isinstance(store, StoreFeatures)
    assert f.card_write_lock("alice") is None
    assert f.namespace_rows(("vars", "alice", "cards")) is None
    assert type(f.make_card_index(UserMemory(store), 8, None)) is CardIndex


def test_sqlite_store_implements_the_bulk_read(tmp_path):
    cfg = config_for(tmp_path)
    store = open_store(cfg)
    assert isinstance(store, VARSSqliteStore) and store_features(store) is store
    memory = UserMemory(store)
    store.put(memory.ns("alice", "cards"), "k1", {"note": "x"}, index=False)
    store.put(memory.ns("bob", "cards"), "k2", {"note": "y"}, index=False)
    rows = store.namespace_rows(memory.ns("alice", "cards"))
    assert [k for k, _ in rows] == ["k1"] and isinstance(rows[0][1], str | bytes)
    assert memory.card_rows("alice") == rows  # the memory uses it (not a search)


def test_sqlite_store_falls_back_to_the_public_api_on_an_unknown_schema(tmp_path):
    """`storage.features` reads LangGraph's `store` table only when its columns are the ones
    its SQL uses; else no reader, and the memory reads through `search`/`get`."""
    import sqlite3

    from vars_langgraph.memory.store import UNSUPPORTED
    from vars_langgraph.storage.features import tables_for_sqlite

    odd = sqlite3.connect(":memory:")
    odd.execute("CREATE TABLE store (prefix TEXT, key TEXT, blob TEXT)")
    assert tables_for_sqlite(odd, threading.Lock()) is None

    store = open_store(config_for(tmp_path))
    assert store.tables is not None  # LangGraph's schema as expected
    memory = UserMemory(store)
    store.put(memory.ns("alice", "cards"), "k1", {"note": "x"}, index=False)
    direct = memory.card_rows("alice")
    store.tables = None  # what setup() leaves on an unknown schema
    assert store.namespace_rows(memory.ns("alice", "cards")) is None
    assert store.item_value(memory.ns("alice", "cards"), "k1") is UNSUPPORTED
    public = memory.card_rows("alice")  # through search
    assert [k for k, _ in public] == [k for k, _ in direct] == ["k1"]


def test_sql_on_langgraphs_tables_only_in_the_adapter_module():
    """One module (`storage/features.py`) has SQL on LangGraph's tables; no module replaces a
    LangGraph lock."""
    sql = re.compile(r"\b(FROM|INTO|UPDATE|JOIN)\s+(store|store_vectors|checkpoints|"
                     r"checkpoint_writes|checkpoint_blobs)\b")
    offenders = []
    for f in sorted((ROOT / "vars_langgraph").rglob("*.py")):
        text = f.read_text()
        if sql.search(text) and f.name != "features.py":
            offenders.append(f.name)
        if re.search(r"\.lock\s*=\s*(contextlib\.)?nullcontext", text):
            offenders.append(f"{f.name}: lock replaced")
    assert offenders == []


class RecordingStore(InMemoryStore, StoreFeatures):
    """A user's store with its own features: the engine must use them."""

    def __init__(self):
        super().__init__()
        self.locked: list[str] = []
        self.indexes = 0
        self.rows_read = 0

    def make_card_index(self, memory, dim, index_dir, **kwargs):
        self.indexes += 1
        return super().make_card_index(memory, dim, index_dir, **kwargs)

    @contextmanager
    def _lock(self, user_id):
        self.locked.append(user_id)
        yield

    def card_write_lock(self, user_id):
        return self._lock(user_id)

    def namespace_rows(self, namespace):
        self.rows_read += 1
        return [(it.key, it.value) for it in self.search(namespace, limit=10**9)
                if tuple(it.namespace) == namespace]


def test_engine_uses_the_stores_features(tmp_path):
    store = RecordingStore()
    engine = VARSEngine(config_for(tmp_path, "memory"), store, index_dir=tmp_path / "index",
                        extractor=RuleExtractor())
    engine.add_preferences("alice", [PREF], SRC)
    assert store.locked == ["alice"] and store.indexes == 1 and store.rows_read >= 1
    assert not (tmp_path / "index" / ".cards.lock").exists()  # no file lock: the store's lock
    assert [c.action for c in engine.memory.list_cards("alice")] == ["use bullet points"]


def test_engine_falls_back_to_the_file_lock(tmp_path):
    engine = VARSEngine(config_for(tmp_path, "memory"), InMemoryStore(),
                        index_dir=tmp_path / "index", extractor=RuleExtractor())
    with engine.card_write_lock("alice"):
        assert (tmp_path / "index" / ".cards.lock").exists()


def test_runtime_store_forwards_per_call_features():
    inner = RecordingStore()
    rt = RuntimeStore(fallback=inner)
    assert isinstance(rt, StoreFeatures)
    with rt.card_write_lock("alice"):
        pass
    assert inner.locked == ["alice"]
    assert rt.namespace_rows(("vars", "alice", "cards")) == [] and inner.rows_read == 1
    assert RuntimeStore().namespace_rows(("vars", "a", "cards")) is None  # InMemoryStore


# the async API of the sync checkpointer ----------------------------------------------------
def test_bridge_fills_the_async_twin_of_each_implemented_sync_method():
    """An async method is filled in only where the sync class implements its twin: a saver
    claims (to LangGraph's conformance suite) only what works."""
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    def expected(cls: type) -> list[str]:
        return sorted(n for n in dir(BaseCheckpointSaver) if n.startswith("a")
                      and (inspect.iscoroutinefunction(getattr(BaseCheckpointSaver, n))
                           or inspect.isasyncgenfunction(getattr(BaseCheckpointSaver, n)))
                      and getattr(cls, n[1:], None) is not getattr(BaseCheckpointSaver, n[1:]))

    got = bridged_methods(VARSSqliteSaver)
    assert got == expected(SqliteSaver)
    assert {"aget_tuple", "alist", "aput", "aput_writes", "adelete_thread"} <= set(got)
    assert not {"acopy_thread", "adelete_for_runs", "aprune"} & set(got)  # SqliteSaver lacks them
    if PG_URL:  # the postgres extra is installed where the tests run against Postgres
        from langgraph.checkpoint.postgres import PostgresSaver

        from vars_langgraph.storage.postgres import VARSPostgresSaver

        assert bridged_methods(VARSPostgresSaver) == expected(PostgresSaver)
    # LangGraph passes task_path only when the signature has it
    assert "task_path" in inspect.signature(VARSSqliteSaver.aput_writes).parameters
    assert inspect.isasyncgenfunction(VARSSqliteSaver.alist)


def test_sync_built_graph_serves_ainvoke_on_sqlite(tmp_path):
    """`build_graph(config)` defaults: LangGraph's sync SQLite classes; the async loop drives
    the checkpointer's async API (bridged), the sync nodes the store."""
    cfg = config_for(tmp_path)
    saver = open_checkpointer(cfg)
    engine = VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "index",
                        extractor=RuleExtractor(), chat_model=FakeListChatModel(responses=["ok"]))
    g = build_graph(cfg, engine=engine, checkpointer=saver)
    conf = {"configurable": {"thread_id": "s1", "user_id": "alice"}}
    asyncio.run(g.ainvoke({"messages": [("user", "I like bullet points")]}, conf))
    g.invoke({"messages": [("user", "and again")]}, conf)  # the same objects, sync
    history = asyncio.run(_collect(g.aget_state_history(conf)))  # alist
    assert len(history) >= 2 and len(g.get_state(conf).values["messages"]) == 4


async def _collect(agen):
    return [x async for x in agen]


# open_async_storage ------------------------------------------------------------------------
async def _two_turns(cfg: VARSConfig, tmp_path: Path):
    async with open_async_storage(cfg) as (store, saver):
        engine = VARSEngine(cfg, store, index_dir=tmp_path / "index", extractor=RuleExtractor(),
                            chat_model=FakeListChatModel(responses=["Sure."]))
        g = build_graph(cfg, engine=engine, checkpointer=saver)
        await g.ainvoke({"messages": [("user", "I like bullet points")]},
                        {"configurable": {"thread_id": "s1", "user_id": "alice"}})
        conf = {"configurable": {"thread_id": "s2", "user_id": "alice"}}
        out = await g.ainvoke({"messages": [("user", "explain DNS")]}, conf)
        assert len((await g.aget_state(conf)).values["messages"]) == 2
        if cfg.storage == "sqlite":  # forget from a worker thread: rows gone, WAL truncated
            assert await asyncio.to_thread(engine.forget_user, "bob") == 0
            await asyncio.to_thread(engine.add_preferences, "bob", [PREF], SRC)
            assert await asyncio.to_thread(engine.forget_user, "bob") > 0
            assert (cfg.data_path / "vars.sqlite-wal").stat().st_size == 0
        return type(store), type(saver), store_features(store), out


def test_open_async_storage_sqlite_uses_langgraphs_async_classes(tmp_path):
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    cfg = config_for(tmp_path)
    store_t, saver_t, _, out = asyncio.run(_two_turns(cfg, tmp_path))
    assert issubclass(store_t, AsyncSqliteStore) and issubclass(saver_t, AsyncSqliteSaver)
    assert "use bullet points" in out["system_prompt"]
    # the same files and tables: the sync classes read what the async ones wrote
    assert [c.action for c in UserMemory(open_store(cfg)).list_cards("alice")] == ["use bullet points"]
    saver = open_checkpointer(cfg)
    state = saver.get_tuple({"configurable": {"thread_id": "s2", "checkpoint_ns": ""}})
    assert state is not None and len(state.checkpoint["channel_values"]["messages"]) == 2
    mode = saver.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_open_async_storage_memory(tmp_path):
    _, _, features, out = asyncio.run(_two_turns(config_for(tmp_path, "memory"), tmp_path))
    assert features is DEFAULTS and "use bullet points" in out["system_prompt"]


@needs_pg
def test_open_async_storage_postgres(tmp_path):
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.store.postgres.aio import AsyncPostgresStore

    url = fresh_database(PG_URL, "async_storage")
    cfg = config_for(tmp_path, url)
    store_t, saver_t, features, out = asyncio.run(_two_turns(cfg, tmp_path))
    assert issubclass(store_t, AsyncPostgresStore) and issubclass(saver_t, AsyncPostgresSaver)
    assert features.card_write_lock("alice") is not None  # the advisory lock, not a file lock
    assert "use bullet points" in out["system_prompt"]
    store = open_store(cfg)  # the sync classes read what the async ones wrote
    try:
        assert [c.action for c in UserMemory(store).list_cards("alice")] == ["use bullet points"]
        assert [k for k, _ in store.namespace_rows(UserMemory.ns("alice", "cards"))]
    finally:
        store.close()


@needs_pg
def test_postgres_classes_have_the_from_conn_string_shape():
    from vars_langgraph.storage.postgres import VARSPostgresSaver, VARSPostgresStore

    url = fresh_database(PG_URL, "from_conn_string")
    with VARSPostgresStore.from_conn_string(url) as store, \
            VARSPostgresSaver.from_conn_string(url) as saver:
        store.setup()
        saver.setup()
        store.put(("vars", "a", "cards"), "k", {"note": "n"}, index=False)
        assert store.namespace_rows(("vars", "a", "cards"))[0][0] == "k"
        assert store.tables is not None  # the schema check at setup() passed
        assert saver.get_tuple({"configurable": {"thread_id": "x", "checkpoint_ns": ""}}) is None
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, pytest.raises(TypeError, match="pool"):
        VARSPostgresStore(conn)  # VARS's own SQL and locks need a pool


# no private LangGraph API -------------------------------------------------------------------
def test_no_private_langgraph_api_in_storage_engine_memory():
    files = [*sorted((ROOT / "vars_langgraph" / "storage").glob("*.py")),
             ROOT / "vars_langgraph" / "engine.py", ROOT / "vars_langgraph" / "memory" / "store.py",
             ROOT / "vars_langgraph" / "integrations" / "store.py"]
    bad = []
    for f in files:
        text = f.read_text()
        bad += [f"{f.name}: {m}" for m in re.findall(r"def _cursor\b|\._cursor\(", text)]
        bad += [f"{f.name}: {m}" for m in re.findall(r"from langgraph\S* import \(?\s*_\w+", text)]
        bad += [f"{f.name}: getattr(...{m})" for m in
                re.findall(r"getattr\([^)]*\"(make_card_index|card_write_lock)\"", text)]
    assert not bad


# the postgres extra -------------------------------------------------------------------------
def test_postgres_without_the_extra_names_the_extra(monkeypatch, tmp_path):
    for name in list(sys.modules):
        if name == "vars_langgraph.storage.postgres" or name.split(".")[0] == "psycopg":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` fails
    cfg = config_for(tmp_path, "postgresql://nobody@127.0.0.1:1/none")
    for opener in (open_store, open_checkpointer):
        with pytest.raises(ImportError, match=re.escape('pip install "vars-langgraph[postgres]"')):
            opener(cfg)

    async def main():
        async with open_async_storage(cfg):
            pass

    with pytest.raises(ImportError, match=re.escape('pip install "vars-langgraph[postgres]"')):
        asyncio.run(main())
    assert "vars_langgraph.storage.postgres" not in sys.modules


def test_storage_engine_memory_import_without_postgres_packages(tmp_path):
    code = (
        "import sys\n"
        "for m in ('psycopg', 'psycopg_pool', 'langgraph.checkpoint.postgres',"
        " 'langgraph.store.postgres'):\n"
        "    sys.modules[m] = None\n"
        "import vars_langgraph.storage, vars_langgraph.engine, vars_langgraph.memory.store\n"
        "import vars_langgraph.memory.index, vars_langgraph.graph, vars_langgraph.integrations\n"
        "from vars_langgraph import VARSConfig\n"
        f"cfg = VARSConfig.from_dict({{'data_dir': {str(tmp_path)!r}}})\n"
        "vars_langgraph.storage.open_store(cfg); vars_langgraph.storage.open_checkpointer(cfg)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
