"""`eval prefeval`: the loader (on the shared data when present), users, the judge's accuracy rule,
and a tiny end-to-end run on synthetic files in PrefEval's format (real graph, SQLite, FAISS,
MiniLM; the scripted extractor stands in for the LLM one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SHARED
from vars_langgraph.types import CardSource
from vars_langgraph_eval import prefeval_data as pd
from vars_langgraph_eval.prefeval import Conversation, prefeval_main
from vars_langgraph_eval.prefeval_judge import Verdict, judge_answer, load_prompts, xml_tag

PREFEVAL = SHARED / "data" / "prefeval"

TOPICS = {
    "food": [("I prefer vegetarian restaurants, I never eat meat.",
              "Which steakhouse should I try in Chicago?"),
             ("I prefer quiet cafes without loud music.", "Where can I get coffee downtown?")],
    "travel": [("I prefer trains over planes because flying scares me.",
                "How should I get from Paris to Rome?"),
               ("I prefer hostels to keep my travel budget low.",
                "Which hotels are good in central Tokyo?")],
}
DISTRACTORS = [("Write a haiku about autumn leaves.", "Leaves fall, red and gold."),
               ("What is the capital of Peru?", "Lima."),
               ("Convert 5 miles to kilometres.", "About 8.05 km."),
               ("Explain what a hash map is.", "A hash map stores key-value pairs.")]


def write_prefeval(root: Path) -> Path:
    """A tiny PrefEval-format directory: 2 topics x 2 items, all three forms, 4 distractors."""
    for form, sub in pd.FORM_DIRS.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for topic, rows in TOPICS.items():
            out = []
            for pref, q in rows:
                row = {"preference": pref, "question": q, "explanation": "x"}
                if form == "implicit-persona":
                    row["persona"] = "a teacher"
                    row["conversation"] = {"0": {"user": "Hi, I'm planning my week.",
                                                 "assistant": "Happy to help."},
                                           "1": {"user": f"By the way, {pref}",
                                                 "assistant": "Noted."}}
                if form == "implicit-choice":
                    row["conversation"] = {"query": "Any ideas?", "assistant_options": "1. a 2. b",
                                           "user_selection": pref,
                                           "assistant_acknowledgment": "Got it."}
                out.append(row)
            (root / sub / f"{topic}.json").write_text(json.dumps(out))
    convs = [{"conversation": [m for u, a in DISTRACTORS for m in
                               ({"role": "user", "content": u}, {"role": "assistant", "content": a})]}]
    (root / pd.DISTRACTORS_FILE).write_text(json.dumps(convs))
    return root


# ------------------------------------------------------------------ data


@pytest.mark.skipif(not PREFEVAL.is_dir(), reason="../shared/data/prefeval not present")
def test_loader_reads_the_shared_data() -> None:
    topics = pd.list_topics(PREFEVAL)
    assert topics
    for topic in topics:
        forms = {f: pd.load_items(PREFEVAL, f, topic) for f in pd.FORMS}
        n = len(forms["explicit"])
        assert n and all(len(v) == n for v in forms.values())
        for a, b, c in zip(*forms.values(), strict=True):  # item i: one question in every form
            assert a.question == b.question == c.question
        assert all(len(it.turns) >= 2 for it in forms["implicit-persona"])
        assert all(len(it.turns) == 2 for it in forms["implicit-choice"])
    pairs = pd.load_distractors(PREFEVAL)
    assert len(pairs) >= 300 and all(u.strip() for u, _ in pairs)
    tune, report = pd.split_topics(topics)
    assert tune and report and not set(tune) & set(report) and sorted(tune + report) == topics


def test_split_is_fixed_by_names() -> None:
    names = [f"t{i}" for i in range(10)]
    a = pd.split_topics(names)
    assert a == pd.split_topics(list(reversed(names)))
    assert len(a[0]) == 4 and len(a[1]) == 6
    assert pd.split_topics(names, seed="other") != a


def test_users_draw_from_different_topics() -> None:
    pools = {"a": 5, "b": 5, "c": 2}
    users = pd.build_users(pools, n_users=3, prefs_per_user=6, seed=1)
    assert users == pd.build_users(pools, n_users=3, prefs_per_user=6, seed=1)
    for u in users:
        assert len(u.picks) == len(set(u.picks)) == 6
        assert {t for t, _ in u.picks[:3]} == {"a", "b", "c"}  # round-robin over topics
        assert all(0 <= i < pools[t] for t, i in u.picks)
    assert users != pd.build_users(pools, n_users=3, prefs_per_user=6, seed=2)
    with pytest.raises(ValueError, match="only 12 items"):
        pd.build_users(pools, n_users=1, prefs_per_user=13, seed=0)


def test_bad_item_is_a_clear_error(tmp_path: Path) -> None:
    root = write_prefeval(tmp_path)
    (root / "explicit_preference" / "food.json").write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(ValueError, match="item 0"):
        pd.load_items(root, "explicit", "food")


# ------------------------------------------------------------------ judge


def test_accuracy_rule_follows_prefeval() -> None:
    assert Verdict(True, False, False, True).follows
    assert Verdict(False, False, False, True).follows  # no violation, helpful
    assert not Verdict(True, False, True, True).follows  # inconsistent
    assert not Verdict(True, True, True, True).follows  # hallucinated preference, violation
    assert not Verdict(False, False, True, True).follows  # preference-unaware violation
    assert not Verdict(True, False, False, False).follows  # unhelpful


def test_judge_runs_the_four_checks_in_order() -> None:
    asked: list[str] = []
    answers = iter(["<preference>You avoid meat.</preference><answer>Yes</answer>",
                    "<explanation>same</explanation><answer>No</answer>",
                    "<explanation>ok</explanation><answer>No</answer>",
                    "<explanation>ok</explanation><answer>Yes</answer>"])

    def complete(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    v = judge_answer(complete, "I never eat meat.", "Which steakhouse?", "Try a vegan place.")
    assert (v.acknowledges, v.hallucinates, v.violates, v.helpful, v.follows) == \
        (True, False, False, True, True)
    assert v.restatement == "You avoid meat." and "You avoid meat." in asked[1]
    assert "Try a vegan place." in asked[0] and "I never eat meat." in asked[2]
    assert xml_tag("<answer>Yes", "answer") == "Yes" and xml_tag("nothing", "answer") == ""


def test_judge_prompts_from_a_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="check_violation.txt"):
        load_prompts(tmp_path)
    for f in ("check_acknowledge.txt", "check_hallucination.txt", "check_violation.txt",
              "check_helpful.txt"):
        (tmp_path / f).write_text(f"{f} {{question}}")
    assert load_prompts(tmp_path)["helpful"].startswith("check_helpful.txt")


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def embedder():
    from vars_langgraph.config import EmbeddingConfig
    from vars_langgraph.models.embedder import load_embedder

    return load_embedder(EmbeddingConfig())


def test_provenance_counts_only_the_statement_turns() -> None:
    card = type("C", (), {"sources": [CardSource(thread_id="u-main", turn=3)]})()
    assert Conversation._from(card, "u-main", {3})
    assert not Conversation._from(card, "u-main", {2, 4})
    assert not Conversation._from(card, "u-q00", {3})


def test_tiny_run_end_to_end(tmp_path: Path, embedder, capsys) -> None:
    data = write_prefeval(tmp_path / "pe")
    out = tmp_path / "out"
    rc = prefeval_main(["--data", str(data), "--topics", "all", "--form", "explicit,implicit-choice",
                        "--inter-turns", "0,4", "--users", "1", "--prefs-per-user", "4",
                        "--methods", "none,vars,all,lgstore", "--extractor", "scripted",
                        "--set", "prompt.history_turns=null",  # history limited by tokens only
                        "--out", str(out), "--no-progress"], embedder=embedder)
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert (out / "summary.md").read_text().count("| explicit |") == 9  # dense3 + 2 N x 4
    assert (out / "prefeval.png").stat().st_size > 0
    runs = {(r["form"], r["inter_turns"], r["method"]): r for r in res["runs"]}
    for form in ("explicit", "implicit-choice"):
        for n in (0, 4):
            none, vars_, all_, lg = (runs[(form, n, m)]["summary"]
                                     for m in ("none", "vars", "all", "lgstore"))
            assert none["card_in_prompt"] == 0 and none["memory_tokens"] == 0 and none["notes"] == 0
            assert none["in_history"] == 1  # short history: every statement fits the window
            assert vars_["coverage"] == 1  # "I prefer ..." statements all become cards
            assert 0 < vars_["card_in_prompt"] <= 1 and vars_["memory_tokens"] > 0
            assert all_["card_in_prompt"] == 1 and all_["notes"] >= vars_["notes"]
            assert lg["coverage"] is None and 0 < lg["card_in_prompt"] <= 1
            if n:
                assert vars_["new_cards_per_distractor_turn"] is not None
    assert res["extraction"]["cache_hits"] > 0  # the same windows were not extracted twice
    assert len(res["users"]) == 1 and len({t for t, _ in res["users"][0]["picks"]}) == 2


def test_history_trimming_drops_old_statements(tmp_path: Path, embedder) -> None:
    """With a context window smaller than the distractors, 'none' loses the statements."""
    data = write_prefeval(tmp_path / "pe")
    long = [{"conversation": [{"role": "user", "content": "Tell me a long story. " * 60},
                              {"role": "assistant", "content": "Once upon a time. " * 80}] * 4}]
    (data / pd.DISTRACTORS_FILE).write_text(json.dumps(long))
    out = tmp_path / "out"
    rc = prefeval_main(["--data", str(data), "--topics", "food", "--form", "explicit",
                        "--inter-turns", "0,4", "--users", "1", "--prefs-per-user", "2",
                        "--methods", "none", "--set", "prompt.max_context_tokens=1200",
                        "--set", "prompt.history_turns=null",
                        "--out", str(out), "--no-progress"], embedder=embedder)
    assert rc == 0
    runs = {r["inter_turns"]: r["summary"] for r in json.loads((out / "results.json").read_text())[
        "runs"] if r["method"] == "none"}
    assert runs[0]["in_history"] == 1 and runs[4]["in_history"] == 0


def test_history_counts_what_generate_keeps(tmp_path: Path, embedder) -> None:
    """prompt.history_turns = 2 keeps the question and one statement: half the items."""
    data = write_prefeval(tmp_path / "pe")
    out = tmp_path / "out"
    assert prefeval_main(["--data", str(data), "--topics", "food", "--form", "explicit",
                          "--inter-turns", "0", "--users", "1", "--prefs-per-user", "2",
                          "--methods", "none", "--set", "prompt.history_turns=2",
                          "--out", str(out), "--no-progress"], embedder=embedder) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["summary"]["in_history"] for r in runs if r["method"] == "none"] == [0.5]


def test_cli_errors_are_clear(tmp_path: Path, capsys) -> None:
    data = write_prefeval(tmp_path / "pe")
    assert prefeval_main(["--data", str(data), "--methods", "mem0"]) == 2
    assert "unknown form/method" in capsys.readouterr().err
    assert prefeval_main(["--data", str(data), "--topics", "nope"]) == 2
    assert prefeval_main(["--data", str(tmp_path / "missing")]) == 2
    assert prefeval_main(["--data", str(data), "--topics", "all", "--inter-turns", "9",
                          "--methods", "none", "--users", "1", "--prefs-per-user", "1",
                          "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "only 4 distractor turns" in capsys.readouterr().err


def test_cached_model_cards_go_through_todays_checks(tmp_path: Path) -> None:
    """`--extraction-cache` files keep checked model outputs; read back, they pass today's
    checks (a card read from a question is dropped), so a cached run equals a fresh one."""
    from vars_langgraph.types import Preference
    from vars_langgraph_eval.prefeval import CachingExtractor

    turns = [("user", "Should I take an advanced pottery course, or not? I love cats.")]
    stale = [Preference(condition="general", action="take an advanced pottery course"),
             Preference(condition="general", action="love cats")]
    path = tmp_path / "cache.json"
    path.write_text(json.dumps({json.dumps([f"{r}\x00{t}" for r, t in turns]):
                                [p.model_dump() for p in stale]}))

    class Builtin:
        with_rules = True

        def extract(self, turns):  # noqa: ANN001 - never called: the cache answers
            raise AssertionError("the cache should answer")

    class Own(Builtin):
        with_rules = False

    checked = CachingExtractor(Builtin(), path).extract(turns)
    assert [p.action for p in checked] == ["love cats"]
    assert len(CachingExtractor(Own(), path).extract(turns)) == 2  # an app's own: as cached
