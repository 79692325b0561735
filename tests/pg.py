"""Test helpers for the Postgres backend: one fresh, empty database per test.

`fresh_database(url, name)` creates a new database on the server that `url` points at (CI's
throwaway cluster from `.ci/postgres.sh`) and returns a URL for it, so tests never see each
other's tables, migrations or rows. Creating a database costs ~50 ms; they are left behind on
the temporary cluster (dropped in bulk by `drop_test_databases`).
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit, urlunsplit

PREFIX = "vars_t_"


def _admin_url(url: str) -> str:
    """The same server, database `postgres` (to CREATE/DROP other databases)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres"))


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def fresh_database(url: str, name: str) -> str:
    """Create an empty database named after the test; return its URL."""
    import psycopg
    from psycopg import sql

    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40]
    dbname = f"{PREFIX}{slug}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_url(url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return with_database(url, dbname)


def has_pgvector(url: str) -> bool:
    """True when the server can CREATE EXTENSION vector (pgvector installed)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
    return row is not None


def drop_test_databases(url: str) -> int:
    """Drop every database this module created on the server. Returns how many."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(_admin_url(url), autocommit=True, connect_timeout=10) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)
        )]
        for n in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(n)))
    return len(names)


# An app process for the multi-process tests: `python -m tests.pg serve URL DATA_DIR`. --------
# It builds the VARS graph on Postgres with real MiniLM and FAISS, a deterministic keyword
# extractor and a scripted chat model (the storage layer is under test, not the LLMs), then
# answers JSON requests on stdin, one per line, with one JSON line on stdout.

RULES = {
    "bullet": ("when answering questions", "use bullet points"),
    "python": ("when writing code", "use Python with type hints"),
    "short": ("when explaining", "keep answers short"),
}


class RuleExtractor:
    """Deterministic extractor: keyword in the last user message -> preference."""

    def extract(self, turns):
        from vars_langgraph.types import Preference

        text = turns[-1][1].lower() if turns else ""
        return [Preference(condition=c, action=a, confidence=0.9)
                for k, (c, a) in RULES.items() if k in text]


def serve(url: str, data_dir: str, retrieval: str = "faiss") -> None:
    import json
    import sys

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from vars_langgraph import VARSConfig, VARSEngine, build_graph
    from vars_langgraph.storage import open_checkpointer, open_store

    config = VARSConfig.from_dict({"data_dir": data_dir, "storage": url,
                                   "postgres": {"retrieval": retrieval},
                                   "retrieval": {"select_k": 1}})
    engine = VARSEngine(config, open_store(config), index_dir=f"{data_dir}/index",
                        extractor=RuleExtractor(),
                        chat_model=FakeListChatModel(responses=["Sure, here it is."]))
    graph = build_graph(config, engine=engine, checkpointer=open_checkpointer(config))
    engine.embedder.embed_query("warm up")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "vector":
            out = {"vector": engine.load_vector(req["user"]).norms()}
        else:
            res = graph.invoke({"messages": [("user", req["text"])]},
                               {"configurable": {"thread_id": req["thread"],
                                                 "user_id": req["user"]}})
            out = {"system_prompt": res.get("system_prompt", ""),
                   "extracted": [c["action"] for c in res.get("extracted", [])],
                   "selected": [c["note"] for c in res.get("selected", [])],
                   "reward": res.get("reward"), "rebuilds": engine.index.rebuilds}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    import sys

    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(*sys.argv[2:])
    else:
        raise SystemExit("usage: python -m tests.pg serve URL DATA_DIR [faiss|pgvector]")
