"""The rule-based fast path: explicit preferences of one message without a model
(`fast_preferences`, `identity_preferences`), and the last-resort quoted statement of taste
(`stated_preferences`)."""

from __future__ import annotations

import functools
import json
import re

from vars_langgraph.models.extraction.postprocess import (
    HOW_I_LIKE_IT,
    UNSCOPED_CONDITION,
    content_words,
    drop_feedback,
    has_generality_marker,
    is_feedback,
    is_one_off,
    named_task,
    says_nothing_standing,
    sentences,
    task_of,
)
from vars_langgraph.models.extraction.prompts import MAX_ITEMS_PER_TURN, MAX_TURN_CHARS
from vars_langgraph.speech import LASTING_FACT
from vars_langgraph.types import MAX_ACTION, MAX_CONDITION, Preference

_LEAD_COND = re.compile(r"^((?:when|whenever|if|for)\s+[^,]{3,80}),\s*(.+)$", re.I)
# "X when you Y" (not "I like it when you ...", "I prefer when you ...": what the user likes)
_TRAIL_COND = re.compile(r"^(.+?)(?<!\bit)(?<!\bprefer)(?<!\blike)(?<!\blove)(?<!\bhate)(?<!\beasier)"
                         r"\s+((?:when|whenever)\s+(?:you|i|we)\b.{3,80})$", re.I)
_LEAD_SCOPE = re.compile(r"^(?:from now on|in general|in future|going forward|and|just so you know|"
                         r"for the record|(?:just )?to be clear|bear in mind|fyi|btw|by the way|"
                         r"honestly|also|oh and)[,: ]+", re.I)
# a scope said last: "metric please, always", "bullet points from now on"
_TRAIL_SCOPE = re.compile(r"[, ]+(?:always|from now on|going forward|in future|in general|every time|"
                          rf"(?:{HOW_I_LIKE_IT})\b.*)$", re.I)
_PLEASE = re.compile(r"^(?:please|pls|kindly)[, ]+|[, ]+(?:please|pls)$", re.I)
# a standing request asked as a question: "Would you mind not ...?", "Could you always ...?"
# ("... about answers or suggestions": not "Can you stop the music?", "Will you always be here?")
_POLITE_STANDING = re.compile(
    r"^(?:please\s+)?(?:can|could|would)\s+you\s+(?:please\s+)?(mind\s+)?(not|never|always|stop|avoid)\s+"
    r"((?:\w+ing|recommend|suggest|use|include|mention|show|give|answer|write|reply|respond|explain|"
    r"add|put|format|keep|skip|cite)\b.*?|(?<=avoid ).+?)\?+$", re.I)
# the same asked with a lasting scope: "Can you keep the answers short from now on?"
_POLITE_FROM_NOW = re.compile(r"^(?:please\s+)?(?:can|could|would|will)\s+you\s+(?:please\s+)?(.+?)[, ]+"
                              r"(?:from now on|going forward|in future|from here on)\?+$", re.I)
# a task named first with "in" / "with": "In code reviews, be blunt", "With recipes, metric
# units please" (not "In general", "In 2020", "With that said")
_LEAD_TASK = re.compile(r"^(in|with)\s+((?:my\s+|your\s+|the\s+)?(?!(?:general|fact|short|that|this|"
                        r"other|any|case|my opinion|the end|the meantime|future)\b)[a-z][\w-]*"
                        r"(?:\s+[\w-]+){0,2}),\s*(.{6,})$", re.I)
# a reason said last, after the instruction: "Keep the tone light, I get anxious easily"
_TAIL_REASON = re.compile(r",\s*(?:i|i'm|i've|my|we|we're)\b(?![^,]*\b(?:prefer|like|want|love|hate)\b)"
                          r"[^,?]{3,60}$", re.I)
# "you don't need to explain the basics", "no need to apologise"
_NO_NEED = re.compile(r"^(?:you\s+(?:don't|do not|never)\s+(?:need|have)\s+to|no need to)\s+(.{3,})$", re.I)
# "I find it easier when you number the steps"
_EASIER_WHEN = re.compile(r"^i\s+find\s+it\s+(?:much\s+|a lot\s+|so much\s+)?"
                          r"(?:easier|clearer|simpler|more helpful)(?:\s+to\s+(?:read|follow|understand))?"
                          r"\s+(?:when|if)\s+you\s+(.{3,})$", re.I)
# "Answers in German would be great"
_WOULD_BE = re.compile(r"^(.{3,60}?)\s+would be (?:great|nice|helpful|ideal|appreciated|perfect|better)$",
                       re.I)
