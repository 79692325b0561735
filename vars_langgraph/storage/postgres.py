"""Postgres backend: LangGraph's own `PostgresStore` / `PostgresSaver` on a connection pool.

`storage: postgres://user@host:5432/db` in config switches both the per-user store and the
thread checkpointer here (via `vars_langgraph.storage`); any number of app processes may share
one database. Tables are LangGraph's own (`store`, `checkpoints`, ...), created by `setup()`
under a Postgres advisory lock so that processes starting together do not race on migrations.

This module needs the `postgres` extra (psycopg, psycopg-pool, langgraph-checkpoint-postgres);
`vars_langgraph.storage` imports it only when a postgres URL is selected.

What this module adds to LangGraph's classes, and nothing more (LangGraph's public API: the
pool is the classes' `conn`; the direct reads of LangGraph's tables are in `storage.features`,
the one module with SQL on them):
- a `psycopg_pool.ConnectionPool` (size from `postgres.pool_min/pool_max`);
- `setup()` under advisory locks; `StoreFeatures`: a per-user advisory lock on card writes,
  the bulk read of a namespace and the one-item read (`storage.features`), the card index;
- the async API of the sync checkpointer (`aget_tuple`, `aput`, ...) run in a worker thread
  (`storage.bridge`), so `ainvoke`/`astream` work on the same objects; for fully async apps
  `open_async_postgres` gives LangGraph's `AsyncPostgresStore` + `AsyncPostgresSaver` on an
  `AsyncConnectionPool`;
- optional retrieval by pgvector through the store's own vector index (`postgres.retrieval:
  pgvector`): cards are written with `index=["note"]`, their vectors taken from the card itself
  (no second embedding pass), and the dense top-K runs as a store search. The default is the
  per-process FAISS cache, kept correct across processes by the per-user version token;
  `docs/scaling.md` gives the measurements behind that default.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeGuard, cast

import numpy as np
from langchain_core.embeddings import Embeddings
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.store.base import Op, PutOp, Result, TTLConfig
from langgraph.store.postgres import PoolConfig, PostgresStore
from langgraph.store.postgres.aio import AsyncPostgresStore
from langgraph.store.postgres.base import PostgresIndexConfig
from psycopg import Connection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from vars_langgraph.memory.index import CardIndex
from vars_langgraph.memory.store import (
    ROOT,
    UNSUPPORTED,
    VEC_KEY,
    UserMemory,
    card_from_value,
    value_vector,
)
from vars_langgraph.storage.bridge import SyncSaverAsyncAPI
from vars_langgraph.storage.features import PostgresTables, StoreFeatures, tables_for_postgres
from vars_langgraph.types import PreferenceCard

log = logging.getLogger(__name__)

CONN_KWARGS = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
NOTE_FIELD = "note"


def _option(config: Any, name: str, default: Any) -> Any:
    """`config.postgres.<name>` when the config has that section, else the default."""
    section = getattr(config, "postgres", None) if config is not None else None
    return getattr(section, name, default) if section is not None else default


def make_pool(url: str, min_size: int = 1, max_size: int = 10, name: str = "vars") -> ConnectionPool:
    """An open psycopg pool with LangGraph's connection settings. No check on checkout: it
    costs a round trip per store call (25 -> 57 queries a turn); the pool already drops
    connections that come back broken, and recycles each one after `max_lifetime`."""
    pool = ConnectionPool(
        url, min_size=min_size, max_size=max(max_size, min_size), kwargs=dict(CONN_KWARGS),
        open=False, name=name, timeout=30, max_lifetime=1800.0,
    )
    pool.open(wait=True, timeout=30)
    return pool


@contextmanager
def advisory_lock(url: str, name: str) -> Iterator[None]:
    """A database-wide lock on its own connection (the work runs on pool connections)."""
    key = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)
    with Connection.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def user_cards_lock(url: str, user_id: str) -> AbstractContextManager[None]:
    """The advisory lock on one user's card writes (every process on the database)."""
    return advisory_lock(url, f"vars-langgraph:cards:{user_id}")


