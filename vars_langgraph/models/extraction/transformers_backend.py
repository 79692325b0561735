"""The extractor loaded in-process with transformers (the `transformers` backend)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from vars_langgraph.config import ExtractorConfig
from vars_langgraph.models.extraction.postprocess import TOP_LOGPROBS, decision_from_logprobs, finish
from vars_langgraph.models.extraction.prompts import MAX_NEW_TOKENS, build_messages, dialogue_window
from vars_langgraph.types import Preference

log = logging.getLogger(__name__)


class TransformersExtractor:
    """The fine-tuned extractor loaded in-process with transformers (greedy, "finetuned" prompt).

    Production path for `blackhao0426/pref-extractor-qwen3-0.6b-full-sft` without a vLLM server.
    """

    with_rules = True  # the extract node gates it and adds the rule fast path (nodes/extract.py)

    def __init__(
        self,
        model_name: str,
        cfg: ExtractorConfig | None = None,
        *,
        device: str = "cpu",
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ):
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:  # pragma: no cover - transformers is a dependency
            raise RuntimeError("TransformersExtractor needs `pip install transformers`") from e
        self.cfg = cfg or ExtractorConfig(prompt="finetuned")
        self.max_new_tokens = max_new_tokens
        kw = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code}
        try:
            # transformers' generics do not narrow to what these calls return: held as Any
            tokenizer: Any = AutoTokenizer.from_pretrained(model_name, **kw)
            model: Any = AutoModelForCausalLM.from_pretrained(model_name, dtype="auto", **kw)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"cannot load extractor model '{model_name}': {e}") from e
        self.tokenizer, self.model = tokenizer, model
        model.eval()
        model.to(device)
        self.device = device
        self._lock = threading.Lock()

    def extract(self, turns: Sequence[tuple[str, str]]) -> list[Preference]:
        import torch

        window = dialogue_window(turns)
        if not window:
            return []
        messages = build_messages(window, self.cfg.prompt)
        try:
            enc: Any = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True,
                enable_thinking=False,
            )  # fmt: skip
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with self._lock, torch.no_grad():
                out = self.model.generate(
                    **enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                    output_scores=True, return_dict_in_generate=True,
                )  # fmt: skip
        except (RuntimeError, ValueError) as e:
            log.warning("transformers extractor failed: %s", e)
            return []
        new = out.sequences[0, enc["input_ids"].shape[1] :]
        steps = []
        for tok_id, scores in zip(new.tolist(), out.scores, strict=False):
            lp = torch.log_softmax(scores[0].float(), dim=-1)
            top = torch.topk(lp, TOP_LOGPROBS)
            tops = {self.tokenizer.decode([int(i)]): float(v) for v, i in zip(*top, strict=True)}
            tok = self.tokenizer.decode([tok_id])
            tops.setdefault(tok, float(lp[tok_id]))
            steps.append((tok, tops))
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return finish(text, window, self.cfg, decision_from_logprobs(steps).p_open)
