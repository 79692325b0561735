"""LangGraph's checkpointer conformance suite (`langgraph-checkpoint-conformance`) on every
checkpointer VARS hands out: `VARSSqliteSaver`, `VARSPostgresSaver` (when
VARS_TEST_POSTGRES_URL is set) and the async pair of `open_async_storage`.

FULL means: every capability the saver claims (an async method it overrides) passes, so a
saver claims only what works (`storage.bridge` fills an async method only where the sync
class implements it)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport

from vars_langgraph import VARSConfig
from vars_langgraph.storage import open_async_storage
from vars_langgraph.storage.sqlite import VARSSqliteSaver, connect

PG_URL = os.environ.get("VARS_TEST_POSTGRES_URL")


def assert_full(report: CapabilityReport) -> None:
    failed = {name: r.failures for name, r in report.results.items() if r.passed is False}
    assert report.conformance_level() == "FULL", failed
    assert report.passed_all_base()


async def test_sqlite_saver_is_fully_conformant(tmp_path: Path) -> None:
    n = 0

    @checkpointer_test(name="VARSSqliteSaver")
    async def factory() -> AsyncIterator[VARSSqliteSaver]:
        nonlocal n
        n += 1
        conn = connect(tmp_path / f"threads{n}.sqlite")
        saver = VARSSqliteSaver(conn)
        saver.setup()
        try:
            yield saver
        finally:
            conn.close()

    report = await validate(factory)
    assert_full(report)
    # the base capabilities ran (and a claim SqliteSaver cannot keep was not made)
    assert report.results["put"].passed and report.results["list"].passed
    assert report.results["copy_thread"].detected is False


async def test_async_sqlite_pair_is_fully_conformant(tmp_path: Path) -> None:
    n = 0

    @checkpointer_test(name="open_async_storage(sqlite)")
    async def factory() -> AsyncIterator[object]:
        nonlocal n
        n += 1
        cfg = VARSConfig.from_dict({"data_dir": str(tmp_path / f"d{n}"), "storage": "sqlite"})
        async with open_async_storage(cfg) as (_store, saver):
            yield saver

    assert_full(await validate(factory))


@pytest.mark.skipif(not PG_URL, reason="VARS_TEST_POSTGRES_URL not set")
async def test_postgres_saver_is_fully_conformant() -> None:
    from tests.pg import fresh_database
    from vars_langgraph.storage.postgres import open_postgres_checkpointer

    @checkpointer_test(name="VARSPostgresSaver")
    async def factory() -> AsyncIterator[object]:
        saver = open_postgres_checkpointer(fresh_database(PG_URL, "conformance"))
        try:
            yield saver
        finally:
            saver.close()

    report = await validate(factory)
    assert_full(report)
    assert report.results["put"].passed and report.results["delete_thread"].passed


@pytest.mark.skipif(not PG_URL, reason="VARS_TEST_POSTGRES_URL not set")
async def test_async_postgres_pair_is_fully_conformant() -> None:
    from tests.pg import fresh_database

    @checkpointer_test(name="open_async_storage(postgres)")
    async def factory() -> AsyncIterator[object]:
        cfg = VARSConfig.from_dict({"storage": fresh_database(PG_URL, "conformance_async")})
        async with open_async_storage(cfg) as (_store, saver):
            yield saver

    assert_full(await validate(factory))
