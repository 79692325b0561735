"""From the extractor model's output to the preferences kept: the confidence read from the
log-probs, then the deterministic checks (example echoes, copies of earlier turns, feedback and
one-off requests, scope). `finish` is that whole path, shared by both backends.

Confidence is the model's own probability of emitting a preference: at the token where the
JSON list either opens an item (`{`) or closes empty (`]`), P(open) / (P(open) + P(close)) from
the top log-probs.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vars_langgraph.config import ExtractorConfig
from vars_langgraph.models.extraction.prompts import FEW_SHOT_EXAMPLES
from vars_langgraph.models.parsing import parse_preferences
from vars_langgraph.types import Preference

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # candidates read per generated token
_DECISION_KEY = re.compile(r'"preferences"\s*:\s*\[')


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
# a standing scope said as taste: "that's how I like it", "That's how I work best."
HOW_I_LIKE_IT = (r"(?:that's|that is|this is) (?:how|what) i (?:like|prefer|want|learn|work)"
                 r"|i (?:learn|work) best")
_GENERALITY = re.compile(
    r"\b(?:always|in general|generally|from now on|going forward|in (?:the )?future|"
    r"by default|at all times|no matter what|(?:^|(?<=[.!?]\s))never|" + HOW_I_LIKE_IT + "|"
    r"(?:every|any|all|each)\s+(?:of\s+)?(?:your\s+|my\s+|the\s+)?" + _ANSWERS + r")\b", re.I
)
_ONE_OFF = re.compile(
    r"\b(?:this time|this one|for this (?:answer|one|question|reply|email|time)|just this once|"
    r"for now|right now)\b|^\s*(?:can you |could you |please )?(?:make|rewrite|shorten|redo|"
    r"change|fix|turn|put|translate|convert)\b[^.?!]*\b(?:it|that|this)\b", re.I
)
_FEEDBACK = re.compile(
    r"\b(?:that's not|that is not|thats not|not what i (?:asked|wanted|meant)|"
    r"(?<!rather )(?<!prefer )you didn't|(?<!rather )(?<!prefer )you did not|wrong|incorrect|"
    r"try again|doesn't help|not helpful)\b", re.I
)
# a complaint may restate a preference after one of these (to the end of the sentence)
_RESTATE = re.compile(
    r"\b(?:i said|i told you|i asked for|i asked you to|as i said|i already said|remember|"
    r"you forgot|you keep|i want|i prefer|i'?d rather|i would rather|i hate|always|never|"
    r"no more|no|stop|don't|"
    r"please don't|again with|too)\b([^.!?]*)", re.I
)
# how-to-answer words: a card inside a complaint that uses one of them is a style preference
_STYLE = re.compile(
    r"\b(?:short|shorter|brief|concise|long|length|bullets?|lists?|numbered|tables?|markdown|"
    r"emojis?|format\w*|tone|formal|casual|friendly|jargon|simple|simpler|summary|examples?|"
    r"steps?|details?|verbose|paragraphs?|comments?|units?|metric|spelling|sentences?|preambles?|"
    r"disclaimers?|exclamation|bold|headings?|latex|type hints?|syntax|gist|tl;?dr)\b", re.I
)
# what an answer-wide (global) preference is about: the answer's form, language or manner
_ANSWER_WIDE = re.compile(
    r"\b(?:answers?|responses?|replies|reply|respond\w*|explain\w*|explanations?|code|coding|"
    r"language|english|spanish|french|german|chinese|japanese|words?|emojis?|questions?|"
    r"sources?|citations?|references?|analog\w*|jokes?|humou?r|apologi\w*|greetings?)\b", re.I
)
_MINOR_WORDS = (
    "that that's thats what asked ask said told you your the this was not and for with are "
    "it's just please again want need me my i'm have has had"
)
_MINOR = frozenset(_MINOR_WORDS.split())


def content_words(text: str) -> set[str]:
    """Content-word stems (5 letters) of a text, for comparing actions and conditions."""
    words = re.findall(r"[a-z0-9][a-z0-9'+#-]*", text.lower().replace("\u2019", "'"))
    return {w[:5] for w in words if len(w) >= 3 and w not in _MINOR}


def has_generality_marker(text: str) -> bool:
    """Whether the user states a universal scope ("always", "in general", "from now on", ...)."""
    return bool(_GENERALITY.search(text.replace("\u2019", "'")))


def is_one_off(text: str) -> bool:
    """A one-off request ("this time ...", "make it shorter") with no stated scope."""
    return bool(_ONE_OFF.search(text)) and not has_generality_marker(text)


def is_feedback(text: str) -> bool:
    """A reply about the last answer: a feedback phrase ("that's not", "you didn't", "wrong")
    or a message that opens with a bare "no" ("No, ...", "no. ...")."""
    text = text.replace("\u2019", "'")
    return bool(_FEEDBACK.search(text) or re.match(r"\s*no\s*[,.!]", text, re.I))


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
    if is_one_off(text):
        return []
    if not is_complaint(text):
        return prefs
    restated: set[str] = set()
    for m in _RESTATE.finditer(text):
        restated |= content_words(m.group(1))
    out = []
    for p in prefs:
        if _FEEDBACK.search(p.action):
            continue
        if content_words(p.action) & restated or _STYLE.search(p.action):
            out.append(p)
    return out


# the verb a task condition opens with ("recommending", "writing", ...)
_TASK_VERB = re.compile(r"^(?:when\s+)?\w+ing\b\s*", re.I)
_PREFERENCE_WORD = re.compile(r"\b(?:prefer\w*|likes?|dislikes?|taste)\b", re.I)


def not_a_situation(pref: Preference, message: str) -> bool:
    """Whether a card's condition names no situation the user gave, as a small model writes:
    the action's own object ("recommending multiplayer games: avoid multiplayer games", "keyboard
    shortcuts with Cmd: use Cmd shortcuts"), who the user is ("vegetarian" from "I'm
    vegetarian"), or the preference itself ("ethical preference")."""
    cond = pref.condition.strip()
    if _PREFERENCE_WORD.search(cond):
        return True
    if re.search(rf"\bi(?:'m| am)\s+(?:an?\s+)?{re.escape(cond)}\b", message.replace("\u2019", "'"), re.I):
        return True
    words = content_words(_TASK_VERB.sub("", cond))
    return bool(words) and 2 * len(words & content_words(pref.action)) > len(words)


