"""MultiSessionCollab data: user profiles and problem sets, for any file of the same format.

A profiles file is a JSON list of objects with `persona` (str), `preferences` (list of str) and
optionally `categories` (list of str, one per preference) and `i` (an id). Each preference is
written as an instruction to a user simulator, usually "[When X,] you prefer Y. [details] Enforce
if Z." Nothing here knows which profiles are in the file: every preference is parsed by the same
rules into the parts the simulators need (the wish, its condition, details, the violation rule),
turned into the user's own first-person voice.

Which preferences apply to a problem (`applicable_preferences`): a preference has a *scope*, a
task kind (math, logic, medical, knowledge, code) or "all". The profiles' own conditions ("when
the agent provides an answer / is solving a problem") hold for every problem, so their scope is
"all" unless the condition names a task kind ("when writing code" -> code); on top of that a
seeded share of each user's preferences is scoped to one task kind the user works on
(`assign_scopes`), as real preferences are ("for math problems, show every step"). A scoped
preference is stated with its scope ("For math problems, I prefer ...") and applies only to
problems of that kind; a note carries it only where the note's own condition allows
(`note_scope`): a note "When writing code, use bullets." does not make the agent use bullets on a
math problem.

Split (`profile_split`): each profile falls into the tuning half or the report half by a hash
of its id (`sha256("vars-collab-split-v1:" + user_id)`, even -> tune, odd -> report), so any file
of the format splits the same way and a new profile falls into a half deterministically. On
the shared 80 profiles: 41 tune, 39 report.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SUBDIR = Path("data") / "multisessioncollab"

# ------------------------------------------------------------------------- text conversion

_PAREN = re.compile(r"\s*\((?:[^()]|\([^()]*\))*\)")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_RULE_START = re.compile(r"\b(?:Enforce|Consider this satisfied)\b")
_CORE = re.compile(
    r"^(?:(?P<cond>(?:when|if|while|whenever|for)\b[^,]{3,160}?)(?:,\s*|\s+(?=you\b|i\b)))?"
    r"(?P<who>you|i)\s+(?:strongly\s+|generally\s+|usually\s+)?"
    r"(?P<verb>prefer|like|want|expect|need)s?\s+(?P<want>.+?)[.!]?$",
    re.IGNORECASE,
)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(" ".join(text.split())) if s.strip()]


def strip_parentheticals(text: str) -> str:
    out = _PAREN.sub("", text)
    return " ".join(out.split()).replace(" ,", ",").replace(" .", ".")


def _third_person_s(verb: str) -> str:
    """'adds' -> 'add', 'does' -> 'do', 'provides' -> 'provide' (verb after 'you')."""
    low = verb.lower()
    irregular = {"is": "are", "was": "were", "has": "have", "does": "do", "doesn't": "don't"}
    if low in irregular:
        return irregular[low]
    if low.endswith("ies") and len(low) > 4:
        return verb[:-3] + "y"
    if re.search(r"(sh|ch|x|ss|z)es$", low):
        return verb[:-2]
    if low.endswith("s") and not low.endswith(("ss", "us", "is")) and len(low) > 3:
        return verb[:-1]
    return verb


_VERBISH_AFTER_YOU = re.compile(r"\byou ((?:\w+ly )?)(\w+n't|\w+)\b")
_NON_VERBS = {"responses", "always", "only", "unnecessarily", "this", "as", "its", "us"}


def user_voice(text: str) -> str:
    """A simulator instruction in the user's own words: 'you' (the user) -> I/my, and
    'the agent' -> you. 'You prefer the agent responses to be blunt' ->
    'I prefer your responses to be blunt'."""
    s = " " + text + " "
    # 1. the user: second person -> first person (placeholders so step 2 cannot touch them)
    s = re.sub(r"\byourself\b", "\x01myself", s, flags=re.I)
    s = re.sub(r"\byours\b", "\x01mine", s, flags=re.I)
    s = re.sub(r"\byour\b", "\x01my", s, flags=re.I)
    s = re.sub(r"\b(to|for|with|from|give|tell|help|show|ask|asks|let|lets) you\b",
               lambda m: f"{m.group(1)} \x01me", s, flags=re.I)
    s = re.sub(r"\byou\b", "\x01I", s, flags=re.I)
    # 2. the agent -> "you"
    s = re.sub(r"\b(each|every) (?:the )?agent (response|answer|reply)\b", r"\1 \2", s, flags=re.I)
    s = re.sub(r"\b(?:the |an )?agent's\b", "your", s, flags=re.I)
    s = re.sub(r"\b(?:the |an )?agent (responses|response|answers|answer|replies|reply)\b",
               lambda m: f"your {m.group(1)}", s, flags=re.I)
    s = re.sub(r"\b(?:the |an )?agent (\w+ed (?:responses|response|answers|answer))\b", r"\1", s,
               flags=re.I)
    s = re.sub(r"\b(?:the |an )?agent\b", "you", s, flags=re.I)

    def agree(m: re.Match[str]) -> str:
        adv, word = m.group(1), m.group(2)
        if word.lower() in _NON_VERBS:
            return m.group(0)
        return f"you {adv}{_third_person_s(word)}"

    s = _VERBISH_AFTER_YOU.sub(agree, s)
    s = s.replace("\x01", "")
    s = " ".join(s.split())
    return s[:1].upper() + s[1:] if s else s


def lower_first(s: str) -> str:
    if not s or s.startswith("I ") or s.startswith("I'"):
        return s
    return s[:1].lower() + s[1:]


def sentence(s: str) -> str:
    s = " ".join(s.split()).rstrip(" ,;:")
    if not s:
        return s
    s = s[:1].upper() + s[1:]
    return s if s[-1] in ".!?" else s + "."


# ------------------------------------------------------------------------------ task kinds

ALL_TASKS = "all"
# dataset name fragment -> task kind (first match wins)
DATASET_KINDS = (("math", "math"), ("logiqa", "logic"), ("logic", "logic"), ("medqa", "medical"),
                 ("med", "medical"), ("code", "code"), ("humaneval", "code"), ("mmlu", "knowledge"))
# how a user says a scope, and the words that mark a note's condition as that scope
SCOPE_PHRASES = {"math": "For math problems", "logic": "For logic puzzles",
                 "medical": "For medical questions", "knowledge": "For general-knowledge quizzes",
                 "code": "When writing code"}
SCOPE_WORDS = {
    "math": r"math\w*|algebra|geometry|equation|calculus|arithmetic",
    "logic": r"logic\w*|reasoning puzzle|puzzles?",
    "medical": r"medic\w*|clinical|patient|health",
    "knowledge": r"general[- ]knowledge|trivia|quiz\w*",
    "code": r"code|coding|program\w*|python|function|sql|script",
}
_SCOPE_RE = {k: re.compile(rf"\b(?:{v})\b", re.I) for k, v in SCOPE_WORDS.items()}


def task_kind(dataset: str) -> str:
    """'math-500' -> 'math', 'logiqa' -> 'logic', 'medqa' -> 'medical', 'mmlu' -> 'knowledge'."""
    low = dataset.lower()
    return next((k for frag, k in DATASET_KINDS if frag in low), "knowledge")


def text_scope(text: str | None) -> str:
    """The task kind a condition text names ('when writing code' -> 'code'), else 'all'."""
    if not text:
        return ALL_TASKS
    hits = [k for k, rx in _SCOPE_RE.items() if rx.search(text)]
    return hits[0] if len(hits) == 1 else ALL_TASKS


def note_scope(note: str) -> str:
    """The scope of a note "When X, Y." / "For X, Y." from its condition part X; 'all' for
    global notes ("In general, ...") and conditions that name no task kind."""
    m = re.match(r"^\s*((?:when|if|while|whenever|for|in)\b[^,]*),", note, re.I)
    return text_scope(m.group(1)) if m else ALL_TASKS


def scope_allows(scope: str, kind: str) -> bool:
    return scope in (ALL_TASKS, kind)


# ------------------------------------------------------------------------------ profiles


@dataclass
class PreferenceSpec:
    """One profile preference, parsed. All `*_fp` texts are in the user's first person."""

    index: int
    category: str
    text: str  # the raw profile text (the LLM simulator gets this)
    statement: str  # the part before the enforcement rule
    rule: str  # "Enforce if ..." (and "Consider this satisfied if ...")
    condition_fp: str | None  # "you are solving a problem or explaining a concept"
    want_fp: str  # "your responses structured in bullet-point format"
    verb: str  # prefer / like / want ...
    details_fp: list[str] = field(default_factory=list)  # further sentences of the statement
    dislike_fp: str | None = None  # the violation: "your response contains pleasantries"
    scope: str = ALL_TASKS  # a task kind (see TASK_KINDS) or "all"

    @property
    def key(self) -> str:
        return f"p{self.index}"

    @property
    def scope_phrase(self) -> str | None:
        return SCOPE_PHRASES.get(self.scope)

    def explicit(self, lead: str = "I prefer") -> str:
        """'When you are solving a problem, I prefer responses that state assumptions.'
        A lead with words before its "I ..." ("Again: I'd like") keeps them in front."""
        hits = list(re.finditer(r"\bI(?:'d| would)?\s+\w+$", lead))
        prefix, core = (lead[: hits[-1].start()], hits[-1].group(0)) if hits else ("", lead)
        body = f"{core} {self.want_fp}"
        if self.condition_fp:
            body = f"{self.condition_fp}, {body}"
        if self.scope_phrase:
            body = f"{self.scope_phrase}, {lower_first(body)}"
        if prefix:
            body = prefix + body[:1].lower() + body[1:] if not body.startswith("I") else prefix + body
        return sentence(body)

    def anchors(self) -> list[str]:
        """Texts that describe this preference (for matching notes against it)."""
        out = [self.explicit(), sentence(self.want_fp), *self.details_fp]
        if self.dislike_fp:
            out.append(sentence(f"Avoid this: {self.dislike_fp}"))
        return [a for a in out if a]


