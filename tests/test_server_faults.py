"""Model server faults against real HTTP: a closed loopback port (server down), a tiny
OpenAI-compatible server on loopback that sleeps (slow) or answers HTTP 500 (errors).

The clients retry with exponential backoff (openai's: 0.5 s, 1 s, ... with jitter) up to
`max_retries`, each attempt bounded by `timeout` from the config, then raise an error that
says what failed and where. With `fail_open: true` the agent still answers, without
personalization, when the memory side (extractor, judge, store) fails; off by default.

Storage, FAISS and MiniLM are real; where the answering model is not the thing under test it
is a recording chat model, so that only the memory side is faulty.
"""

from __future__ import annotations

import sqlite3
import time

import openai
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from tests._reliability import FakeOpenAIServer, MarkerExtractor, RecordingChat, closed_port_url, marker
from vars_langgraph import VARSConfig, VARSEngine, build_graph
from vars_langgraph.config import LLMConfig
from vars_langgraph.models.extraction.llm_backend import LLMExtractor
from vars_langgraph.models.llm import chat_model
from vars_langgraph.storage import open_checkpointer, open_store
from vars_langgraph.types import CardSource, Preference

TURN = [("user", "I always want answers in bullet points")]


def gaps(srv: FakeOpenAIServer) -> list[float]:
    t = [r[0] for r in srv.requests]
    return [b - a for a, b in zip(t, t[1:], strict=False)]


# -- the clients ----------------------------------------------------------------------------------

def test_server_down_retries_with_backoff_then_clear_error():
    url = closed_port_url()
    ex = LLMExtractor(LLMConfig(base_url=url, max_retries=2, timeout=2))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="unreachable") as err:
        ex.extract(TURN)
    elapsed = time.monotonic() - t0
    assert url in str(err.value) and "2 retries" in str(err.value)
    assert 1.1 <= elapsed < 10  # two backoff sleeps: ~0.5 s and ~1 s (minus jitter)


def test_http_500_is_retried_with_growing_backoff_then_clear_error():
    with FakeOpenAIServer(mode="error", status=500) as srv:
        ex = LLMExtractor(LLMConfig(base_url=srv.base_url, max_retries=2, timeout=2))
        with pytest.raises(RuntimeError, match="HTTP 500") as err:
            ex.extract(TURN)
        assert srv.base_url in str(err.value)
        assert len(srv.requests) == 3  # 1 + max_retries, not one per response_format fallback
        g = gaps(srv)  # exponential backoff: ~0.5 s then ~1 s (jitter: -25 %)
        assert 0.35 <= g[0] < 5 and 0.7 <= g[1] < 5

        llm = chat_model(LLMConfig(base_url=srv.base_url, max_retries=1, timeout=2))
        srv.requests.clear()
        with pytest.raises(openai.InternalServerError, match="500"):
            llm.invoke("hi")
        assert len(srv.requests) == 2


def test_slow_server_hits_the_configured_timeout():
    with FakeOpenAIServer(mode="slow", delay=5.0) as srv:
        ex = LLMExtractor(LLMConfig(base_url=srv.base_url, max_retries=1, timeout=0.5))
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="unreachable|timed out"):
            ex.extract(TURN)
        assert time.monotonic() - t0 < 4.9  # 2 x 0.5 s timeouts + one ~0.5 s backoff, < 5 s sleep
        assert len(srv.requests) == 2
        llm = chat_model(LLMConfig(base_url=srv.base_url, max_retries=0, timeout=0.5))
        t0 = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            llm.invoke("hi")
        assert time.monotonic() - t0 < 4.9


def test_config_timeout_and_retries_reach_the_graphs_chat_model(tmp_path):
    with FakeOpenAIServer(mode="slow", delay=5.0) as srv:
        cfg = VARSConfig.from_dict({"data_dir": str(tmp_path), "storage": "memory",
                                    "llm": {"base_url": srv.base_url, "timeout": 0.4,
                                            "max_retries": 1},
                                    "extractor": {"enabled": False}})
        graph = build_graph(cfg)
        t0 = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            graph.invoke({"messages": TURN}, {"configurable": {"thread_id": "t", "user_id": "u"}})
        assert time.monotonic() - t0 < 4.9 and len(srv.requests) == 2


