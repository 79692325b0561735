"""generate: answer with the chat model (any BaseChatModel; default an OpenAI-compatible
server), then record the turn's choice as pending feedback for the next turn's reward."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately, trim_messages
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from vars_langgraph.config import PromptConfig
from vars_langgraph.engine import VARSEngine
from vars_langgraph.models.extraction import rules
from vars_langgraph.nodes.augment import HEADER, render_note_suffix
from vars_langgraph.nodes.retrieve import MAX_QUERY_CHARS
from vars_langgraph.state import VARSState, message_text, resolve_user_id, thread_id

log = logging.getLogger(__name__)


def recent_turns(history: list[AnyMessage], turns: int | None) -> list[AnyMessage]:
    """The messages from the `turns`-th last user message on (None or < 1: all)."""
    if not turns or turns < 1:
        return history
    starts = [i for i, m in enumerate(history) if getattr(m, "type", "") == "human"]
    return history[starts[-turns]:] if len(starts) > turns else history


def shorten(text: str, max_chars: int) -> str:
    """`text` cut at a word boundary to about `max_chars`, marked with an ellipsis."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(None, 1)[0] if " " in text[:max_chars] else text[:max_chars]
    return cut.rstrip(" ,;:") + " \u2026"


def prompt_messages(system_prompt: str, history: list[AnyMessage], max_tokens: int,
                    reserve: int, prompt: PromptConfig | None = None) -> list[BaseMessage]:
    """System prompt + history for the model: the last `prompt.history_turns` user turns, the
    earlier answers among them cut to `prompt.history_answer_chars` or, at 0, left out (a small
    model copies an earlier answer instead of answering), then trimmed oldest-first to fit."""
    budget = max(256, max_tokens - reserve - count_tokens_approximately([system_prompt]))
    history = [m for m in history if getattr(m, "type", "") != "system"]
    if prompt is not None:
        history = recent_turns(history, prompt.history_turns)
        cap = prompt.history_answer_chars
        if cap is not None:
            answers = [i for i, m in enumerate(history)
                       if getattr(m, "type", "") == "ai" and not getattr(m, "tool_calls", None)]
            for i in reversed(answers):  # 0: the earlier answers are left out, user turns kept
                if cap <= 0:
                    del history[i]
                else:
                    history[i] = AIMessage(shorten(message_text(history[i]), cap), id=history[i].id)
    kept = trim_messages(
        history, max_tokens=budget, token_counter=count_tokens_approximately,
        strategy="last", start_on="human", allow_partial=True,
    )
    last = history[-1] if history else None
    if last is not None and last.type == "human" and not (kept and kept[-1] is last):
        # the user's message alone is over budget: cut its text to fit, never drop it
        text, cap = message_text(last), budget * 3  # ~4 chars per token, with a margin
        if len(text) > cap:
            text = f"{text[: cap // 2]}\n[... cut to fit the context window ...]\n{text[-cap // 2:]}"
        kept = [HumanMessage(text)]
    return [SystemMessage(system_prompt), *kept]


# -- the model's context window -------------------------------------------------------------------
TEMPLATE_TOKENS = 16  # chat-template tokens per message (role markers, newlines), with a margin
CUT_MARK = "\n[... {n} characters cut here to fit the model's context window ...]\n"


def _server_root(model: Any) -> str | None:
    """The OpenAI-compatible server's root URL (no `/v1`) of a ChatOpenAI-like model."""
    base = getattr(model, "openai_api_base", None)
    if not isinstance(base, str) or not base.startswith(("http://", "https://")):
        return None
    base = base.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


def context_tokens(engine: VARSEngine) -> int:
    """The answering model's context size, read once per engine: the server's own `n_ctx`
    (llama.cpp `GET /props`), else the local llama.cpp server's `local_server.n_ctx` (the
    value it was started with), else `prompt.max_context_tokens` (other servers)."""
    cached = engine.server_facts.get("n_ctx")
    if cached is not None:
        return cached
    cfg = engine.config
    n = None
    root = _server_root(engine.chat_model)
    if root is not None:
        try:
            props = httpx.get(f"{root}/props", timeout=5).json()
            n = (props.get("default_generation_settings") or {}).get("n_ctx") or props.get("n_ctx")
        except Exception:  # noqa: BLE001 - not a llama.cpp server: the fallbacks below
            n = None
        if not isinstance(n, int) or n <= 0:
            from vars_langgraph.models.local_server import is_local_url

            n = cfg.local_server.n_ctx if is_local_url(root + "/v1") else None
    n = n or cfg.prompt.max_context_tokens
    engine.server_facts["n_ctx"] = n
    return n


