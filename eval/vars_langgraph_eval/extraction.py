"""Scoring extracted preference cards against labelled (condition, action) pairs.

A card matches a label when all three hold:
- **action**: MiniLM cosine between the two actions >= `ACTION_THRESHOLD` (0.5), the label's
  action taken whole or any of its comma-separated parts ("avoid jargon, use simple language");
  0.5 was set on synthetic pairs before any run: paraphrases such as "prefer answers in bullet
  points" / "use bullet points" score 0.59, unrelated style notes 0.2-0.3;
- **polarity**: no content word is negated in one action and asserted in the other
  ("show code in JavaScript" vs "don't show JavaScript" is a miss; "use pytest, not unittest"
  vs "don't show unittest examples" is not);
- **condition**: a label with condition "general" (the user named no task) needs an unscoped
  card condition (global, or only generic words such as "answering", "responding"); a specific
  label needs a card condition with cosine >= `CONDITION_THRESHOLD` (0.5) to it, and a card
  that is global or unscoped is too broad. "When writing code, use bullet points." for "I
  prefer bullet points" is a miss.

Cards and labels are paired one-to-one, greedily by action similarity. Precision = matched
cards / extracted cards; recall = matched labels / labels. `action_only` does the same with
the action test alone (the lenient view). The label's `global` flag says whether the user
stated the scope as universal ("always", "in general", "from now on", ...): a global card is
"correctly global" when it matched a label with `global: true`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vars_langgraph.types import Preference

ACTION_THRESHOLD = 0.5
CONDITION_THRESHOLD = 0.5

_NEGATORS = re.compile(
    r"\b(?:no more|no|not|never|don't|dont|do not|doesn't|avoid|avoiding|without|stop|skip|nothing|"
    r"instead of|rather than|leave out|omit|none)\b"
)
# a contrast word ends a negation's scope; "audio-only", "read-only" are words, not contrasts
_SCOPE_END = re.compile(r"[,.;:!?]|(?<![\w-])(?:but|instead|rather|just|only|then|and then)(?![\w-])")
_GENERIC = (
    "give use show write add include make keep provide put do be have get let suggest recommend "
    "mention offer me my you your the a "
    "an to of in on for with it them any all each every i is are"
)
_UNSCOPED = (
    "general generally always any all everything default when whenever in answering answer answers "
    "responding respond response responses replying reply replies writing explaining explanation "
    "explanations talking chatting me you to the a an questions question messages message giving "
    "conversation conversations helping communicating each every time request requests my i asking "
    "ask interacting formatting output outputs user chat chats"
)
_GENERIC_VERBS = frozenset(_GENERIC.split())
_UNSCOPED_WORDS = frozenset(_UNSCOPED.split())
_WORD = re.compile(r"[a-z0-9][a-z0-9'+#-]*")


class Embedder(Protocol):
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def polarity_sets(action: str) -> tuple[set[str], set[str]]:
    """(asserted, negated) content words of an action; a negator's scope ends at punctuation
    or a contrast word ("but", "instead", "rather", "just", "only")."""
    text = action.lower().replace("\u2019", "'")
    negated: set[str] = set()
    spans: list[tuple[int, int]] = []
    for m in _NEGATORS.finditer(text):
        end = _SCOPE_END.search(text, m.end())
        stop = end.start() if end else len(text)
        spans.append((m.start(), stop))
        negated |= {w for w in _words(text[m.end() : stop]) if w not in _GENERIC_VERBS}
    kept = "".join(" " if any(a <= i < b for a, b in spans) else ch for i, ch in enumerate(text))
    asserted = {w for w in _words(kept) if w not in _GENERIC_VERBS} - negated
    return asserted, negated


def polarity_conflict(a: str, b: str) -> bool:
    """Whether a content word is negated in one action and asserted in the other."""
    pa, na = polarity_sets(a)
    pb, nb = polarity_sets(b)
    return bool((na & pb) or (pa & nb))


def is_unscoped(pref: Preference) -> bool:
    """A card condition that names no task: global, or generic words only."""
    if pref.is_global:
        return True
    return all(w in _UNSCOPED_WORDS for w in _words(pref.condition))


@dataclass
class MessageScore:
    """One message: how its cards matched its labels."""

    n_cards: int
    n_labels: int
    matched: int  # strict matches (action + polarity + condition)
    matched_action: int  # action + polarity only
    n_global: int
    global_correct: int
    pairs: list[dict[str, Any]] = field(default_factory=list)


def _cos(embedder: Embedder, a: list[str], b: list[str]) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)), np.float32)
    e = np.asarray(embedder.embed_documents([*a, *b]), np.float32)
    return e[: len(a)] @ e[len(a) :].T


def _action_cos(embedder: Embedder, cards: list[str], labels: list[str]) -> np.ndarray:
    """Card x label cosine, the label taken whole or as any of its comma-separated parts."""
    parts = [(j, p) for j, lab in enumerate(labels) for p in [lab, *lab.split(", ")] if p.strip()]
    sim = _cos(embedder, cards, [p for _, p in parts])
    out = np.full((len(cards), len(labels)), -1.0, np.float32)
    for k, (j, _) in enumerate(parts):
        out[:, j] = np.maximum(out[:, j], sim[:, k]) if len(cards) else out[:, j]
    return out


def _greedy(ok: np.ndarray, sim: np.ndarray) -> list[tuple[int, int]]:
    order = sorted(((float(sim[i, j]), i, j) for i, j in zip(*np.nonzero(ok), strict=True)), reverse=True)
    used_i: set[int] = set()
    used_j: set[int] = set()
    out = []
    for _, i, j in order:
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            out.append((int(i), int(j)))
    return out


def score_message(cards: Sequence[Preference], labels: Sequence[dict[str, Any]],
                  embedder: Embedder) -> MessageScore:  # fmt: skip
    """Match one message's extracted cards to its labels (see the module docstring)."""
    cards = list(cards)
    act = _action_cos(embedder, [p.action for p in cards], [lab["action"] for lab in labels])
    specific = [j for j, lab in enumerate(labels) if lab["condition"].lower() != "general"]
    cond = np.zeros_like(act)
    if cards and specific:
        cond[:, specific] = _cos(embedder, [p.condition for p in cards],
                                 [labels[j]["condition"] for j in specific])  # fmt: skip
    ok_action = np.zeros(act.shape, bool)
    ok_strict = np.zeros(act.shape, bool)
    for i, p in enumerate(cards):
        for j, lab in enumerate(labels):
            if act[i, j] < ACTION_THRESHOLD or polarity_conflict(p.action, lab["action"]):
                continue
            ok_action[i, j] = True
            if lab["condition"].lower() == "general":
                ok_strict[i, j] = is_unscoped(p)
            else:
                ok_strict[i, j] = not is_unscoped(p) and cond[i, j] >= CONDITION_THRESHOLD
    strict = _greedy(ok_strict, act)
    lenient = _greedy(ok_action, act)
    glob = [i for i, p in enumerate(cards) if p.is_global]
    by_card = dict(lenient)
    correct = sum(1 for i in glob if i in by_card and labels[by_card[i]].get("global", False))
    pairs = [{"card": cards[i].note, "label": f"{labels[j]['condition']}: {labels[j]['action']}",
              "action_cos": round(float(act[i, j]), 3)} for i, j in strict]  # fmt: skip
    return MessageScore(len(cards), len(labels), len(strict), len(lenient), len(glob), correct, pairs)


def summarize_scores(scores: Sequence[MessageScore]) -> dict[str, Any]:
    """Precision, recall (strict and action-only), global shares over many messages."""
    cards = sum(s.n_cards for s in scores)
    labels = sum(s.n_labels for s in scores)
    m = sum(s.matched for s in scores)
    ma = sum(s.matched_action for s in scores)
    g = sum(s.n_global for s in scores)
    gc = sum(s.global_correct for s in scores)

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    p, r = ratio(m, cards), ratio(m, labels)
    return {
        "cards": cards,
        "labels": labels,
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p and r else 0.0 if p is not None and r is not None else None,
        "precision_action_only": ratio(ma, cards),
        "recall_action_only": ratio(ma, labels),
        "global_share": ratio(g, cards),
        "global_correct_share": ratio(gc, g),
        "neutral_messages_with_cards": sum(1 for s in scores if not s.n_labels and s.n_cards),
    }
