"""Preference extraction: dialogue window -> `Preference` list, over an OpenAI-compatible LLM.

Two prompts: "finetuned" is the exact system prompt the fine-tuned extractor
(`blackhao0426/pref-extractor-qwen3-0.6b-full-sft`) was trained with; "few_shot" teaches a small
instruct model (the CPU default Qwen2.5-Coder-0.5B) by worked examples.

Confidence is the model's own probability of emitting a preference: at the token where the
JSON list either opens an item (`{`) or closes empty (`]`), P(open) / (P(open) + P(close)) from
the top log-probs. A short "probe" request with log-probs decides this first (llama-cpp-python's
server makes log-probs expensive per generated token), so most neutral turns cost a few tokens;
the full answer is generated only when P(open) >= min_confidence.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from vars_langgraph.config import ExtractorConfig, LLMConfig, VARSConfig
from vars_langgraph.models.llm import openai_client, resolve_llm
from vars_langgraph.models.local_server import is_local_url
from vars_langgraph.models.parsing import parse_preferences
from vars_langgraph.types import MAX_ACTION, MAX_CONDITION, Preference

log = logging.getLogger(__name__)

FINETUNED_SYSTEM_PROMPT = (
    "Extract user preferences from the query into JSON format based on the PreferenceList "
    'schema. If no preferences are found, return {"preferences": []}.'
)

MAX_ITEMS_PER_TURN = 5


def preference_list_schema(min_items: int = 0) -> dict[str, Any]:
    """JSON schema of the extractor output (the method's PreferenceList)."""
    return {
        "title": "PreferenceList",
        "type": "object",
        "properties": {
            "preferences": {
                "type": "array",
                "minItems": min_items,
                "maxItems": MAX_ITEMS_PER_TURN,
                "items": {
                    "type": "object",
                    "properties": {
                        "condition": {"type": "string", "minLength": 1, "maxLength": MAX_CONDITION},
                        "action": {"type": "string", "minLength": 1, "maxLength": MAX_ACTION},
                        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "required": ["condition", "action", "confidence"],
                },
            }
        },
        "required": ["preferences"],
    }


PREFERENCE_LIST_SCHEMA = preference_list_schema()
FORCE_ONE_SCHEMA = preference_list_schema(min_items=1)

FEW_SHOT_SYSTEM_PROMPT = """\
You extract a user's lasting preferences about HOW the assistant should respond: format, \
length, style, tone, language, units, tools, libraries, level of detail, things to avoid.
Read the last user message (earlier lines are context only) and output JSON:
{"preferences": [{"condition": "<when it applies>", "action": "<what to do or avoid>", \
"confidence": <0..1>}]}
- Requests about how to answer ("use ...", "always ...", "I prefer ...", "I like ...", \
"from now on ...") are preferences.
- Negative requests ("don't ...", "never ...", "no more ...", "stop ...", "I hate ...") are \
preferences: the action says what to avoid.
- Complaints imply preferences ("too long" -> keep answers short).
- A question or a task by itself is not a preference: {"preferences": []}. Neither are \
thanks and small talk.
- condition: when it applies ("writing code", "explaining math", or "general"). action: a \
short imperative using the user's words."""

# (last user message, expected JSON) worked examples; none of them is in the labelled data.
# A rebalanced set (3 "answering", 1 "general", 4 named tasks, complaints as negatives) was
# measured on dev and lost: recall 42% vs 68% with these (results/extraction.json "notes");
# the "writing code" bias is corrected after the model instead (`fix_scope`).
FEW_SHOT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What's the population of Canada?", '{"preferences": []}'),
    (
        "Never include console.log statements in the code you give me.",
        '{"preferences": [{"condition": "writing code", "action": "do not include '
        'console.log statements", "confidence": 0.9}]}',
    ),
    ("Write a function that sorts a list of dictionaries by a key.", '{"preferences": []}'),
    (
        "Always indent with tabs, not spaces.",
        '{"preferences": [{"condition": "writing code", "action": "indent with tabs, not '
        'spaces", "confidence": 0.9}]}',
    ),
    ("Perfect, that fixed it.", '{"preferences": []}'),
    (
        "Ugh, I can't read walls of text like that.",
        '{"preferences": [{"condition": "general", "action": "write shorter answers", '
        '"confidence": 0.7}]}',
    ),
    ("How does garbage collection work in Java?", '{"preferences": []}'),
    (
        "When you recommend books, only suggest ones available as audiobooks.",
        '{"preferences": [{"condition": "recommending books", "action": "only suggest '
        'audiobooks", "confidence": 0.9}]}',
    ),
    ("Can you help me plan a birthday party for my son?", '{"preferences": []}'),
    (
        "Use numpy instead of plain loops in your Python examples.",
        '{"preferences": [{"condition": "writing Python examples", "action": "use numpy '
        'instead of plain loops", "confidence": 0.9}]}',
    ),
    (
        "Skip the disclaimers, and keep variable names in English.",
        '{"preferences": [{"condition": "general", "action": "skip the disclaimers", '
        '"confidence": 0.8}, {"condition": "writing code", "action": "keep variable names '
        'in English", "confidence": 0.8}]}',
    ),
)

PROBE_TOKENS = 10  # enough to pass `{"preferences": [` and the token after it
TOP_LOGPROBS = 20
MAX_TURN_CHARS = 2000
MODES = ("json_schema", "json_object_schema", "json_object", "text")
_MODE_CACHE: dict[str, str] = {}  # base_url -> the first response_format mode that worked
_MODE_LOCK = threading.Lock()
_DECISION_KEY = re.compile(r'"preferences"\s*:\s*\[')


# ---------------------------------------------------------------- prompt building


_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "ai": "assistant"}