def fix_scope(prefs: list[Preference], window: Sequence[tuple[str, str]]) -> list[Preference]:
    """"general" only when the user says so; a condition must come from the dialogue.

    - a condition that names no situation (`not_a_situation`) becomes "answering" ("general"
      with a generality marker), so that the action's own task can scope it (`scope_to_task`);
    - a global card whose message has no generality marker gets condition "answering";
    - a task condition none of whose words occur in the window (a small model's habit:
      "writing code" for "I prefer bullet points") becomes "answering";
    - an unscoped card ("answering") whose message has a generality marker becomes "general".
    """
    message = window[-1][1] if window else ""
    said = content_words(" ".join(t for _, t in window))
    marker = has_generality_marker(message)
    out = []
    for p in prefs:
        words = content_words(p.condition) - content_words("answering responding replying general writing")
        if not p.is_global and not_a_situation(p, message):
            p = p.model_copy(update={"condition": "general" if marker else UNSCOPED_CONDITION})
        elif p.is_global and not marker:
            p = p.model_copy(update={"condition": UNSCOPED_CONDITION})
        elif not p.is_global and words and not words & said:
            p = p.model_copy(update={"condition": "general" if marker else UNSCOPED_CONDITION})
        elif not p.is_global and not words and marker:
            p = p.model_copy(update={"condition": "general"})
        out.append(p)
    return out


def scope_globals(prefs: list[Preference]) -> list[Preference]:
    """A global card must be about how to answer (form, language, manner: "always use metric
    units", "never use emojis"); any other "in general" card ("In general, take an advanced
    pottery course", read from "I've always wanted to...") gets condition "answering", so it
    reaches a prompt by similarity to the question instead of taking a slot in every one."""
    return [p.model_copy(update={"condition": UNSCOPED_CONDITION})
            if p.is_global and not (_STYLE.search(p.action) or _ANSWER_WIDE.search(p.action))
            else p for p in prefs]


