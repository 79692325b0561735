"""The extractor's prompts, its output's JSON schema, and the dialogue window it reads.

Two prompts: "finetuned" is the exact system prompt the fine-tuned extractor
(`blackhao0426/pref-extractor-qwen3-0.6b-full-sft`) was trained with; "few_shot" teaches a small
instruct model (the CPU default Qwen2.5-Coder-0.5B) by worked examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vars_langgraph.types import MAX_ACTION, MAX_CONDITION

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


MAX_TURN_CHARS = 2000
WINDOW_TURNS = 6  # the dialogue window the extractor reads (the paper's)
MAX_NEW_TOKENS = 512  # the longest answer generated (a list of at most MAX_ITEMS_PER_TURN)


_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "ai": "assistant"}


def _turn(m: Any) -> tuple[str, str]:
    """(role, text) of a (role, text) pair or a LangChain message; role "" when unknown."""
    if isinstance(m, (tuple, list)) and len(m) == 2:
        role, text = m
        return _ROLES.get(str(role).lower(), ""), str(text or "")
    from vars_langgraph.state import message_text  # lazy: state imports the store

    role = m.get("role") or m.get("type") if isinstance(m, dict) else getattr(m, "type", "")
    return _ROLES.get(str(role or "").lower(), ""), message_text(m)


def dialogue_window(turns: Sequence[Any], window_turns: int = WINDOW_TURNS) -> list[tuple[str, str]]:
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
