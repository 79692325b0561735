"""OpenAI-compatible LLM clients for every LLM role (agent, extractor, reranker, judge).

A role's `LLMConfig` without `base_url` is served by the local llama.cpp server
(`local_server.local_base_url`), started on first use.
"""

from __future__ import annotations

from urllib.parse import urlparse

import openai
from langchain_openai import ChatOpenAI

from vars_langgraph.config import LLMConfig, VARSConfig
from vars_langgraph.models.local_server import Role, local_base_url


def resolve_llm(llm: LLMConfig | None, cfg: VARSConfig, role: Role = "chat") -> LLMConfig:
    """The role's config (None: `cfg.llm`) with `base_url` filled in (the local server for
    `role` if unset)."""
    llm = llm if llm is not None else cfg.llm
    if llm.base_url:
        return llm
    return llm.model_copy(update={"base_url": local_base_url(cfg, role)})


def _is_openai_host(base_url: str | None) -> bool:
    host = urlparse(base_url or "https://api.openai.com").hostname or ""
    return host == "openai.com" or host.endswith(".openai.com")


def chat_model(llm: LLMConfig) -> ChatOpenAI:
    """A LangChain chat model for an OpenAI-compatible endpoint (call `resolve_llm` first).

    langchain-openai sends `max_completion_tokens`, which llama.cpp's server ignores, so the
    limit is repeated as `max_tokens` for endpoints that are not OpenAI's own; `extra_body`
    (server-specific sampling such as llama.cpp's `repeat_penalty`) goes to those only.
    """
    extra = None
    if not _is_openai_host(llm.base_url):
        extra = {**llm.extra_body, "max_tokens": llm.max_tokens}
    return ChatOpenAI(
        base_url=llm.base_url,
        api_key=llm.api_key,
        model=llm.model,
        temperature=llm.temperature,
        top_p=llm.top_p,
        max_tokens=llm.max_tokens,
        seed=llm.seed,
        frequency_penalty=llm.frequency_penalty,
        presence_penalty=llm.presence_penalty,
        timeout=llm.timeout,
        max_retries=llm.max_retries,
        extra_body=extra,
    )


def openai_client(llm: LLMConfig) -> openai.OpenAI:
    """A plain `openai.OpenAI` client for the endpoint (timeout and retries from the config)."""
    return openai.OpenAI(
        base_url=llm.base_url,
        api_key=llm.api_key,
        timeout=llm.timeout,
        max_retries=llm.max_retries,
    )