_NEG_START = re.compile(r"^(?:don't|do not|never|no more|no|stop|avoid)\s+(.+)$", re.I)
_FIRST_PERSON = re.compile(
    r"^i(?:'d| would)?\s+(?:really\s+|always\s+|just\s+|strongly\s+|strictly\s+|generally\s+)?"
    r"(prefer|like|rather|want|don't like|do not like|hate|love|avoid|dislike|despise|"
    r"can't stand|cannot stand)\s+"
    r"(?:(?:it\s+)?(?:when|if)\s+you\s+|(?:you\s+)?(?:to\s+)?)?(.+)$",
    re.I,
)
# verbs that task statements open with ("If x = 3, express y in terms of x.", "List all ..."):
# a standing instruction only under a condition about the user ("If I'm asking for a recipe,
# list the ingredients first.")
_PROBLEM_VERB_WORDS = "list state express round compare sort name convert translate note call"
_PROBLEM_VERBS = frozenset(_PROBLEM_VERB_WORDS.split())
_ABOUT_USER = re.compile(r"\b(?:i|i'm|im|my|me|we|our)\b", re.I)
_IMPERATIVE = re.compile(
    r"^(?:always\s+|just\s+)?(keep|use|avoid|write|answer|give|add|include|respond|reply|format|explain|"
    r"show|start|end|put|be|skip|cite|mention|assume|tell|number|follow|quiz|ask|walk|suggest|"
    r"leave|focus|stick|limit|make|draw|stay|check|prefer|go|get|recommend|provide|offer|break|"
    r"spell|remind|warn|summari[sz]e|highlight|define|link|label|lead|clarify|double-check|flag|"
    r"point|scale|adapt|adjust|tailor|simplify|shorten|double|halve|bold|tag|mark|talk|speak|"
    r"" + "|".join(sorted(_PROBLEM_VERBS)) + r")\b\s*(.*)$",
    re.I,
)
_NOT_PREFS = re.compile(
    r"^(?:know|understand|worry|get it|need|think|care|mind|problem|worries|thanks|idea|way|i\b)", re.I
)


def _clean_clause(text: str) -> str:
    text = _TRAIL_SCOPE.sub("", text.strip(" ,.;:!"))
    return _PLEASE.sub("", text).strip(" ,.;:!")


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
    lines = message_lines(str(text or "")[:MAX_TURN_CHARS])
    text = " ".join(line for line, pasted in lines if not pasted or _SPEAKS.search(line))
    if not text or is_one_off(text):
        return []
    out: list[Preference] = []
    for sent, pasted, fact in ((s, pasted, fact) for line, pasted in lines
                               for s, fact in _clauses(line)):
        if pasted and not _SPEAKS.search(sent):  # a line of a pasted problem: "No other masses."
            continue
        if m := _POLITE_STANDING.match(sent.strip()):  # "Would you mind not ...?": a request
            verb = m.group(2).lower()
            sent = f"{('avoid' if m.group(1) else 'do not') if verb == 'not' else verb} {m.group(3)}"
        elif m := _POLITE_FROM_NOW.match(sent.strip()):  # "Can you keep it short from now on?"
            sent = m.group(1)
        elif sent.rstrip().endswith("?"):
            continue
        sent = sent.strip(" ,.;:!")
        bare = _RESTATED.sub("", sent)
        found = identity_preferences(bare, text) or _fact_scope(_split_answers_with(
            _sentence_preference(bare, text, bool(fact))), fact)
        if not found and (tail := _feeling_after_comma(bare)):  # "I read on my phone, X are a pain"
            found = _split_answers_with(_sentence_preference(tail, text))
        if not found and bare != sent and _STYLE_NP.match(bare):  # "No, I said bullet points."
            found = [Preference(condition=UNSCOPED_CONDITION, action=f"use {bare}", confidence=0.9)]
        if any(_ANSWER_NOUN.search(q.action) for q in out):  # "... answers ..., and keep them short"
            found = [p.model_copy(update={"action": _PRONOUN_OBJ.sub(r"\1 answers", p.action)})
                     for p in found]
        out.extend(p for p in found if p.action.lower() not in {q.action.lower() for q in out})
    out = [p for p in out if not says_nothing_standing(p.action)]
    return drop_feedback(out, text)[:MAX_ITEMS_PER_TURN]


@functools.lru_cache(maxsize=1024)
def only_states(text: str) -> bool:
    """Whether a message states preferences (the rules read one) and asks nothing. Cached: the
    rerank node asks it of the thread's earlier messages on every turn (`thread_topic`)."""
    return "?" not in text and bool(fast_preferences(text))


_OPTION = re.compile(r"^\s*\(?[0-9a-z]{1,2}[.):]\s", re.I)
# the user speaking in a line of pasted material: "Just so you know, I prefer ...", "please ..."
_SPEAKS = re.compile(r"\b(?:i|i'd|i'm|me|my|please|pls)\b", re.I)


def message_lines(text: str) -> list[tuple[str, bool]]:
    """The lines of a message, each with whether it follows a line that leads into pasted
    material ("Here's the problem:", "Choices:"); blank lines and options of a list ("0. I
    only", "(B) ...") left out."""
    out, pasted = [], False
    for line in text.replace("\u2019", "'").splitlines():
        if line.strip() and not _OPTION.match(line):
            out.append((" ".join(line.split()), pasted))
        pasted = pasted or line.rstrip().endswith(":")
    return out


# a second clause's pronoun for the first clause's answers: a card must read on its own
_PRONOUN_OBJ = re.compile(r"^(keep|make)\s+(?:them|it)\b", re.I)
_ANSWER_NOUN = re.compile(r"\b(?:answers?|responses?|replies)\b", re.I)