@dataclass
class UserProfile:
    user_id: str
    persona: str
    preferences: list[PreferenceSpec]
    raw: dict[str, Any]

    @property
    def preferences_text(self) -> str:
        return "\n".join(f"{i + 1}. {_scoped_text(p)}" for i, p in enumerate(self.preferences))


def _scoped_text(p: PreferenceSpec) -> str:
    if not p.scope_phrase:
        return p.text
    return f"({p.scope_phrase} only: enforce it only on such problems.) {p.text}"


def parse_preference(text: str, index: int = 0, category: str = "") -> PreferenceSpec:
    """Split a profile preference into statement / rule and the parts the user says."""
    text = " ".join(str(text).split())
    m = _RULE_START.search(text)
    statement, rule = (text[: m.start()].strip(), text[m.start():].strip()) if m else (text, "")
    sents = split_sentences(strip_parentheticals(statement)) or [statement]
    core_i = next((i for i, s in enumerate(sents) if re.search(r"\b(prefer|like|want)\b", s, re.I)),
                  0)
    core = sents[core_i]
    details = [s for i, s in enumerate(sents) if i != core_i]
    cm = _CORE.match(core.strip())
    if cm:
        cond = cm.group("cond")
        want = cm.group("want")
        verb = cm.group("verb").lower()
    else:  # an unusual wording: keep the whole sentence as the wish
        cond, want, verb = None, core.rstrip("."), "prefer"
    cond_fp = lower_first(user_voice(cond)) if cond else None
    want_fp = lower_first(user_voice(want)).rstrip(".")
    details_fp = [sentence(user_voice(d)) for d in details]
    dislike = None
    enforce = [s for s in split_sentences(strip_parentheticals(rule))
               if s.lower().startswith("enforce")]
    if enforce:
        body = enforce[-1]
        body = re.sub(r"^enforce\s+(?:only\s+)?(?:whenever|when|if|in case)?\s*", "", body,
                      flags=re.I).rstrip(". ")
        if body:
            dislike = lower_first(user_voice(body))
    return PreferenceSpec(index=index, category=category, text=text, statement=statement,
                          rule=rule, condition_fp=cond_fp, want_fp=want_fp, verb=verb,
                          details_fp=details_fp, dislike_fp=dislike)


