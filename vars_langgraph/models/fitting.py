"""The command line of the package's fitted models (the reward classifier, the extraction gate):
fit on the tuning part with the named embedder, print the summary, and with `--fit` write the
coefficients the runtime loads."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any


def fit_command(description: str, weights: Path, fit: Callable[[Any, str], dict[str, Any]],
                hidden: Collection[str], argv: Sequence[str] | None = None) -> int:
    """`python -m vars_langgraph.models.<model> [--fit] [--embedder NAME]`."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--fit", action="store_true", help=f"write {weights.name}")
    ap.add_argument("--embedder", default="all-MiniLM-L6-v2")
    args = ap.parse_args(argv)
    from vars_langgraph.config import EmbeddingConfig
    from vars_langgraph.models.embedder import load_embedder

    params = fit(load_embedder(EmbeddingConfig(model=args.embedder)), args.embedder)
    print({k: v for k, v in params.items() if k not in hidden})
    if args.fit:
        weights.write_text(json.dumps(params) + "\n")
        print(f"wrote {weights}")
    return 0