# "... and I prefer ...", "... and keep it short": a second clause, not a second object
_AND_CLAUSE = (r"(?i:,?\s+and\s+(?=(?:i(?:'d|'m)?|please|keep|use|avoid|give|add|include|explain|call|"
               r"mention|always|never|don't|end|start|show|write|skip|stick)\b)"
               r"|,\s+(?=you can\b|feel free\b))")
_CLAUSES = re.compile(r"(?<=[.!?;])\s+|,\s+(?:and|so)\s+|\s+and\s+(?=please\b)|" + _AND_CLAUSE)
_SO = re.compile(r",\s+so\s+", re.I)
_THIS = re.compile(r"\b(?:this|that|it)\b", re.I)  # "my boss wants this by Friday": the moment's
_REASON_FIRST = re.compile(r"^([^,?]{3,80}?),\s*(?:(?:and\s+)?so\s+)?(.{6,})$", re.I)
# "I live in Australia so use AUD": the reason without its comma (not "so that", "so much")
_REASON_SO = re.compile(r"^([^,?]{3,80}?)\s+so\s+(?!(?:that|much|many|far|long|i|it)\b)(.{6,})$", re.I)
# what follows from the fact said of the answers: "schedule suggestions should fit around my
# sleep", "any recipe has to be nut-free" (not the user's or the moment's: "I should", "it must")
_SHOULD = re.compile(r"^(?!(?:i|we|you|it|this|that|there)\b)(?:any|all|the|your|my)?\s*"
                     r"[\w' -]{3,40}?\s+(?:should|must|has to|have to|needs? to)\s+\S.{2,}$", re.I)
# a need that follows from the fact: "As a wheelchair user, I need step-free routes"
_I_NEED = re.compile(r"^i\s+(?:really\s+|always\s+)?(?:need|require)\s+"
                     r"(?!(?:to|help|a hand|some help|you|this|that|it)\b)(.{3,})$", re.I)
_AS_ROLE = re.compile(r"^as\s+an?\s+[\w -]{2,30}$", re.I)  # "As a wheelchair user"
_REASON_LAST = re.compile(r"^([^,?]{6,}?),\s*((?:i|i'm|i am|i've|my|we|we're)\b[^,?]{3,80})$", re.I)


def _clauses(line: str) -> list[tuple[str, str]]:
    """The clauses of a line (`_CLAUSES`), each with the fact about the user it follows after
    ", so" ("I live in Canada, so give prices in CAD"; not the moment's: "My boss wants this,
    so ..."), or ""."""
    out, start, fact = [], 0, ""
    for m in _CLAUSES.finditer(line):
        clause = line[start : m.start()]
        out.append((clause, fact))
        lasting = _SO.fullmatch(m.group()) and LASTING_FACT.search(clause) and not _THIS.search(clause)
        fact = clause if lasting else ""
        start = m.end()
    return [*out, (line[start:], fact)]


def _fact_scope(prefs: list[Preference], fact: str) -> list[Preference]:
    """The task a fact names scopes what follows from it when the instruction names none:
    "My boss reads these reports, so keep the tone professional" -> "writing reports"."""
    task = named_task(fact) if fact else None
    if not task:
        return prefs
    return [p.model_copy(update={"condition": task})
            if p.condition in ("general", UNSCOPED_CONDITION) and not task_of(p.action) else p
            for p in prefs]


def _reason_split(sent: str) -> str | None:
    """The instruction of a sentence that gives its reason, a fact about the user, beside it:
    "My daughter is 6, keep stories age-appropriate", "Go easy on the math, I'm not great with
    numbers", "Since I'm colourblind, don't rely on red and green" (a standing instruction, as a
    "when ..." condition makes one)."""
    splits = [m.groups() for m in (_REASON_FIRST.match(sent), _REASON_SO.match(sent)) if m]
    splits += [m.groups()[::-1] for m in (_REASON_LAST.match(sent),) if m]
    for reason, rest in splits:
        rest = _PLEASE.sub("", rest.strip(" ,.;:!"))
        neg = _NEG_START.match(rest)  # "Since I'm colorblind, don't rely on red and green"
        fact = LASTING_FACT.search(reason) or _AS_ROLE.match(reason.strip())
        if (fact and not _THIS.search(reason) and not LASTING_FACT.search(rest)
                and (_IMPERATIVE.match(rest) or neg and not _NOT_PREFS.match(neg.group(1))
                     or _SHOULD.match(rest) or _I_NEED.match(rest) or _NO_NEED.match(rest)
                     or _WOULD_BE.match(rest))):
            return rest
    return None


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
    "plant-based": "suggest only vegan food, no animal products",
    "plant based": "suggest only vegan food, no animal products",
}  # fmt: skip
_DIET = re.compile(r"^(?:\w+[, ]+)?(?:i'm|i am|im|i keep|i eat|i'm strictly)\s+"
                   r"(?:on\s+a\s+|a\s+|an\s+|strictly\s+)?("
                   + "|".join(sorted(_DIETS, key=len, reverse=True)) + r")\b", re.I)
