"""Retrieval queries, profile corpora and per-task prompts, as the official LaMP code builds them.

Source: LaMP-Benchmark/LaMP `LaMP/prompts/{prompts,utils}.py` (spec in
`lamp_eval_and_prompts_spec.json`). Truncation follows the official token budgets; the token
counter is pluggable (`WordTokenizer` by default, `HFTokenizer` for FlanT5's exact counts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from vars_langgraph_eval.lamp.data import normalise_task

DEFAULT_MAX_LENGTH = 512  # the LaMP and ROPG papers' prompt budget (FlanT5 tokens)


# ---- retrieval query and corpus -------------------------------------------------------------

def extract_strings_between_quotes(s: str) -> list[str]:
    """Strings between successive pairs of double quotes (official helper)."""
    out, inside, cur = [], False, ""
    for ch in s:
        if ch == '"':
            if inside:
                out.append(cur)
                cur = ""
            inside = not inside
        elif inside:
            cur += ch
    return out


def extract_after(s: str, marker: str) -> str | None:
    """Text after the first `marker`, stripped; None when absent (official helpers)."""
    i = s.find(marker)
    return None if i == -1 else s[i + len(marker):].strip()


def add_string_after_title(original: str, to_add: str) -> str:
    """Insert ', and ' + to_add right after the first 'title' (LaMP-1)."""
    i = original.find("title")
    if i == -1:
        return original
    return original[: i + 5] + ", and " + to_add + original[i + 5:]


_QUERY_MARKER = {2: "description:", 3: "review:", 4: "article:", 5: "paper:", 6: ":", 7: ":"}


def retrieval_query(task: str, inp: str) -> str:
    """The retrieval query (LaMP-1: the two candidate titles; others: text after a marker).

    Where the official code would fail (marker or quotes missing), the whole input is used.
    """
    n = int(normalise_task(task)[-1])
    if n == 1:
        q = extract_strings_between_quotes(inp)
        return f"{q[1]} {q[2]}" if len(q) >= 3 else inp
    found = extract_after(inp, _QUERY_MARKER[n])
    return inp if found is None else found


def _doc(task_n: int, p: dict[str, Any]) -> str:
    if task_n in (1, 5):
        return f"{p.get('title', '')} {p.get('abstract', '')}"
    if task_n == 2:
        return f"{p.get('description', '')}"
    if task_n == 4:
        return f"{p.get('title', '')} {p.get('text', '')}"
    return f"{p.get('text', '')}"  # LaMP-3, 6, 7


def corpus(task: str, profile: Sequence[dict[str, Any]], use_date: bool = False) -> list[str]:
    """One retrieval document per profile item; `use_date` appends ' date: {date}' (ROPG)."""
    n = int(normalise_task(task)[-1])
    docs = [_doc(n, p) for p in profile]
    if use_date:
        docs = [f"{d} date: {p.get('date', '')}" for d, p in zip(docs, profile, strict=True)]
    return docs


# ---- tokenizers for the prompt budget ---------------------------------------------------------

class PromptBudgetError(ValueError):
    """Raised when an item cannot fit its token budget; the builder then retries with more."""


class Tokenizer(Protocol):
    """Counts tokens (special tokens included) and truncates text to a token budget."""

    def count(self, text: str) -> int: ...

    def truncate(self, text: str, max_length: int) -> tuple[str, int]:
        """(decoded text, its token count incl. special tokens), at most `max_length` tokens."""
        ...


class WordTokenizer:
    """Whitespace words plus one end-of-sequence token (T5 appends `</s>`): an approximation."""

    def count(self, text: str) -> int:
        return len(text.split()) + 1

    def truncate(self, text: str, max_length: int) -> tuple[str, int]:
        if max_length < 1:
            raise PromptBudgetError(f"token budget {max_length} < 1")
        words = text.split()[: max_length - 1]
        return " ".join(words), len(words) + 1


class HFTokenizer:
    """A Hugging Face tokenizer (e.g. a local FlanT5 copy) for the exact official counts."""

    def __init__(self, name_or_path: str):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(name_or_path)

    def count(self, text: str) -> int:
        return len(self.tok(text)["input_ids"])

    def truncate(self, text: str, max_length: int) -> tuple[str, int]:
        if max_length < 1:
            raise PromptBudgetError(f"token budget {max_length} < 1")
        try:
            ids = self.tok(text, max_length=max_length, truncation=True)["input_ids"]
        except Exception as e:  # tokenizers raise when specials do not fit
            raise PromptBudgetError(str(e)) from e
        return self.tok.decode(ids, skip_special_tokens=True), len(ids)


class NoTruncation:
    """Keeps every item whole (for long-context chat models)."""

    def count(self, text: str) -> int:
        return 0

    def truncate(self, text: str, max_length: int) -> tuple[str, int]:
        return text, 0


# ---- per-task prompts (PPEP per item, AIP to combine) -----------------------------------------

def _lamp1(inp: str, items: Sequence[dict], budget: int, tok: Tokenizer) -> str:
    per = (budget - 2 * (len(items) - 1)) // len(items)
    saved, parts = 0, []
    for p in items:
        text, n = tok.truncate(str(p["title"]), per + saved - 2)
        saved += per - n - 2
        parts.append(f'"{text}"')
    return add_string_after_title(inp, ", and ".join(parts))


# task -> (long field, PPEP(item, text), text used to count the fixed part, AIP suffix phrase
# whose length is reserved, AIP(joined, inp))
_Spec = tuple[str, Callable[[dict, str], str], Callable[[dict], str], str | None,
              Callable[[str, str], str]]
_SPECS: dict[int, _Spec] = {
    2: ("description", lambda p, t: f'the tag for the movie: "{t}" is "{p["tag"]}" ',
        lambda p: f'the tag for the movie: " " is "{p["tag"]}" ', None,
        lambda j, inp: f"{j}. {inp}"),
    3: ("text", lambda p, t: f'{p["score"]} is the score for "{t}" ',
        lambda p: f'{p["score"]} is the score for " " ', None,
        lambda j, inp: f"{j}. {inp}"),
    4: ("text", lambda p, t: f'"{p["title"]}" is the title for "{t}" ',
        lambda p: f'"{p["title"]}" is the title for " " ', None,
        lambda j, inp: f"{j}. {inp}"),
    5: ("abstract", lambda p, t: f'"{p["title"]}" is a title for "{t}" ',
        lambda p: f'"{p["title"]}" is a title " " ', "Following the given patterns",
        lambda j, inp: f"{j}. Following the given patterns {inp}"),
    6: ("text", lambda p, t: f'"{p["title"]}" is the title for "{t}" ',
        lambda p: f'"{p["title"]}" is the title for " " ', None,
        lambda j, inp: f"{j}. {inp}"),
    7: ("text", lambda p, t: f'"{t}" ', lambda p: '"" ',
        "are written by user. Following the given patterns",
        lambda j, inp: f"{j} are written by a person. Following the given patterns {inp}"),
}


def _pattern(n: int, inp: str, items: Sequence[dict], budget: int, tok: Tokenizer) -> str:
    field, ppep, fixed, suffix, aip = _SPECS[n]
    reserve = tok.count(suffix) if suffix else 0
    per = (budget - 1 - 2 * (len(items) - 1) - reserve) // len(items)
    saved, parts = 0, []
    for p in items:
        need = tok.count(fixed(p))
        text, used = tok.truncate(str(p[field]), per + saved - need)
        saved += per - used - need
        parts.append(ppep(p, text))
    return aip(", and ".join(parts), inp)


def build_prompt(
    task: str,
    inp: str,
    items: Sequence[dict[str, Any]],
    tokenizer: Tokenizer | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> str:
    """The personalised prompt for `inp` from the retrieved profile `items` (best first).

    No items: the input unchanged. The budget is max_length - min(len(input), 0.6 max_length);
    when an item cannot fit, the 0.6 factor drops by 0.1 and, below zero, the input is returned
    alone (all as in the official `create_prompt_generator`).
    """
    if not items:
        return inp
    n = int(normalise_task(task)[-1])
    tok = tokenizer or WordTokenizer()
    factor = 0.6
    while True:
        try:
            budget = max_length - min(tok.count(inp), int(factor * max_length))
            if n == 1:
                return _lamp1(inp, items, budget, tok)
            return _pattern(n, inp, items, budget, tok)
        except PromptBudgetError:
            factor -= 0.1
            if factor < 0:
                return inp