def _conninfo(conn: Any) -> str:
    """The pool's URL (for the advisory locks' own connections). VARS's classes run on a
    pool: their own SQL and locks need connections besides the one a call is using."""
    if not isinstance(conn, ConnectionPool):
        raise TypeError("VARS's Postgres classes take a psycopg_pool.ConnectionPool "
                        f"(make_pool(url) or from_conn_string(url)), not {type(conn).__name__}")
    info = conn.conninfo
    return info() if callable(info) else info


# pgvector retrieval: embeddings come from the cards and queries, never from a second model ----
class CardVectors(Embeddings):
    """The store's `embed` function in pgvector mode. It does not run a model: each text it is
    asked for was registered just before (a card's note with the card's own embedding, or a
    query token with the query vector), so the store indexes exactly the vectors FAISS would."""

    def __init__(self) -> None:
        self._vectors: dict[str, list[float]] = {}
        self._guard = threading.Lock()

    def register(self, text: str, vector: Sequence[float] | np.ndarray) -> None:
        with self._guard:
            self._vectors[text] = [float(x) for x in vector]

    def release(self, texts: Iterable[str]) -> None:
        with self._guard:
            for t in texts:
                self._vectors.pop(t, None)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._guard:
            missing = [t[:60] for t in texts if t not in self._vectors]
            if missing:
                raise ValueError(
                    "pgvector retrieval indexes only VARS cards written through UserMemory; "
                    f"no vector registered for {missing!r}"
                )
            return [self._vectors[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def _is_card_put(op: Op) -> TypeGuard[PutOp]:
    if not isinstance(op, PutOp) or op.value is None:
        return False
    ns = op.namespace
    return len(ns) == 3 and ns[0] == ROOT and ns[2] == "cards"


class VARSPostgresStore(PostgresStore, StoreFeatures):
    """LangGraph's `PostgresStore` on a pool, optionally with cards in pgvector; implements
    `StoreFeatures` (card index, per-user advisory write lock, bulk and one-item reads). Build with
    `open_postgres_store`, or `with VARSPostgresStore.from_conn_string(url) as store:
    store.setup()`. `close()` closes the pool. `setup()` runs LangGraph's migrations under a
    database-wide advisory lock, then checks the schema for the direct reads (`storage.features`)."""

    def __init__(self, conn: Any, *, url: str | None = None, retrieval: str = "faiss",
                 **kwargs: Any) -> None:
        conninfo = _conninfo(conn)  # TypeError unless conn is a pool
        url = url or conninfo
        super().__init__(conn, **kwargs)
        self.url = url
        self.retrieval = retrieval
        self.vectors: CardVectors | None = None
        self._indexed: PostgresStore | None = None  # the same tables, with the vector index
        self._vector_dim: int | None = None
        self._enable_guard = threading.Lock()
        self.tables: PostgresTables | None = None  # set by setup() (`storage.features`)

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string: str, *, pipeline: bool = False,
                         pool_config: PoolConfig | None = None, index: PostgresIndexConfig | None = None,
                         ttl: TTLConfig | None = None, retrieval: str = "faiss", pool_min: int = 1,
                         pool_max: int = 10) -> Iterator[VARSPostgresStore]:
        """A store on its own pool (closed on exit). Call `setup()` before first use. Takes
        LangGraph's arguments too; the store always runs on a pool, so, as in LangGraph with a
        `pool_config`, `pipeline` has no effect; `pool_config`'s sizes win over `pool_min`/`pool_max`."""
        pc = pool_config or {}
        pool_min = pc.get("min_size", pool_min)
        pool_max = pc.get("max_size") or pool_max
        pool = make_pool(conn_string, pool_min, pool_max, name="vars-store")
        try:
            kwargs: dict[str, Any] = {"index": index} if index is not None else {}
            yield cls(pool, url=conn_string, retrieval=retrieval, ttl=ttl, **kwargs)
        finally:
            pool.close()

    def setup(self) -> None:
        with advisory_lock(self.url, "vars-langgraph:store-setup"):
            super().setup()
        if self.tables is None:
            self.tables = tables_for_postgres(self.conn)

    @contextmanager
    def _sql(self) -> Iterator[Any]:
        """A cursor on a connection of this store's pool (catalog queries, not LangGraph's
        tables)."""
        pool = cast(ConnectionPool, self.conn)  # a pool: checked in __init__
        with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            yield cur

    def namespace_rows(self, namespace: tuple[str, ...]) -> list[tuple[str, Any]] | None:
        return self.tables.namespace_rows(namespace) if self.tables is not None else None

    def item_value(self, namespace: tuple[str, ...], key: str) -> Any:
        return self.tables.item_value(namespace, key) if self.tables is not None else UNSUPPORTED

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        if self._indexed is None:
            return super().batch(ops)
        # pgvector mode: index each card's note with the card's own embedding
        assert self.vectors is not None
        registered: list[str] = []
        out_ops: list[Op] = []
        for op in ops:
            if _is_card_put(op):
                value = op.value or {}
                emb, note = value_vector(value), value.get(NOTE_FIELD)
                if emb is not None and isinstance(note, str) and note and len(emb) == self._vector_dim:
                    self.vectors.register(note, emb)
                    registered.append(note)
                    op = PutOp(op.namespace, op.key, op.value, index=[NOTE_FIELD], ttl=op.ttl)
                else:
                    op = PutOp(op.namespace, op.key, op.value, index=False, ttl=op.ttl)
            out_ops.append(op)
        try:
            return self._indexed.batch(out_ops)
        finally:
            self.vectors.release(registered)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    # pgvector -------------------------------------------------------------------------------
    def has_pgvector(self) -> bool:
        with self._sql() as cur:
            cur.execute("SELECT 1 AS ok FROM pg_available_extensions WHERE name = 'vector'")
            return cur.fetchone() is not None

    def enable_vectors(self, dim: int) -> None:
        """Turn on the store's own vector index for cards (pgvector, exact inner product over
        the user's cards), run its migrations, and backfill cards written before."""
        with self._enable_guard:
            if self._indexed is not None:
                if dim != self._vector_dim:
                    raise ValueError(f"pgvector index is {self._vector_dim}-d, embedder is {dim}-d")
                return
            vectors = CardVectors()
            # A LangGraph PostgresStore with an index config, on the same pool and tables:
            # LangGraph runs its vector migrations and search SQL from that config. "flat":
            # LangGraph's search never uses an ANN index anyway (its filtered ORDER BY
            # defeats it), and flat allows any dimension (e.g. 4096).
            index = {"dims": dim, "embed": vectors, "fields": [NOTE_FIELD],
                     "distance_type": "inner_product", "ann_index_config": {"kind": "flat"}}
            indexed = PostgresStore(self.conn, index=index)  # type: ignore[arg-type]
            with advisory_lock(self.url, "vars-langgraph:store-setup"):
                indexed.setup()
                tables = self.tables if self.tables is not None and self.tables.vectors_ok() else None
                if tables is not None:
                    found = tables.embedding_type()
                    if found and found != f"vector({dim})":
                        raise ValueError(f"store_vectors.embedding is {found}, embedder is "
                                         f"{dim}-d: one embedding model per database")
            self._vector_dim = dim
            self.vectors = vectors
            self._indexed = indexed
            # cards written before pgvector was on (or by a FAISS-mode process)
            with advisory_lock(self.url, "vars-langgraph:store-setup"):
                if tables is not None:
                    n = tables.backfill_vectors(ROOT, VEC_KEY, NOTE_FIELD, dim)
                else:
                    n = self._reindex_cards()
            if n:
                log.info("pgvector: indexed %d cards written before", n)

    def _reindex_cards(self) -> int:
        """The backfill through the public API (when `storage.features` cannot be used): every
        card put again through `batch`, which indexes it with its own vector."""
        n = 0
        for ns in self.list_namespaces(prefix=(ROOT,), suffix=("cards",), limit=1_000_000):
            offset = 0
            while items := self.search(ns, limit=1000, offset=offset):
                self.batch([PutOp(it.namespace, it.key, it.value) for it in items])
                n += len(items)
                offset += len(items)
        return n

    def search_cards(self, memory: UserMemory, user_id: str, query: np.ndarray,
                     k: int) -> list[tuple[PreferenceCard, float]]:
        """Top-k of the user's cards by inner product with `query`, computed in Postgres."""
        assert self.vectors is not None and self._indexed is not None
        token = f"\x00vars-query:{uuid.uuid4().hex}"
        self.vectors.register(token, np.asarray(query, np.float32).ravel().tolist())
        ns = memory.ns(user_id, "cards")
        try:
            items = self._indexed.search(ns, query=token, limit=k)
        finally:
            self.vectors.release([token])
        out = []
        for it in items:
            if tuple(it.namespace) != ns or it.score is None:
                continue
            try:
                out.append((card_from_value(it.value, with_embedding=False), float(it.score)))
            except ValueError:
                continue
        return out

    def make_card_index(self, memory: UserMemory, dim: int, index_dir: str | Path | None,
                        **kwargs: Any) -> CardIndex:
        """The engine's card index for this store: the FAISS cache (default) or pgvector.
        kwargs: `CardIndex`'s (flat_max, max_bytes)."""
        if self.retrieval == "pgvector":
            if not self.has_pgvector():
                raise RuntimeError("postgres.retrieval: pgvector, but the server has no "
                                   "`vector` extension (install pgvector)")
            self.enable_vectors(dim)
            return PgVectorCardIndex(self, memory, dim, index_dir, **kwargs)
        return CardIndex(memory, dim, index_dir, **kwargs)

    def card_write_lock(self, user_id: str) -> AbstractContextManager[None]:
        """One user's card writes, serialised across every process on this database: a
        session advisory lock keyed by the user, on its own connection (the writes use the
        pool; so a pool of one connection cannot deadlock)."""
        return user_cards_lock(self.url, user_id)

    def close(self) -> None:
        if isinstance(self.conn, ConnectionPool):
            self.conn.close()


class PgVectorCardIndex(CardIndex):
    """`CardIndex` whose dense search runs in Postgres (pgvector) instead of FAISS. The other
    nodes still read cards by id through `get()`, which stays the version-checked cache."""

    def __init__(self, store: VARSPostgresStore, memory: UserMemory, dim: int,
                 index_dir: str | Path | None = None, **kwargs: Any):
        super().__init__(memory, dim, index_dir, **kwargs)
        self.pg = store

    def search(self, user_id: str, query: np.ndarray, k: int) -> list[tuple[PreferenceCard, float]]:
        if k <= 0:
            return []
        return self.pg.search_cards(self.memory, user_id, query, k)

    def candidates(self, user_id: str, query: np.ndarray, top_k: int,
                   max_global: int) -> list[dict[str, Any]]:
        """The dense top-K from Postgres, the global cards and the columns from the entry.
        Archived and superseded cards stay in the table but not in the entry: while they
        take slots of the search, it asks for twice as many (until the user has no more)."""
        ui = self.get(user_id)
        k = top_k
        while True:
            found = self.search(user_id, query, k)
            hits = [(ui.rows[card.id], sim) for card, sim in found if card.id in ui.rows]
            if len(hits) >= top_k or len(found) < k:
                break
            k *= 2
        return ui.candidates(query, top_k, max_global, hits=hits[:top_k])


# checkpointer ---------------------------------------------------------------------------------
class VARSPostgresSaver(SyncSaverAsyncAPI, PostgresSaver):
    """LangGraph's `PostgresSaver` on a pool, which also serves `ainvoke`/`astream`
    (`SyncSaverAsyncAPI`). On a pool `lock` is a no-op (see `VARSPostgresStore`); `setup()`
    runs under an advisory lock. Build with `open_postgres_checkpointer`, or
    `with VARSPostgresSaver.from_conn_string(url) as saver: saver.setup()`."""

    def __init__(self, conn: Any, pipe: Any = None, serde: Any = None, *,
                 url: str | None = None) -> None:
        conninfo = _conninfo(conn)  # TypeError unless conn is a pool
        url = url or conninfo
        super().__init__(conn, pipe, serde)
        self.url = url

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string: str, *, pool_min: int = 1,  # type: ignore[override]
                         pool_max: int = 10) -> Iterator[VARSPostgresSaver]:
        """A checkpointer on its own pool (closed on exit). Call `setup()` before first use."""
        pool = make_pool(conn_string, pool_min, pool_max, name="vars-checkpoints")
        try:
            yield cls(pool, url=conn_string)
        finally:
            pool.close()

    def setup(self) -> None:
        with advisory_lock(self.url, "vars-langgraph:checkpoint-setup"):
            super().setup()

    def close(self) -> None:
        if isinstance(self.conn, ConnectionPool):
            self.conn.close()