_ALLERGY = re.compile(r"\bi(?:'m| am)\s+(?:very\s+|severely\s+)?allergic\s+to\s+([\w -]{2,40})", re.I)
_BUDGET = re.compile(r"\b(?:i'm|i am|im|we're|we are)\s+(?:always\s+|usually\s+)?on\s+an?\s+"
                     r"(?:(?:tight|limited|small|strict|student|shoestring)\s+)?budget\b|"
                     r"\bmoney(?:'s| is)\s+tight\b", re.I)
_CUT_DOWN = re.compile(r"\bi(?:'m| am)\s+(?:trying to\s+)?(?:cut(?:ting)?\s+(?:down|back)\s+on|reducing|"
                       r"limiting)\s+([\w -]{2,30})", re.I)  # "I'm trying to cut down on sugar"
_NO_EAT = re.compile(r"\bi\s+(?:don't|do not|never)\s+(?:eat|drink)\s+([\w ,-]{2,40})", re.I)
_OS = re.compile(
    r"\b(?:i'm|i am|im|i use|i'm using|i run|i work on|i'm running)\s+(?:on\s+)?(?:a\s+|an\s+)?"
    r"(linux|ubuntu|fedora|debian|arch linux|mac|macbook|macos|windows(?:\s+\d+)?|android|iphone|ios|"
    r"chromebook|pixel)\b(?!\s+(?:is|was|keeps|crashed|won't|doesn't|broke))"
    r"|\bi(?:'m| am)\s+an?\s+(windows|mac|linux)\s+user\b", re.I)
_LEVEL = re.compile(r"\bi(?:'m| am)\s+(?:(?:a|an|just a|still a)\s+(beginner|novice|newbie)|new to\s+[\w ]+|"
                    r"(?:a|an)\s+(expert|senior \w+|professional \w+))\b", re.I)
_LANGS = (r"python|javascript|typescript|java|golang|go|rust|c\+\+|c#|ruby|php|kotlin|swift|scala|julia|"
          r"matlab|(?-i:R)|sql|bash|haskell|elixir|dart")
# the language the user codes in: "I code in Rust", "mostly in R", "I'm a Kotlin developer",
# "I mostly write TypeScript"
_LANG = re.compile(
    rf"\bi\s+(?:mostly |mainly |only |usually )?(?:code|program|work|develop|write (?:my )?code)\s+"
    rf"(?:mostly |mainly |only |exclusively )?(?:in|with)\s+({_LANGS})(?![\w+#])"
    rf"|\b(?:mostly|mainly|exclusively)\s+in\s+({_LANGS})(?![\w+#])"
    rf"|\bi\s+(?:mostly |mainly |only |usually )?(?:write|use)\s+({_LANGS})(?![\w+#])"
    rf"|\bi(?:'m| am)\s+an?\s+({_LANGS})\s+(?:developer|dev|programmer|engineer|coder)\b", re.I)
_FOOD_SCOPE = re.compile(r"\b(?:recipes?|meals?|dinners?|cooking|food suggestions?)\b", re.I)


def identity_preferences(sent: str, message: str) -> list[Preference]:
    """Cards implied by a stated identity fact: diet ("I'm vegetarian"), allergies ("I'm
    allergic to nuts"), the user's OS ("I'm on Linux"), their level ("I'm a beginner"), the
    language they code in ("I work mostly in R", condition "writing code"). The
    condition is "suggesting recipes" when the message names recipes or meals, else "general"
    (the user named no task)."""
    t = sent.replace("\u2019", "'").strip(" ,.;:!")
    if t.endswith("?") or re.match(r"^(?:if|when|whether)\b", t, re.I):
        return []
    acts: list[str] = []
    if m := _DIET.search(t):
        acts.append(_DIETS[m.group(1).lower()])
    for rx, verb in ((_ALLERGY, "avoid"), (_NO_EAT, "avoid"), (_CUT_DOWN, "limit")):
        if (m := rx.search(t)) and not acts:
            acts.append(f"{verb} {m.group(1).strip(' ,').split(' so ')[0].split(' and i')[0]}")
    if m := _OS.search(t):
        name = (m.group(1) or m.group(2)).strip()
        name = {"mac": "Mac", "macbook": "Mac", "macos": "macOS", "ios": "iOS", "iphone": "iPhone"}.get(
            name.lower(), name[:1].upper() + name[1:])
        acts.append(f"give instructions for {name}")
    if _BUDGET.search(t):
        acts.append("suggest affordable, low-cost options")
    if m := _LEVEL.search(t):
        acts.append("keep explanations simple, for a beginner" if not m.group(2) else "skip the basics")
    out = []
    if m := _LANG.search(t):
        lang = next(g for g in m.groups() if g)
        name = {"javascript": "JavaScript", "typescript": "TypeScript", "php": "PHP", "sql": "SQL",
                "c#": "C#", "matlab": "MATLAB"}.get(lang.lower(), lang[:1].upper() + lang[1:])
        out.append(Preference(condition="writing code", action=f"write code in {name}", confidence=0.9))
    if not acts:
        return out
    cond = "suggesting recipes" if _FOOD_SCOPE.search(message) and not _OS.search(t) else "general"
    return [Preference(condition=cond, action=a[:MAX_ACTION], confidence=0.9) for a in acts] + out


_ANSWERS_WITH = re.compile(r"^prefer\s+(short|shorter|brief|concise|long|longer|detailed)\s+"
                           r"(?:answers|responses|replies)\s+(?:with|in)\s+(.+)$", re.I)


