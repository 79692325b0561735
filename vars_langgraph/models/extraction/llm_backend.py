"""The extractor over an OpenAI-compatible chat endpoint (llama.cpp server, vLLM, ...).

A short "probe" request with log-probs decides first whether the message states a preference
(llama-cpp-python's server makes log-probs expensive per generated token), so most neutral turns
cost a few tokens; the full answer is generated only when P(open) >= min_confidence. The
response_format a server accepts is found once per endpoint (`MODES`, in order) and remembered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from vars_langgraph.config import ExtractorConfig, LLMConfig
from vars_langgraph.models.extraction.postprocess import (
    TOP_LOGPROBS,
    Decision,
    decision_from_logprobs,
    finish,
)
from vars_langgraph.models.extraction.prompts import (
    FORCE_ONE_SCHEMA,
    MAX_NEW_TOKENS,
    PREFERENCE_LIST_SCHEMA,
    build_messages,
    dialogue_window,
)
from vars_langgraph.models.llm import openai_client
from vars_langgraph.models.local_server import is_local_url
from vars_langgraph.types import Preference

log = logging.getLogger(__name__)

PROBE_TOKENS = 10  # enough to pass `{"preferences": [` and the token after it
MODES = ("json_schema", "json_object_schema", "json_object", "text")
_MODE_CACHE: dict[str, str] = {}  # base_url -> the first response_format mode that worked
_MODE_LOCK = threading.Lock()


def _steps_from_choice(choice: Any) -> list[tuple[str, dict[str, float]]] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    steps = []
    for t in content:
        tops = {c.token: c.logprob for c in (t.top_logprobs or []) if c.logprob is not None}
        if t.token not in tops and t.logprob is not None:
            tops[t.token] = t.logprob
        steps.append((t.token, tops))
    return steps


@dataclass
class ExtractionResult:
    """What one extraction produced."""

    preferences: list[Preference]
    raw: str | None = None  # the model's complete output; None when generation stopped early
    p_open: float | None = None  # model probability of emitting a preference, if observed
    requests: int = 0


class LLMExtractor:
    """`Extractor` over an OpenAI-compatible chat endpoint (llama.cpp server, vLLM, ...)."""

    with_rules = True  # the extract node gates it and adds the rule fast path (nodes/extract.py)

    def __init__(self, llm: LLMConfig, cfg: ExtractorConfig | None = None,
                 max_new_tokens: int = MAX_NEW_TOKENS):
        if not llm.base_url:
            raise ValueError("LLMExtractor needs a resolved LLMConfig (use resolve_llm)")
        self.llm = llm
        self.cfg = cfg or ExtractorConfig()
        self.max_new_tokens = max_new_tokens
        self.client = openai_client(llm)
        self.base_url = llm.base_url
        self._llama_cpp = is_local_url(llm.base_url)
        self.use_logprobs = True

    # -- public

    def extract(self, turns: Sequence[tuple[str, str]]) -> list[Preference]:
        """Preferences stated in the last user message; [] on neutral turns or bad output."""
        return self.extract_detailed(turns).preferences

    def extract_detailed(self, turns: Sequence[tuple[str, str]]) -> ExtractionResult:
        """`extract` plus the raw output and the open/close decision (for benchmarks, logs).

        With log-probs, P(open) decides: below min_confidence nothing is generated; above it
        the answer is generated with at least one item required (greedy decoding alone closes
        the list whenever P(open) < 0.5, which loses most preferences on small models).
        """
        window = dialogue_window(turns)
        if not window:
            return ExtractionResult([])
        messages = build_messages(window, self.cfg.prompt)
        decision = Decision(None, None)
        requests = 0
        if self.use_logprobs:
            probe = self._complete(messages, PROBE_TOKENS, logprobs=True)
            requests += 1
            if probe is None:
                return ExtractionResult([], requests=requests)
            choice = probe.choices[0]
            steps = _steps_from_choice(choice)
            if steps is None:
                log.info("endpoint %s returns no logprobs; using stated confidence", self.base_url)
                self.use_logprobs = False
            else:
                decision = decision_from_logprobs(steps)
            if decision.p_open is not None:
                raw = choice.message.content if choice.finish_reason == "stop" else None
                if decision.p_open < self.cfg.min_confidence:
                    return ExtractionResult([], raw, decision.p_open, requests)
                if raw is not None and decision.chosen == "open":
                    return self._finish(raw, window, decision, requests)
        schema = FORCE_ONE_SCHEMA if decision.p_open is not None else PREFERENCE_LIST_SCHEMA
        resp = self._complete(messages, self.max_new_tokens, logprobs=False, schema=schema)
        requests += 1
        if resp is None:
            return ExtractionResult([], None, decision.p_open, requests)
        return self._finish(resp.choices[0].message.content, window, decision, requests)

    def warm(self) -> None:
        """Send the prompt once for a one-token answer, so that the server has its long prefix
        (instructions, few-shot examples) cached before the first real message; the chat runs
        it in the background while the user types. Failures are logged, never raised."""
        try:
            self._complete(build_messages(dialogue_window([("user", "Hello.")]), self.cfg.prompt),
                           1, logprobs=False)
        except Exception as e:  # noqa: BLE001 - a warm-up; the first real request reports errors
            log.debug("extractor warm-up failed: %r", e)

    def _finish(self, content: str | None, window: Sequence[tuple[str, str]],
                decision: Decision, requests: int) -> ExtractionResult:  # fmt: skip
        prefs = finish(content, window, self.cfg, decision.p_open)
        return ExtractionResult(prefs, content, decision.p_open, requests)

    # -- transport

    @property
    def mode(self) -> str:
        with _MODE_LOCK:
            # llama-cpp-python's server rejects json_schema (with a 500, which clients retry)
            # but turns {"type": "json_object", "schema": ...} into a grammar
            default = "json_object_schema" if self._llama_cpp else MODES[0]
            return _MODE_CACHE.get(self.base_url, default)

    def _request(self, mode: str, messages: list[dict[str, str]], max_tokens: int,
                 logprobs: bool, schema: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        kw: dict[str, Any] = {
            "model": self.llm.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": max_tokens,
        }
        if mode == "json_schema":
            kw["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "PreferenceList", "schema": schema},
            }
        elif mode == "json_object_schema":
            kw["response_format"] = {"type": "json_object", "schema": schema}
        elif mode == "json_object":
            kw["response_format"] = {"type": "json_object"}
        if logprobs:
            kw["logprobs"] = True
            kw["top_logprobs"] = TOP_LOGPROBS
        if self._llama_cpp:
            kw["extra_body"] = {"repeat_penalty": 1.0}  # llama.cpp's default 1.1 garbles JSON
        return kw

    def _complete(self, messages: list[dict[str, str]], max_tokens: int, logprobs: bool,
                  schema: dict[str, Any] = PREFERENCE_LIST_SCHEMA) -> Any:  # fmt: skip
        """One chat completion, falling back through response_format modes; None on failure."""
        for mode in MODES[MODES.index(self.mode) :]:
            try:
                resp = self.client.chat.completions.create(
                    **self._request(mode, messages, max_tokens, logprobs, schema)
                )
            except openai.APIConnectionError as e:  # includes timeouts
                raise RuntimeError(
                    f"extractor LLM unreachable at {self.base_url} "
                    f"(after {self.llm.max_retries} retries): {e}"
                ) from e
            except openai.APIStatusError as e:
                if mode != "text" and _rejects_format(e):
                    log.info("%s rejects response_format %s; trying the next", self.base_url, mode)
                    continue
                if e.status_code >= 500 or e.status_code == 429:  # server fault, retries spent
                    raise RuntimeError(
                        f"extractor LLM at {self.base_url} failed with HTTP {e.status_code} "
                        f"(after {self.llm.max_retries} retries): {str(e)[:300]}"
                    ) from e
                log.warning("extractor request failed (%s): %s", e.status_code, str(e)[:300])
                return None
            with _MODE_LOCK:
                _MODE_CACHE[self.base_url] = mode
            if not resp.choices:
                log.warning("extractor endpoint returned no choices")
                return None
            return resp
        return None


def _rejects_format(e: openai.APIStatusError) -> bool:
    """Whether an error is the server refusing the requested response_format."""
    msg = str(e).lower()
    if e.status_code in (400, 422):
        return True
    return e.status_code >= 500 and ("response_format" in msg or "json_schema" in msg)