# the task an action names by its own words ("show code in Python" is about code, "nothing
# scary in the stories" about stories): an unscoped card gets it as its condition, so that it
# competes only for questions of that task ("answering" cards compete for every question)
_TASKS = (
    ("writing code", r"code(?!\s+blocks?)|coding|programm\w*|python|javascript|typescript|java|rust|"
                     r"golang|c\+\+|sql|scripts?|functions?|type hints|docstrings?|unit ?tests?|pytest|"
                     r"unittest|regex\w*|git|commits?|libraries|variables?|compil\w+|debug\w*"),
    ("doing math", r"math\w*|equations?|latex|formulas?|proofs?|calculus|algebra|derivatives?|integrals?"),
    ("suggesting recipes", r"recipes?|ingredients?|cooking|baking|meals?|dishes|dinners?"),
    ("recommending books", r"books?|novels?|authors?"),
    ("recommending movies or shows", r"movies?|films?|tv shows?"),
    ("recommending music", r"music|songs?|albums?|playlists?|bands?"),
    ("making charts", r"charts?|graphs?|plots?|visuali[sz]ations?"),
    ("writing stories", r"stor(?:y|ies)|poems?|fiction"),
    ("writing emails", r"e-?mails?"),
    ("writing reports", r"reports?"),
    ("planning travel", r"travel\w*|trips?|flights?|hotels?|itinerar(?:y|ies)|destinations?"),
    ("suggesting workouts", r"workouts?|exercises?|gym|training plans?|fitness"),
    ("discussing health", r"medical|medicine|medications?|symptoms?|health|diagnos\w+"),
    ("gardening", r"garden\w*|plants?|soil"),
    ("discussing money", r"budget\w*|invest\w*|financ\w*|money|savings"),
)
_TASK_WORDS = [(cond, re.compile(rf"\b(?:{rx})\b", re.I)) for cond, rx in _TASKS]


# where an action's reason starts: "keep it simple, I'm new to coding" is not about code
_REASON = re.compile(r",\s*(?:i|i'm|im|my)\b|\b(?:because|since|as i)\b", re.I)


def named_task(text: str) -> str | None:
    """The one task `text` names by its words (`_TASKS`), or None when it names none or
    several (a question, a condition)."""
    found = {cond for cond, rx in _TASK_WORDS if rx.search(text)}
    return found.pop() if len(found) == 1 else None


def task_of(action: str) -> str | None:
    """The one task an action names before any reason it gives (`named_task`)."""
    return named_task(_REASON.split(action, maxsplit=1)[0])


# a scope inside an action ("to be clear, for logic puzzles, keep it short"): the user's own
# condition, said after a lead-in the model copied into the action
_INNER_SCOPE = re.compile(r"(?:^|[,:;]\s*)(for|when|whenever|if|while)\s+([^,]{3,60}),\s*", re.I)
# a lead-in before the scope, dropped with it ("To be clear, for logic puzzles, ...")
_LEAD_IN = re.compile(r"(?:just\s+)?(?:to be clear|so you know)|bear in mind|keep in mind|remember|"
                      r"fyi|note|also|and|oh|btw|by the way|again|one more thing", re.I)
# "for ..." phrases that scope nothing
_NOT_A_SCOPE = re.compile(r"^(?:example|instance|now|the most part|sure|once|a while|reference|"
                          r"what it'?s worth|real|good|me|us|you|them|him|her)\b", re.I)


def inner_scope(action: str) -> tuple[str, str] | None:
    """(condition, rest of the action) when the action holds a scope of its own: a "for X,"
    clause, or a "when/if/while X," clause that names a task (`named_task`)."""
    m = _INNER_SCOPE.search(action)
    if m is None:
        return None
    word, what = m.group(1).lower(), m.group(2).strip()
    if not (word == "for" and _NOT_A_SCOPE.match(what) is None or named_task(what)):
        return None
    before = action[: m.start()].strip(" ,;")
    if action[m.start(): m.start() + 1] == ":" or _LEAD_IN.fullmatch(before):
        before = ""
    rest = ", ".join(t for t in (before, action[m.end():].strip()) if t)
    return (f"{word} {what}", rest) if len(rest.split()) >= 2 else None


# conditions that scope nothing: "answering", "when responding to the user", "general"
_UNSCOPED = re.compile(r"^(?:when\s+)?(?:(?:answering|responding|replying)(?:\s+to\s+(?:the\s+)?"
                       r"(?:user|me|any question))?|general)$", re.I)


def scope_to_task(prefs: list[Preference]) -> list[Preference]:
    """An unscoped card ("answering", "in general") gets the scope its action holds: the
    user's own ("To be clear, for logic puzzles, keep it short" -> "For logic puzzles, keep
    it short", `inner_scope`), else the one task the action names ("Please always show code
    in Python" -> "When writing code, ...")."""
    out = []
    for p in prefs:
        unscoped = p.is_global or bool(_UNSCOPED.match(p.condition.strip(" .")))
        if unscoped and (inner := inner_scope(p.action)):
            p = p.model_copy(update={"condition": inner[0], "action": inner[1]})
        elif unscoped and not _INNER_SCOPE.search(p.action) and (task := task_of(p.action)):
            p = p.model_copy(update={"condition": task})
        out.append(p)
    return out