# two things an answer should have: "prefer numbered steps and a one-line summary at the end"
# (not an order of two: "examples first and theory after")
_TWO_FORMS = re.compile(r"^(prefer|use|avoid|do not give|keep it to)\s+(.+?)\s+and\s+(.+)$", re.I)
_ORDER = re.compile(r"\b(?:first|after|afterwards|then|last|later|before)$", re.I)


def _split_answers_with(pref: Preference | None) -> list[Preference]:
    """"prefer short answers with bullet points" -> "keep answers short" + "use bullet points";
    "prefer numbered steps and a one-line summary" (two parts of an answer) -> one card each."""
    if pref is None:
        return []
    two = _TWO_FORMS.match(pref.action)
    if two and all(_ANSWER_FORM.search(p) and not _ORDER.search(p) for p in two.group(2, 3)):
        return [pref.model_copy(update={"action": f"{two.group(1)} {part}"}) for part in two.group(2, 3)]
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


# a dislike of a part of answers said as annoyance: "long intros drive me crazy", "emojis annoy
# me", "jargon gets on my nerves", "long code blocks are a pain" (a noun phrase of up to six
# words naming something an answer has; not "my neighbour drives me crazy", "this bugs me")
_ANNOYS = re.compile(
    r"^(?:honestly|really|seriously|frankly)?[, ]*((?:[\w'-]+\s+){0,5}?[\w'-]+)\s+(?:"
    r"(?:drives?|drove) me (?:crazy|nuts|mad|insane|up the wall)|(?:annoys?|bugs?|irritates?|"
    r"bothers?) me|gets? on my nerves|(?:is|are) (?:such |really |always )?a (?:real )?pain)\b.*$",
    re.I)
# "it bugs me when answers are full of buzzwords", "it annoys me when you use emojis"
_ANNOYS_WHEN = re.compile(
    r"^(?:honestly|really|seriously|frankly)?[, ]*it (?:really )?(?:annoys|bugs|irritates|bothers|"
    r"drives) me(?: crazy| nuts)? when (?:the )?(?:answers?|responses?|replies|you) (?:are full of|"
    r"(?:is|are) full of|have|use|include|add|start with|open with)\s+((?:[\w'-]+\s+){0,5}?[\w'-]+)$",
    re.I)
# "ugh, again with the emojis": a complaint that names what to leave out
_AGAIN_WITH = re.compile(r"^(?:ugh|argh|sigh|oh no|seriously)?[, ]*again with (?:the |all the )?"
                         r"((?:[\w'-]+\s+){0,4}?[\w'-]+)$", re.I)
# ease and difficulty: "lists are so much easier for me to read than paragraphs", "walls of text
# are hard to follow", "I find it hard to follow when there are no headings"
_EASIER = re.compile(
    r"^((?:[\w'-]+\s+){0,4}?[\w'-]+)\s+(?:is|are)\s+(?:so |much |so much |a lot |far )*(?:easier|"
    r"clearer|simpler) (?:for me )?(?:to (?:read|follow|understand|skim|scan))?(?:\s+than\s+(.+))?$",
    re.I)
_HARD = re.compile(r"^((?:[\w'-]+\s+){0,4}?[\w'-]+)\s+(?:is|are)\s+(?:so |really |very )?(?:hard|"
                   r"difficult|impossible) (?:for me )?to (?:read|follow|understand|skim)$", re.I)
_HARD_WITHOUT = re.compile(r"^i find it (?:hard|difficult) to (?:read|follow|understand)\s+(?:when|if) "
                           r"there (?:are|is) no\s+((?:[\w'-]+\s+){0,3}?[\w'-]+)$", re.I)


def _feeling_after_comma(sent: str) -> str | None:
    """The clause after a sentence's last comma when it says how an answer's part reads to the
    user ("I read your answers on my phone, long code blocks are a pain"), else None."""
    if ", " not in sent:
        return None
    tail = _clean_clause(sent.rsplit(", ", 1)[1])
    rx = (_ANNOYS_WHEN, _ANNOYS, _AGAIN_WITH, _HARD, _EASIER, _HARD_WITHOUT)
    if any((m := r.match(tail)) and _ANSWER_PARTS.search(m.group(1)) for r in rx):
        return tail
    return tail if _HELPS_ME.match(tail) else None  # "I'm a visual learner, diagrams help me


_IRREGULAR = {"kept": "keep", "gave": "give", "wrote": "write", "made": "make", "told": "tell",
              "showed": "show", "spoke": "speak", "left": "leave", "took": "take", "stuck": "stick",
              "began": "begin", "broke": "break", "went": "go", "got": "get"}


def _present(phrase: str) -> str:
    """"added a summary" -> "add a summary" ("I'd love it if you added ..."): the verb's base
    form when the imperative verbs know it; else the phrase unchanged."""
    verb, _, rest = phrase.partition(" ")
    low = verb.lower()
    base = _IRREGULAR.get(low)
    if base is None and low.endswith("ed"):
        cands = [low[:-3] + "y"] if low.endswith("ied") else []
        cands += [low[:-1], low[:-2], low[:-3]]
        base = next((c for c in cands if (m := _IMPERATIVE.match(f"{c} x")) and m.group(1).lower() == c),
                    None)
    return f"{base} {rest}".strip() if base else phrase


