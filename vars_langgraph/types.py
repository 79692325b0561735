"""Plain data types shared by nodes, models and storage: preferences and memory cards."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from pydantic import BaseModel, Field, field_validator

MAX_CONDITION = 128
MAX_ACTION = 256
ACTIVE = "active"  # card status; "archived" and "superseded" cards are kept but not retrieved
CARD_STATUSES = (ACTIVE, "archived", "superseded")
GLOBAL_CONDITIONS = {"general", "always", "any", "in general", "all", "everything", "default"}


class Preference(BaseModel):
    """One extracted preference: when `condition`, do `action` (confidence in [0, 1])."""

    condition: str = Field(min_length=1, max_length=MAX_CONDITION)
    action: str = Field(min_length=1, max_length=MAX_ACTION)
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)

    @field_validator("condition", "action", mode="before")
    @classmethod
    def _clean(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = " ".join(v.split())
        return v

    @property
    def note(self) -> str:
        """The card's note text, `When {condition}, {action}.` as in the method."""
        cond = self.condition.rstrip(" .,")
        if self.is_global:
            cond = "in general"
        elif not cond.lower().startswith(("when", "if", "for", "while", "in ")):
            cond = f"when {cond}"
        act = self.action.rstrip(" .")
        return f"{cond[0].upper()}{cond[1:]}, {act}."

    @property
    def is_global(self) -> bool:
        c = self.condition.lower().strip(" .")
        for prefix in ("when ", "in "):
            if c.startswith(prefix) and c[len(prefix):] in GLOBAL_CONDITIONS:
                return True
        return c in GLOBAL_CONDITIONS


class CardSource(BaseModel):
    """Where a card was learned: thread (session), turn, the raw query and when."""

    thread_id: str = ""
    turn: int = 0
    query: str = ""
    created_at: float = Field(default_factory=time.time)


class PreferenceCard(BaseModel):
    """A stored memory card: a preference, its note, embedding and provenance."""

    id: str
    user_id: str
    condition: str
    action: str
    note: str
    confidence: float
    kind: str = "pref"
    is_global: bool = False
    sources: list[CardSource] = Field(default_factory=list)
    embedding: list[float] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    # memory hygiene (memory/consolidate.py): archived / superseded cards stay in the store,
    # out of retrieval, with why (and the card that replaced or absorbed them)
    status: str = ACTIVE
    status_reason: str = ""
    replaced_by: str | None = None

    @staticmethod
    def make_id(user_id: str, note: str) -> str:
        return hashlib.sha256(f"{user_id}\x00{note.lower()}".encode()).hexdigest()[:24]

    @classmethod
    def from_preference(
        cls, user_id: str, pref: Preference, source: CardSource, embedding: list[float]
    ) -> PreferenceCard:
        note = pref.note
        return cls(
            id=cls.make_id(user_id, note),
            user_id=user_id,
            condition=pref.condition,
            action=pref.action,
            note=note,
            confidence=pref.confidence,
            is_global=pref.is_global,
            sources=[source],
            embedding=embedding,
        )

    def public(self) -> dict[str, Any]:
        """The card without its embedding (for display, state and tools)."""
        return self.model_dump(exclude={"embedding"})