def parse_profiles(data: Any, source: str = "<profiles>") -> list[UserProfile]:
    if isinstance(data, dict):  # {"users": [...]} or {id: profile}
        data = data.get("users") or data.get("profiles") or [
            {**v, "i": v.get("i", k)} for k, v in data.items() if isinstance(v, dict)]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{source}: expected a non-empty JSON list of user profiles")
    out: list[UserProfile] = []
    seen: set[str] = set()
    for n, raw in enumerate(data):
        if not isinstance(raw, dict):
            raise ValueError(f"{source}[{n}]: a profile must be an object")
        prefs = raw.get("preferences")
        if not isinstance(prefs, list) or not prefs or not all(isinstance(p, str) for p in prefs):
            raise ValueError(f"{source}[{n}]: 'preferences' must be a non-empty list of strings")
        cats = raw.get("categories") or []
        uid = f"u{raw.get('i', n)}"
        if uid in seen:
            uid = f"{uid}-{n}"
        seen.add(uid)
        specs = [parse_preference(p, j, str(cats[j]) if j < len(cats) else "")
                 for j, p in enumerate(prefs)]
        out.append(UserProfile(user_id=uid, persona=str(raw.get("persona", "")),
                               preferences=specs, raw=raw))
    return out


def load_profiles(path: str | os.PathLike) -> list[UserProfile]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"profiles file not found: {p}")
    return parse_profiles(json.loads(p.read_text()), str(p))


SPLIT_SALT = "vars-collab-split-v1"
SPLITS = ("tune", "report", "all")


