"""The multi-session benchmark (`eval collab`): profile parsing for any file of the format, the
tune/report split, scoped (conditional) preferences, the extractor noise model, the scripted
user, the scripted extractor, the LLM user's protocol (the benchmark's own prompt), store
isolation between methods, and a small end-to-end run on the real stack (SQLite, FAISS, MiniLM)
that checks results.json and the plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED
from vars_langgraph.learning import reward as rw
from vars_langgraph.types import CardSource, Preference
from vars_langgraph_eval.collab import (
    Problem,
    applicable_preferences,
    assign_scopes,
    filter_split,
    load_profiles,
    load_tasks,
    note_scope,
    parse_preference,
    parse_profiles,
    profile_split,
    scope_allows,
    task_kind,
    user_voice,
)
from vars_langgraph_eval.runner import (
    METHODS,
    MethodRunner,
    RunSettings,
    assign_problems,
    build_parser,
    collab_main,
    settings_from_args,
)
from vars_langgraph_eval.simulator import (
    CLOSINGS,
    DEFAULT_CONDITION,
    ENFORCE_OPENERS,
    FOLLOWUPS,
    POOLS,
    ExtractionNoise,
    LLMSimulator,
    PreferenceMatcher,
    ScriptedExtractor,
    ScriptedSimulator,
    enforcement,
    extraction_error_rates,
    intro_statement,
    load_user_prompt,
)

USER_PROMPT = SHARED / "data" / "multisessioncollab" / "prompts" / \
    "user_system_prompt_profile_with_preferences.txt"

# Profiles in the benchmark's format but unlike the shipped ones: nothing may depend on content.
PROFILES = [
    {"i": 7, "persona": "A beekeeper who writes a weekly newsletter",
     "categories": ["language", "length", "format"],
     "preferences": [
         "You prefer the agent to answer in plain language without jargon. Enforce if the "
         "response uses technical jargon without explaining it.",
         "When the agent explains a result, you prefer answers that begin with the final "
         "number. Enforce if the final number is not in the first sentence.",
         "You prefer the agent responses to include a small table. Consider this satisfied if "
         "there is any table. Enforce only if the response contains no table at all."]},
    {"i": 11, "persona": "A night-shift nurse studying statistics",
     "categories": ["tone", "format", "proactivity"],
     "preferences": [
         "You prefer the agent responses to be warm and encouraging. Enforce if the agent "
         "response is cold or curt (e.g. 'Wrong.').",
         "You prefer the agent structured responses that have bold key terms. Enforce if no "
         "key term is in bold.",
         "You prefer the agent to end with one practice question. Enforce whenever the agent "
         "gives an answer without a practice question."]},
]
PROBLEMS = {
    "arith": [{"problem": "Compute 17 times 23. Express your answer as an integer.",
               "solution": "391"},
              {"problem": "What is the sum of the first ten odd numbers?", "solution": "100"}],
    "quiz": [{"problem": "Which gas do plants absorb for photosynthesis?\nChoices:\n0. O2\n1. CO2",
              "solution": "CO2"},
             {"problem": "Find the median of 3, 9, 4, 1 and 8.", "solution": "4"}],
}


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    prof = tmp_path / "profiles.json"
    prof.write_text(json.dumps(PROFILES))
    tasks = tmp_path / "tasks"
    for name, rows in PROBLEMS.items():
        (tasks / name).mkdir(parents=True)
        (tasks / name / "testset_size2_seed1.json").write_text(json.dumps(rows))
    return prof, tasks


def test_preferences_parse_into_the_users_own_voice():
    p = parse_preference(PROFILES[0]["preferences"][1], 1, "length")
    assert p.condition_fp == "when you explain a result"
    assert p.want_fp == "answers that begin with the final number"
    assert p.explicit() == ("When you explain a result, I prefer answers that begin with the "
                            "final number.")
    assert p.explicit("Again: I'd like").startswith("Again: when you explain a result, I'd like")
    assert p.dislike_fp == "the final number is not in the first sentence"
    q = parse_preference(PROFILES[1]["preferences"][0])
    assert q.explicit() == "I prefer your responses to be warm and encouraging."
    assert q.dislike_fp == "your response is cold or curt"  # parenthetical examples dropped
    r = parse_preference(PROFILES[1]["preferences"][2])
    assert r.dislike_fp == "you give an answer without a practice question"
    assert user_voice("the agent adds suggestions to your request") == \
        "You add suggestions to my request"


def test_any_file_of_the_format_loads_and_bad_files_are_named(tmp_path: Path):
    users = parse_profiles(PROFILES)
    assert [u.user_id for u in users] == ["u7", "u11"]
    assert all(len(u.preferences) == 3 for u in users)
    with pytest.raises(ValueError, match="preferences"):
        parse_profiles([{"persona": "x", "preferences": []}])
    rc = collab_main(["--profiles", str(tmp_path / "missing.json"), "--out", str(tmp_path)])
    assert rc == 2


def test_scripted_user_speaks_like_a_person_and_is_deterministic(data):
    prof, tasks = data
    users = parse_profiles(json.loads(prof.read_text()))
    problems = load_tasks(tasks)
    sim = ScriptedSimulator(seed=3)
    plan = sim.plan(users[0])
    assert sorted(plan["order"]) == ["p0", "p1", "p2"]
    first = [k for k, v in plan["intro"].items() if v and v[0] == 0]
    assert first, "at least one preference is stated in the first session"
    a = sim.start_session(users[0], problems[0], 0)
    b = ScriptedSimulator(seed=3).start_session(users[0], problems[0], 0)
    ma, mb = a.opening(), b.opening()
    assert ma.text == mb.text and problems[0].problem in ma.text and ma.problem_words > 0
    # nothing carried: the user enforces one preference per turn, never one already said
    seen = set(ma.stated)
    while True:
        m = a.react(set())
        if m.kind != "enforce":
            break
        assert len(m.stated) == 1 and m.stated[0] not in seen
        seen.update(m.stated)
    assert seen == {"p0", "p1", "p2"}
    # everything carried by the prompt: no enforcement
    c = sim.start_session(users[0], problems[1], 5)
    c.opening()
    assert c.react({"p0", "p1", "p2"}).kind in ("followup", "close")


def test_keyword_pool_cues_drive_the_keyword_reward():
    """The first phrasing (pool "keyword") complains and thanks in the keyword reward's words; the
    natural pools share none (tests/test_simulator_pools.py)."""
    kw = POOLS["keyword"]
    for text in kw.openers:
        assert rw.has_negative_cue(text), text
    for text in (*kw.followups, *kw.closings):
        assert not rw.has_negative_cue(text) and rw.has_positive_cue(text), text
    for text in (*ENFORCE_OPENERS, *FOLLOWUPS, *CLOSINGS):  # the default (report) pool
        assert not rw.has_negative_cue(text) and not rw.has_positive_cue(text), text
    p = parse_profiles(PROFILES)[0].preferences[2]
    import random

    for seed in range(20):
        assert rw.keyword_reward(enforcement(p, random.Random(seed), kw), 0.5) == -1.0


def test_scripted_extractor_reads_statements_misses_implicit_and_over_extracts():
    import random

    ex = ScriptedExtractor()
    p = parse_profiles(PROFILES)[0].preferences[1]
    cards = ex.extract([("user", intro_statement(p, random.Random(0), implicit=False))])
    assert len(cards) == 1
    assert cards[0].condition.startswith("when the assistant explain")
    assert "final number" in cards[0].action and cards[0].confidence == 0.9
    assert not cards[0].is_global
    assert ex.extract([("user", intro_statement(p, random.Random(0), implicit=True))]) == []
    noisy = ex.extract([("user", "Compute 17 times 23. Express your answer as an integer.")])
    assert any("Express your answer" in c.action for c in noisy)
    assert ex.extract([("assistant", "I prefer tea")]) == []


def test_llm_user_protocol_maps_json_to_turn_kinds(data):
    prof, tasks = data
    user = parse_profiles(json.loads(prof.read_text()))[1]
    problem = load_tasks(tasks)[0]
    replies = iter([
        '{"enforce_preferences": false, "should_terminate": false, "response": "Help me multiply"}',
        'Sure: {"enforce_preferences": true, "should_terminate": false, '
        '"response": "No, please be warmer."}',
        "not json at all {",  # unusable: retried
        '{"enforce_preferences": false, "should_terminate": true, "response": "Thanks! TERMINATE"}',
    ])
    seen: list[list[dict]] = []

    def complete(messages):
        seen.append(messages)
        return next(replies)

    if not USER_PROMPT.exists():
        pytest.skip(f"benchmark prompt not found: {USER_PROMPT}")
    s = LLMSimulator(complete, prompt=load_user_prompt(USER_PROMPT)).start_session(user, problem, 0)
    assert s.opening().kind == "open"
    system = seen[0][0]["content"]
    assert "warm and encouraging" in system and problem.problem in system
    assert system.startswith("You are a user simulator collaborating with an agent")
    assert "TERMINATE" in system and "{" not in system.split("# Output Format:")[0]
    assert seen[0][1] == {"role": "user", "content": "How can I help you?"}
    m = s.react(set(), "17 x 23 = 391.")
    assert (m.kind, m.text) == ("enforce", "No, please be warmer.")
    m = s.react(set(), "Great question! 391.")
    assert (m.kind, m.text) == ("close", "Thanks!")
    assert seen[-1][-1] == {"role": "user", "content": "Great question! 391."}


@pytest.fixture
def one_torch_thread():
    """MiniLM on one thread: on a loaded 2-core machine two threads are several times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_two_users_three_sessions_end_to_end(data, tmp_path: Path, one_torch_thread):
    prof, tasks = data
    out = tmp_path / "out"
    rc = collab_main(["--profiles", str(prof), "--tasks", str(tasks), "--sessions", "3",
                      "--seed", "1", "--out", str(out), "--no-progress", "--transcripts",
                      "--split", "all"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res) == list(METHODS)
    for m, r in res.items():
        assert r["config"]["run"]["sessions"] == 3
        assert r["config"]["run"]["user_ids"] == ["u7", "u11"]
        assert r["config"]["vars"]["data_dir"].endswith(m)
        curves = r["curves"]
        for key in ("enforcements", "user_words", "precision", "recall", "reward"):
            assert len(curves[key]) == 3
        per_user = r["per_user"]
        assert sorted(per_user) == ["u11", "u7"]
        flat = [e for u in per_user.values() for e in u["enforcements"]]
        assert r["enforcements_per_session"] == pytest.approx(np.mean(flat))
        for s in range(3):
            assert curves["enforcements"][s] == pytest.approx(
                np.mean([u["enforcements"][s] for u in per_user.values()]))
        for key in ("precision", "recall", "recall_stated"):
            assert all(v is None or 0.0 <= v <= 1.0 for v in curves[key])
        assert all(w > 0 for w in curves["user_words"])
        assert 0 <= r["enforcements_per_session"] <= 3
    assert res["none"]["summary"]["recall"] == 0.0 and res["none"]["summary"]["precision"] is None
    assert res["all"]["config"]["vars"]["retrieval"]["select_k"] > 1000
    assert res["rag"]["config"]["vars"]["policy"]["use_long"] is False
    assert res["vars_short"]["config"]["vars"]["policy"] == {
        **res["vars"]["config"]["vars"]["policy"], "use_long": False}
    # the same users saw the same problems in every method
    probs = {m: r["per_user"]["u7"]["problems"] for m, r in res.items()}
    assert len({tuple(v) for v in probs.values()}) == 1
    # memory helps: every method with memory needs no more enforcements than no memory
    assert res["all"]["enforcements_per_session"] <= res["none"]["enforcements_per_session"]
    assert res["all"]["summary"]["recall"] >= res["rag"]["summary"]["recall"]
    for png in ("enforcements.png", "user_words.png", "precision.png", "recall.png",
                "reward.png", "curves.png"):
        assert (out / png).stat().st_size > 1000
    assert "| vars |" in (out / "summary.md").read_text()
    rows = [json.loads(x) for x in (out / "transcripts" / "vars.jsonl").read_text().splitlines()]
    enforce = [r for r in rows if r["kind"] == "enforce"]
    # the natural (report) phrases carry no keyword cue: the learned reward reads the complaints,
    # not every one (docs/perception.md), and never more kindly than the user's thanks
    assert enforce and all(r["reward"] is not None for r in enforce)
    others = [r["reward"] for r in rows if r["kind"] in ("followup", "close") and r["reward"] is not None]
    assert np.mean([r["reward"] for r in enforce]) < min(0.0, np.mean(others) if others else 0.0)
    assert all({"gate", "advantage", "signal", "injected", "rag_choice", "task_kind"} <= set(r)
               for r in rows)
    # each injected note names the preference it carries: the session's precision is theirs
    for user, rec in res["vars"]["per_user"].items():
        for s, precision in enumerate(rec["precision"]):
            hits = [n["preference"] in r["applicable"] for r in rows
                    if (r["user"], r["session"]) == (user, s) and r["applicable"] is not None
                    for n in r["injected"]]
            assert precision == (pytest.approx(np.mean(hits), abs=1e-4) if hits else None)
    share = res["vars"]["summary"]["enforce_signal"]  # mean over sessions of per-session shares
    by_session: dict = {}
    for r in enforce:
        by_session.setdefault((r["user"], r["session"]), []).append(r["signal"])
    assert share == pytest.approx(np.mean([np.mean(v) for v in by_session.values()]))
    assert res["all"]["summary"]["note_tokens"] >= res["rag"]["summary"]["note_tokens"] > 0
    assert not (out / "work").exists()
    assert not any(math.isnan(v) for v in res["vars"]["curves"]["enforcements"])


def test_bad_method_is_an_error(data, tmp_path: Path, capsys):
    prof, tasks = data
    rc = collab_main(["--profiles", str(prof), "--methods", "vars,magic", "--out", str(tmp_path)])
    assert rc == 2 and "magic" in capsys.readouterr().err


# ----------------------------------------------------------------------------- split


def test_split_is_fixed_by_id_disjoint_and_stable_when_profiles_are_added():
    base = [{"i": n, "persona": "p", "preferences": ["You prefer short answers."]}
            for n in range(40)]
    users = parse_profiles(base)
    tune, report = filter_split(users, "tune"), filter_split(users, "report")
    ids_t, ids_r = {u.user_id for u in tune}, {u.user_id for u in report}
    assert not ids_t & ids_r and ids_t | ids_r == {u.user_id for u in users}
    assert 10 <= len(tune) <= 30  # a hash, not a sort: both halves are populated
    # a larger file, shuffled: every old profile keeps its half
    more = parse_profiles(list(reversed(base)) + [
        {"i": n, "persona": "q", "preferences": ["You prefer tables."]} for n in range(40, 60)])
    assert {u.user_id for u in filter_split(more, "tune")} >= ids_t
    assert not {u.user_id for u in filter_split(more, "report")} & ids_t
    assert all(profile_split(u.user_id) == profile_split(u.user_id) for u in more)
    assert len(filter_split(users, "all")) == 40
    with pytest.raises(ValueError, match="split"):
        filter_split(users, "test")
    args = build_parser().parse_args(["--profiles", "x.json"])
    assert settings_from_args(args).split == "report"


def test_shared_profiles_split_41_tune_39_report():
    path = SHARED / "data" / "multisessioncollab" / "user_profiles.json"
    if not path.exists():
        pytest.skip("shared profiles not present")
    users = load_profiles(path)
    assert (len(filter_split(users, "tune")), len(filter_split(users, "report"))) == (41, 39)


# ----------------------------------------------------------------------------- scopes


def test_scoped_preferences_apply_only_to_their_task_kind():
    kinds = ["knowledge", "logic", "math", "medical"]
    assert [task_kind(d) for d in ("math-500", "math_hard", "logiqa", "medqa", "mmlu")] == \
        ["math", "math", "logic", "medical", "knowledge"]
    user = parse_profiles(PROFILES)[0]
    scoped = assign_scopes(user, kinds, seed=0, p_scoped=1.0)
    assert all(p.scope in kinds for p in scoped.preferences)
    assert assign_scopes(user, kinds, seed=0, p_scoped=1.0) == scoped  # seeded
    assert all(p.scope == "all" for p in assign_scopes(user, kinds, 0, p_scoped=0.0).preferences)
    # a condition that names a task kind keeps it, whatever p_scoped says
    coder = parse_profiles([{"preferences": [
        "When writing code, you prefer type hints. Enforce if there are none."]}])[0]
    assert assign_scopes(coder, kinds, 0, p_scoped=0.0).preferences[0].scope == "code"
    p = scoped.preferences[0]
    assert p.explicit().startswith(p.scope_phrase + ", ")
    math = Problem("math-500", "test", 0, "Compute 2+2.")
    med = Problem("medqa", "test", 0, "Which drug?")
    by_kind = {k: [q.key for q in scoped.preferences if q.scope == k] for k in kinds}
    assert [q.key for q in applicable_preferences(scoped, math)] == by_kind["math"]
    assert [q.key for q in applicable_preferences(scoped, med)] == by_kind["medical"]
    # the scripted extractor keeps the user's scope in the note, and the note says where it holds
    card = ScriptedExtractor().extract([("user", p.explicit("Again: I'd like"))])[0]
    assert note_scope(card.note) == p.scope
    assert note_scope("When writing code, use bullets.") == "code"
    assert note_scope("In general, use bullets.") == "all"
    assert note_scope(f"When {DEFAULT_CONDITION}, use bullets.") == "all"
    assert scope_allows("all", "math") and scope_allows("math", "math")
    assert not scope_allows("code", "math")


def test_each_user_gets_a_mix_of_task_kinds_with_a_primary_one():
    problems = [Problem(d, "test", i, f"{d} problem {i}") for d in ("math-500", "logiqa", "medqa")
                for i in range(10)]
    users = parse_profiles(PROFILES)
    a = assign_problems(users, problems, 40, seed=2, primary=0.6)
    assert a == assign_problems(users, problems, 40, seed=2, primary=0.6)
    for u in users:
        counts = {k: sum(1 for p in a[u.user_id] if p.kind == k) for k in ("math", "logic",
                                                                            "medical")}
        assert sum(counts.values()) == 40 and min(counts.values()) > 0
        assert max(counts.values()) >= 16  # the primary kind dominates (expected 24 of 40)


# ----------------------------------------------------------------------------- noise


def test_error_rates_are_computed_from_extraction_results(tmp_path: Path):
    rows = [
        {"text": "I prefer bullets.", "has_preference": True, "expected": ["bullets"],
         "extracted": [{"note": "When writing code, use bullets."}]},  # invented scope
        {"text": "Keep it short.", "has_preference": True, "expected": ["short"],
         "extracted": [{"note": "In general, keep it short."}]},  # general, right
        {"text": "For SQL, assume PostgreSQL.", "has_preference": True,
         "expected": ["SQL: assume PostgreSQL"],
         "extracted": [{"note": "In general, assume PostgreSQL."}]},  # too broad
        {"text": "When I explain math, go slowly.", "has_preference": True,
         "expected": ["math: slow"], "extracted": [{"note": "When explaining math, go slowly."}]},
        {"text": "What is 2+2?", "has_preference": False, "expected": [], "extracted": []},
    ]
    f = tmp_path / "extraction.json"
    f.write_text(json.dumps({"metrics": {"all": {"recall": 0.75, "neutral_empty": 0.9}},
                             "rows": rows}))
    nz = extraction_error_rates(f)
    assert (nz.miss, nz.junk, nz.wrong_condition, nz.general) == (0.25, 0.1, 0.5, 0.5)


def test_noise_misses_swaps_conditions_and_adds_junk_deterministically():
    stmt = [("user", "I prefer answers with a small table.")]
    scoped = [("user", "For math problems, I prefer answers with a small table.")]
    neutral = [("user", "What a day. The train was late again this morning.")]
    clean = ScriptedExtractor()
    assert len(clean.extract(stmt)) == 1 and clean.extract(neutral) == []
    assert ScriptedExtractor(noise=ExtractionNoise(miss=1.0)).extract(stmt) == []
    wrong = ScriptedExtractor(noise=ExtractionNoise(wrong_condition=1.0))
    assert note_scope(wrong.extract(stmt)[0].note) != "all"  # an invented scope
    assert wrong.extract(scoped)[0].is_global  # the user's scope dropped
    assert ScriptedExtractor(noise=ExtractionNoise(general=1.0)).extract(stmt)[0].is_global
    junk = ScriptedExtractor(noise=ExtractionNoise(junk=1.0)).extract(neutral)
    assert len(junk) == 1 and junk[0].action.rstrip(".") in neutral[0][1]
    half = ExtractionNoise(miss=0.5, wrong_condition=0.5, junk=0.5)
    texts = [[("user", f"I prefer answers with {n} examples.")] for n in range(40)]
    outs = [ScriptedExtractor(noise=half, seed=1).extract(t) for t in texts]
    assert outs == [ScriptedExtractor(noise=half, seed=1).extract(t) for t in texts]
    kept = sum(1 for o in outs if o)
    assert 8 <= kept <= 32  # about half missed


# ----------------------------------------------------------------------------- isolation


def test_methods_never_share_a_store_even_with_VARS_DATA_DIR(data, tmp_path: Path, monkeypatch,
                                                             one_torch_thread):
    from vars_langgraph.config import VARSConfig
    from vars_langgraph.models.embedder import load_embedder

    prof, tasks = data
    env_dir = tmp_path / "env-data"
    monkeypatch.setenv("VARS_DATA_DIR", str(env_dir))
    monkeypatch.setenv("VARS_POLICY__USE_LONG", "false")  # env must not change a method either
    settings = RunSettings(profiles=str(prof), tasks=str(tasks))
    embedder = load_embedder(VARSConfig().embedding)
    sim, matcher = ScriptedSimulator(), PreferenceMatcher(embedder)
    runners = [MethodRunner(m, settings, tmp_path / "work" / m, embedder, sim, matcher,
                            progress=False) for m in ("rag", "vars")]
    try:
        rag, vars_ = runners
        assert rag.config.data_dir != vars_.config.data_dir
        assert vars_.config.policy.use_long is True
        rag.engine.add_preferences("u7", [Preference(condition="writing code", action="use tabs")],
                                   CardSource(thread_id="t"))
        assert len(rag.engine.index.get("u7")) == 1
        assert len(vars_.engine.index.get("u7")) == 0
        assert not env_dir.exists()
    finally:
        for r in runners:
            r.close()


def test_error_rates_from_the_label_scored_format_and_the_pinned_default(tmp_path: Path):
    m = {"llm_with_gate": {"precision": 0.4, "precision_action_only": 0.8,
                           "recall_action_only": 0.6, "global_share": 0.25,
                           "neutral_messages_with_cards": 2}}
    f = tmp_path / "extraction.json"
    f.write_text(json.dumps({"scoring": "labels", "metrics": {"heldout": {"n_neutral": 8, **m}},
                             "rows": []}))
    nz = extraction_error_rates(f)
    assert (nz.miss, nz.wrong_condition, nz.general, nz.junk) == (0.4, 0.5, 0.25, 0.25)
    default = settings_from_args(build_parser().parse_args(["--profiles", "x.json"])).noise
    assert default.active() and default.source.endswith("@7cb7e57")
    off = settings_from_args(build_parser().parse_args(["--profiles", "x.json", "--noise", "off"]))
    assert not off.noise.active()
