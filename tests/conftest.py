"""Shared fixtures: one real llama.cpp server per test session, configs on temp data dirs,
and the storage backends every integration test runs against (a pytest parameter)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from vars_langgraph import VARSConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED = Path(os.environ.get("VARS_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))


def storage_backends() -> list[str]:
    """sqlite always; postgres when VARS_TEST_POSTGRES_URL names a live server (CI starts one)."""
    out = ["sqlite"]
    if os.environ.get("VARS_TEST_POSTGRES_URL"):
        out.append("postgres")
    return out


@pytest.fixture(scope="session")
def llm_base_url() -> str:
    """The local OpenAI-compatible llama.cpp server (started once, stopped at exit).

    VARS_TEST_LLM_URL points the tests at an already running server instead."""
    if os.environ.get("VARS_TEST_LLM_URL"):
        return os.environ["VARS_TEST_LLM_URL"]
    from vars_langgraph.models.local_server import local_base_url

    return local_base_url(VARSConfig())


@pytest.fixture(params=storage_backends())
def storage(request: pytest.FixtureRequest) -> str:
    """A storage setting for VARSConfig: "sqlite" or a postgres URL with a fresh schema."""
    if request.param == "sqlite":
        return "sqlite"
    from tests.pg import fresh_database

    return fresh_database(os.environ["VARS_TEST_POSTGRES_URL"], request.node.name)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., VARSConfig]:
    """VARSConfig on a temp data dir; `llm_url` points every LLM role at a running server."""

    def make(storage: str = "sqlite", llm_url: str | None = None, **overrides) -> VARSConfig:
        data = {"data_dir": str(tmp_path / "data"), "storage": storage}
        if llm_url:
            data["llm"] = {"base_url": llm_url, "max_tokens": 48, "temperature": 0.0}
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return VARSConfig.from_dict(data)

    return make
