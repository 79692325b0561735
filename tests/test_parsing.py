"""parse_preferences: whatever the extractor emits, a list of valid Preference objects."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from vars_langgraph.models.parsing import parse_preferences
from vars_langgraph.types import MAX_ACTION, MAX_CONDITION, Preference

ONE = '{"preferences": [{"condition": "writing code", "action": "use Python", "confidence": 0.9}]}'


def gists(prefs: list[Preference]) -> list[tuple[str, str]]:
    return [(p.condition, p.action) for p in prefs]


def test_plain_json():
    prefs = parse_preferences(ONE)
    assert gists(prefs) == [("writing code", "use Python")]
    assert prefs[0].confidence == 0.9


def test_empty_list_and_empty_text():
    assert parse_preferences('{"preferences": []}') == []
    assert parse_preferences("") == []
    assert parse_preferences("   \n") == []
    assert parse_preferences("no preferences here") == []


def test_code_fences():
    assert gists(parse_preferences(f"```json\n{ONE}\n```")) == [("writing code", "use Python")]
    assert gists(parse_preferences(f"Here you go:\n```\n{ONE}\n```\nDone.")) == [
        ("writing code", "use Python")
    ]
    assert gists(parse_preferences(f"```json\n{ONE}")) == [("writing code", "use Python")]


def test_text_around_json():
    text = f"Sure! The extracted preferences are: {ONE} Let me know if you need more."
    assert gists(parse_preferences(text)) == [("writing code", "use Python")]


def test_two_json_objects_first_usable_wins():
    text = '{"note": "thinking"} then {"preferences": [{"condition": "a", "action": "b"}]}'
    assert gists(parse_preferences(text)) == [("a", "b")]


def test_bare_list_and_single_item():
    assert gists(parse_preferences('[{"condition": "a", "action": "b"}]')) == [("a", "b")]
    assert gists(parse_preferences('{"condition": "a", "action": "b"}')) == [("a", "b")]
    assert gists(parse_preferences('{"preferences": {"condition": "a", "action": "b"}}')) == [
        ("a", "b")
    ]


def test_trailing_comma_is_tolerated():
    text = '{"preferences": [{"condition": "a", "action": "b", "confidence": 0.5},]}'
    assert gists(parse_preferences(text)) == [("a", "b")]


def test_truncated_output_keeps_complete_items():
    full = json.dumps(
        {
            "preferences": [
                {"condition": "writing code", "action": "use Python", "confidence": 0.9},
                {"condition": "explaining math", "action": "show every step", "confidence": 0.8},
            ]
        }
    )
    cut = full[: full.index("show every")]  # inside the second item's action string
    assert gists(parse_preferences(cut)) == [("writing code", "use Python")]
    half = full[: full.index("every")]  # the second action half-written ("show "): not kept
    assert gists(parse_preferences(half)) == [("writing code", "use Python")]
    assert gists(parse_preferences("[" + half)) == [("writing code", "use Python")]
    cut2 = full[: full.index("}") + 3]  # after the first item and a dangling comma
    assert gists(parse_preferences(cut2)) == [("writing code", "use Python")]
    assert parse_preferences('{"preferences": [{"condi') == []
    assert parse_preferences('{"preferences": [') == []


def test_wrong_types_are_dropped_or_coerced():
    items = [
        {"condition": 5, "action": "use tabs"},  # number -> text
        {"condition": None, "action": "x"},  # missing condition
        {"condition": ["a"], "action": "x"},  # list
        {"condition": "a", "action": {"nested": 1}},  # dict
        {"condition": "b", "action": "y", "confidence": "high"},  # unparseable -> default
        {"condition": "c", "action": "z", "confidence": True},  # bool -> default
        "just a string",
        42,
        None,
        {"condition": "", "action": "empty condition"},
        {"condition": "   ", "action": "blank condition"},
    ]
    prefs = parse_preferences(json.dumps({"preferences": items}))
    assert gists(prefs) == [("5", "use tabs"), ("b", "y"), ("c", "z")]
    assert [p.confidence for p in prefs] == [0.5, 0.5, 0.5]


def test_non_list_preferences_field():
    assert parse_preferences('{"preferences": "none"}') == []
    assert parse_preferences('{"preferences": null}') == []
    assert parse_preferences('"just a string"') == []
    assert parse_preferences("42") == []
    assert parse_preferences("null") == []


def test_confidence_is_clamped():
    items = [
        {"condition": "a", "action": "1", "confidence": 7.5},  # percent-like -> 0.075
        {"condition": "b", "action": "2", "confidence": -3},
        {"condition": "c", "action": "3", "confidence": 1e9},
        {"condition": "d", "action": "4", "confidence": "85%"},
        {"condition": "e", "action": "5", "confidence": "0.25"},
    ]
    prefs = parse_preferences(json.dumps({"preferences": items}))
    assert [p.confidence for p in prefs] == [0.075, 0.0, 1.0, 0.85, 0.25]
    nan = '{"preferences": [{"condition": "a", "action": "b", "confidence": NaN}]}'
    assert parse_preferences(nan)[0].confidence == 0.5


def test_over_long_fields_are_truncated_not_dropped():
    cond = "when " + "very " * 100 + "long"
    act = "do " + "x" * 1000
    prefs = parse_preferences(json.dumps({"preferences": [{"condition": cond, "action": act}]}))
    assert len(prefs) == 1
    assert 0 < len(prefs[0].condition) <= MAX_CONDITION
    assert 0 < len(prefs[0].action) <= MAX_ACTION
    assert prefs[0].condition.startswith("when very")


def test_hostile_strings_are_cleaned():
    items = [
        {"condition": "a\x00b\x1b[31m", "action": "c\u202eevil\u202c"},
        {"condition": "\ud800lone surrogate", "action": "ok"},
        {"condition": "<script>alert(1)</script>", "action": "'; DROP TABLE cards; --"},
    ]
    prefs = parse_preferences(json.dumps({"preferences": items}))
    assert len(prefs) == 3
    for p in prefs:
        text = p.condition + p.action
        assert not any(ord(ch) < 32 for ch in text)
        assert "\u202e" not in text
        text.encode("utf-8")  # no lone surrogates
    assert prefs[2].action == "'; DROP TABLE cards; --"  # kept verbatim as data


def test_dedupe_keeps_highest_confidence():
    items = [
        {"condition": "Writing code", "action": "use Python.", "confidence": 0.4},
        {"condition": "writing code", "action": "Use  Python", "confidence": 0.9},
        {"condition": "writing code", "action": "use Rust", "confidence": 0.3},
    ]
    prefs = parse_preferences(json.dumps({"preferences": items}))
    assert len(prefs) == 2
    assert prefs[0].confidence == 0.9


def test_huge_and_deep_inputs_do_not_raise():
    assert parse_preferences("[" * 100_000) == []
    assert parse_preferences("{" * 50_000 + "}" * 50_000) == []
    many = {"preferences": [{"condition": f"c{i}", "action": "a"} for i in range(1000)]}
    assert 0 < len(parse_preferences(json.dumps(many))) <= 64


def test_non_string_input():
    assert parse_preferences(None) == []  # type: ignore[arg-type]
    assert parse_preferences(b'{"preferences": []}') == []  # type: ignore[arg-type]
    assert gists(parse_preferences(ONE.encode())) == [("writing code", "use Python")]  # type: ignore[arg-type]


# ---------------------------------------------------------------- fuzz

_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=300)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
_item = st.fixed_dictionaries(
    {},
    optional={"condition": _json, "action": _json, "confidence": _json, "extra": _json},
)
_doc = st.one_of(
    st.builds(lambda items: json.dumps({"preferences": items}), st.lists(_item, max_size=6)),
    st.builds(json.dumps, _json),
)


def _check(out: object) -> None:
    assert isinstance(out, list)
    for p in out:
        assert isinstance(p, Preference)
        Preference.model_validate(p.model_dump())  # still valid
        assert 0.0 <= p.confidence <= 1.0
        assert 1 <= len(p.condition) <= MAX_CONDITION and 1 <= len(p.action) <= MAX_ACTION


@settings(max_examples=300, deadline=None)
@given(_doc, st.integers(min_value=0, max_value=400), st.sampled_from(["", "```json\n", "ok: "]))
def test_fuzz_structured_never_raises(doc: str, cut: int, prefix: str):
    _check(parse_preferences(doc))
    _check(parse_preferences(prefix + doc[: max(1, len(doc) - cut)]))  # truncated, wrapped


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=500))
def test_fuzz_arbitrary_text_never_raises(text: str):
    _check(parse_preferences(text))


def test_one_json_parser_serves_the_simulator_too():
    from vars_langgraph.models.parsing import load_json
    from vars_langgraph_eval.simulator import parse_json_object

    assert parse_json_object('Sure!\n```json\n{"draft": "x", "done": true,}\n```') == {
        "draft": "x", "done": True}
    assert parse_json_object("no json here") is None
    assert parse_json_object('[1, 2]') is None  # a list is not the object asked for
    assert load_json('reply: {"a": 1} (done)', lambda o: isinstance(o, dict)) == {"a": 1}
