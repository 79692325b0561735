"""The local LLM server: llama-cpp-python's own OpenAI-compatible app, wrapped from outside.

    python _server_tools.py --model x.gguf --port 8000 ...   (the `llama_cpp.server` options)

`models/local_server.py` runs this file as a script (it imports nothing from vars_langgraph,
so the server process does not load torch). It builds the app with llama-cpp-python's public
`create_app(server_settings, model_settings)`, the same as `python -m llama_cpp.server`, and
puts `OpenAIShim` (an ASGI wrapper; nothing of llama_cpp is replaced) in front of it for
`POST /v1/chat/completions`:

- tool calls. The server renders `tools` into the model's own chat template (Qwen2.5 is
  trained to answer `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`) but returns
  that call as text, so an OpenAI client (ChatOpenAI, `create_agent`) never sees
  `tool_calls`. Its `chatml-function-calling` chat format does return them, but only when the
  client sends `tool_choice="auto"` (LangChain's agents do not), and that format drops the
  `json_schema` response formats the extractor uses. So a request with `tools` is generated
  whole (`stream: false`), and an answer that opens with JSON calls of those tools becomes
  OpenAI `tool_calls` (`finish_reason: "tool_calls"`), sent as one stream chunk when the
  client asked to stream; a call whose result the request already carries is not repeated
  (`with_tool_calls`). Anything else is returned unchanged.
- `content: null` on assistant messages (what OpenAI clients send back after a tool call)
  becomes "" (the server's request schema wants a string).
- log-probs without the full-context cost. For a non-streamed request, llama-cpp-python
  0.3.x computes a log-softmax over every position of the context (prompt included: ~600 x
  152k floats for the extractor's prompt) before slicing out the generated tokens; its
  streamed path computes only the generated tokens' rows, with the same values. A
  non-streamed request with `logprobs` is therefore run streamed and reassembled into one
  chat completion.

A watchdog thread ends the process when its parent is gone (a killed parent leaves no
orphan server).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from collections.abc import Set as AbstractSet
from typing import Any

from pydantic import BaseModel

TAG = re.compile(r"</?tool_call>")


def split_tool_calls(text: str, names: set[str]) -> tuple[list[dict[str, Any]], str]:
    """The tool calls `text` opens with (JSON calls of known tools; tags, a code fence,
    commas between them allowed) and the text after them. No leading call: ([], text)."""
    body = TAG.sub("", text or "").strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    if not body.startswith("{"):
        return [], text
    dec, calls, i = json.JSONDecoder(), [], 0
    while i < len(body):
        try:
            obj, end = dec.raw_decode(body, i)
        except ValueError:
            break
        args = _call_args(obj, names)
        if args is None:
            break
        calls.append({"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                      "function": {"name": obj["name"], "arguments": json.dumps(args)}})
        i = end
        while i < len(body) and body[i] in " \t\r\n,":
            i += 1
    return (calls, body[i:].strip()) if calls else ([], text)


def parse_tool_calls(text: str, names: set[str]) -> list[dict[str, Any]] | None:
    """The tool calls `text` opens with, or None. What follows the last call (a small model
    often goes on to invent the tool's answer) is not a call."""
    return split_tool_calls(text, names)[0] or None


def _call_args(obj: Any, names: set[str]) -> dict[str, Any] | None:
    """The arguments of `obj` when it is a call of a known tool, else None."""
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    return args if isinstance(args, dict) else None


def _call_key(name: Any, arguments: Any) -> tuple[str, str]:
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        args = arguments
    return str(name), json.dumps(args, sort_keys=True)


def answered_calls(messages: Any) -> set[tuple[str, str]]:
    """(name, arguments) of the tool calls whose results the request already carries."""
    messages = messages if isinstance(messages, list) else []
    answered = {m.get("tool_call_id") for m in messages
                if isinstance(m, dict) and m.get("role") == "tool"}
    return {_call_key(fn.get("name"), fn.get("arguments"))
            for m in messages if isinstance(m, dict) and m.get("role") == "assistant"
            for c in m.get("tool_calls") or [] if isinstance(c, dict) and c.get("id") in answered
            for fn in [c.get("function") or {}]}


def _unwrap_answer(text: str) -> str:
    """`{"response": "..."}` (how Qwen2.5-0.5B writes an answer after a call) as its text."""
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    if isinstance(obj, dict) and len(obj) == 1 and isinstance(obj.get("response"), str):
        return obj["response"]
    return text


def with_tool_calls(response: dict[str, Any], names: set[str],
                    answered: AbstractSet[tuple[str, str]] = frozenset()) -> dict[str, Any]:
    """`response` (a chat completion dict) with a textual tool call turned into tool_calls.

    A call the request already has the result of (same tool, same arguments: a small model
    repeats its call after the tool's answer, then writes the answer) is not made again:
    the text after the calls is the answer (`{"response": ...}` unwrapped), so the agent's
    loop ends instead of calling the same tool until its step limit."""
    for choice in response.get("choices", []):
        msg = choice.get("message") or {}
        calls, rest = split_tool_calls(msg.get("content") or "", names)
        new = [c for c in calls
               if _call_key(c["function"]["name"], c["function"]["arguments"]) not in answered]
        if new:
            msg["content"] = None
            msg["tool_calls"] = new
            choice["finish_reason"] = "tool_calls"
        elif calls and rest:
            msg["content"] = _unwrap_answer(rest)
    return response


def as_stream(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A whole completion as OpenAI stream chunks (a role+content/tool-call chunk, a stop)."""
    base = {"id": response.get("id"), "object": "chat.completion.chunk",
            "created": response.get("created"), "model": response.get("model")}
    for choice in response.get("choices", []):
        msg = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{"index": j, **c} for j, c in enumerate(msg["tool_calls"])]
        yield {**base, "choices": [{"index": choice.get("index", 0), "delta": delta,
                                    "finish_reason": None, "logprobs": None}]}
        yield {**base, "choices": [{"index": choice.get("index", 0), "delta": {},
                                    "finish_reason": choice.get("finish_reason"),
                                    "logprobs": None}]}


def fix_request(body: bytes) -> bytes:
    """A chat request with `content: null` on assistant messages set to "" (else unchanged)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    msgs = data.get("messages") if isinstance(data, dict) else None
    changed = False
    for m in msgs if isinstance(msgs, list) else []:
        if isinstance(m, dict) and m.get("role") == "assistant" and m.get("content") is None:
            m["content"] = ""
            changed = True
    return json.dumps(data).encode() if changed else body


# the ASGI wrapper ---------------------------------------------------------------------------
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _read_body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    return b"".join(chunks)


def _with_body(scope: Scope, body: bytes) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
    return {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` once, then the client's own messages (disconnects)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _send_bytes(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def sse_body(chunks: Iterator[dict[str, Any]]) -> bytes:
    """OpenAI stream chunks as a server-sent-events body, `[DONE]` last."""
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


def from_stream(body: bytes) -> dict[str, Any]:
    """A streamed chat completion (server-sent events) as one chat completion: the deltas'
    text and log-probs joined, the last finish reason."""
    text: list[str] = []
    logprobs: list[dict[str, Any]] = []
    finish: str | None = None
    head: dict[str, Any] = {}
    for line in body.decode("utf-8", "replace").splitlines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        chunk = json.loads(line[5:])
        head = head or chunk
        for choice in chunk.get("choices", []):
            text.append((choice.get("delta") or {}).get("content") or "")
            logprobs += (choice.get("logprobs") or {}).get("content") or []
            finish = choice.get("finish_reason") or finish
    return {"id": head.get("id"), "object": "chat.completion", "created": head.get("created"),
            "model": head.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                         "logprobs": {"content": logprobs, "refusal": None},
                         "finish_reason": finish}]}


class OpenAIShim:
    """ASGI wrapper of llama-cpp-python's app: tool calls, null contents, cheap log-probs
    (see the module docstring) on `POST .../chat/completions`; every other request as is."""

    def __init__(self, app: Any, tool_calls: bool = True, n_ctx: int | None = None):
        self.app = app
        self.tool_calls = tool_calls
        self.n_ctx = n_ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http" and scope.get("method") == "GET" and \
                scope.get("path") == "/props" and self.n_ctx:
            # llama.cpp's own server answers this too: clients read the context size from it
            props = {"n_ctx": self.n_ctx, "default_generation_settings": {"n_ctx": self.n_ctx}}
            await _send_bytes(send, 200, json.dumps(props).encode(), b"application/json")
            return
        if scope.get("type") != "http" or scope.get("method") != "POST" or \
                not scope.get("path", "").endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        body = fix_request(await _read_body(receive))
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            await self.app(_with_body(scope, body), _replay(body, receive), send)
            return
        stream = bool(data.get("stream"))
        tools = data.get("tools") if self.tool_calls and data.get("tool_choice") != "none" else None
        if tools:
            names = {str(n) for t in tools if isinstance(t, dict)
                     if (n := (t.get("function") or {}).get("name"))}
            status, raw = await self._collect(scope, receive, {**data, "stream": False})
            if status != 200:
                await _send_bytes(send, status, raw, b"application/json")
                return
            response = with_tool_calls(json.loads(raw), names, answered_calls(data.get("messages")))
            if stream:
                await _send_bytes(send, 200, sse_body(as_stream(response)), b"text/event-stream")
            else:
                await _send_bytes(send, 200, json.dumps(response).encode(), b"application/json")
        elif data.get("logprobs") and not stream:
            status, raw = await self._collect(scope, receive, {**data, "stream": True})
            if status != 200:
                await _send_bytes(send, status, raw, b"application/json")
                return
            await _send_bytes(send, 200, json.dumps(from_stream(raw)).encode(), b"application/json")
        else:
            await self.app(_with_body(scope, body), _replay(body, receive), send)

    async def _collect(self, scope: Scope, receive: Receive,
                       data: dict[str, Any]) -> tuple[int, bytes]:
        """Run the app on `data`; its status and whole body."""
        body = json.dumps(data).encode()
        status, parts = 500, []

        async def capture(msg: dict[str, Any]) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            elif msg["type"] == "http.response.body":
                parts.append(msg.get("body", b""))

        await self.app(_with_body(scope, body), _replay(body, receive), capture)
        return status, b"".join(parts)


# the server process -------------------------------------------------------------------------
def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _fields_of(model: type[BaseModel], args: argparse.Namespace) -> dict[str, Any]:
    """The command-line values that are fields of `model` (llama_cpp's `parse_model_from_args`,
    whose annotation takes an instance where it needs the class)."""
    return {k: v for k, v in vars(args).items() if v is not None and k in model.model_fields}


def main(argv: list[str] | None = None) -> None:
    """`python -m llama_cpp.server`'s command line and app, behind `OpenAIShim`."""
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.cli import add_args_from_model
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    parser = argparse.ArgumentParser(description="llama-cpp-python's server for VARS")
    add_args_from_model(parser, Settings)
    parser.add_argument("--text_tool_calls", choices=("true", "false"), default="true",
                        help="return a textual call of a requested tool as OpenAI tool_calls")
    args = parser.parse_args(argv)
    server = ServerSettings(**_fields_of(ServerSettings, args))
    model = ModelSettings(**_fields_of(ModelSettings, args))
    app = create_app(server_settings=server, model_settings=[model])
    _exit_with_parent()
    uvicorn.run(OpenAIShim(app, tool_calls=args.text_tool_calls == "true", n_ctx=model.n_ctx),
                host=server.host, port=server.port, log_level="warning")


if __name__ == "__main__":
    main()