def _lower_first(phrase: str) -> str:
    """"Lists" -> "lists", but "LaTeX" and "JSON" stay."""
    return phrase[0].lower() + phrase[1:] if phrase[1:2].islower() else phrase


_ANSWER_PARTS = re.compile(
    r"\b(?:intros?|introductions?|buzzwords?|acronyms?|caveats?|small talk|pleasantries|walls? of "
    r"text|code blocks?|emojis?|emoticons?|jargon|analog(?:y|ies)|metaphors?|disclaimers?|tables?|"
    r"headings?|bullet points?|bullets|lists?|paragraphs?|links?|citations?|exclamation marks?|"
    r"apolog(?:y|ies)|long answers?|long responses?|long replies|essays?|preambles?|summaries)\b",
    re.I)
# what an answer gives, beside its parts: "I just need the gist", "I don't need compliments",
# "numbered steps and a one-line summary"
_ANSWER_FORM = re.compile(
    _ANSWER_PARTS.pattern + r"|\b(?:gist|summary|short version|tl;?dr|key (?:steps|points|facts)|"
    r"(?:numbered |the )?steps|one[- ]liners?|one line|examples?|diagrams?|compliments?|praise|"
    r"flattery|lectures?|history|background|theory|the basics|explanations?|recaps?|details)\b",
    re.I)
# a kind of answer the user needs, said with a bare plural ("As a teacher, I need explanations I
# can reuse in class"; not "I need a recipe for tonight", "I need the steps for this one")
_NEED_KIND = re.compile(r"^(?:as an?\s+[\w -]{2,40},\s*)?i\s+(?:really\s+)?(?:need|want)\s+"
                        r"((?!(?:a|an|the|this|that|it|some|my|your)\b)\w+s\b"
                        r"(?!.*\b(?:this|that|these|those|it|the (?:first|second|third|last|other|"
                        r"above|previous|next))\b).*)$", re.I)
# what helps the user ("Diagrams help me a lot", "worked examples really help"): a bare noun
# phrase, not a reaction to the answer ("That helps", "Your example helped me")
_HELPS_ME = re.compile(r"^((?!(?:that|this|it|your|the|those|these)\b)[\w-]+(?:\s+[\w-]+){0,2}?)\s+"
                       r"(?:really\s+|always\s+)?(?:help|work best|work better)(?:\s+(?:for\s+)?me)?"
                       r"(?:\s+(?:a lot|the most|more))?$", re.I)
# how to speak to the user: "Write in British English", "Talk to me like a friend, not a textbook"
_MANNER = re.compile(r"^(?:always\s+)?(?:write|answer|reply|respond|talk|speak)\s+(?:to me\s+)?"
                     r"(?:in (?:british|american|plain|simple|formal|informal|casual)\b|like\s+an?\b)",
                     re.I)
# a need about the answer's form: "I just need the gist", "I don't need compliments" (not "I
# need a recipe for tonight": a request)
_NEED = re.compile(r"^i\s+(?:really\s+)?(just|only|don't|do not)\s+(?:really\s+)?(?:need|want)\s+"
                   r"(?:any\s+|all\s+)?(.+)$", re.I)


# a sentence that says the rest is how the user always wants it ("That's how I work best.")
_STANDING = re.compile(rf"^(?:{HOW_I_LIKE_IT})\b", re.I)


def said_generally(sent: str, message: str) -> bool:
    """Whether the user scoped this clause to every answer: a marker ("always", "from now
    on", ...) in the clause or its sentence, or a sentence of the message that is nothing but one
    ("Bullet points. Always."). A marker elsewhere in a long message ("my kids are always
    asking me ...") scopes nothing else."""
    clause = sent.strip(" .!?;").lower()
    return any(has_generality_marker(t) and (clause in t.lower() or len(t.split()) <= 4
                                             or _STANDING.match(t.strip(" .!;")))
               for t in [sent, *re.split(r"(?<=[.!?;])\s+|\n+", message)])


# what the user thinks of the answer just given ("I love this answer!"): praise, no preference
# ("I prefer your responses short", "I prefer that answers are short" are preferences)
_THIS_ANSWER = re.compile(r"^(?:(?:this|that)\s+(?:answer|response|reply|one|explanation|version)|"
                          r"(?:these|those)\s+(?:answers|responses|replies|explanations|versions))\b",
                          re.I)


