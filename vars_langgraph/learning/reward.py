"""Weak reward from the user's next message: keyword cues with word matching, the gate, and an
optional LLM judge. Pure functions except `LLMJudge`, which calls an OpenAI-compatible server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from vars_langgraph.speech import LASTING_FACT

NEGATIVE_CUES = (
    "you didn't", "you did not", "that's not", "that is not", "thats not", "incorrect",
    "redo", "again", "wrong", "not what i asked", "not what i wanted", "doesn't help",
    "does not help", "no", "nope", "i said", "i told you", "i asked", "didn't ask",
    "please don't", "stop", "still not", "forgot", "you forgot", "ignored", "not helpful",
    "try again", "too long", "too short", "i already said", "as i said", "remember",
)
POSITIVE_CUES = (
    "thanks", "thank you", "great", "perfect", "awesome", "nice", "good", "helpful",
    "give an example", "continue", "what if", "exactly", "that works", "makes sense",
    "got it", "cool", "excellent", "love it", "next", "go on", "tell me more",
)
JUDGE_LABELS = {
    "neg_constraint_restate": -1.0,
    "neg_correction": -0.8,
    "neg_confusion": -0.6,
    "pos_praise": 0.8,
    "pos_progress": 0.1,
    "neutral": 0.0,
    "topic_shift": 0.0,
}


def _cue_pattern(cues: tuple[str, ...]) -> re.Pattern[str]:
    alts = sorted((re.escape(c).replace(r"\ ", r"\s+") for c in cues), key=len, reverse=True)
    return re.compile(r"(?<![\w'])(?:" + "|".join(alts) + r")(?![\w'])", re.IGNORECASE)


_NEG = _cue_pattern(NEGATIVE_CUES)
_POS = _cue_pattern(POSITIVE_CUES)


def _normalise(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'")


def has_negative_cue(text: str) -> bool:
    return bool(_NEG.search(_normalise(text)))


def has_positive_cue(text: str) -> bool:
    return bool(_POS.search(_normalise(text)))


PROGRESS = JUDGE_LABELS["pos_progress"]  # on topic, no positive word


def keyword_reward(next_message: str, sim_queries: float | None) -> float:
    """r from q_{t+1} (step 6): -1 on a negative cue; +0.5 for a positive cue, +0.5 more if the
    queries are on topic (cos > 0.3); halved if off topic (cos < 0.2); clipped to [-1, 1].

    Departure: staying on topic *without* a positive cue is progress (+0.1, the judge's
    `pos_progress`), not praise (+0.5). The reference adds +0.5 for continuity alone, which
    rewards every same-topic message (a run of preference statements, say) as if it were
    praise, and moves the vector on turns that carry no feedback (docs/method.md)."""
    text = _normalise(next_message or "")
    on_topic = sim_queries is not None and sim_queries > 0.3
    if has_negative_cue(text):
        r = -1.0
    elif has_positive_cue(text):
        r = 0.5 + (0.5 if on_topic else 0.0)
    else:
        r = PROGRESS if on_topic else 0.0
    if sim_queries is not None and sim_queries < 0.2:
        r *= 0.5
    return float(max(-1.0, min(1.0, r)))


# what points back at the last answer or an earlier statement: "I said", "again", "that", "?"
_BACK_REFERENCE = re.compile(
    r"\b(?:i|i've|i'd)\s+(?:did\s+)?(?:said|say|asked|told|mentioned|wrote|specified|stated)\b|"
    # what the user wanted of the answer just given ("I really only needed a few lines")
    r"\bi\s+(?:\w+ly\s+)?(?:only\s+)?(?:needed|wanted|meant|expected|hoped|was (?:hoping|looking|after))\b|"
    r"\b(?:again|remember|already|still|like i|as i|earlier|before|first|start|instead|this|"
    r"it|these|those|you|your|there|though|not what|anymore)\b|"
    # "that" pointing back ("I dislike that", "that's too long"), not a relative pronoun
    r"^that\b|\bthat(?:'s|\s+(?:is|was|one|answer|again|part|bit|idea)\b|\s*[.,!;]|\s*$)|\?|"
    r",\s*not\b", re.I)  # a contrast corrects: "I use Linux, not Windows!"
# a first-person statement of taste ("I dislike pickup trucks", "I'm not a fan of ...")
_FIRST_PERSON = re.compile(r"^\s*(?:i|i'm|i am|i've|i'd|my)\b", re.I)
_TASTE = re.compile(
    r"\b(?:prefer\w*|dislike\w*|like|love|enjoy|hate|avoid\w*|can't stand|cannot stand|fan of|"
    r"interest\w*|aversion|bias|allergic|intoleran\w*|vegetarian|vegan|afraid|fear|phobia|"
    r"uncomfortable|comfortable|find|tend|usually)\b", re.I)
_SIMILE = re.compile(r"\b(?:look|sound|feel|seem)s?\s+like\b", re.I)  # "like" as no taste
NEW_STATEMENT_LINK = 0.5  # below: the statement restates nothing before it (PrefEval/collab tuning)


# said before a statement: "By the way, ...", "Since I'm colourblind, ..."
_LEAD_IN = re.compile(r"^(?:(?:by the way|btw|fyi|also|oh|and|since|as|because)\s*,?\s+)+", re.I)


def new_statement(text: str, link: float) -> bool:
    """Whether a message read as a complaint is a preference stated for the first time: a
    first-person statement of taste ("I dislike cars with touchscreens because they distract
    me.") or one that opens with a lasting fact about the user ("Since I'm colourblind, don't
    rely on red and green."; `speech.LASTING_FACT`) that points back at
    nothing (`_BACK_REFERENCE`: "I said", "again", "that", a question) and reads below
    `NEW_STATEMENT_LINK` against everything before it (`link`: the previous query and answer,
    the notes injected into the answer, the user's stored cards). The readers take "I dislike
    ..." after an answer for a restated constraint; a user stating a new preference has not
    complained about the answer (it is extracted as a card instead)."""
    t = _LEAD_IN.sub("", _normalise(text).strip())
    # a fact it opens with: "I can't look at a diagram, I'm blind." after one is a complaint
    about_user = _TASTE.search(_SIMILE.sub(" ", t)) or LASTING_FACT.match(t)
    return (link < NEW_STATEMENT_LINK and bool(_FIRST_PERSON.match(t)) and bool(about_user)
            and not _BACK_REFERENCE.search(t))


# a request for something new, pointing back at nothing ("please compare A and B", "convert to
# YAML"): what the answer lacked is said with "more", "again", "instead", "not", "it", ...
_NEW_REQUEST = re.compile(
    r"^\s*(?:please\s+|pls\s+|now\s+|can you\s+|could you\s+)?(?:write|create|generate|make|give|"
    r"list|compare|show|explain|describe|convert|translate|summari[sz]e|draft|compose|design|build|"
    r"implement|find|tell|provide|suggest|recommend|calculate|solve|simulate|plan|code|enumerate|"
    r"display|help)\b", re.I)
_POINTS_BACK = re.compile(
    r"\b(?:more|less|shorter|longer|simpler|easier|again|instead|still|too|another|different|other|"
    r"rather|not|no|don'?t|didn'?t|doesn'?t|wrong|actually|but|why|it|its|it's|that|this|those|"
    r"these|them|you|your|i said|i asked|i meant|mean|only|just|same|back|redo|retry|fix|try|keep|"
    r"remove|without|stop|anymore|already)\b|\?", re.I)


def new_request(text: str) -> bool:
    """Whether a message read as a complaint asks for something new and points back at nothing
    ("please compare A and B", "convert to kubernetes_ingress_v1"): real users type their next
    task as an imperative, which the readers take for a correction (docs/perception.md §15)."""
    t = _normalise(text).strip()
    return bool(_NEW_REQUEST.match(t)) and not _POINTS_BACK.search(t)


def not_a_reaction(text: str, link: Callable[[], float]) -> str | None:
    """Why a message read as a complaint is none ("new_request", "new_statement"), or None.
    `link()` (the statement's closeness to what came before) is computed only for a message
    that reads as a new statement."""
    if new_request(text):
        return "new_request"
    return "new_statement" if new_statement(text, 0.0) and new_statement(text, link()) else None


def gate(reward: float, sim_notes_query: float, sim_notes_next: float | None = None) -> float:
    """g from s = max cosine between injected notes and the query (step 6).

    Strong negative with notes unrelated to the query (0.9): the memory missed, learn a lot.
    Strong negative with notes on topic (0.2): the notes were probably not to blame.
    Positive: 0.6 when the notes were on topic, else 0.3. Otherwise 0.5.
    The code's extra condition on q_{t+1} is applied when `sim_notes_next` is given.
    """
    if reward < -0.5 and sim_notes_query < 0.2 and (sim_notes_next is None or sim_notes_next < 0.2):
        return 0.9
    if reward < -0.5 and sim_notes_query > 0.5:
        return 0.2
    if reward > 0.5:
        return 0.6 if sim_notes_query > 0.4 else 0.3
    return 0.5


@dataclass
class JudgeVerdict:
    label: str
    confidence: float
    rationale: str = ""

    @property
    def reward(self) -> float:
        return JUDGE_LABELS.get(self.label, 0.0)


JUDGE_PROMPT = (
    "You judge a user's reaction to an assistant's answer. Given the user's query, the "
    "assistant's answer and the user's next message, classify the next message with one label: "
    + ", ".join(JUDGE_LABELS)
    + '. Reply with JSON only: {"label": ..., "confidence": 0..1, "rationale": "..."}.'
)


def parse_verdict(text: str) -> JudgeVerdict | None:
    """Parse the judge's JSON; None when unusable (the turn is then skipped)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        d = json.loads(text[start : end + 1])
        label = str(d.get("label", "")).strip()
        conf = float(d.get("confidence", 0.0))
    except (ValueError, TypeError, AttributeError):
        return None
    if label not in JUDGE_LABELS or not 0.0 <= conf <= 1.0:
        return None
    return JudgeVerdict(label, conf, str(d.get("rationale", ""))[:500])
