"""The fine-tuned reaction reader: the embedding model trained end to end on the tuning part of
the labelled reward set (`reward_classifier.LABELLED`), with a linear head over the seven judge
labels on its mean-pooled output.

A linear model over frozen MiniLM features reads about half of the complaints
(`reward_classifier`); training the encoder itself reads two thirds at the same precision, and
the two together (`combine`: a complaint when either reads one) three quarters
(docs/perception.md §10). The recipe (`RECIPE`) and the threshold (`NEG_THRESHOLD`: the lowest
with out-of-fold negative precision >= 0.92) were chosen by 5-fold cross-validation on the tuning
part only.

Not the default (`reward.backend: finetuned` opts in): it needs the fit below, and on the
tuning benchmarks it was no better than the linear classifier (docs/perception.md §10-11). It
reads follow-up questions after a good answer as confusion, which once cost VARS the cards
those follow-ups punished; a confusion now changes no card value (`nodes/update.py`).

The weights do not ship (45 MB): `python -m vars_langgraph.models.reward_reader --fit` (about a
minute on 2 cores) writes them into the model cache (`local_server.cache_dir`/models), under a
name keyed by the base model, the recipe and the labelled set. Until they are there the reward
node reads with the linear classifier (logged).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from vars_langgraph.config import VARSConfig
from vars_langgraph.models.reward_classifier import LABELLED, LABELS, RewardPrediction, decide, load_labelled

log = logging.getLogger(__name__)

RECIPE = {"epochs": 8, "lr": 4e-5, "batch": 16, "weight_decay": 0.01, "max_length": 96, "seed": 0}
NEG_THRESHOLD = 0.80  # summed neg_* probability (5-fold CV on the tuning part: precision 0.92)


@functools.cache
def _data_hash() -> str:
    """The labelled set's hash (package data: read once per process, not on every reading)."""
    return hashlib.sha256(LABELLED.read_bytes()).hexdigest()


def reader_path(cfg: VARSConfig) -> Path:
    """Where the fitted reader for this config's embedding model lives."""
    key = hashlib.sha256(json.dumps([cfg.embedding.model, RECIPE, _data_hash()]).encode()).hexdigest()[:12]
    return Path(os.path.expanduser(cfg.local_server.cache_dir)) / "models" / f"reward-reader-{key}.pt"


def base_model(cfg: VARSConfig) -> str:
    from vars_langgraph.models.embedder import resolve_model

    return resolve_model(cfg.embedding.model)


def network(base: str, pretrained: bool = True) -> Any:
    """The encoder with a linear head: logits over `LABELS` from the mean-pooled tokens."""
    import torch
    from transformers import AutoConfig, AutoModel

    class Reader(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = (AutoModel.from_pretrained(base) if pretrained
                            else AutoModel.from_config(AutoConfig.from_pretrained(base)))
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

    net = train(network(base), encode, np.array([LABELS.index(r["label"]) for r in rows]),
                np.arange(len(rows)), int(RECIPE["epochs"]), float(RECIPE["lr"]), progress)
    out = out or reader_path(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"state": {k: v.half() for k, v in net.state_dict().items()},
                "labels": list(LABELS), "neg_threshold": NEG_THRESHOLD, "recipe": RECIPE,
                "base": cfg.embedding.model, "n": len(rows)}, tmp)
    os.replace(tmp, out)
    return out


class RewardReader:
    """`predict(message)`: the label, from the fitted weights (torch on CPU)."""

    def __init__(self, path: Path, base: str):
        import torch
        from transformers import AutoTokenizer

        saved = torch.load(path, map_location="cpu", weights_only=True)
        if tuple(saved["labels"]) != LABELS:
            raise ValueError(f"{path}: fitted for other labels {saved['labels']}")
        self.tok = AutoTokenizer.from_pretrained(base)
        self.net = network(base, pretrained=False)
        self.net.load_state_dict({k: v.float() for k, v in saved["state"].items()})
        self.net.eval()
        self.neg_threshold = float(saved["neg_threshold"])
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


def combine(tuned: RewardPrediction, linear: RewardPrediction | None) -> RewardPrediction:
    """The reading of both readers: a complaint when either reads one (the fine-tuned reader's
    label first), else the fine-tuned reader's. They miss different complaints: the fine-tuned
    one reads "No, that's not what I asked for." as neutral, the linear one (with the keyword
    cues among its features) as a correction. 5-fold CV on the tuning part, same folds: recall
    at precision >= 0.9 0.63 (fine-tuned), 0.55 (linear), 0.73 (either)."""
    if tuned.negative or linear is None or not linear.negative:
        return tuned
    return linear


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
    args = ap.parse_args(argv)
    cfg = VARSConfig()
    path = reader_path(cfg)
    if args.fit and (args.force or not path.exists()):
        fit(cfg, path)
    print(f"reaction reader: {path} ({'fitted' if path.exists() else 'not fitted: --fit'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