def _sentence_preference(sent: str, message: str, reason: bool = False) -> Preference | None:
    """The preference one clause states (`reason`: it follows a lasting fact about the user,
    so it stands for every answer)."""
    scoped = said_generally(sent, message)
    sent = _TRAIL_SCOPE.sub("", _LEAD_SCOPE.sub("", sent))
    cond = None
    if not _LEAD_COND.match(sent) and (rest := _reason_split(sent)) is not None:
        sent, reason = rest, True
    elif (t := _TAIL_REASON.sub("", sent)) != sent and (_IMPERATIVE.match(t) or _NEG_START.match(t)):
        sent = t  # "Keep the tone light, I get anxious easily": the reason is no part of it
    if m := _LEAD_COND.match(sent):
        cond, sent = m.group(1), m.group(2)
    elif (m := _LEAD_TASK.match(sent)) and (named_task(m.group(2)) or m.group(2).lower().endswith("s")):
        cond, sent = f"{'in' if m.group(1).lower() == 'in' else 'for'} {m.group(2)}", m.group(3)
    # "it annoys me when you use emojis": what triggers a feeling, not the scope of a request
    # (a "me" before "when" is not enough: "Tell me when you are unsure" is scoped)
    elif (m := _TRAIL_COND.match(sent)) and not _ANNOYS_WHEN.match(_clean_clause(sent)):
        sent, cond = m.group(1), m.group(2)
    polite = bool(re.match(r"^(?:please|pls|kindly)\b", sent, re.I)) or bool(
        re.search(r"[, ]+(?:please|pls)$", sent, re.I)) or bool(  # "Please use X and keep Y"
        re.match(r"^(?:please|pls|kindly)\b", message, re.I) and not message.startswith(sent))
    sent = _clean_clause(_LEAD_SCOPE.sub("", _clean_clause(sent)))
    action = None
    if m := re.match(r"^i(?:'d| would) rather you (?:didn't|did not|don't)\s+(.+)$", sent, re.I):
        action = f"do not {m.group(1)}"
    elif (m := _ANNOYS_WHEN.match(sent) or _ANNOYS.match(sent) or _AGAIN_WITH.match(sent)
          or _HARD.match(sent)) and _ANSWER_PARTS.search(m.group(1)):
        action = f"avoid {_lower_first(m.group(1))}"
    elif (m := _EASIER.match(sent) or _HARD_WITHOUT.match(sent)) and _ANSWER_PARTS.search(m.group(1)):
        other = m.group(2) if m.lastindex and m.lastindex > 1 else None
        verb = "prefer" if m.re is _EASIER and not other else "use"
        action = f"{verb} {_lower_first(m.group(1))}" + (f" instead of {other}" if other else "")
    elif polite and (m := re.match(r"^without\s+(.+)$", sent, re.I)):  # "Without the small talk, please."
        action = f"skip {m.group(1)}"
    elif (m := re.match(r"^(?:you can|you may|feel free to|don't hesitate to)\s+(.+)$", sent, re.I)) and (
            re.match(r"(?:use|skip|go|assume)\b", m.group(1), re.I) or reason or scoped):
        action = m.group(1)  # a standing permission ("I'm learning Spanish, so feel free to add ...")
    elif m := _HELPS_ME.match(sent):  # "Diagrams help me a lot"
        action = f"use {_lower_first(m.group(1))}"
    elif _MANNER.match(sent):  # "Write in British English", "Talk to me like a friend"
        action, reason = sent, True
    elif (polite or scoped) and _STYLE_NP.match(sent) and not _IMPERATIVE.match(sent):
        action = "use " + re.sub(r"^always\s+", "", sent, flags=re.I)
    elif m := _NEG_START.match(sent):
        action = None if _NOT_PREFS.match(m.group(1)) else sent
    elif (m := _NEED.match(sent)) and _ANSWER_FORM.search(m.group(2)):
        what = m.group(2)
        action = f"do not give {what}" if m.group(1).lower() in ("don't", "do not") else f"keep it to {what}"
    elif (m := _NEED_KIND.match(sent)) and _ANSWER_FORM.match(m.group(1)):
        action, reason = f"give {m.group(1)}", True
    elif (m := _FIRST_PERSON.match(sent)) and not _THIS_ANSWER.match(m.group(2)):
        verb, rest = m.group(1).lower(), m.group(2)
        lead = sent[: len(sent) - len(rest)].lower()
        direct = bool(re.search(r"\b(?:when|if)\s+you\s+$|\bto\s+$|\byou\s+$", lead))
        if re.search(r"\bif\s+you\s+$", lead):  # "I'd love it if you added a summary"
            rest = _present(rest)
        if direct and (modal := re.match(r"(?:could|would|can|will)\s+(?:always\s+)?", rest, re.I)):
            rest = rest[modal.end():] if scoped else ""  # "... if you could help": a request
        if verb == "avoid":
            action = f"avoid {rest}"
        elif verb in ("don't like", "do not like", "hate", "dislike", "despise", "can't stand",
                      "cannot stand"):
            action = f"do not {rest}" if direct else f"avoid {rest}"
        elif rest:
            action = rest if direct else f"prefer {rest}"
    elif m := _EASIER_WHEN.match(sent):
        action = _present(m.group(1))
    elif (m := _NO_NEED.match(sent)) and (reason or scoped):  # "so you don't need to explain X"
        action = f"do not {m.group(1)}"
    elif (m := _WOULD_BE.match(sent)) and (reason or scoped or _ANSWER_FORM.search(m.group(1))):
        action = f"prefer {_lower_first(m.group(1))}"  # "Answers in German would be great"
    elif reason and _SHOULD.match(sent):  # "I work nights, so schedules should fit my sleep"
        action = sent
    elif reason and (m := _I_NEED.match(sent)):  # "As a wheelchair user, I need step-free routes"
        action = f"prefer {m.group(1)}"
    elif re.match(r"^always\s+", sent, re.I):
        action = sent[len("always") :].strip()
    elif m := _IMPERATIVE.match(sent):
        verb = m.group(1).lower()
        bare = (verb in _BARE_VERBS and message.lower().startswith(sent.lower()[:20])
                and not sent.lower().startswith("just"))  # "just use numpy for it": the moment's
        standing = verb not in _PROBLEM_VERBS or bool(cond and _ABOUT_USER.search(cond))
        if standing and m.group(2) and (cond or scoped or bare or reason
                                        or polite and verb in _STYLE_VERBS):
            action = sent
    if not action or len(action.split()) < 2 or len(action) > MAX_ACTION:
        return None
    if cond is None:  # what follows from a fact about the user, or is said of every answer,
        # stands as "general" (as an identity fact does), not as this answer's request
        cond = "general" if scoped or reason else UNSCOPED_CONDITION
    if len(action) > 1 and action[1].islower():
        action = action[0].lower() + action[1:]
    return Preference(condition=cond[:MAX_CONDITION], action=action, confidence=0.9)


