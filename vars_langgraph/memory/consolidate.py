"""Consolidation: one card per preference, and cards that do not help leave retrieval.

Run by the update node after each turn's feedback (in the background learner when background
learning is on, i.e. after the answer), bounded per turn: it examines the user's newest
`CONSOLIDATE_MAX` cards once per store version, plus the cards whose learned value is
low. Nothing is deleted: a card leaves retrieval by its `status` ("archived" or "superseded")
with `status_reason` and `replaced_by`; `memories` shows it, export/import keep it, `forget`
deletes it with everything else. Rules (docs/memory-hygiene.md):

- paraphrase: two active cards with cosine >= `MERGE_MIN` -> the older one is archived
  into the newer one, whose sources gain the older card's (the user's words are kept);
- contradiction: a newer card on the same subject (cosine >= SUPERSEDE_MIN) whose own words
  mark a change ("now", "anymore", "no longer", "instead", ...) or flip the older card's
  polarity supersedes the older card;
- one-off request: a card learned from a request with no standing cue ("give me a recipe",
  "could you double-check the last step") or from a long copy of the user's message (a task,
  not a wish) is archived once the user is in another conversation, unless a complaint
  restated it;
- retirement: a card whose learned value u (learning/card_value.py) fell below
  `RETIRE_VALUE` after at least `RETIRE_AFTER` updates, and that the user never
  restated, is archived.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import numpy as np

from vars_langgraph.models.extraction.postprocess import content_words
from vars_langgraph.types import PreferenceCard

SUPERSEDE_MIN = 0.5  # cosine of two cards on the same subject
# chosen on the collab tuning half (docs/memory-hygiene.md)
CONSOLIDATE_MAX = 64  # newest cards examined per store version
MERGE_MIN = 0.85  # paraphrase cosine for merging two cards (the add-time dedup merges >= 0.9)
RETIRE_VALUE = -0.6  # archive a card whose learned value falls below this ...
RETIRE_AFTER = 3  # ... after at least this many value updates
LONG_COPY = 12  # an action this many words long copied from the user's message is content
NEIGHBOURS = 4
MAX_SOURCES = 50

_CHANGE = re.compile(
    r"\b(now|anymore|any more|no longer|instead|these days|changed my mind|not any ?more|"
    r"from now on|actually|nowadays|stopped|started)\b", re.I)
_NEG = re.compile(r"\b(not|no|never|don't|do not|doesn't|won't|avoid|without|stop|hate|"
                  r"dislike|vegetarian|vegan)\b", re.I)
_STANDING = re.compile(
    r"\b(always|never|prefer\w*|like|love|hate|want|usually|whenever|every ?time|each time|"
    r"from now on|in general|going forward|generally|i am|i'm|my|avoid|don't|do not|keep|"
    r"please (?:always|keep|use|be|make sure))\b", re.I)
_REQUEST = re.compile(
    r"^\s*(?:(?:please|can you|could you|would you)\s+)?(give|show|tell|write|solve|"
    r"find(?!\s+(?:it|myself|that|them)\b)|"  # "find it hard to ...": the user's statement
    r"compute|calculate|explain|list|summari[sz]e|translate|make|create|help|answer|suggest|"
    r"recommend|draft|plan|fix|check|double-check|verify|walk me|help me|show me)\b", re.I)

# conditions that name no task (the extractor's "answering"; "working on: <the task>" is the
# task itself): a request under them is not a standing rule
_UNSCOPED = re.compile(r"^\s*(?:when\s+)?(?:answering|responding|replying|general|in general|"
                       r"always|any|working on\b)", re.I)

_TASK = re.compile(r"^\s*(?:when\s+)?working on\s*:", re.I)

_SEEN: dict[tuple[int, str], str] = {}  # (index id, user) -> version last examined
_SEEN_LOCK = threading.Lock()


def is_one_off(card: PreferenceCard) -> bool:
    """A request, not a preference: a card under no task condition ("answering", or "working
    on: <the task>"; a global card is a standing rule by its "general") with no standing cue
    in its condition or action, whose action is a request ("give me a recipe", "could you
    double-check ...") or a long verbatim span of what the user said (a task or its text)."""
    if _STANDING.search(card.action) or _STANDING.search(card.condition):
        return False
    if card.is_global or not _UNSCOPED.search(card.condition):
        return False  # "in general, ..." / "when solving math problems, ...": a standing rule
    if _REQUEST.search(card.action) or _TASK.search(card.condition):
        return True  # a request, or content under "working on: <the task>" (the task itself)
    words = card.action.lower().split()
    said = " ".join(s.query.lower() for s in card.sources)
    return len(words) >= LONG_COPY and " ".join(words[:LONG_COPY]) in " ".join(said.split())


def _words(card: PreferenceCard) -> str:
    return " ".join([card.action] + [s.query for s in card.sources if s.query][-3:])


# words of a stance or of the answer, not of a subject ("prefer X", "keep answers Y")
_NOT_SUBJECT_WORDS = (
    "prefer prefers like likes love loves hate hates want wants avoid keep make give use show "
    "suggest suggests recommend always never don't do not no more any answer answers response "
    "responses reply replies when answering user's"
)
_NOT_SUBJECT = frozenset(w[:5] for w in _NOT_SUBJECT_WORDS.split())


def subject_words(action: str) -> set[str]:
    """Content-word stems (`content_words`) of an action, without its stance and answer words."""
    return content_words(action) - _NOT_SUBJECT


def contradicts(newer: PreferenceCard, older: PreferenceCard) -> bool:
    """On the same subject (a shared content word: "eat no fish" / "eat fish now"; not "prefer
    traditional board games" / "prefer that idea", whose notes MiniLM puts at 0.5 by their
    shared frame), the newer card's own words mark a change; or its polarity differs on what
    is mostly the same subject (half the subject words of the shorter card shared: "prefer
    learning by listening" is no opposite of "avoid online learning platforms")."""
    a, b = subject_words(newer.action), subject_words(older.action)
    shared = a & b
    if not shared:
        return False
    if _CHANGE.search(_words(newer)):
        return True
    return (bool(_NEG.search(newer.action)) != bool(_NEG.search(older.action))
            and 2 * len(shared) >= min(len(a), len(b)))


def _archive(card: PreferenceCard, status: str, reason: str,
             replaced_by: str | None = None) -> PreferenceCard:
    out = card.model_copy(deep=True)
    out.status, out.status_reason, out.replaced_by = status, reason, replaced_by
    out.updated_at = time.time()
    return out


def plan(ui: Any, values: dict[str, list[float]], thread_id: str,
         examine: list[str]) -> dict[str, PreferenceCard]:
    """The card changes consolidation makes on the entry `ui` (id -> new card), pure."""
    out: dict[str, PreferenceCard] = {}
    gone: set[str] = set()

    def card(cid: str) -> PreferenceCard | None:
        return out.get(cid) or ui.cards.get(cid)

    # retirement by learned value (cards the user restated are never retired)
    for cid, (u, n, restated) in values.items():
        c = card(cid) if cid in ui.rows else None
        if c is not None and u < RETIRE_VALUE and n >= RETIRE_AFTER and not restated:
            out[cid] = _archive(c, "archived", f"retired: learned value {u:.2f} after {int(n)} "
                                "turns of feedback (injected into turns that drew complaints)")
            gone.add(cid)
    examine = [cid for cid in examine if cid in ui.rows and cid not in gone]
    if not examine:
        return out
    q = ui.vectors(examine)
    k = min(NEIGHBOURS + 1, len(ui))
    sims, rows = (ui.index.search(np.ascontiguousarray(q, np.float32), k) if ui.is_flat
                  else _ivf_search(ui, q, k))
    for i, cid in enumerate(examine):
        me = card(cid)
        if cid in gone or me is None:
            continue
        if thread_id and me.sources and is_one_off(me) \
                and all(s.thread_id != thread_id for s in me.sources) \
                and not (values.get(cid) or [0, 0, 0])[2]:
            out[cid] = _archive(me, "archived", "one-off request: asked in an earlier "
                                "conversation, not a standing preference")
            gone.add(cid)
            continue
        for sim, r in zip(sims[i].tolist(), rows[i].tolist(), strict=True):
            if r < 0 or ui.ids[r] == cid or ui.ids[r] in gone or sim < SUPERSEDE_MIN:
                continue
            other = card(ui.ids[r])
            if other is None or other.is_global != me.is_global:
                continue
            newer, older = (me, other) if me.created_at >= other.created_at else (other, me)
            if sim >= MERGE_MIN and not contradicts(newer, older):
                kept = newer.model_copy(deep=True)
                kept.sources = (older.sources + kept.sources)[-MAX_SOURCES:]
                kept.confidence = max(kept.confidence, older.confidence)
                out[kept.id] = kept
                out[older.id] = _archive(older, "archived", f"merged into a paraphrase: "
                                         f"{kept.note!r}", kept.id)
            elif sim < MERGE_MIN and contradicts(newer, older):
                out[older.id] = _archive(older, "superseded", f"superseded by a newer "
                                         f"statement: {newer.note!r}", newer.id)
            else:
                continue
            gone.add(older.id)
            if older.id == cid:
                break
    return out


def _ivf_search(ui: Any, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    with ui.ivf_lock:
        return ui.index.search(np.ascontiguousarray(q, np.float32), k)


def consolidate(engine: Any, user_id: str, thread_id: str,
                values: dict[str, list[float]]) -> list[PreferenceCard]:
    """Apply `plan` to the user's cards (one store batch, under the card write lock); returns
    the changed cards. The newest cards are examined once per store version."""
    with engine.user_lock(user_id), engine.card_write_lock(user_id):
        ui = engine.index.get(user_id)
        key = (id(engine.index), user_id)  # the engine's one index (a job's view shares it)
        with _SEEN_LOCK:
            fresh = _SEEN.get(key) != ui.version
        examine = list(ui.ids[-CONSOLIDATE_MAX:]) if fresh else []
        low = {cid: v for cid, v in values.items() if v[0] < RETIRE_VALUE}
        changes = plan(ui, low, thread_id, examine)
        version = ui.version
        if changes:
            cards = list(changes.values())
            active = [c.id for c in cards if c.id in ui.rows]
            vecs = dict(zip(active, ui.vectors(active), strict=True))
            cvecs, has = ui.condition_vectors(active)  # kept with the cards (`cemb16`)
            conds = {cid: v for cid, v, h in zip(active, cvecs, has, strict=True) if h}
            version = engine.memory.put_cards(user_id, cards, vecs, conds)
            engine.index.apply(user_id, ui.version, version, cards, vecs, conds)
        with _SEEN_LOCK:
            _SEEN[key] = version
            if len(_SEEN) > 100_000:
                _SEEN.clear()
    return list(changes.values())
