"""The fine-tuned reaction reader: the embedding model adapted on the tuning part of the labelled
reward set (`reward_classifier.LABELLED`) with LoRA adapters on its linear layers, and a linear
head over the seven judge labels on its mean-pooled output.

A linear model over frozen MiniLM features reads about two thirds of the complaints
(`reward_classifier`); the two together (`combine`: their probabilities averaged) read four
fifths at a higher precision (docs/perception.md §10-12, §16). The recipe (`RECIPE`) and the
threshold (`NEG_THRESHOLD`: the lowest with out-of-fold negative precision >= 0.92) were
chosen by 5-fold cross-validation on the tuning part only (`benchmarks/reward_reader_cv.py`).

The adapter and the head ship with the package (`SHIPPED`, 0.7 MB of float16 safetensors,
keyed by the base model, the recipe and the labelled set); they are merged into the encoder
when loaded, so a reading costs one MiniLM pass. For another embedding model, `python -m
vars_langgraph.models.reward_reader --fit --embedder NAME` (about two minutes on 2 cores)
writes a fit into the model cache (`local_server.cache_dir`/models); until one is there the
reward node reads with the linear classifier (logged).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vars_langgraph.config import EmbeddingConfig, VARSConfig
from vars_langgraph.models.reward_classifier import (
    DATA_DIR,
    LABELLED,
    LABELS,
    RewardPrediction,
    decide,
    load_labelled,
)

log = logging.getLogger(__name__)

RECIPE = {"epochs": 8, "lr": 5e-4, "batch": 16, "weight_decay": 0.01, "max_length": 96, "seed": 0,
          "lora_rank": 8}
LORA_TARGETS = ["query", "key", "value", "dense"]  # every linear layer of the BERT encoder
LORA_ALPHA = 16  # adapter scale alpha / rank
NEG_THRESHOLD = 0.95  # summed neg_* probability: the lowest with out-of-fold precision >= 0.92 (tuning part)
# the two readers' averaged neg_* probability (`combine`): the lowest threshold with out-of-fold
# negative precision >= 0.92 on the tuning part (`benchmarks/reward_reader_cv.py`)
BOTH_THRESHOLD = 0.60
SHIPPED = DATA_DIR / "reward_reader.safetensors"  # adapter + head for the default embedder


@functools.cache
def _data_hash() -> str:
    """The labelled set's hash (package data: read once per process, not on every reading)."""
    return hashlib.sha256(LABELLED.read_bytes()).hexdigest()


@functools.cache
def _key(model: str) -> str:
    """What a fit depends on: the base model, the recipe and the labelled set (once per model
    and process: `reader_path` runs on every reading)."""
    return hashlib.sha256(json.dumps([model, RECIPE, _data_hash()]).encode()).hexdigest()[:12]


@functools.cache
def _shipped_key() -> str | None:
    """The key the shipped weights were fitted under (None when there are none)."""
    if not SHIPPED.exists():
        return None
    from safetensors import safe_open

    with safe_open(str(SHIPPED), "pt") as f:
        return (f.metadata() or {}).get("key")


def reader_path(cfg: VARSConfig) -> Path:
    """The fitted reader for this config's embedding model: the shipped weights when they were
    fitted for it (same base model, recipe and labelled set), else the user's own fit in the
    model cache (`local_server.cache_dir`/models)."""
    key = _key(cfg.embedding.model)
    if key == _shipped_key():
        return SHIPPED
    cache = Path(os.path.expanduser(cfg.local_server.cache_dir)) / "models"
    return cache / f"reward-reader-{key}.safetensors"


def base_model(cfg: VARSConfig) -> str:
    from vars_langgraph.models.embedder import resolve_model

    return resolve_model(cfg.embedding.model)


def network(base: str, lora_rank: int = 0, lora_alpha: int = LORA_ALPHA) -> Any:
    """The encoder and a linear head: logits over `LABELS` from the mean-pooled tokens. With
    `lora_rank` (fitting, `peft` needed) LoRA adapters on the encoder's linear layers are what
    trains; 0: the plain encoder (reading, or fitting every weight)."""
    import torch
    from transformers import AutoModel

    class Reader(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(base)
            if lora_rank:
                from peft import LoraConfig, get_peft_model

                self.encoder = get_peft_model(self.encoder, LoraConfig(
                    r=lora_rank, lora_alpha=lora_alpha, target_modules=LORA_TARGETS))
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, len(LABELS))

        def forward(self, batch: dict[str, Any]) -> Any:
            hidden = self.encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))

    return Reader()