# a reply that takes up what the assistant offered ("Yes, always do that", "Sure, please do")
_ASSENT = re.compile(r"^\s*(?:yes|yeah|yep|sure|ok(?:ay)?|please do|sounds good|that works|"
                     r"exactly|perfect|great)\b", re.I)


def drop_context_copies(prefs: list[Preference],
                        window: Sequence[tuple[str, str]]) -> list[Preference]:  # fmt: skip
    """Drop cards restating an earlier turn of the window rather than the last message.

    The window gives the model context, but the earlier user turns were extracted when they
    were the last message: a card grounded in one of them and in no word of the new message is
    a second copy of a stored card (it would compete with it for the prompt's slots). A card
    whose action is copied from an assistant turn is the assistant's words, not the user's
    ("noted, ...", the advice it gave: "improve your physical fitness"),
    unless the user's message assents to it ("Yes, always do that").
    """
    said = content_words(window[-1][1]) if window else set()
    earlier = [content_words(t) for r, t in window[:-1] if r == "user"]
    assent = bool(window) and bool(_ASSENT.match(window[-1][1]))
    answers = [] if assent else [content_words(t) for r, t in window[:-1] if r != "user"]
    out = []
    for p in prefs:
        words = content_words(f"{p.condition} {p.action}")
        action = content_words(p.action)
        if words and not words & said and any(2 * len(words & e) >= len(words) for e in earlier):
            continue
        if action and not action & said and any(2 * len(action & a) >= len(action) for a in answers):
            continue
        out.append(p)
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")


