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


SMALL_CONTEXT = 1024


@pytest.fixture(scope="session")
def small_context_llm_url():
    """A second local server with a 1024-token context, for the tests that fill a context
    (the cut of a long message): the same code path at a quarter of the prompt time."""
    from vars_langgraph.config import LocalServerConfig
    from vars_langgraph.models.local_server import LocalServer, gguf_path

    cfg = LocalServerConfig(n_ctx=SMALL_CONTEXT)
    with LocalServer(gguf_path(cfg), cfg, role="small-context") as server:
        yield server.base_url


def extractor_url(llm_url: str) -> str:
    """The extractor's server beside the local chat server (as the default config starts
    one); any other URL serves both roles."""
    from vars_langgraph.models.local_server import is_local_url, local_base_url

    return local_base_url(VARSConfig(), "extractor") if is_local_url(llm_url) else llm_url


@pytest.fixture(params=storage_backends())
def storage(request: pytest.FixtureRequest) -> str:
    """A storage setting for VARSConfig: "sqlite" or a postgres URL with a fresh schema."""
    if request.param == "sqlite":
        return "sqlite"
    from tests.pg import fresh_database

    return fresh_database(os.environ["VARS_TEST_POSTGRES_URL"], request.node.name)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., VARSConfig]:
    """VARSConfig on a temp data dir; `llm_url` points the LLM roles at a running server (the
    extractor at its own server beside it, as by default)."""

    def make(storage: str = "sqlite", llm_url: str | None = None, **overrides) -> VARSConfig:
        data = {"data_dir": str(tmp_path / "data"), "storage": storage}
        if llm_url:
            data["llm"] = {"base_url": llm_url, "max_tokens": 48, "temperature": 0.0}
            data["extractor"] = {"llm": {"base_url": extractor_url(llm_url)}}
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return VARSConfig.from_dict(data)

    return make