# -- fail_open ------------------------------------------------------------------------------------

def graph_with_broken_memory(tmp_path, broken_url: str, fail_open: bool):
    """A healthy answering model (recording), a broken extractor and judge endpoint."""
    cfg = VARSConfig.from_dict({
        "data_dir": str(tmp_path), "fail_open": fail_open,
        "extractor": {"llm": {"base_url": broken_url, "max_retries": 0, "timeout": 1}},
        "reward": {"backend": "llm_judge",
                   "judge": {"base_url": broken_url, "max_retries": 0, "timeout": 1}},
    })
    engine = VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "index", chat_model=RecordingChat())
    return build_graph(cfg, engine=engine, checkpointer=open_checkpointer(cfg))


@pytest.mark.parametrize("fault", ["down", "500"])
def test_fail_open_answers_without_personalization(tmp_path, fault):
    with FakeOpenAIServer(mode="error", status=500) as srv:
        url = closed_port_url() if fault == "down" else srv.base_url
        run = {"configurable": {"thread_id": "t1", "user_id": "alice"}}

        strict = graph_with_broken_memory(tmp_path / "strict", url, fail_open=False)
        with pytest.raises(RuntimeError, match=url.replace(".", r"\.")):
            strict.invoke({"messages": TURN}, run)

        lenient = graph_with_broken_memory(tmp_path / "lenient", url, fail_open=True)
        # a card learned before the fault still personalises; the broken parts are skipped
        lenient.engine.add_preferences("alice", [Preference(
            condition="when discussing cooking", action=f"mention {marker(1, 0)}")], CardSource())
        for text in ("I always want bullet points", "no, that's not what I asked",
                     "tell me about cooking"):
            out = lenient.invoke({"messages": [("user", text)]}, run)
            assert out["messages"][-1].content == "ok."
            assert out["query"] == text  # no stale state from the previous turn
            assert out.get("extracted") == [] and not out.get("reward")
        assert len(lenient.engine.memory.list_cards("alice")) == 1  # nothing new learned
        assert marker(1, 0) in out["system_prompt"]


class BrokenStore(InMemoryStore):
    """A store whose every operation fails (disk gone, database locked, ...)."""

    def batch(self, ops):
        raise sqlite3.OperationalError("disk I/O error")

    async def abatch(self, ops):
        raise sqlite3.OperationalError("disk I/O error")


def test_fail_open_survives_a_dead_store(tmp_path):
    for fail_open in (False, True):
        cfg = VARSConfig.from_dict({"data_dir": str(tmp_path), "fail_open": fail_open})
        engine = VARSEngine(cfg, BrokenStore(), extractor=MarkerExtractor(), chat_model=RecordingChat())
        graph = build_graph(cfg, engine=engine, checkpointer=InMemorySaver())
        run = {"configurable": {"thread_id": f"t{fail_open}", "user_id": "alice"}}
        if not fail_open:
            with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
                graph.invoke({"messages": [("user", f"PREF cooking {marker(1, 0)}")]}, run)
            continue
        for text in (f"PREF cooking {marker(1, 0)}", "tell me about cooking", "no, wrong"):
            out = graph.invoke({"messages": [("user", text)]}, run)
            assert out["messages"][-1].content == "ok."
            assert out["system_prompt"] == cfg.prompt.base_system  # no personalization


def test_extractor_warm_up_sends_its_prompt_once_and_never_raises():
    """The chat warms the extractor's server in the background: one request with the real
    prompt (its few-shot prefix) and a one-token answer; a dead server is only logged."""
    from vars_langgraph.models.extraction.prompts import build_messages, dialogue_window

    with FakeOpenAIServer(mode="ok", content="[]") as srv:
        ex = LLMExtractor(LLMConfig(base_url=srv.base_url, max_retries=0, timeout=2))
        ex.warm()
        (_, path, body), = srv.requests
        assert path.endswith("/chat/completions") and body["max_tokens"] == 1
        real = build_messages(dialogue_window(TURN), ex.cfg.prompt)
        assert body["messages"][:-1] == real[:-1]  # the same prefix as a real extraction
    LLMExtractor(LLMConfig(base_url=closed_port_url(), max_retries=0, timeout=1)).warm()