_LIKES = re.compile(
    r"\b(?:prefer\w*|dislike\w*|aversion|averse|avoid\w*|despise|refuse|can't stand|cannot stand|"
    r"not (?:a )?(?:big )?fan|(?:not interested|no interest) in|allerg\w*|hat(?:e|es)|"
    r"lov(?:e|es)|enjoy\w*|appreciate|"
    r"vegan|vegetarian|only|never|strictly|uncomfortable|phobia|fear of|"
    r"(?:keep|bear) (?:that|this|it) in mind)\b", re.I
)
_SELF = re.compile(r"^(?:i|i'm|i've|i'd|my|as an?|due to|because|not (?:a )?(?:big )?fan)\b", re.I)
_ABOUT_THIS_ANSWER = re.compile(r"\b(?:this|that)\s+(?:answer|response|reply|explanation|version)\b",
                                re.I)  # "I love this answer!"
# a fact the user asks to be kept: "Remember that I'm training for a marathon."
_KEEP_FACT = re.compile(r"^(?:please\s+)?(?:remember|keep in mind|note|don't forget|do not forget)"
                        r"\s*(?:that\s+|:\s*)?((?:i|i'm|i've|my|we|we're|our)\b.{3,})$", re.I)
# what people say before a statement in passing ("By the way, I tend to avoid ...")
_LEAD_IN = re.compile(r"^(?:(?:by the way|btw|you know|anyway|anyways|honestly|actually|also|"
                      r"well|oh|to be honest|tbh|personally|frankly|and|but|plus)\s*,?\s+)+",
                      re.I)
MAX_STATED = 3  # quoted statements kept per message
# a request said politely, no taste: "I'd love it if you could help."
_ASKS_A_FAVOUR = re.compile(r"^i(?:'d| would)\s+(?:really\s+)?(?:love|like|appreciate)\s+it\s+if\s+you\s+"
                            r"(?:could|would|can)\b", re.I)


def stated_preferences(text: str, cards: list[Preference] | tuple[Preference, ...] = ()
                       ) -> list[Preference]:  # fmt: skip
    """Never lose the user's words: each first-person statement of taste that no card of the
    message (`cards`, from the extractor or the fast path) covers ("I'm a vegan and don't eat
    any animal products.", "By the way, I tend to avoid spicy food ...") is kept itself,
    quoted, as an unscoped note (at most `MAX_STATED`). A statement is covered when the cards'
    words (conditions and actions) hold half of its content words. Questions, feedback on the
    last answer (`is_feedback`: "No, that's not what I asked") and sentences without a
    like/dislike word yield nothing, and so does what the user pasted (`message_lines`: "As a
    Jew, I have never believed ..." in a quoted passage, "0. I only" in a quiz); a "no" inside a
    statement ("I have no interest in ...") does not make it feedback. The method's extractor
    over-extracts on purpose (recall first); reranking and the user vector filter what does
    not help."""
    text = str(text or "").replace("\u2019", "'")[:MAX_TURN_CHARS]
    if not text.strip() or is_feedback(text):
        return []
    own = "\n".join(line for line, pasted in message_lines(text) if not pasted)
    covered = set().union(*(content_words(f"{c.condition} {c.action}") for c in cards))
    out: list[Preference] = []
    for sent in sentences(own):
        said = _LEAD_IN.sub("", sent)
        if keep := _KEEP_FACT.match(said.rstrip(" .!")):
            said = keep.group(1)[:1].upper() + keep.group(1)[1:] + "."
        elif (sent.endswith("?") or not (_SELF.match(said) and _LIKES.search(said))
              or _ABOUT_THIS_ANSWER.search(said)
              or _ASKS_A_FAVOUR.match(said) and not has_generality_marker(said)):
            continue
        words = content_words(said)
        if 2 * len(words & covered) >= len(words):
            continue
        action = "keep in mind the user said: " + json.dumps(said[:200], ensure_ascii=False)
        out.append(Preference(condition=UNSCOPED_CONDITION, action=action[:MAX_ACTION],
                              confidence=0.5))
    return out[:MAX_STATED]
