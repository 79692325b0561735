"""Preference extraction: dialogue window -> `Preference` list, one concept per module:

- `prompts`: the two prompts, the output's JSON schema, the dialogue window;
- `postprocess`: from the model's output to the preferences kept (log-prob confidence, the
  deterministic checks, `finish`);
- `rules`: the rule-based fast path (no model);
- `llm_backend`: `LLMExtractor`, over an OpenAI-compatible endpoint;
- `transformers_backend`: `TransformersExtractor`, a model loaded in-process.

`load_extractor` builds the configured one.
"""

from __future__ import annotations

import os

from vars_langgraph.config import VARSConfig
from vars_langgraph.models.extraction.llm_backend import LLMExtractor
from vars_langgraph.models.extraction.transformers_backend import TransformersExtractor
from vars_langgraph.models.llm import resolve_llm

__all__ = ["load_extractor"]


def load_extractor(cfg: VARSConfig) -> LLMExtractor | TransformersExtractor:
    """The configured extractor: an LLM endpoint (its own, or the shared one), or with
    `extractor.backend: transformers` the model `extractor.model` loaded in-process."""
    if cfg.extractor.backend == "transformers":
        if not cfg.extractor.model:
            raise ValueError("extractor.backend transformers needs extractor.model "
                             "(a Hugging Face model name or a local directory)")
        return TransformersExtractor(cfg.extractor.model, cfg.extractor, device=cfg.extractor.device,
                                     local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1")
    return LLMExtractor(resolve_llm(cfg.extractor.llm, cfg, "extractor"), cfg.extractor)