class VARSAsyncPostgresStore(AsyncPostgresStore, StoreFeatures):
    """LangGraph's `AsyncPostgresStore` with VARS's per-user advisory card write lock (the
    engine's sync code takes it from a worker thread, on its own connection). Card index:
    the FAISS cache; bulk read: the default (one `search`). Build with `open_async_postgres`
    or `vars_langgraph.storage.open_async_storage`."""

    def __init__(self, conn: Any, *, url: str, **kwargs: Any) -> None:
        super().__init__(conn, **kwargs)
        self.url = url

    def card_write_lock(self, user_id: str) -> AbstractContextManager[None]:
        return user_cards_lock(self.url, user_id)


# entry points (called by vars_langgraph.storage) ---------------------------------------------
def open_postgres_store(url: str, config: Any = None) -> VARSPostgresStore:
    """A set-up `VARSPostgresStore` on its own pool. `config.postgres` (optional) gives the
    pool size and the retrieval backend ("faiss" cache, default; or "pgvector")."""
    pool = make_pool(url, _option(config, "pool_min", 1), _option(config, "pool_max", 10),
                     name="vars-store")
    store = VARSPostgresStore(pool, url=url, retrieval=_option(config, "retrieval", "faiss"))
    try:
        store.setup()
    except BaseException:
        pool.close()
        raise
    return store


