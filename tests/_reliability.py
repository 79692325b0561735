"""Test doubles shared by the reliability tests (isolation, crash, bad input, injection, forget).

Each double replaces an LLM only where a test is about VARS's own logic (isolation, storage,
prompt structure), never about model quality; every such test says so in its docstring.
- `MarkerExtractor`: deterministic rule extractor, "PREF <topic> <marker>" -> a preference.
- `RecordingChat`: a real LangChain `BaseChatModel` that answers "ok." and records, per call,
  the user id of the run and the exact messages it was given (the model's whole input).
- `HashEmbedder`: a deterministic, dependency-free embedder for child processes that are
  SIGKILLed many times (loading MiniLM in each would take most of the time budget).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from vars_langgraph.memory.store import InvalidUserId
from vars_langgraph.state import message_text, resolve_user_id
from vars_langgraph.types import Preference

PREF = re.compile(r"PREF (\w+) (MK\d{3}Q\d+Z)")


def marker(user: int, j: int) -> str:
    """A marker no other (user, j) pair contains as a substring."""
    return f"MK{user:03d}Q{j}Z"


MARKER = re.compile(r"MK(\d{3})Q\d+Z")


def marker_owners(text: str) -> set[int]:
    """The users whose markers occur in `text`."""
    return {int(m) for m in MARKER.findall(text)}


class MarkerExtractor:
    """Deterministic extractor: every "PREF <topic> <marker>" in the user's last message."""

    def extract(self, turns: Sequence[tuple[str, str]]) -> list[Preference]:
        text = turns[-1][1] if turns and turns[-1][0] == "user" else ""
        return [
            Preference(condition=f"when discussing {topic}",
                       action=f"mention the code word {mk}", confidence=0.9)
            for topic, mk in PREF.findall(text)
        ]


def run_user_id(config: dict[str, Any] | None) -> str | None:
    """The user id a node of this run sees (runtime context first, then configurable)."""
    conf = (config or {}).get("configurable") or {}
    try:
        return resolve_user_id(conf.get("__pregel_runtime"), config)
    except InvalidUserId:
        return None


class RecordingChat(BaseChatModel):
    """Answers `reply`; records (user id, [(role, text), ...]) of every call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    reply: str = "ok."
    calls: list[tuple[str | None, list[tuple[str, str]]]] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "recording-chat"

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> BaseMessage:  # noqa: A002
        msgs = [(m.type, message_text(m)) for m in input]
        with self._lock:
            self.calls.append((run_user_id(config), msgs))
        return super().invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> BaseMessage:  # noqa: A002
        msgs = [(m.type, message_text(m)) for m in input]
        with self._lock:
            self.calls.append((run_user_id(config), msgs))
        return await super().ainvoke(input, config, **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.reply))])


class HashEmbedder:
    """Deterministic unit vectors from sha256 of the text (not semantic; storage tests only)."""

    def __init__(self, dim: int = 32):
        self.dim = dim

    def _one(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._one(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._one(text)


class FakeOpenAIServer:
    """A real OpenAI-compatible HTTP server on loopback for fault tests.

    `mode`: "ok" (answers `content`), "error" (HTTP `status`), "slow" (sleeps `delay` s, then
    answers). Every request is recorded as (monotonic time, path, JSON body)."""

    def __init__(self, mode: str = "ok", content: str = "ok", status: int = 500, delay: float = 0.0):
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.mode, self.content, self.status, self.delay = mode, content, status, delay
        self.requests: list[tuple[float, str, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): that is the point of "slow"

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                import time as _time

                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                outer.requests.append((_time.monotonic(), self.path, body))
                if outer.mode == "error":
                    self._send(outer.status, {"error": {"message": "boom", "type": "server_error"}})
                    return
                if outer.mode == "slow":
                    _time.sleep(outer.delay)
                self._send(200, {
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": outer.content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A loopback URL nobody listens on (bound then closed: connection refused)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"