def train(net: Any, encode: Any, y: np.ndarray, rows: np.ndarray, epochs: int, lr: float,
          progress: bool = False) -> Any:
    """`RECIPE`'s loop: AdamW over the trainable parameters, cross-entropy on shuffled batches of
    `rows` (`encode(indices)` -> the tokenizer's batch, `y` the label index of every row)."""
    import torch
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr,
                            weight_decay=RECIPE["weight_decay"])
    rng = np.random.default_rng(int(RECIPE["seed"]))
    size = int(RECIPE["batch"])
    labels = torch.as_tensor(y)
    net.train()
    with tqdm(total=epochs * -(-len(rows) // size), desc="fitting the reaction reader",
              disable=not progress) as bar:
        for _ in range(epochs):
            order = rng.permutation(rows)
            for i in range(0, len(order), size):
                idx = order[i:i + size]
                loss = torch.nn.functional.cross_entropy(net(encode(idx)), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.update(1)
    net.eval()
    return net


def fit(cfg: VARSConfig, out: Path | None = None, progress: bool = True) -> Path:
    """Train on the tuning part with `RECIPE` and write the weights (float16) atomically."""
    import torch
    from transformers import AutoTokenizer

    rows = load_labelled(split="tune")
    base = base_model(cfg)
    torch.manual_seed(RECIPE["seed"])
    tok = AutoTokenizer.from_pretrained(base)

    def encode(idx: np.ndarray) -> Any:
        return tok([rows[j]["text"] for j in idx], padding=True, truncation=True,
                   max_length=int(RECIPE["max_length"]), return_tensors="pt")

    y = np.array([LABELS.index(r["label"]) for r in rows])
    net = train(network(base, int(RECIPE["lora_rank"])), encode, y, np.arange(len(rows)),
                int(RECIPE["epochs"]), float(RECIPE["lr"]), progress)
    out = out or reader_path(cfg)
    save(net, out, cfg.embedding.model, len(rows))
    return out


def save(net: Any, out: Path, model: str, n: int) -> None:
    """The trained part, float16 safetensors written atomically: each adapted layer's LoRA
    factors (`lora.<module>.A` / `.B`, the module named as in the plain encoder) and the head."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = {f"head.{k}": v for k, v in net.head.state_dict().items()}
    for k, v in get_peft_model_state_dict(net.encoder).items():
        module, factor = k.removeprefix("base_model.model.").rsplit(".lora_", 1)
        state[f"lora.{module}.{factor.split('.')[0]}"] = v
    meta = {"key": _key(model), "base": model, "labels": json.dumps(list(LABELS)),
            "neg_threshold": str(NEG_THRESHOLD), "recipe": json.dumps(RECIPE), "n": str(n),
            "lora_scale": str(LORA_ALPHA / int(RECIPE["lora_rank"])),
            "data_sha256": _data_hash()[:16], "split": "tune"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    save_file({k: v.detach().half().contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
    os.replace(tmp, out)


def merge_lora(encoder: Any, state: dict[str, Any], scale: float) -> None:
    """W += scale * B @ A for every adapted linear layer: the adapter folded into the plain
    encoder once (peft's `merge_and_unload`, without importing peft to read)."""
    modules = dict(encoder.named_modules())
    for key, a in state.items():
        if key.startswith("lora.") and key.endswith(".A"):
            name = key[len("lora."):-len(".A")]
            b = state[f"lora.{name}.B"]
            modules[name].weight.data += scale * (b @ a)


class RewardReader:
    """`predict(message)`: the label, from the fitted weights (torch on CPU)."""

    def __init__(self, path: Path, base: str):
        from safetensors import safe_open
        from transformers import AutoTokenizer

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
        if tuple(json.loads(meta.get("labels", "[]"))) != LABELS:
            raise ValueError(f"{path}: fitted for other labels {meta.get('labels')}")
        self.tok = AutoTokenizer.from_pretrained(base)
        self.net = network(base)
        merge_lora(self.net.encoder, state, float(meta["lora_scale"]))
        self.net.head.load_state_dict({k[len("head."):]: v for k, v in state.items()
                                       if k.startswith("head.")})
        self.net.eval()
        self.neg_threshold = float(meta["neg_threshold"])
        self.lock = threading.Lock()

    def predict_many(self, texts: list[str]) -> list[RewardPrediction]:
        import torch

        batch = self.tok(texts, padding=True, truncation=True, max_length=int(RECIPE["max_length"]),
                         return_tensors="pt")
        with self.lock, torch.inference_mode():
            probs = torch.softmax(self.net(batch).float(), -1).numpy()
        return decide(probs, LABELS, self.neg_threshold)

    def predict(self, text: str) -> RewardPrediction:
        return self.predict_many([text])[0]


def first_sentence(text: str) -> str:
    """A message's first sentence (the whole message when it has one)."""
    from vars_langgraph.models.extraction.postprocess import sentences

    parts = sentences(text)
    return parts[0] if parts else text.strip()


_ABOUT_THE_ANSWER = re.compile(r"\b(?:respon[sd]\w*|you|your)\b", re.I)
_CODE = re.compile(r"[{}\[\];=<>#`]|\b(?:select one|true or false|choices?)\b", re.I)  # pasted
LEAD_WORDS = 12  # a reaction put first is short


def explains(rest: str, message: str) -> bool:
    """Whether what follows a message's first sentence says what the user wants or what the
    answer did (a stance word, "the response", "you"), with no praise and nothing pasted (code,
    a quiz)."""
    from vars_langgraph.learning.reward import has_positive_cue
    from vars_langgraph.models.extraction.postprocess import states_a_stance
    from vars_langgraph.models.extraction.rules import message_lines

    if (not rest or has_positive_cue(rest) or _CODE.search(message)
            or any(pasted for _, pasted in message_lines(message))):
        return False
    return states_a_stance(rest) or bool(_ABOUT_THE_ANSWER.search(rest))


def lead_sentence(text: str) -> str | None:
    """The message's first sentence when it may be read on its own: a short reaction put first
    (`LEAD_WORDS`) that the rest explains (`explains`); else None."""
    first = first_sentence(text)
    rest = text.strip()[len(first):].strip() if text.strip().startswith(first) else ""
    return first if len(first.split()) <= LEAD_WORDS and explains(rest, text) else None


def with_first_sentence(read: Callable[[str], RewardPrediction | None],
                        text: str) -> RewardPrediction | None:  # fmt: skip
    """`read(text)`, or the reading of the message's `lead_sentence` when that one reads a
    complaint and the whole does not: people lead with the reaction and then restate what they
    want ("Hold on, this ignores what I care about. What works for me: bullet points."), and a
    reading of the whole weighs the restated preference over the reaction. Praise with a
    concession ("Clear, even if a bit long. Thanks.") and pasted material keep the whole's
    reading."""
    pred = read(text)
    if pred is None or pred.negative or (first := lead_sentence(text)) is None:
        return pred
    lead = read(first)
    return lead if lead is not None and lead.negative else pred


def combine(tuned: RewardPrediction, linear: RewardPrediction | None) -> RewardPrediction:
    """The reading of both readers: their seven probabilities averaged, a complaint when the
    averaged `neg_*` probability is at least `BOTH_THRESHOLD`. They miss different complaints:
    the fine-tuned one reads "No, that's not what I asked for." as neutral, the linear one (with
    the keyword cues among its features) as a correction; where one is unsure the other decides.
    5-fold CV on the tuning part, same folds (`benchmarks/reward_reader_cv.py`): negative
    precision / recall 0.921 / 0.806 averaged, 0.904 / 0.771 for "either reads a complaint"."""
    if linear is None:
        return tuned
    probs = np.array([(tuned.probs.get(lab, 0.0) + linear.probs.get(lab, 0.0)) / 2 for lab in LABELS])
    return decide(probs[None], LABELS, BOTH_THRESHOLD)[0]


_READERS: dict[Path, RewardReader] = {}
_MISSING: set[Path] = set()  # paths already reported as not fitted
_LOCK = threading.Lock()


def load_reader(cfg: VARSConfig) -> RewardReader | None:
    """The fitted reader for this config (one per process), or None when it is not fitted
    (logged once per path)."""
    path = reader_path(cfg)
    with _LOCK:
        if path not in _READERS:
            if not path.exists():
                if path not in _MISSING:
                    _MISSING.add(path)
                    log.warning("no fitted reaction reader at %s (python -m "
                                "vars_langgraph.models.reward_reader --fit); using the classifier",
                                path)
                return None
            _READERS[path] = RewardReader(path, base_model(cfg))
        return _READERS[path]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vars_langgraph.models.reward_reader",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", action="store_true", help="train and write the weights")
    ap.add_argument("--force", action="store_true", help="refit even when they are there")
    ap.add_argument("--embedder", default=EmbeddingConfig().model,
                    help="base model (the default one's weights ship with the package)")
    args = ap.parse_args(argv)
    cfg = VARSConfig.from_dict({"embedding": {"model": args.embedder}})
    path = reader_path(cfg)
    if args.fit and (args.force or not path.exists()):
        shipped = args.embedder == EmbeddingConfig().model
        path = fit(cfg, SHIPPED if shipped else path)
        _shipped_key.cache_clear()
    print(f"reaction reader: {path} ({'fitted' if path.exists() else 'not fitted: --fit'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