def _turn(m: Any) -> tuple[str, str]:
    """(role, text) of a (role, text) pair or a LangChain message; role "" when unknown."""
    if isinstance(m, (tuple, list)) and len(m) == 2:
        role, text = m
        return _ROLES.get(str(role).lower(), ""), str(text or "")
    from vars_langgraph.state import message_text  # lazy: state imports the store

    role = m.get("role") or m.get("type") if isinstance(m, dict) else getattr(m, "type", "")
    return _ROLES.get(str(role or "").lower(), ""), message_text(m)


def dialogue_window(turns: Sequence[Any], window_turns: int) -> list[tuple[str, str]]:
    """The last `window_turns` user/assistant turns ending at the last user message.

    `turns` are (role, text) pairs or LangChain messages; empty turns and other roles are
    dropped, each turn keeps its last MAX_TURN_CHARS * 2 characters. [] when no user message.
    """
    norm = [(r, t.strip()[-2 * MAX_TURN_CHARS :]) for r, t in map(_turn, turns)]
    norm = [(r, t) for r, t in norm if r and t]
    last_user = max((i for i, (r, _) in enumerate(norm) if r == "user"), default=-1)
    if last_user < 0:
        return []
    return norm[: last_user + 1][-max(1, window_turns) :]


def format_window(window: Sequence[tuple[str, str]]) -> str:
    """`User:` / `Assistant:` lines; each turn cut to MAX_TURN_CHARS."""
    lines = []
    for role, text in window:
        text = " ".join(text.split())
        if len(text) > MAX_TURN_CHARS:
            text = text[: MAX_TURN_CHARS - 3] + "..."
        lines.append(f"{'User' if role == 'user' else 'Assistant'}: {text}")
    return "\n".join(lines)


def build_messages(window: Sequence[tuple[str, str]], prompt: str) -> list[dict[str, str]]:
    """Chat messages for the extractor LLM."""
    if prompt == "finetuned":
        # trained on single queries: a one-turn window is sent as the bare message
        content = window[-1][1].strip() if len(window) == 1 else format_window(window)
        return [
            {"role": "system", "content": FINETUNED_SYSTEM_PROMPT},
            {"role": "user", "content": content},
        ]
    msgs = [{"role": "system", "content": FEW_SHOT_SYSTEM_PROMPT}]
    for text, answer in FEW_SHOT_EXAMPLES:
        msgs.append({"role": "user", "content": f"User: {text}"})
        msgs.append({"role": "assistant", "content": answer})
    msgs.append({"role": "user", "content": format_window(window)})
    return msgs


# ---------------------------------------------------------------- confidence from log-probs


@dataclass
class Decision:
    """Where the preference list opens an item or closes empty."""

    p_open: float | None  # P(open) / (P(open) + P(close)); None when not observable
    chosen: str | None  # "open" / "close" as generated; None if not reached


def decision_from_logprobs(steps: Sequence[tuple[str, dict[str, float]]]) -> Decision:
    """Read the open/close decision from [(token, {candidate: logprob}), ...]."""
    text = ""
    for tok, tops in steps:
        before = text
        text += tok
        m = _DECISION_KEY.search(text)
        if not m or not text[m.end() :].strip():
            continue
        chosen = _classify(text[m.end() :])
        p_open = p_close = 0.0
        for cand, lp in tops.items():
            cm = _DECISION_KEY.search(before + cand)
            kind = _classify((before + cand)[cm.end() :]) if cm else None
            if kind == "open":
                p_open += math.exp(lp)
            elif kind == "close":
                p_close += math.exp(lp)
        mass = p_open + p_close
        return Decision(p_open / mass if mass >= 0.05 else None, chosen)
    return Decision(None, None)


def _classify(after_bracket: str) -> str | None:
    s = after_bracket.lstrip()
    if not s:
        return None
    return "open" if s[0] == "{" else "close" if s[0] == "]" else "other"


def _steps_from_choice(choice: Any) -> list[tuple[str, dict[str, float]]] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    steps = []
    for t in content:
        tops = {c.token: c.logprob for c in (t.top_logprobs or []) if c.logprob is not None}
        if t.token not in tops and t.logprob is not None:
            tops[t.token] = t.logprob
        steps.append((t.token, tops))
    return steps


# ---------------------------------------------------------------- echo filter

_STOP_WORDS = (
    "about after again also always answer answers any are avoid because been before being "
    "code could does dont each every from general have into just keep like make more most "
    "much never only other over please should show some such than that their them then "
    "there these they this those under very want what when where which while will with "
    "without would your yours writing using"
)
_STOP = frozenset(_STOP_WORDS.split())


