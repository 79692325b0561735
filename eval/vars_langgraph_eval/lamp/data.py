"""LaMP file formats: questions `[{id, input, profile}]`, outputs/predictions `{task, golds}`.

Reading validates and names the file and record on error; writing uses the official layout.
Nothing here knows about retrieval, prompts or metrics.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = tuple(f"LaMP_{i}" for i in range(1, 8))

LABELS: dict[str, list[str]] = {
    "LaMP_1": ["[1]", "[2]"],
    # Movie tagging (the current LaMP-2, data under LaMP_2/new/).
    "LaMP_2": [
        "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia",
        "dark comedy", "classic", "psychology", "fantasy", "romance", "thought-provoking",
        "social commentary", "violence", "true story",
    ],
    "LaMP_3": ["1", "2", "3", "4", "5"],
}
# The deprecated news-categorisation LaMP-2 (data under LaMP_2/ without `new`).
LABELS_LAMP2_NEWS = [
    "food & drink", "sports", "education", "parents", "religion", "travel", "business",
    "crime", "science & technology", "culture & arts", "entertainment", "politics", "women",
    "style & beauty", "healthy living",
]


@dataclass
class Question:
    """One LaMP input: its id, the task input text and the user's profile items."""

    id: str
    input: str
    profile: list[dict[str, Any]] = field(default_factory=list)


def normalise_task(name: str | int) -> str:
    """'LaMP_2', 'LaMP-2', 'lamp2', '2' or 2 -> 'LaMP_2'."""
    m = re.fullmatch(r"(?i)\s*(?:lamp[_-]?)?([1-7])\s*", str(name))
    if not m:
        raise ValueError(f"unknown LaMP task {name!r}: expected LaMP_1 .. LaMP_7")
    return f"LaMP_{m.group(1)}"


def _read_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"LaMP file not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e


def parse_questions(data: Any, source: str = "<questions>") -> list[Question]:
    """Validate the official questions layout (a list of {id, input, profile})."""
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a list of questions, got {type(data).__name__}")
    out = []
    for i, q in enumerate(data):
        if not isinstance(q, Mapping) or "id" not in q or "input" not in q:
            raise ValueError(f"{source}[{i}]: each question needs 'id' and 'input'")
        profile = q.get("profile") or []
        if not isinstance(profile, list) or not all(isinstance(p, Mapping) for p in profile):
            raise ValueError(f"{source}[{i}] (id {q['id']}): 'profile' must be a list of objects")
        out.append(Question(str(q["id"]), str(q["input"]), [dict(p) for p in profile]))
    return out


def load_questions(path: str | os.PathLike) -> list[Question]:
    """Read an official `*_questions.json` file."""
    return parse_questions(_read_json(path), str(path))


def parse_outputs(data: Any, source: str = "<outputs>") -> tuple[str, dict[str, str]]:
    """Validate {task, golds: [{id, output}]} and return (task, {id: output})."""
    if not isinstance(data, Mapping) or "golds" not in data or not isinstance(data["golds"], list):
        raise ValueError(f"{source}: expected {{'task': ..., 'golds': [{{'id', 'output'}}]}}")
    task = normalise_task(data.get("task", ""))
    golds: dict[str, str] = {}
    for i, g in enumerate(data["golds"]):
        if not isinstance(g, Mapping) or "id" not in g or "output" not in g:
            raise ValueError(f"{source}: golds[{i}] needs 'id' and 'output'")
        golds[str(g["id"])] = str(g["output"])
    return task, golds


def load_outputs(path: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """Read an official `*_outputs.json` file (or a predictions file: same layout)."""
    return parse_outputs(_read_json(path), str(path))


def predictions_document(task: str, preds: Mapping[str, str] | Iterable[tuple[str, str]]):
    """The official predictions layout: {"task": "LaMP_N", "golds": [{"id", "output"}]}."""
    items = preds.items() if isinstance(preds, Mapping) else preds
    return {
        "task": normalise_task(task),
        "golds": [{"id": str(i), "output": str(o)} for i, o in items],
    }


def write_predictions(
    path: str | os.PathLike, task: str, preds: Mapping[str, str] | Iterable[tuple[str, str]]
) -> Path:
    """Write predictions in the official format (the evaluation script reads them as golds)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(predictions_document(task, preds), indent=1, ensure_ascii=False))
    return p
