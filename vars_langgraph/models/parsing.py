"""Robust parsing of extractor output into `Preference` objects.

`parse_preferences` never raises: small models emit fences, chatter around the JSON, truncated
output (max_tokens), wrong types and over-long fields. Whatever can be salvaged is kept.
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from langchain_core.utils.json import parse_partial_json

from vars_langgraph.types import MAX_ACTION, MAX_CONDITION, Preference

log = logging.getLogger(__name__)

MAX_INPUT_CHARS = 200_000  # longer model output is cut before parsing
MAX_ITEMS = 64  # an extractor turn never yields more than this many preferences
_RAW_DECODE_TRIES = 16
_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_-]*[ \t]*\r?\n?(.*?)(?:```|$)", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_CUT = "\ue000"  # marks where truncated output ended (a private-use character)
_BIDI = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def parse_preferences(text: str) -> list[Preference]:
    """Extractor output -> valid, deduplicated preferences; [] when nothing usable."""
    try:
        return _parse(text)
    except Exception as e:  # noqa: BLE001 - the contract is "never raises"
        log.warning("could not parse extractor output (%s: %s)", type(e).__name__, e)
        return []


def _parse(text: Any) -> list[Preference]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or not text.strip():
        return []
    text = text[:MAX_INPUT_CHARS]
    obj = load_json(text, _usable)
    if obj is None:
        return []
    return _dedupe(p for p in (_coerce(i) for i in _items(obj)[:MAX_ITEMS]) if p is not None)


# ---------------------------------------------------------------- locating the JSON


def load_json(text: str, usable: Callable[[Any], bool]) -> Any:
    """The first JSON value in an LLM's output that `usable` accepts, else None: the whole
    text, fenced blocks, the outermost braces/brackets, trailing commas dropped, a value with
    chatter around it, then truncated output closed after its last complete element. The one
    JSON-from-LLM parser (extractor output, the user simulator's and judge's replies)."""
    fenced = [m.group(1) for m in _FENCE.finditer(text)]
    candidates = [text, *fenced]
    for src in (text, *fenced):
        a, b = src.find("{"), src.rfind("}")
        if 0 <= a < b:
            candidates.append(src[a : b + 1])
        a, b = src.find("["), src.rfind("]")
        if 0 <= a < b:
            candidates.append(src[a : b + 1])
    for cand in candidates:
        for variant in (cand, _TRAILING_COMMA.sub(r"\1", cand)):
            obj = _try_json(variant)
            if usable(obj):
                return obj
    obj = _raw_decode_scan(text, usable)
    if usable(obj):
        return obj
    for src in (*fenced, text):
        obj = _close_truncated(src)
        if usable(obj):
            return obj
    return None


def _try_json(s: str) -> Any:
    try:
        return json.loads(s)
    except (ValueError, RecursionError):
        return None


def _usable(obj: Any) -> bool:
    if isinstance(obj, list):
        return True
    return isinstance(obj, dict) and ("preferences" in obj or _looks_like_item(obj))


def _looks_like_item(obj: Any) -> bool:
    return isinstance(obj, dict) and "condition" in obj and "action" in obj


def _raw_decode_scan(text: str, usable: Callable[[Any], bool]) -> Any:
    """Decode a JSON value starting at each of the first few `{`/`[` (text around it ignored)."""
    dec = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"[\[{]", text)][:_RAW_DECODE_TRIES]
    for i in starts:
        try:
            obj, _ = dec.raw_decode(text, i)
        except (ValueError, RecursionError):
            continue
        if usable(obj):
            return obj
    return None


def _close_truncated(text: str) -> Any:
    """Truncated JSON (from the first `{`/`[`) closed by langchain_core's `parse_partial_json`,
    keeping only what was complete: an array element the cut went through is dropped, as is an
    object member cut inside a string (a half-written note is never kept)."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        obj = parse_partial_json(text[start:] + _CUT)
    except (ValueError, RecursionError):
        return None
    return _complete(obj)[0]


def _complete(v: Any) -> tuple[Any, bool]:
    """(`v` without what the cut went through, whether the cut is inside `v`). A list drops
    its cut elements and is then complete; an object with a cut member is itself cut."""
    if isinstance(v, str):
        return v, _CUT in v
    if isinstance(v, list):
        done = [_complete(x) for x in v]
        return [x for x, cut in done if not cut], False
    if isinstance(v, dict):
        out: dict[str, Any] = {}
        was_cut = False
        for k, x in v.items():
            x, cut = _complete(x)
            if cut or _CUT in k:
                was_cut = True
            else:
                out[k] = x
        return out, was_cut
    return v, False


def _items(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        if "preferences" in obj:
            inner = obj["preferences"]
            if isinstance(inner, list):
                return inner
            return [inner] if isinstance(inner, dict) else []
        return [obj] if _looks_like_item(obj) else []
    if isinstance(obj, list):
        # a bare list of items, or a list holding one {"preferences": [...]} wrapper
        out: list[Any] = []
        for x in obj:
            out.extend(_items(x) if isinstance(x, dict) and "preferences" in x else [x])
        return out
    return []


# ---------------------------------------------------------------- coercing items


def _clean_text(v: Any, limit: int) -> str | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        v = str(v)
    if not isinstance(v, str):
        return None
    v = "".join(
        ch if unicodedata.category(ch) not in ("Cc", "Cs") else " " for ch in v.translate(_BIDI)
    )
    v = " ".join(v.split())
    if len(v) > limit:
        cut = v[:limit]
        space = cut.rfind(" ")
        v = (cut[:space] if space > limit * 3 // 4 else cut).rstrip(" ,;:")
    return v or None


def _confidence(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return 0.5
    if isinstance(v, str):
        s = v.strip().rstrip("%")
        try:
            v = float(s) / (100.0 if v.strip().endswith("%") else 1.0)
        except ValueError:
            return 0.5
    if not isinstance(v, int | float) or not math.isfinite(v):
        return 0.5
    if 1.0 < v <= 100.0:
        v = v / 100.0  # "85" meant as a percentage
    return min(1.0, max(0.0, float(v)))


def _coerce(item: Any) -> Preference | None:
    if not isinstance(item, dict):
        return None
    cond = _clean_text(item.get("condition"), MAX_CONDITION)
    act = _clean_text(item.get("action"), MAX_ACTION)
    if cond is None or act is None:
        return None
    try:
        return Preference(condition=cond, action=act, confidence=_confidence(item.get("confidence")))
    except ValueError:
        return None


def _dedupe(prefs: Any) -> list[Preference]:
    seen: dict[tuple[str, str], int] = {}
    out: list[Preference] = []
    for p in prefs:
        key = (p.condition.lower().rstrip(" ."), p.action.lower().rstrip(" ."))
        if key in seen:
            j = seen[key]
            if p.confidence > out[j].confidence:
                out[j] = out[j].model_copy(update={"confidence": p.confidence})
            continue
        seen[key] = len(out)
        out.append(p)
    return out