def _stems(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", text.lower().replace("'", ""))
    return {w[:5] for w in words if len(w) >= 4 and w not in _STOP}


_EXAMPLE_STEMS = [
    _stems(f"{p.condition} {p.action}")
    for _, answer in FEW_SHOT_EXAMPLES
    for p in parse_preferences(answer)
]


def drop_example_echoes(prefs: list[Preference], message: str) -> list[Preference]:
    """Drop items a small model copied from the few-shot examples.

    An item that mostly repeats an example must be mostly grounded in the user's message;
    items after the first (where copying happens) need at least one word from the message.
    Repeated actions are dropped.
    """
    said = _stems(message)
    out: list[Preference] = []
    actions: set[str] = set()
    for i, p in enumerate(prefs):
        act = p.action.lower().strip(" .")
        if act in actions:  # same action under another condition: keep the first
            continue
        actions.add(act)
        stems = _stems(f"{p.condition} {p.action}")
        grounded = len(stems & said)
        echo = any(len(stems & ex) >= max(1, (2 * len(stems)) // 3) for ex in _EXAMPLE_STEMS)
        if echo and 2 * grounded < len(stems):
            continue
        if i > 0 and not grounded:
            continue
        out.append(p)
    return out


# ---------------------------------------------------------------- scope, feedback, one-offs

UNSCOPED_CONDITION = "answering"  # the condition of a preference that names no task
_ANSWERS = r"(?:answers?|responses?|replies|reply|questions?|messages?|conversations?|chats?|times?)"
# a universal scope over the assistant's answers; a quantifier inside the object ("I avoid any
# chemical sunscreens", "never street food") is not one: such a preference stays conditional
_GENERALITY = re.compile(
    r"\b(?:always|in general|generally|from now on|going forward|in (?:the )?future|"
    r"by default|at all times|no matter what|(?:^|(?<=[.!?]\s))never|"
    r"(?:every|any|all|each)\s+(?:of\s+)?(?:your\s+|my\s+|the\s+)?" + _ANSWERS + r")\b", re.I
)
_ONE_OFF = re.compile(
    r"\b(?:this time|this one|for this (?:answer|one|question|reply|email|time)|just this once|"
    r"for now|right now)\b|^\s*(?:can you |could you |please )?(?:make|rewrite|shorten|redo|"
    r"change|fix|turn|put|translate|convert)\b[^.?!]*\b(?:it|that|this)\b", re.I
)
_FEEDBACK = re.compile(
    r"\b(?:that's not|that is not|thats not|not what i (?:asked|wanted|meant)|you didn't|"
    r"you did not|wrong|incorrect|try again|doesn't help|not helpful)\b", re.I
)
# a complaint may restate a preference after one of these (to the end of the sentence)
_RESTATE = re.compile(
    r"\b(?:i said|i told you|i asked for|i asked you to|as i said|i already said|remember|"
    r"you forgot|you keep|i want|i prefer|i hate|always|never|no more|no|stop|don't|"
    r"please don't|again with|too)\b([^.!?]*)", re.I
)
# how-to-answer words: a card inside a complaint that uses one of them is a style preference
_STYLE = re.compile(
    r"\b(?:short|shorter|brief|concise|long|length|bullets?|lists?|numbered|tables?|markdown|"
    r"emojis?|format\w*|tone|formal|casual|friendly|jargon|simple|simpler|summary|examples?|"
    r"steps?|details?|verbose|paragraphs?|comments?|units?|metric|spelling|sentences?|preambles?|"
    r"disclaimers?|exclamation|bold|headings?|latex|type hints?|syntax)\b", re.I
)
_MINOR_WORDS = (
    "that that's thats what asked ask said told you your the this was not and for with are "
    "it's just please again want need me my i'm have has had"
)
_MINOR = frozenset(_MINOR_WORDS.split())


def content_words(text: str) -> set[str]:
    """Content-word stems (5 letters) of a text, for comparing actions and conditions."""
    return _content(text)


def _content(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9][a-z0-9'+#-]*", text.lower().replace("\u2019", "'"))
    return {w[:5] for w in words if len(w) >= 3 and w not in _MINOR}


def has_generality_marker(text: str) -> bool:
    """Whether the user states a universal scope ("always", "in general", "from now on", ...)."""
    return bool(_GENERALITY.search(text.replace("\u2019", "'")))


def is_complaint(text: str) -> bool:
    """Feedback on the last answer (the reward's negative cues)."""
    from vars_langgraph.learning.reward import has_negative_cue  # lazy: keeps import order simple

    return has_negative_cue(text)


def drop_feedback(prefs: list[Preference], message: str) -> list[Preference]:
    """In a complaint, keep only restated preferences; drop one-off requests.

    A complaint ("no, that's not what I asked. Tell me ...") is the reward of the previous
    turn. A card survives it only when its action shares a content word with what follows a
    restating phrase ("I said bullet points", "stop with the emojis") or names a style
    ("too long" -> keep answers short), and never when it copies the complaint itself.
    Outside complaints, a one-off request ("this time ...", "make it shorter") yields nothing
    unless the user also states a scope ("always ...").
    """
    text = message.replace("\u2019", "'")
    if _ONE_OFF.search(text) and not has_generality_marker(text):
        return []
    if not is_complaint(text):
        return prefs
    restated: set[str] = set()
    for m in _RESTATE.finditer(text):
        restated |= _content(m.group(1))
    out = []
    for p in prefs:
        if _FEEDBACK.search(p.action):
            continue
        if _content(p.action) & restated or _STYLE.search(p.action):
            out.append(p)
    return out


def fix_scope(prefs: list[Preference], window: Sequence[tuple[str, str]]) -> list[Preference]:
    """"general" only when the user says so; a condition must come from the dialogue.

    - a global card whose message has no generality marker gets condition "answering";
    - a task condition none of whose words occur in the window (a small model's habit:
      "writing code" for "I prefer bullet points") becomes "answering";
    - an unscoped card ("answering") whose message has a generality marker becomes "general".
    """
    message = window[-1][1] if window else ""
    said = _content(" ".join(t for _, t in window))
    marker = has_generality_marker(message)
    out = []
    for p in prefs:
        words = _content(p.condition) - _content("answering responding replying general writing")
        if p.is_global and not marker:
            p = p.model_copy(update={"condition": UNSCOPED_CONDITION})
        elif not p.is_global and words and not words & said:
            p = p.model_copy(update={"condition": "general" if marker else UNSCOPED_CONDITION})
        elif not p.is_global and not words and marker:
            p = p.model_copy(update={"condition": "general"})
        out.append(p)
    return out


def drop_context_copies(prefs: list[Preference],
                        window: Sequence[tuple[str, str]]) -> list[Preference]:  # fmt: skip
    """Drop cards restating an earlier user turn of the window rather than the last message.

    The window gives the model context, but the earlier turns were extracted when they were
    the last message: a card grounded in one of them and in no word of the new message is a
    second copy of a stored card (it would compete with it for the prompt's slots).
    """
    said = _content(window[-1][1]) if window else set()
    earlier = [_content(t) for r, t in window[:-1] if r == "user"]
    out = []
    for p in prefs:
        words = _content(f"{p.condition} {p.action}")
        copied = any(2 * len(words & e) >= len(words) for e in earlier) if words else False
        if copied and not words & said:
            continue
        out.append(p)
    return out


def postprocess(prefs: list[Preference], window: Sequence[tuple[str, str]]) -> list[Preference]:
    """The deterministic checks every extractor output goes through (copies, feedback, scope)."""
    if not window:
        return []
    prefs = drop_context_copies(prefs, window)
    return fix_scope(drop_feedback(prefs, window[-1][1]), window)


# ---------------------------------------------------------------- the fast path

_LEAD_COND = re.compile(r"^((?:when|whenever|if|for)\s+[^,]{3,80}),\s*(.+)$", re.I)
_TRAIL_COND = re.compile(r"^(.+?)(?<!\bit)\s+((?:when|whenever)\s+(?:you|i|we)\b.{3,80})$", re.I)
_LEAD_SCOPE = re.compile(r"^(?:from now on|in general|in future|going forward|and)[, ]+", re.I)
_PLEASE = re.compile(r"^(?:please|pls|kindly)[, ]+|[, ]+please$", re.I)
_NEG_START = re.compile(r"^(?:don't|do not|never|no more|no|stop|avoid)\s+(.+)$", re.I)
_FIRST_PERSON = re.compile(
    r"^i(?:'d| would)?\s+(?:really\s+|always\s+|just\s+|strongly\s+|strictly\s+|generally\s+)?"
    r"(prefer|like|rather|want|don't like|do not like|hate|love|avoid|dislike|despise|"
    r"can't stand|cannot stand)\s+"
    r"(?:it\s+(?:when|if)\s+you\s+|(?:you\s+)?(?:to\s+)?)?(.+)$",
    re.I,
)
_IMPERATIVE = re.compile(
    r"^(?:always\s+)?(keep|use|avoid|write|answer|give|add|include|respond|reply|format|explain|"
    r"show|start|end|put|be|skip|cite|mention|assume|tell|number|follow|quiz|ask|walk|suggest|"
    r"leave|focus|stick|limit|make|draw|stay|check|prefer|go|get)\b\s*(.*)$",
    re.I,
)
_NOT_PREFS = re.compile(
    r"^(?:know|understand|worry|get it|need|think|care|mind|problem|worries|thanks|idea|way|i\b)", re.I
)


def _clean_clause(text: str) -> str:
    return _PLEASE.sub("", text.strip(" ,.;:!")).strip(" ,.;:!")


def fast_preferences(text: str) -> list[Preference]:
    """Explicit first-person preferences of one message, by rules (no model, microseconds).

    Matches "I prefer / I'd like / I want / I like it when you / I don't like / I hate X",
    "(please) always X", "don't / never / no more / stop / avoid X", and "please <verb> X" or any
    imperative with a "when(ever) ..." / leading "For/When/If ..., " condition. Questions,
    complaints without a restated preference and one-off requests yield nothing.
    Condition: the "when / for / if" clause if there is one; else "general" when the message
    states a universal scope ("always", "in general", "from now on", "every", ...); else
    "answering" (it applies to answers, but the user did not say "always").
    Confidence 0.9. These are meant for the current answer; the LLM extractor stores cards.
    """
    text = " ".join(str(text or "").split())[:MAX_TURN_CHARS]
    if not text or _ONE_OFF.search(text) and not has_generality_marker(text):
        return []
    out: list[Preference] = []
    for sent in re.split(r"(?<=[.!?;])\s+|,\s+(?:and|so)\s+|\s+and\s+(?=please\b)|" + _AND_CLAUSE, text):
        if sent.rstrip().endswith("?"):
            continue
        sent = sent.strip(" ,.;:!")
        bare = _RESTATED.sub("", sent)
        found = identity_preferences(bare, text) or _split_answers_with(_sentence_preference(bare, text))
        if not found and bare != sent and _STYLE_NP.match(bare):  # "No, I said bullet points."
            found = [Preference(condition=UNSCOPED_CONDITION, action=f"use {bare}", confidence=0.9)]
        out.extend(p for p in found if p.action.lower() not in {q.action.lower() for q in out})
    return drop_feedback(out, text)[:MAX_ITEMS_PER_TURN]


# "... and I prefer ...", "... and keep it short": a second clause, not a second object
_AND_CLAUSE = (r"(?i:,?\s+and\s+(?=(?:i(?:'d|'m)?|please|keep|use|avoid|give|add|include|explain|call|"
               r"mention|always|never|don't|end|start|show|write|skip|stick)\b)"
               r"|,\s+(?=you can\b|feel free\b))")
# a complaint's restating lead: "No, I said bullet points", "I told you I hate tables"
_RESTATED = re.compile(r"^(?:no,?\s+)?(?:i said|i told you|as i said|like i said)\s+(?:that\s+)?", re.I)

_DIETS = {
    "vegetarian": "suggest only vegetarian food, no meat", "veggie": "suggest only vegetarian food, no meat",
    "vegan": "suggest only vegan food, no animal products", "pescatarian": "suggest no meat except fish",
    "kosher": "suggest only kosher food", "halal": "suggest only halal food",
    "gluten-free": "suggest only gluten-free food", "gluten free": "suggest only gluten-free food",
    "celiac": "suggest only gluten-free food", "coeliac": "suggest only gluten-free food",
    "lactose intolerant": "avoid dairy in food suggestions",
    "lactose-intolerant": "avoid dairy in food suggestions",
    "diabetic": "keep sugar low in food suggestions",
}  # fmt: skip
_DIET = re.compile(r"^(?:\w+[, ]+)?(?:i'm|i am|im|i keep|i eat|i'm strictly)\s+(?:a\s+|an\s+|strictly\s+)?("
                   + "|".join(sorted(_DIETS, key=len, reverse=True)) + r")\b", re.I)
_ALLERGY = re.compile(r"\bi(?:'m| am)\s+(?:very\s+|severely\s+)?allergic\s+to\s+([\w -]{2,40})", re.I)
_NO_EAT = re.compile(r"\bi\s+(?:don't|do not|never)\s+eat\s+([\w ,-]{2,40})", re.I)
_OS = re.compile(
    r"\b(?:i'm|i am|im|i use|i'm using|i run|i work on|i'm running)\s+(?:on\s+)?(?:a\s+|an\s+)?"
    r"(linux|ubuntu|fedora|debian|arch linux|mac|macbook|macos|windows(?:\s+\d+)?|android|iphone|ios|"
    r"chromebook|pixel)\b(?!\s+(?:is|was|keeps|crashed|won't|doesn't|broke))"
    r"|\bi(?:'m| am)\s+an?\s+(windows|mac|linux)\s+user\b", re.I)
_LEVEL = re.compile(r"\bi(?:'m| am)\s+(?:(?:a|an|just a|still a)\s+(beginner|novice|newbie)|new to\s+[\w ]+|"
                    r"(?:a|an)\s+(expert|senior \w+|professional \w+))\b", re.I)
_FOOD_SCOPE = re.compile(r"\b(?:recipes?|meals?|dinners?|cooking|food suggestions?)\b", re.I)


def identity_preferences(sent: str, message: str) -> list[Preference]:
    """Cards implied by a stated identity fact: diet ("I'm vegetarian"), allergies ("I'm
    allergic to nuts"), the user's OS ("I'm on Linux"), their level ("I'm a beginner"). The
    condition is "suggesting recipes" when the message names recipes or meals, else "general"
    (the user named no task)."""
    t = sent.replace("\u2019", "'").strip(" ,.;:!")
    if t.endswith("?") or re.match(r"^(?:if|when|whether)\b", t, re.I):
        return []
    acts: list[str] = []
    if m := _DIET.search(t):
        acts.append(_DIETS[m.group(1).lower()])
    for rx, verb in ((_ALLERGY, "avoid"), (_NO_EAT, "avoid")):
        if (m := rx.search(t)) and not acts:
            acts.append(f"{verb} {m.group(1).strip(' ,').split(' so ')[0].split(' and i')[0]}")
    if m := _OS.search(t):
        name = (m.group(1) or m.group(2)).strip()
        name = {"mac": "Mac", "macbook": "Mac", "macos": "macOS", "ios": "iOS", "iphone": "iPhone"}.get(
            name.lower(), name[:1].upper() + name[1:])
        acts.append(f"give instructions for {name}")
    if m := _LEVEL.search(t):
        acts.append("keep explanations simple, for a beginner" if not m.group(2) else "skip the basics")
    if not acts:
        return []
    cond = "suggesting recipes" if _FOOD_SCOPE.search(message) and not _OS.search(t) else "general"
    return [Preference(condition=cond, action=a[:MAX_ACTION], confidence=0.9) for a in acts]


_ANSWERS_WITH = re.compile(r"^prefer\s+(short|shorter|brief|concise|long|longer|detailed)\s+"
                           r"(?:answers|responses|replies)\s+(?:with|in)\s+(.+)$", re.I)


def _split_answers_with(pref: Preference | None) -> list[Preference]:
    """"prefer short answers with bullet points" -> "keep answers short" + "use bullet points"."""
    if pref is None:
        return []
    m = _ANSWERS_WITH.match(pref.action)
    if not m:
        return [pref]
    short = m.group(1).lower() in ("short", "shorter", "brief", "concise")
    first = "keep answers short" if short else "give detailed answers"
    return [pref.model_copy(update={"action": a}) for a in (first, f"use {m.group(2)}")]


# a bare noun phrase of how to answer, said politely ("British spelling please", "metric, pls")
_STYLE_NP = re.compile(
    r"^(?:[\w'-]+\s+){0,3}?(?:metric|imperial|celsius|fahrenheit|british|american|euros?|dollars?|pounds|"
    r"bullet points?|bullets|numbered (?:lists?|steps)|short answers?|plain text|markdown|"
    r"(?:british|american) (?:spelling|english))(?:\s+[\w'-]+){0,3}$", re.I)
_STYLE_VERB_WORDS = "keep use avoid write answer respond reply format add include skip"
_STYLE_VERBS = frozenset(_STYLE_VERB_WORDS.split())
_BARE_VERBS = frozenset(("use", "keep", "avoid", "skip"))  # accepted as the message's first word


def _sentence_preference(sent: str, message: str) -> Preference | None:
    sent = _LEAD_SCOPE.sub("", sent)
    cond = None
    if m := _LEAD_COND.match(sent):
        cond, sent = m.group(1), m.group(2)
    elif m := _TRAIL_COND.match(sent):
        sent, cond = m.group(1), m.group(2)
    polite = bool(re.match(r"^(?:please|pls|kindly)\b", sent, re.I)) or bool(
        re.search(r"[, ]+(?:please|pls)$", sent, re.I)) or bool(  # "Please use X and keep Y"
        re.match(r"^(?:please|pls|kindly)\b", message, re.I) and not message.startswith(sent))
    sent = _clean_clause(_LEAD_SCOPE.sub("", _clean_clause(sent)))
    action = None
    if m := re.match(r"^i(?:'d| would) rather you (?:didn't|did not|don't)\s+(.+)$", sent, re.I):
        action = f"do not {m.group(1)}"
    elif m := re.match(r"^(?:you can|feel free to)\s+((?:use|skip|go|assume)\b.+)$", sent, re.I):
        action = m.group(1)
    elif polite and _STYLE_NP.match(sent) and not _IMPERATIVE.match(sent):
        action = f"use {sent}"
    elif m := _NEG_START.match(sent):
        action = None if _NOT_PREFS.match(m.group(1)) else sent
    elif m := _FIRST_PERSON.match(sent):
        verb, rest = m.group(1).lower(), m.group(2)
        lead = sent[: len(sent) - len(rest)].lower()
        direct = bool(re.search(r"\bit\s+(?:when|if)\s+you\s+$|\bto\s+$|\byou\s+$", lead))
        if verb == "avoid":
            action = f"avoid {rest}"
        elif verb in ("don't like", "do not like", "hate", "dislike", "despise", "can't stand",
                      "cannot stand"):
            action = f"do not {rest}" if direct else f"avoid {rest}"
        else:
            action = rest if direct else f"prefer {rest}"
    elif re.match(r"^always\s+", sent, re.I):
        action = sent[len("always") :].strip()
    elif m := _IMPERATIVE.match(sent):
        verb = m.group(1).lower()
        bare = verb in _BARE_VERBS and message.lower().startswith(sent.lower()[:20])
        if m.group(2) and (cond or has_generality_marker(message) or bare
                           or polite and verb in _STYLE_VERBS):  # fmt: skip
            action = sent
    if not action or len(action.split()) < 2 or len(action) > MAX_ACTION:
        return None
    if cond is None:
        cond = "general" if has_generality_marker(message) else UNSCOPED_CONDITION
    if len(action) > 1 and action[1].islower():
        action = action[0].lower() + action[1:]
    return Preference(condition=cond[:MAX_CONDITION], action=action, confidence=0.9)


_LIKES = re.compile(
    r"\b(?:prefer\w*|dislike\w*|aversion|averse|avoid\w*|despise|refuse|can't stand|cannot stand|"
    r"not (?:a )?(?:big )?fan|(?:not interested|no interest) in|allerg\w*|hate|love|enjoy|"
    r"vegan|vegetarian|only|never|strictly|uncomfortable|phobia|fear of)\b", re.I
)
_SELF = re.compile(r"^(?:i|i'm|i've|i'd|my|as an?|due to|because)\b", re.I)


def stated_preferences(text: str) -> list[Preference]:
    """Last resort for a first-person statement of taste that neither the extractor nor the
    fast path turned into a card ("I'm a vegan and don't eat any animal products."): keep
    the statement itself, quoted, as an unscoped note. Questions, complaints and messages
    without a like/dislike word yield nothing. The method's extractor over-extracts on
    purpose (recall first); reranking and the user vector filter what does not help."""
    text = " ".join(str(text or "").replace("\u2019", "'").split())[:MAX_TURN_CHARS]
    if not text or is_complaint(text):
        return []
    said = [s.strip() for s in re.split(r"(?<=[.!;])\s+", text)
            if s.strip() and not s.rstrip().endswith("?") and _SELF.match(s.strip())
            and _LIKES.search(s)]
    if not said:
        return []
    action = "keep in mind the user said: " + json.dumps(" ".join(said)[:200], ensure_ascii=False)
    return [Preference(condition=UNSCOPED_CONDITION, action=action[:MAX_ACTION], confidence=0.5)]


# ---------------------------------------------------------------- the extractor


@dataclass
class ExtractionResult:
    """What one extraction produced."""

    preferences: list[Preference]
    raw: str | None = None  # the model's complete output; None when generation stopped early
    p_open: float | None = None  # model probability of emitting a preference, if observed
    requests: int = 0


class LLMExtractor:
    """`Extractor` over an OpenAI-compatible chat endpoint (llama.cpp server, vLLM, ...)."""

    def __init__(self, llm: LLMConfig, cfg: ExtractorConfig | None = None):
        if not llm.base_url:
            raise ValueError("LLMExtractor needs a resolved LLMConfig (use resolve_llm)")
        self.llm = llm
        self.cfg = cfg or ExtractorConfig()
        self.client = openai_client(llm)
        self.base_url = llm.base_url
        self._llama_cpp = is_local_url(llm.base_url)
        self.use_logprobs = True

    # -- public

    def extract(self, turns: Sequence[tuple[str, str]]) -> list[Preference]:
        """Preferences stated in the last user message; [] on neutral turns or bad output."""
        return self.extract_detailed(turns).preferences

    def extract_detailed(self, turns: Sequence[tuple[str, str]]) -> ExtractionResult:
        """`extract` plus the raw output and the open/close decision (for benchmarks, logs).

        With log-probs, P(open) decides: below min_confidence nothing is generated; above it
        the answer is generated with at least one item required (greedy decoding alone closes
        the list whenever P(open) < 0.5, which loses most preferences on small models).
        """
        window = dialogue_window(turns, self.cfg.window_turns)
        if not window:
            return ExtractionResult([])
        messages = build_messages(window, self.cfg.prompt)
        decision = Decision(None, None)
        requests = 0
        if self.use_logprobs:
            probe = self._complete(messages, PROBE_TOKENS, logprobs=True)
            requests += 1
            if probe is None:
                return ExtractionResult([], requests=requests)
            choice = probe.choices[0]
            steps = _steps_from_choice(choice)
            if steps is None:
                log.info("endpoint %s returns no logprobs; using stated confidence", self.base_url)
                self.use_logprobs = False
            else:
                decision = decision_from_logprobs(steps)
            if decision.p_open is not None:
                raw = choice.message.content if choice.finish_reason == "stop" else None
                if decision.p_open < self.cfg.min_confidence:
                    return ExtractionResult([], raw, decision.p_open, requests)
                if raw is not None and decision.chosen == "open":
                    return self._finish(raw, window, decision, requests)
        schema = FORCE_ONE_SCHEMA if decision.p_open is not None else PREFERENCE_LIST_SCHEMA
        resp = self._complete(messages, self.cfg.max_new_tokens, logprobs=False, schema=schema)
        requests += 1
        if resp is None:
            return ExtractionResult([], None, decision.p_open, requests)
        return self._finish(resp.choices[0].message.content, window, decision, requests)

    def _finish(self, content: str | None, window: Sequence[tuple[str, str]],
                decision: Decision, requests: int) -> ExtractionResult:  # fmt: skip
        prefs = parse_preferences(content or "")
        if content and not prefs and "{" not in content:
            log.warning("extractor returned no JSON: %.200r", content)
        if self.cfg.prompt == "few_shot":
            prefs = drop_example_echoes(prefs, window[-1][1])
        prefs = postprocess(prefs, window)
        if decision.p_open is not None:
            prefs = [p.model_copy(update={"confidence": round(decision.p_open, 4)}) for p in prefs]
        kept = [p for p in prefs if p.confidence >= self.cfg.min_confidence]
        return ExtractionResult(kept, content, decision.p_open, requests)

    # -- transport

    @property
    def mode(self) -> str:
        with _MODE_LOCK:
            # llama-cpp-python's server rejects json_schema (with a 500, which clients retry)
            # but turns {"type": "json_object", "schema": ...} into a grammar
            default = "json_object_schema" if self._llama_cpp else MODES[0]
            return _MODE_CACHE.get(self.base_url, default)

    def _request(self, mode: str, messages: list[dict[str, str]], max_tokens: int,
                 logprobs: bool, schema: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        kw: dict[str, Any] = {
            "model": self.llm.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": max_tokens,
        }
        if mode == "json_schema":
            kw["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "PreferenceList", "schema": schema},
            }
        elif mode == "json_object_schema":
            kw["response_format"] = {"type": "json_object", "schema": schema}
        elif mode == "json_object":
            kw["response_format"] = {"type": "json_object"}
        if logprobs:
            kw["logprobs"] = True
            kw["top_logprobs"] = TOP_LOGPROBS
        if self._llama_cpp:
            kw["extra_body"] = {"repeat_penalty": 1.0}  # llama.cpp's default 1.1 garbles JSON
        return kw

    def _complete(self, messages: list[dict[str, str]], max_tokens: int, logprobs: bool,
                  schema: dict[str, Any] = PREFERENCE_LIST_SCHEMA) -> Any:  # fmt: skip
        """One chat completion, falling back through response_format modes; None on failure."""
        for mode in MODES[MODES.index(self.mode) :]:
            try:
                resp = self.client.chat.completions.create(
                    **self._request(mode, messages, max_tokens, logprobs, schema)
                )
            except openai.APIConnectionError as e:  # includes timeouts
                raise RuntimeError(
                    f"extractor LLM unreachable at {self.base_url} "
                    f"(after {self.llm.max_retries} retries): {e}"
                ) from e
            except openai.APIStatusError as e:
                if mode != "text" and _rejects_format(e):
                    log.info("%s rejects response_format %s; trying the next", self.base_url, mode)
                    continue
                if e.status_code >= 500 or e.status_code == 429:  # server fault, retries spent
                    raise RuntimeError(
                        f"extractor LLM at {self.base_url} failed with HTTP {e.status_code} "
                        f"(after {self.llm.max_retries} retries): {str(e)[:300]}"
                    ) from e
                log.warning("extractor request failed (%s): %s", e.status_code, str(e)[:300])
                return None
            with _MODE_LOCK:
                _MODE_CACHE[self.base_url] = mode
            if not resp.choices:
                log.warning("extractor endpoint returned no choices")
                return None
            return resp
        return None


def _rejects_format(e: openai.APIStatusError) -> bool:
    """Whether an error is the server refusing the requested response_format."""
    msg = str(e).lower()
    if e.status_code in (400, 422):
        return True
    return e.status_code >= 500 and ("response_format" in msg or "json_schema" in msg)


def load_extractor(cfg: VARSConfig) -> LLMExtractor | TransformersExtractor:
    """The configured extractor: an LLM endpoint (its own, or the shared one), or with
    `extractor.backend: transformers` the model `extractor.model` loaded in-process."""
    if cfg.extractor.backend == "transformers":
        if not cfg.extractor.model:
            raise ValueError("extractor.backend transformers needs extractor.model "
                             "(a Hugging Face model name or a local directory)")
        return TransformersExtractor(cfg.extractor.model, cfg.extractor, device=cfg.extractor.device,
                                     local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1")
    return LLMExtractor(resolve_llm(cfg.extractor.llm, cfg), cfg.extractor)


# ---------------------------------------------------------------- transformers (production)


class TransformersExtractor:
    """The fine-tuned extractor loaded in-process with transformers (greedy, "finetuned" prompt).

    Production path for `blackhao0426/pref-extractor-qwen3-0.6b-full-sft` without a vLLM server.
    """

    def __init__(
        self,
        model_name: str,
        cfg: ExtractorConfig | None = None,
        *,
        device: str = "cpu",
        local_files_only: bool = False,
        trust_remote_code: bool = False,
    ):
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:  # pragma: no cover - transformers is a dependency
            raise RuntimeError("TransformersExtractor needs `pip install transformers`") from e
        self.cfg = cfg or ExtractorConfig(prompt="finetuned")
        kw = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code}
        try:
            # transformers' generics do not narrow to what these calls return: held as Any
            tokenizer: Any = AutoTokenizer.from_pretrained(model_name, **kw)
            model: Any = AutoModelForCausalLM.from_pretrained(model_name, dtype="auto", **kw)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"cannot load extractor model '{model_name}': {e}") from e
        self.tokenizer, self.model = tokenizer, model
        model.eval()
        model.to(device)
        self.device = device
        self._lock = threading.Lock()

    def extract(self, turns: Sequence[tuple[str, str]]) -> list[Preference]:
        import torch

        window = dialogue_window(turns, self.cfg.window_turns)
        if not window:
            return []
        messages = build_messages(window, self.cfg.prompt)
        try:
            enc: Any = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True,
                enable_thinking=False,
            )  # fmt: skip
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with self._lock, torch.no_grad():
                out = self.model.generate(
                    **enc, max_new_tokens=self.cfg.max_new_tokens, do_sample=False,
                    output_scores=True, return_dict_in_generate=True,
                )  # fmt: skip
        except (RuntimeError, ValueError) as e:
            log.warning("transformers extractor failed: %s", e)
            return []
        new = out.sequences[0, enc["input_ids"].shape[1] :]
        steps = []
        for tok_id, scores in zip(new.tolist(), out.scores, strict=False):
            lp = torch.log_softmax(scores[0].float(), dim=-1)
            top = torch.topk(lp, TOP_LOGPROBS)
            tops = {self.tokenizer.decode([int(i)]): float(v) for v, i in zip(*top, strict=True)}
            tok = self.tokenizer.decode([tok_id])
            tops.setdefault(tok, float(lp[tok_id]))
            steps.append((tok, tops))
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        decision = decision_from_logprobs(steps)
        prefs = postprocess(parse_preferences(text), window)
        if decision.p_open is not None:
            prefs = [p.model_copy(update={"confidence": round(decision.p_open, 4)}) for p in prefs]
        return [p for p in prefs if p.confidence >= self.cfg.min_confidence]