def count_tokens(engine: VARSEngine, text: str) -> int:
    """Tokens of `text` by the answering server's tokenizer when it has an endpoint for it
    (llama-cpp-python `/extras/tokenize/count`, llama.cpp `/tokenize`), else an upper
    estimate (one token per 3 UTF-8 bytes, at least one per 4 characters)."""
    root = _server_root(engine.chat_model)
    how = engine.server_facts.get("tokenize", "?")
    if root is not None and how in ("?", "extras", "llamacpp"):
        for kind in (("extras", "llamacpp") if how == "?" else (how,)):
            try:
                if kind == "extras":
                    r = httpx.post(f"{root}/extras/tokenize/count", json={"input": text},
                                   timeout=30)
                    r.raise_for_status()
                    n = int(r.json()["count"])
                else:
                    r = httpx.post(f"{root}/tokenize", json={"content": text}, timeout=30)
                    r.raise_for_status()
                    n = len(r.json()["tokens"])
            except Exception:  # noqa: BLE001 - no tokenizer endpoint: try the next, then estimate
                continue
            engine.server_facts["tokenize"] = kind
            return n
        engine.server_facts["tokenize"] = None
    return max(len(text.encode("utf-8", "replace")) // 3, len(text) // 4) + 1


def fit_to_context(engine: VARSEngine, msgs: list[BaseMessage],
                   reserve: int) -> tuple[list[BaseMessage], dict[str, Any] | None]:
    """`msgs` (system, history, the user's message last) cut to what the model's context
    holds with `reserve` tokens left for the answer: earlier history first, then the
    message's middle (its head and tail kept, the cut marked in the text). Returns the
    messages and, when the message was cut, {"chars", "kept_chars", "tokens", "budget"}."""
    avail = context_tokens(engine) - reserve - TEMPLATE_TOKENS * len(msgs)
    texts = [message_text(m) for m in msgs]
    if sum(len(t.encode("utf-8")) for t in texts) <= avail:  # <= 1 token a byte: it fits
        return msgs, None
    n_all = count_tokens(engine, "\n".join(texts))  # one tokenizer call in the common case
    if n_all <= avail:
        return msgs, None
    last, text = msgs[-1], texts[-1]
    n = count_tokens(engine, text)
    room = avail - max(n_all - n, 0)
    if n <= room:
        return msgs, None
    if len(msgs) > 2:  # drop the history before cutting the message itself
        msgs = [msgs[0], last]
        avail = context_tokens(engine) - reserve - TEMPLATE_TOKENS * 2
        room = avail - count_tokens(engine, message_text(msgs[0]))
        if n <= room:
            return msgs, None
    room = max(room, 32)
    keep, cut = int(len(text) * room / n * 0.9), text
    for _ in range(8):
        half = max(keep // 2, 1)
        cut = text[:half] + CUT_MARK.format(n=len(text) - 2 * half) + text[-half:]
        if count_tokens(engine, cut) <= room:
            break
        keep = int(keep * 0.8)
    info = {"chars": len(text), "kept_chars": 2 * max(keep // 2, 1), "tokens": n, "budget": room}
    log.info("VARS: the user's message (%d tokens) cut to fit the model's context (%d)", n, room)
    return [*msgs[:-1], HumanMessage(cut, id=getattr(last, "id", None))], info


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w]+", " ", text.lower()).split()


def _grams(text: str, n: int = 3) -> list[tuple[str, ...]]:
    words = _words(text)
    n = min(n, len(words))
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)] if n else []


def copies(answer: str, sources: list[str], share: float = 0.6, min_words: int = 5,
           notes: Sequence[str] = ()) -> bool:
    """True when `share` of the answer's word 3-grams come from one of `sources` (an echo).
    An answer under `min_words` words is a copy only when it is a piece of one of `notes` (the
    0.5B answered "Hmm, that's way too much text." with '" vegetarian food, no meat."'); under
    three words ("OK.", "Yes, sure.") never. A short answer may repeat an earlier one ("Sure,
    I'll follow it." to a second preference)."""
    grams = _grams(answer)
    n_words = len(_words(answer))
    if n_words < 3:
        return False
    if n_words < min_words:
        sources, share = list(notes), 1.0
    for src in sources:
        have = set(_grams(src, min(3, len(grams[0]))))
        if have and sum(g in have for g in grams) / len(grams) >= share:
            return True
    return False


# the reply to a message that only states preferences when the model copied it twice (a 0.5B
# answered "I prefer answers in bullet points, and please keep them short." with its first half)
CONFIRMATION = "Noted, I'll keep that in mind."


def quotes_a_note(answer: str, notes: Sequence[str]) -> bool:
    """Whether the answer holds one of the notes whole (the 0.5B answered "I work night shifts,
    so never suggest morning routines." with '"Always" is followed by "In general, never suggest
    morning routines."'): an echo when the message only stated preferences."""
    said = " ".join(_words(answer))
    return any(len(w := _words(n)) >= 4 and f" {' '.join(w)} " in f" {said} " for n in notes)


def only_states(message: BaseMessage) -> bool:
    """Whether a user message states preferences (the rules read one) and asks nothing."""
    return rules.only_states(message_text(message))


ECHO_USER_CHARS = 300  # a longer message may be quoted in a good answer (code, a text to fix)
# an answer about the prompt instead of the question ("Based on the notes provided, ...",
# "follow the instructions provided in the user preferences"): the notes block's own words,
# which no answer needs unless the user asked about their notes or preferences
_ABOUT_NOTES = re.compile(
    r"\b(?:the|these|those|my|your|user's) (?:notes|preferences) (?:provided|given|above|that fit)\b"
    r"|\b(?:given|provided|stated) (?:notes|preferences)\b|\b(?:the )?user(?:'s)? (?:notes|preferences?)\b"
    r"|\bbased on the (?:notes|preferences)\b|\binstructions provided\b"
    r"|\b(?:user's|this user's) earlier conversations\b|\bfollow(?:ing)? (?:the|these|your) notes\b",
    re.I)
# a message about the notes themselves; "I prefer ..." states a preference, it does not ask
# about the notes (the 0.5B answered "I'm vegetarian and I prefer short answers" with "Based on
# the user's preferences, I will follow the notes ...")
_ASKS_ABOUT_NOTES = re.compile(r"\b(?:notes?|preferences?|instructions?)\b", re.I)


def about_the_notes(answer: str, question: str = "") -> bool:
    """True when the answer talks about the injected notes rather than answering (never when
    the user's own message is about notes, preferences or instructions)."""
    return bool(_ABOUT_NOTES.search(answer)) and not _ASKS_ABOUT_NOTES.search(question)


# what a standing exclusion rules out: a diet or a "no X" names a group of foods
_GROUPS = {
    "meat": "meat meats chicken beef pork bacon ham turkey lamb steak steaks sausage sausages "
            "meatball meatballs duck veal venison pepperoni prosciutto salami chorizo",
    "fish": "fish salmon tuna cod shrimp shrimps prawn prawns anchovy anchovies crab lobster "
            "seafood sardines mackerel",
    "dairy": "dairy milk cheese butter yogurt yoghurt cream parmesan mozzarella",
    "eggs": "egg eggs",
    "nuts": "nut nuts peanut peanuts almond almonds walnut walnuts cashew cashews pecan pecans "
            "hazelnut hazelnuts pistachio pistachios",
    "gluten": "gluten wheat flour bread pasta barley",
    "pork": "pork bacon ham prosciutto pepperoni salami chorizo",
    "alcohol": "alcohol wine beer vodka rum whiskey",
}
_DIETS = {"vegetarian": ("meat", "fish"), "vegan": ("meat", "fish", "dairy", "eggs"),
          "pescatarian": ("meat",), "halal": ("pork", "alcohol"), "kosher": ("pork",)}
_GROUP_OF = {"meat": "meat", "meats": "meat", "fish": "fish", "seafood": "fish",
             "dairy": "dairy", "milk": "dairy", "egg": "eggs", "eggs": "eggs", "nut": "nuts",
             "nuts": "nuts", "peanut": "nuts", "peanuts": "nuts", "gluten": "gluten",
             "pork": "pork", "alcohol": "alcohol"}
_EXCLUDE = re.compile(r"\b(?:no|without|avoid|allergic to|intolerant to|"
                      r"(?:don't|do not|doesn't|can't|cannot) (?:eat|use|include|suggest|drink))"
                      r"\s+(?:any\s+)?([a-z][a-z-]{2,})", re.I)
_NOT_A_THING = frozenset({
    "more", "less", "longer", "shorter", "other", "extra", "further", "need", "matter", "problem",
    "worries", "idea", "way", "one", "than", "such", "much", "many", "big", "long", "small",
    "fluff", "filler"})
_NEGATED = re.compile(r"\b(?:no|without|instead of|free|skip|replace|swap|not|avoid)\W+"
                      r"(?:\w+\W+){0,2}$", re.I)


def excluded_terms(notes: list[str]) -> set[str]:
    """The words an answer must not suggest under these notes: a diet's food groups
    ("vegetarian": meat and fish), a named group ("no dairy"), or the word itself ("no
    mushrooms", "allergic to kiwi"). Notes about the answer's form ("no jargon") give words
    that a good answer does not use either."""
    out: set[str] = set()
    for note in notes:
        low = note.lower()
        for diet, groups in _DIETS.items():
            if re.search(rf"\b{diet}\b", low) and not re.search(rf"\bnot? (?:a )?{diet}\b", low):
                out.update(w for g in groups for w in _GROUPS[g].split())
        for m in _EXCLUDE.finditer(low):
            word = m.group(1)
            if word in _NOT_A_THING:
                continue
            group = _GROUP_OF.get(word)
            out.update(_GROUPS[group].split() if group else {word, word.rstrip("s")})
    return out


def breaks_exclusion(answer: str, notes: list[str]) -> list[str]:
    """The excluded words (see `excluded_terms`) the answer names, other than in a negation
    ("no chicken", "instead of beef", "meat-free")."""
    terms = excluded_terms(notes)
    if not terms:
        return []
    found = []
    for m in re.finditer(r"[a-z]+(?:-[a-z]+)*", answer.lower()):
        word = m.group(0)
        if word not in terms or _NEGATED.search(answer[max(0, m.start() - 40):m.start()]):
            continue
        after = answer[m.end():m.end() + 6].lower()
        if after.startswith(("-free", " free", "less", "-less")):
            continue
        found.append(word)
    return found


def echo_sources(state: Mapping[str, Any]) -> list[str]:
    """What an answer must not copy: the injected notes, one by one and together (the 0.5B
    answered a statement with two notes run together), the notes' header, earlier answers,
    and the user's latest message when it is short."""
    notes = [c.get("note", "") for c in state.get("selected", [])]
    msgs = state.get("messages", [])
    earlier = [message_text(m) for m in msgs[:-1] if getattr(m, "type", "") == "ai"]
    last = message_text(msgs[-1]) if msgs and getattr(msgs[-1], "type", "") == "human" else ""
    user = [last] if 0 < len(last) <= ECHO_USER_CHARS else []
    block = [" ".join(notes)] if len(notes) > 1 else []
    return notes + block + ([HEADER] if notes else []) + earlier + user


def pending_record(engine: VARSEngine, state: Mapping[str, Any], answer: str) -> dict[str, Any]:
    """What update needs when the user's next message arrives (stored, not kept in memory):
    every candidate's pi, whether the policy chose it and in which draw (global cards too)."""
    query = state.get("query", "")
    selected = [c for c in state.get("selected", []) if c.get("chosen")]
    dense = [c["dense"] for c in state.get("selected", []) if c.get("dense") is not None]
    return {
        "query": query[:2000],
        "query_embedding": engine.embed_query(query[:MAX_QUERY_CHARS]).astype(float).tolist(),
        "answer": answer[:2000],
        # rank: the draw order, which the sequence gradient reads (update.chosen_in_order)
        "candidates": [{"id": c["id"], "pi": c.get("pi", 0.0), "chosen": bool(c.get("chosen")),
                        "rank": c.get("rank"), "rerank": c.get("rerank")}
                       for c in state.get("candidates", [])],
        "selected_ids": [c["id"] for c in state.get("selected", [])],
        "policy_selected": len(selected),
        "sim_notes_query": max(dense) if dense else 0.0,
        "created_at": time.time(),
    }


def make_generate(engine: VARSEngine):
    cfg = engine.config

    def generate(state: VARSState, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        user_id = resolve_user_id(runtime, config)
        selected = state.get("selected", [])
        # the notes after the user's message (`prompt.notes_in: message`) or in the system prompt
        suffix = render_note_suffix(selected) if cfg.prompt.notes_in == "message" else ""
        system = cfg.prompt.base_system if suffix else (
            state.get("system_prompt") or cfg.prompt.base_system)
        n_ctx = context_tokens(engine)
        msgs = prompt_messages(system, state.get("messages", []), n_ctx, cfg.llm.max_tokens,
                               cfg.prompt)
        msgs, cut = fit_to_context(engine, msgs, cfg.llm.max_tokens + len(suffix) // 3 + 1)
        plain = msgs[-1]
        if suffix and plain.type == "human":
            msgs = [*msgs[:-1], HumanMessage(message_text(plain) + suffix, id=plain.id)]
        reply = engine.chat_model.invoke(msgs, config)
        text = message_text(reply)
        notes = [c.get("note", "") for c in selected]
        sources = echo_sources(state)
        if cfg.prompt.retry_on_echo and (copies(text, sources, notes=notes) or (
                selected and about_the_notes(text, message_text(plain))) or (
                quotes_a_note(text, notes) and only_states(plain))):
            # a small model copied a note, the notes' header, an earlier answer or the user's
            # own short message, or talked about the notes: ask once more with the latest
            # message alone and no notes
            log.debug("answer copied its prompt; asking again")
            reply = engine.chat_model.invoke([SystemMessage(cfg.prompt.base_system), plain], config)
            if copies(message_text(reply), sources, notes=notes) and only_states(plain):
                # copied twice, and the message only stated preferences: confirm instead
                reply = AIMessage(CONFIRMATION)  # a new id: streamed as a message of its own
        broken = breaks_exclusion(message_text(reply), notes) if cfg.prompt.retry_on_echo else []
        if broken:
            # the answer suggests what an injected note rules out ("I'm vegetarian" and a
            # chicken dish): ask once more with the note beside the question; the second answer
            # is the one kept (a streamed chat shows it last, as with the echo retry)
            log.debug("answer names excluded %s; asking again", broken)
            reminders = [n for n in notes if excluded_terms([n])]
            reply = engine.chat_model.invoke([*msgs[:-1], HumanMessage(
                f"{message_text(msgs[-1])}\n\n(Keep in mind: {' '.join(reminders)})")], config)
            if copies(message_text(reply), [*sources, *reminders], notes=notes):
                # it gave the reminder back (seen on the 0.5B): once more, with the conversation
                # (a follow-up needs it) but no notes to copy, and what to leave out
                leave_out = ", ".join(dict.fromkeys(broken))
                history = [m for m in msgs[:-1] if m.type != "system"]
                reply = engine.chat_model.invoke([
                    SystemMessage(cfg.prompt.base_system), *history,
                    HumanMessage(f"{message_text(plain)}\n\n(Answer without {leave_out}.)")], config)
        if state.get("query", "").strip():
            try:
                engine.memory.put_pending(user_id, thread_id(config),
                                          pending_record(engine, state, message_text(reply)))
            except Exception as e:  # memory side failed after the answer exists
                if not cfg.fail_open:
                    raise
                log.warning("VARS could not record feedback for the next turn: %r", e)
        return {"messages": [reply], "input_cut": cut}

    return generate