def sentences(text: str) -> list[str]:
    """The sentences of a message (split after . ! ? ; and at line breaks), stripped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def sentence_of(pref: Preference, message: str) -> str:
    """The sentence of `message` that shares the most content words with the card ("" when it
    shares none with any)."""
    words = content_words(f"{pref.condition} {pref.action}")
    best, overlap = "", 0
    for sentence in sentences(message):
        n = len(words & content_words(sentence))
        if n > overlap:
            best, overlap = sentence, n
    return best


# a standing request asked politely: "Would you mind not ...?", "Could you always ...?"
_STANDING_REQUEST = re.compile(
    r"^(?:please\s+)?(?:can|could|would|will)\s+you\b.*\b(?:not|never|always|stop|avoid|"
    r"no more|from now on|going forward|anymore|in (?:the )?future)\b", re.I)


def from_question(pref: Preference, sentence: str) -> bool:
    """Whether a card was read from a question (its `sentence_of` the message ends with "?"):
    a small model turns questions into cards ("When answering, stop words in NLP." from "Stop
    words in NLP, what are they?", "take an advanced pottery course" from "Should I take an
    advanced pottery course, or ...?"). Not a card about the answer's form ("Can you keep it
    short?") nor a standing request asked politely ("Would you mind not recommending horror
    movies?")."""
    return (sentence.endswith("?") and not _STYLE.search(pref.action)
            and not _STANDING_REQUEST.match(sentence))


def drop_questions(prefs: list[Preference], message: str) -> list[Preference]:
    """The cards not read from a question (`from_question`)."""
    return [p for p in prefs if not from_question(p, sentence_of(p, message))]


# words that state a stance: a like or dislike, a need, a habit, a limit, a request, an identity
_STANCE = re.compile(
    r"\b(?:prefer\w*|like[sd]?|love[sd]?|loving|enjoy\w*|hate[sd]?|dislike\w*|avoid\w*|"
    r"can'?t stand|cannot stand|want\w*|need\w*|rather|always|never|usually|generally|tend to|"
    r"favou?rite|fan of|interest\w*|aversion|allergic|intoleran\w*|vegetarian|vegan|please|pls|"
    r"keep|make sure|don'?t|do not|doesn'?t|no more|stop|only|bugs? me|drives? me|annoy\w*|"
    r"irritat\w*|my thing|hard to|easier|would help|instead|not into|mind|can'?t|cannot|won'?t|"
    r"refuse|phobia|afraid|scared?|uncomfortable|works? for me|suits? me|"
    # who the user is, which implies what suits them ("I'm a nurse", "I use a Mac")
    r"i'?m (?:a|an|on)|i am (?:a|an|on)|i use|i work|i live|i'?m from|i am from|gluten\w*|"
    r"deaf|blind|diabet\w*|allerg\w*)\b", re.I)
_CLAUSE = re.compile(r"[,;:.!?]\s*|\s+(?:and|but|so|then)\s+", re.I)
_LEAD = re.compile(r"^(?:(?:please|pls|always|never|just|also|do not|don'?t|do)\s+)+", re.I)


def states_a_stance(text: str) -> bool:
    """Whether `text` holds a stance word (`_STANCE`: a like or dislike, a need, a request, ...)."""
    return bool(_STANCE.search(text))


def is_stated(pref: Preference, sentence: str) -> bool:
    """Whether the user stated this card in `sentence` (its `sentence_of` the message, or the
    message): a stance word ("prefer", "can't stand", "please", "usually", ...), or a clause
    starting with the card's verb (an instruction: "Skip the pleasantries.", "For travel tips,
    focus on budget options."), or the card is about the answer's form."""
    if _STANCE.search(sentence) or _STYLE.search(pref.action):
        return True
    verb = _LEAD.sub("", pref.action.strip().lower()).split(" ", 1)[0]
    return bool(verb) and any(c.strip().lower().startswith(verb) for c in _CLAUSE.split(sentence))


def drop_unstated(prefs: list[Preference], message: str) -> list[Preference]:
    """Drop cards the user did not state (`is_stated`): a small model turns what a user says
    about their day or task into cards ("stay alert during night patrol" from "Got any tips for
    staying alert?", "write your first incident report tomorrow", "a 27-inch monitor with 4K
    resolution" from "I'm thinking about a 27-inch monitor")."""
    return [p for p in prefs if is_stated(p, sentence_of(p, message) or message)]


# an action whose object is only a pointer back to something else ("keep that in mind for
# recipes" from "I'm vegetarian, keep that in mind for recipes.", "prefer that idea"), or to
# the last answer ("prefer your ideas", "like your idea of a side project": praise): it says
# nothing that holds for the next answer; a statement it points at is read as its own card
_POINTER_ONLY = re.compile(
    r"^(?:(?:keep|bear|have)\s+(?:that|this|it)\s+in\s+mind\b|"
    r"(?:prefer|like|love|want)\s+(?:that|this|it)(?:\s+(?:idea|one|option))?$|"
    r"(?:prefer|like|love|want)\s+(?:your|those|these)\s+(?:ideas?|suggestions?|advice|tips?|"
    r"approach|plan|recommendations?)(?:\s+(?:of|about|for|on)\b.*|\s+though|\s+too)?$)", re.I)
# a wish about this conversation's topic ("I'd love to learn more about training sessions")
_TOPIC_WISH = re.compile(r"^(?:prefer\s+)?(?:to\s+)?(?:learn|know|hear|read|talk)\s+(?:more|a bit more)\s+"
                         r"about\b", re.I)


def says_nothing_standing(action: str) -> bool:
    """A pointer back (`_POINTER_ONLY`) or a wish about this conversation (`_TOPIC_WISH`)."""
    a = action.strip().rstrip(".")
    return bool(_POINTER_ONLY.match(a) or _TOPIC_WISH.match(a))


def postprocess(prefs: list[Preference], window: Sequence[tuple[str, str]]) -> list[Preference]:
    """The deterministic checks every extractor output goes through (copies, questions,
    unstated cards, pointer-only actions, feedback, scope)."""
    if not window:
        return []
    message = window[-1][1]
    out = []
    prefs = [p for p in prefs if not says_nothing_standing(p.action)]
    for p in fix_scope(drop_feedback(drop_context_copies(prefs, window), message), window):
        sentence = sentence_of(p, message)  # where the card was read: a question? a statement?
        if not from_question(p, sentence) and is_stated(p, sentence or message):
            out.append(p)
    return out


def finish(content: str | None, window: Sequence[tuple[str, str]], cfg: ExtractorConfig,
           p_open: float | None) -> list[Preference]:
    """The preferences of one model output `content` for `window`: parsed, checked (echoes of
    the few-shot examples, `postprocess`), with confidence `p_open` when it was observed, and
    those below `cfg.min_confidence` dropped (the one place that threshold filters)."""
    prefs = parse_preferences(content or "")
    if content and not prefs and "{" not in content:
        log.warning("extractor returned no JSON: %.200r", content)
    if cfg.prompt == "few_shot":
        prefs = drop_example_echoes(prefs, window[-1][1])
    prefs = postprocess(prefs, window)
    if p_open is not None:
        prefs = [p.model_copy(update={"confidence": round(p_open, 4)}) for p in prefs]
    return [p for p in prefs if p.confidence >= cfg.min_confidence]