def open_postgres_checkpointer(url: str, config: Any = None) -> VARSPostgresSaver:
    """A set-up `VARSPostgresSaver` (LangGraph's `PostgresSaver`) on its own pool."""
    pool = make_pool(url, _option(config, "pool_min", 1), _option(config, "pool_max", 10),
                     name="vars-checkpoints")
    saver = VARSPostgresSaver(pool, url=url)
    try:
        saver.setup()
    except BaseException:
        pool.close()
        raise
    return saver


@asynccontextmanager
async def open_async_postgres(url: str, config: Any = None) -> AsyncIterator[tuple[Any, Any]]:
    """LangGraph's `AsyncPostgresStore` (as `VARSAsyncPostgresStore`) and `AsyncPostgresSaver`
    on one `AsyncConnectionPool`, set up, for fully async apps (call inside the app's event
    loop; `vars_langgraph.storage.open_async_storage(config)` calls this for postgres URLs)::

        async with open_async_postgres(cfg.storage, cfg) as (store, saver):
            graph = build_graph(cfg, store=store, checkpointer=saver)
            await graph.ainvoke(...)

    The VARS nodes are sync and run in LangGraph's worker threads; they reach these stores
    through LangGraph's own thread-safe bridge onto this loop. Retrieval uses the FAISS cache.
    """
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    # dict rows: CONN_KWARGS's row_factory (a type the pool's constructor can't express)
    pool = cast(AsyncConnectionPool[AsyncConnection[DictRow]], AsyncConnectionPool(
        url, min_size=_option(config, "pool_min", 1),
        max_size=max(_option(config, "pool_max", 10), _option(config, "pool_min", 1)),
        kwargs=dict(CONN_KWARGS), open=False, name="vars-async", timeout=30,
    ))
    await pool.open(wait=True, timeout=30)
    try:
        store = VARSAsyncPostgresStore(pool, url=url)
        saver = AsyncPostgresSaver(pool)
        await asyncio.to_thread(_locked_async_setup, url, store, saver, asyncio.get_running_loop())
        yield store, saver
    finally:
        await pool.close()


def _locked_async_setup(url: str, store: Any, saver: Any, loop: asyncio.AbstractEventLoop) -> None:
    with advisory_lock(url, "vars-langgraph:store-setup"):
        asyncio.run_coroutine_threadsafe(store.setup(), loop).result()
    with advisory_lock(url, "vars-langgraph:checkpoint-setup"):
        asyncio.run_coroutine_threadsafe(saver.setup(), loop).result()
