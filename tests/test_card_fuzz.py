"""Hypothesis over the card schema (`types.Preference`, `PreferenceCard`) and `UserMemory`
round trips (put/list, export -> JSON -> import, forget) on the in-memory store and on real
SQLite files, including user ids that are hostile to namespaces and SQL LIKE patterns.
(The extractor-output parser has its own fuzz tests in tests/test_parsing.py; one property
here checks that whatever it returns is a valid card.)"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from langgraph.store.memory import InMemoryStore
from pydantic import ValidationError

from vars_langgraph import VARSConfig
from vars_langgraph.memory.store import InvalidUserId, UserMemory, canonical_vector, check_user_id
from vars_langgraph.models.parsing import parse_preferences
from vars_langgraph.storage import open_store
from vars_langgraph.types import MAX_ACTION, MAX_CONDITION, CardSource, Preference, PreferenceCard

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

texts = st.text(st.characters(codec="utf-8"), max_size=300)
user_ids = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    st.sampled_from(["a.b", "a%2Eb", "%", "%25", "_", "a_", "ab", "a%", "..", "%2E", "u'; DROP TABLE",
                     "用户", "a b", "\u202eevil"]),
)
floats = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=400, deadline=None)
@given(texts, texts, st.one_of(st.floats(), st.integers(), st.none()))
def test_preference_is_valid_or_refused(cond, act, conf):
    kwargs = {"condition": cond, "action": act}
    if conf is not None:
        kwargs["confidence"] = conf
    try:
        p = Preference(**kwargs)
    except ValidationError:
        clean_c, clean_a = " ".join(cond.split()), " ".join(act.split())
        assert (not clean_c or not clean_a or len(clean_c) > MAX_CONDITION or len(clean_a) > MAX_ACTION
                or not (isinstance(conf, int | float) and 0 <= conf <= 1 and not math.isnan(conf)))
        return
    assert 0.0 <= p.confidence <= 1.0
    assert 1 <= len(p.condition) <= MAX_CONDITION and 1 <= len(p.action) <= MAX_ACTION
    note = p.note
    assert note.endswith(".") and "\n" not in note and note == " ".join(note.split())
    assert len(note) <= MAX_CONDITION + MAX_ACTION + 16


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=60),
       st.floats(0, 1), st.lists(floats, max_size=8), texts)
def test_card_json_round_trip(cond, act, conf, emb, query):
    try:
        pref = Preference(condition=cond, action=act, confidence=conf)
    except ValidationError:
        return
    src = CardSource(thread_id=query[:20], turn=3, query=query)
    card = PreferenceCard.from_preference("u", pref, src, emb)
    again = PreferenceCard.model_validate(json.loads(json.dumps(card.model_dump(mode="json"))))
    assert again == card
    assert card.id == PreferenceCard.make_id("u", card.note) != PreferenceCard.make_id("v", card.note)
    assert "embedding" not in card.public()


@settings(max_examples=300, deadline=None)
@given(st.one_of(texts, st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                 st.recursive(st.one_of(st.none(), st.booleans(), floats, texts),
                              lambda c: st.one_of(st.lists(c, max_size=4),
                                                  st.dictionaries(st.sampled_from(
                                                      ["preferences", "condition", "action",
                                                       "confidence", "x"]), c, max_size=4)),
                              max_leaves=20).map(json.dumps)))
def test_parser_output_always_makes_valid_cards(text):
    for pref in parse_preferences(text):
        assert isinstance(pref, Preference)
        card = PreferenceCard.from_preference("u", pref, CardSource(), [0.0])
        assert "\n" not in card.note


def cards_for(user: str, notes: list[tuple[str, str, float]]) -> list[PreferenceCard]:
    out = {}
    for cond, act, conf in notes:
        try:
            pref = Preference(condition=cond, action=act, confidence=conf)
        except ValidationError:
            continue
        vec = canonical_vector([conf, -conf, 0.5]).tolist()  # stored as float16 (format 2)
        c = PreferenceCard.from_preference(user, pref, CardSource(query=act), vec)
        out[c.id] = c
    return list(out.values())


notes_st = st.lists(st.tuples(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40),
                              st.floats(0, 1)), max_size=5)


@pytest.fixture(scope="module")
def sqlite_memory(tmp_path_factory):
    cfg = VARSConfig(data_dir=str(tmp_path_factory.mktemp("fuzz")))
    return UserMemory(open_store(cfg))


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@FAST
@given(data=st.data())
def test_user_memory_round_trips_and_isolation(backend, sqlite_memory, data):
    memory = UserMemory(InMemoryStore()) if backend == "memory" else sqlite_memory
    a, b = data.draw(user_ids, "a"), data.draw(user_ids, "b")
    for uid in (a, b):
        if not _valid(uid):  # refused before anything is written
            with pytest.raises(InvalidUserId):
                memory.put_vector(uid, {})
            return
    assume(a != b)
    memory.forget_user(a)
    memory.forget_user(b)
    ca, cb = cards_for(a, data.draw(notes_st, "na")), cards_for(b, data.draw(notes_st, "nb"))
    va = {"z_long": data.draw(st.lists(floats, max_size=4)), "baseline": data.draw(floats)}
    memory.put_cards(a, ca)
    memory.put_cards(b, cb)
    memory.put_vector(a, va)
    memory.put_pending(a, "t1", {"query": "q"})

    def by_id(cards):
        return {c.id: c for c in cards}

    assert by_id(memory.list_cards(a)) == by_id(ca)
    assert by_id(memory.list_cards(b)) == by_id(cb)  # LIKE wildcards / dots never mix users
    assert memory.get_vector(a) == va and memory.get_vector(b) is None
    assert {a, b} <= set(memory.users())

    exported = json.loads(json.dumps(memory.export_user(a)))
    assert exported["user_id"] == a and set(exported["cards"]) == {c.id for c in ca}
    memory.forget_user(a)
    assert memory.list_cards(a) == [] and memory.get_vector(a) is None
    assert memory.get_pending(a, "t1") is None
    assert by_id(memory.list_cards(b)) == by_id(cb)  # forgetting a leaves b alone
    memory.import_user(exported)
    assert by_id(memory.list_cards(a)) == by_id(ca)
    assert memory.get_vector(a) == va and memory.get_pending(a, "t1") == {"query": "q"}
    memory.forget_user(a)
    memory.forget_user(b)


def _valid(uid: str) -> bool:
    try:
        check_user_id(uid)
        return True
    except InvalidUserId:
        return False
