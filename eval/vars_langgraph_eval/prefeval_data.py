"""PrefEval data: topics, items in the three forms, distractor turns, simulated users.

Reads any directory in PrefEval's layout (Zhao et al., ICLR 2025, github.com/amazon-science/PrefEval,
data CC BY-NC 4.0: read at run time, never copied into this repository):

    explicit_preference/<topic>.json                     [{preference, question, explanation}]
    implicit_preference/persona-driven/<topic>.json      + persona, conversation {"0": {user, assistant}}
    implicit_preference/choice-based/<topic>.json        + conversation {query, assistant_options, ...}
    filtered_inter_turns.json                            [{conversation: [{role, content}, ...]}]

Item i of a topic has the same question in all three forms (its preference worded alike; a few
are reworded), so a simulated user (a seeded set of (topic, index) pairs from different topics)
can be run in any form; each form's own preference text is what the judge checks against.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMS = ("explicit", "implicit-persona", "implicit-choice")
FORM_DIRS = {
    "explicit": "explicit_preference",
    "implicit-persona": "implicit_preference/persona-driven",
    "implicit-choice": "implicit_preference/choice-based",
}
DISTRACTORS_FILE = "filtered_inter_turns.json"
SPLIT_SEED = "prefeval-topics-v1"
TUNING_SHARE = 0.4
STATEMENT_ACK = "Got it, I'll keep that in mind."  # assistant reply to an explicit statement

Turn = tuple[str, str | None]  # (user text, recorded assistant reply or None)


@dataclass(frozen=True)
class Item:
    """One PrefEval item in one form: the turns that state the preference, then the question."""

    topic: str
    index: int
    form: str
    preference: str
    question: str
    explanation: str
    turns: tuple[Turn, ...]  # the preference's own conversation (1 turn when explicit)

    @property
    def key(self) -> str:
        return f"{self.topic}#{self.index}"


@dataclass
class SimUser:
    """A simulated user: several PrefEval preferences from different topics, in stated order."""

    user_id: str
    picks: list[tuple[str, int]] = field(default_factory=list)


def default_data_dir() -> Path | None:
    """$PREFEVAL_DATA, else ../shared/data/prefeval beside the repository, if present."""
    env = os.environ.get("PREFEVAL_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data" / "prefeval"
        if cand.is_dir():
            return cand
    return None


def list_topics(data_dir: Path, form: str = "explicit") -> list[str]:
    d = Path(data_dir) / FORM_DIRS[form]
    if not d.is_dir():
        raise FileNotFoundError(f"not a PrefEval directory (no {FORM_DIRS[form]}/): {data_dir}")
    return sorted(p.stem for p in d.glob("*.json"))


def split_topics(topics: list[str], seed: str = SPLIT_SEED,
                 tuning_share: float = TUNING_SHARE) -> tuple[list[str], list[str]]:
    """Fixed split into (tuning, report): topics ordered by sha256(seed:topic), the first
    round(share * n) (at least one when n >= 2) are for tuning. Depends only on the names."""
    order = sorted(topics, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).hexdigest())
    n_tune = max(1, round(tuning_share * len(order))) if len(order) >= 2 else 0
    return sorted(order[:n_tune]), sorted(order[n_tune:])


def _turns(form: str, row: dict[str, Any]) -> tuple[Turn, ...]:
    if form == "explicit":
        return ((str(row["preference"]), STATEMENT_ACK),)
    conv = row.get("conversation")
    if form == "implicit-choice":
        if not isinstance(conv, dict) or "query" not in conv:
            raise ValueError("choice-based item without conversation.query")
        return ((str(conv["query"]), str(conv.get("assistant_options", ""))),
                (str(conv.get("user_selection", "")), str(conv.get("assistant_acknowledgment", ""))))
    if not isinstance(conv, dict) or not conv:
        raise ValueError("persona-driven item without a conversation")
    keys = sorted(conv, key=lambda k: (len(str(k)), str(k)))  # "0", "1", ... or "turn1", ...
    return tuple((str(conv[k]["user"]), str(conv[k].get("assistant", ""))) for k in keys)


def load_items(data_dir: Path, form: str, topic: str) -> list[Item]:
    """All items of one topic in one form (bad rows: a clear error naming file and row)."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
    path = Path(data_dir) / FORM_DIRS[form] / f"{topic}.json"
    if not path.exists():
        raise FileNotFoundError(f"no such PrefEval file: {path}")
    rows = json.loads(path.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of items")
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(Item(topic, i, form, str(row["preference"]), str(row["question"]),
                            str(row.get("explanation", "")), _turns(form, row)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: item {i} is not in PrefEval's {form} format: {e!r}") from e
    return out


def load_distractors(data_dir: Path) -> list[tuple[str, str]]:
    """The unrelated chat turns PrefEval inserts: all conversations concatenated, as (user,
    assistant) pairs in file order (PrefEval takes the first N pairs)."""
    path = Path(data_dir) / DISTRACTORS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no distractor file: {path}")
    pairs: list[tuple[str, str]] = []
    for conv in json.loads(path.read_text()):
        msgs = conv.get("conversation", []) if isinstance(conv, dict) else []
        for a, b in zip(msgs[::2], msgs[1::2], strict=False):
            if a.get("role") == "user" and b.get("role") == "assistant" and str(a.get("content", "")).strip():
                pairs.append((str(a["content"]), str(b.get("content", ""))))
    return pairs


def build_users(pools: dict[str, int], n_users: int, prefs_per_user: int,
                seed: int) -> list[SimUser]:
    """Seeded users, each with `prefs_per_user` (topic, item index) picks spread round-robin over
    the topics in a per-user shuffled order (so a user's preferences come from different topics),
    without repeating an item within a user. `pools`: topic -> number of items."""
    topics = sorted(t for t, n in pools.items() if n > 0)
    if not topics:
        raise ValueError("no topics with items")
    if prefs_per_user > sum(pools[t] for t in topics):
        raise ValueError(f"{prefs_per_user} preferences per user, only "
                         f"{sum(pools[t] for t in topics)} items in the chosen topics")
    users = []
    for u in range(n_users):
        rnd = random.Random(f"{seed}:prefeval-user:{u}")
        order = topics[:]
        rnd.shuffle(order)
        left = {t: rnd.sample(range(pools[t]), pools[t]) for t in order}
        picks: list[tuple[str, int]] = []
        while len(picks) < prefs_per_user:
            for t in order:
                if left[t] and len(picks) < prefs_per_user:
                    picks.append((t, left[t].pop()))
        users.append(SimUser(f"pe{seed}u{u:03d}", picks))
    return users
