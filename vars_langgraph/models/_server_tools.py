"""Tool calls on the local llama.cpp server (loaded by path into the server process only).

llama-cpp-python's server renders `tools` into the model's own chat template (Qwen2.5 is
trained to answer with `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`), but with
the GGUF's template it returns that call as plain text, so an OpenAI client (ChatOpenAI,
`create_agent`, `create_react_agent`) never sees `tool_calls`. The `chatml-function-calling`
format does return them, but only when the client sends `tool_choice="auto"` (LangChain's
agents do not) and it drops `json_schema` response formats (the extractor uses them).

`install()` wraps `Llama.create_chat_completion`: for a request with `tools` whose answer is
one or more JSON calls of those tools (tags optional), the answer becomes OpenAI `tool_calls`
(`finish_reason: "tool_calls"`); anything else is returned unchanged. A streamed request with
tools is generated whole and sent as one chunk (a call must be complete to be parsed).
It also lets requests through whose assistant messages carry `tool_calls` with `content:
null` (what OpenAI clients send back; the server's request schema wants a string).
No imports from vars_langgraph: this file runs inside the server child.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

TAG = re.compile(r"</?tool_call>")


def parse_tool_calls(text: str, names: set[str]) -> list[dict[str, Any]] | None:
    """The tool calls in `text` when it holds nothing but JSON calls of known tools."""
    body = TAG.sub("", text or "").strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    if not body.startswith("{"):
        return None
    dec, calls, i = json.JSONDecoder(), [], 0
    while i < len(body):
        try:
            obj, end = dec.raw_decode(body, i)
        except ValueError:
            return None
        if not isinstance(obj, dict) or obj.get("name") not in names:
            return None
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append({"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                      "function": {"name": obj["name"], "arguments": json.dumps(args)}})
        i = end
        while i < len(body) and body[i] in " \t\r\n,":
            i += 1
    return calls or None


def with_tool_calls(response: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """`response` (a chat completion dict) with a textual tool call turned into tool_calls."""
    for choice in response.get("choices", []):
        msg = choice.get("message") or {}
        calls = parse_tool_calls(msg.get("content") or "", names)
        if calls:
            msg["content"] = None
            msg["tool_calls"] = calls
            choice["finish_reason"] = "tool_calls"
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


class NullContentFix:
    """ASGI middleware: `fix_request` on POST /v1/chat/completions bodies."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or \
                not scope.get("path", "").endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = fix_request(b"".join(chunks))
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def install() -> None:
    import llama_cpp.server.app as server_app
    from llama_cpp import Llama

    create_app = server_app.create_app

    def create_app_fixed(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.add_middleware(NullContentFix)
        return app

    server_app.create_app = create_app_fixed

    original = Llama.create_chat_completion
    if getattr(original, "_vars_tools", False):
        return

    def create_chat_completion(self: Any, *args: Any, **kwargs: Any) -> Any:
        tools = kwargs.get("tools") or []
        if not tools or kwargs.get("tool_choice") == "none":
            return original(self, *args, **kwargs)
        names = {t.get("function", {}).get("name") for t in tools}
        stream = bool(kwargs.pop("stream", False))
        response = with_tool_calls(original(self, *args, stream=False, **kwargs), names)
        return as_stream(response) if stream else response

    create_chat_completion._vars_tools = True  # type: ignore[attr-defined]
    Llama.create_chat_completion = create_chat_completion  # type: ignore[method-assign]