def profile_split(user_id: str) -> str:
    """'tune' or 'report', fixed by a hash of the profile id (see module doc)."""
    h = int(hashlib.sha256(f"{SPLIT_SALT}:{user_id}".encode()).hexdigest(), 16)
    return "tune" if h % 2 == 0 else "report"


def filter_split(profiles: list[UserProfile], split: str) -> list[UserProfile]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    return list(profiles) if split == "all" else [p for p in profiles
                                                  if profile_split(p.user_id) == split]


def kind_weights(user_id: str, kinds: list[str], seed: int, primary: float = 0.5) -> dict[str, float]:
    """A user's mix of task kinds: one seeded primary kind with weight `primary`, the rest share
    the remainder equally (one kind: weight 1)."""
    kinds = sorted(set(kinds))
    if len(kinds) <= 1:
        return {k: 1.0 for k in kinds}
    main = random.Random(f"{seed}:{user_id}:kinds").choice(kinds)
    rest = (1.0 - primary) / (len(kinds) - 1)
    return {k: (primary if k == main else rest) for k in kinds}


def assign_scopes(profile: UserProfile, kinds: list[str], seed: int, p_scoped: float = 0.5,
                  primary: float = 0.5) -> UserProfile:
    """The profile with a scope on each preference: the kind its own condition names, else with
    probability `p_scoped` one task kind drawn from the user's mix, else 'all'. Seeded by
    (seed, user, preference)."""
    weights = kind_weights(profile.user_id, kinds, seed, primary)
    names, w = list(weights), list(weights.values())
    prefs = []
    for p in profile.preferences:
        scope = text_scope(p.condition_fp)
        rnd = random.Random(f"{seed}:{profile.user_id}:{p.key}:scope")
        if scope == ALL_TASKS and names and rnd.random() < p_scoped:
            scope = rnd.choices(names, weights=w)[0]
        prefs.append(replace(p, scope=scope))
    return replace(profile, preferences=prefs)


def applicable_preferences(profile: UserProfile, problem: Problem) -> list[PreferenceSpec]:
    """The preferences the user insists on for this problem: those whose scope allows its kind."""
    kind = task_kind(problem.dataset)
    return [p for p in profile.preferences if scope_allows(p.scope, kind)]


# ------------------------------------------------------------------------------ problems


@dataclass
class Problem:
    dataset: str
    split: str
    index: int
    problem: str
    solution: str = ""

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.split}/{self.index}"

    @property
    def kind(self) -> str:
        return task_kind(self.dataset)


TASK_DESCRIPTIONS = {
    "math": "You are trying to solve a math problem.",
    "logiqa": "You are trying to solve a logical reasoning multiple-choice question.",
    "medqa": "You are trying to answer a medical multiple-choice question.",
    "mmlu": "You are trying to answer a multiple-choice question.",
}


def task_description(dataset: str) -> str:
    for k, v in TASK_DESCRIPTIONS.items():
        if k in dataset.lower():
            return v
    return "You are trying to solve a problem."


def load_tasks(tasks_dir: str | os.PathLike, datasets: list[str] | None = None) -> list[Problem]:
    """Every `<dataset>/*.json` (a list of {"problem", "solution"}) under `tasks_dir`."""
    root = Path(tasks_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"tasks directory not found: {root}")
    out: list[Problem] = []
    names = sorted(d.name for d in root.iterdir() if d.is_dir())
    if datasets:
        missing = [d for d in datasets if d not in names]
        if missing:
            raise ValueError(f"unknown dataset(s) {missing} under {root}; found {names}")
        names = [n for n in names if n in datasets]
    for name in names:
        for f in sorted((root / name).glob("*.json")):
            data = json.loads(f.read_text())
            if not isinstance(data, list):
                raise ValueError(f"{f}: expected a JSON list of problems")
            split = f.stem.split("_")[0]
            for i, row in enumerate(data):
                if isinstance(row, dict) and str(row.get("problem", "")).strip():
                    out.append(Problem(name, split, i, str(row["problem"]).strip(),
                                       str(row.get("solution", ""))))
    if not out:
        raise ValueError(f"no problems found under {root}")
    return out


def default_data_dir() -> Path | None:
    """`<repo>/../shared/data/multisessioncollab` (or $VARS_SHARED_DIR/data/...) if present."""
    cands = []
    if os.environ.get("VARS_SHARED_DIR"):
        cands.append(Path(os.environ["VARS_SHARED_DIR"]) / SHARED_SUBDIR)
    cands += [REPO_ROOT.parent / "shared" / SHARED_SUBDIR, Path.cwd().parent / "shared" / SHARED_SUBDIR,
              Path.cwd() / "shared" / SHARED_SUBDIR]
    return next((c for c in cands if (c / "user_profiles.json").exists()), None)
