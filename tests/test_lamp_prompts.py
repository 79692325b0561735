"""Retrieval queries, corpora, prompt templates and truncation as in the official LaMP code."""

import json

import pytest

from vars_langgraph_eval.lamp.data import (
    load_outputs,
    load_questions,
    normalise_task,
    write_predictions,
)
from vars_langgraph_eval.lamp.prompts import (
    NoTruncation,
    WordTokenizer,
    build_prompt,
    corpus,
    retrieval_query,
)

L1 = ('For an author who has written the paper with the title "Deep nets", which reference is '
      'related? Just answer with [1] or [2] without explanation. [1]: "Graph cuts" [2]: "Big data"')
L2 = ("Which tag does this movie relate to among the following tags? Just answer with the tag "
      "name without further explanation. tags: [sci-fi, comedy] description: A robot falls in love.")


def test_task_names():
    assert normalise_task("LaMP-3") == normalise_task("3") == normalise_task(3) == "LaMP_3"
    with pytest.raises(ValueError):
        normalise_task("LaMP_8")


def test_retrieval_queries():
    assert retrieval_query("LaMP_1", L1) == "Graph cuts Big data"
    assert retrieval_query("LaMP_2", L2) == "A robot falls in love."
    assert retrieval_query("LaMP_3", "... 1 to 5? review: Great  ") == "Great"
    assert retrieval_query("LaMP_4", "Generate a headline for the following article: X y") == "X y"
    assert retrieval_query("LaMP_5", "Generate a title for the following abstract of a paper: "
                           "We study: things") == "We study: things"
    assert retrieval_query("LaMP_7", "Paraphrase the following tweet without any explanation "
                           "before or after it: hi: there") == "hi: there"
    assert retrieval_query("LaMP_2", "no marker here") == "no marker here"  # fallback


def test_corpus_documents_and_date_variant():
    prof = [{"id": "1", "title": "T", "abstract": "A", "date": "2020-01-02"}]
    assert corpus("LaMP_1", prof) == ["T A"]
    assert corpus("LaMP_5", prof, use_date=True) == ["T A date: 2020-01-02"]
    assert corpus("LaMP_4", [{"title": "H", "text": "B"}]) == ["H B"]
    assert corpus("LaMP_3", [{"text": "R", "score": "4"}]) == ["R"]


def test_prompt_templates_exact():
    none = NoTruncation()
    items2 = [{"description": "d1", "tag": "comedy"}, {"description": "d2", "tag": "action"}]
    assert build_prompt("LaMP_2", L2, items2, none) == (
        'the tag for the movie: "d1" is "comedy" , and the tag for the movie: "d2" is "action" . '
        + L2)
    assert build_prompt("LaMP_1", L1, [{"title": "T1"}, {"title": "T2"}], none) == (
        'For an author who has written the paper with the title, and "T1", and "T2" "Deep nets", '
        'which reference is related? Just answer with [1] or [2] without explanation. '
        '[1]: "Graph cuts" [2]: "Big data"')
    assert build_prompt("LaMP_3", "IN", [{"text": "ok", "score": "4"}], none) == (
        '4 is the score for "ok" . IN')
    assert build_prompt("LaMP_4", "IN", [{"title": "H", "text": "B"}], none) == (
        '"H" is the title for "B" . IN')
    assert build_prompt("LaMP_5", "IN", [{"title": "t", "abstract": "a"}], none) == (
        '"t" is a title for "a" . Following the given patterns IN')
    assert build_prompt("LaMP_7", "IN", [{"text": "x1"}, {"text": "x2"}], none) == (
        '"x1" , and "x2"  are written by a person. Following the given patterns IN')
    assert build_prompt("LaMP_6", "IN", [{"title": "s", "text": "e"}], none) == (
        '"s" is the title for "e" . IN')
    assert build_prompt("LaMP_2", L2, [], none) == L2


def test_truncation_budget_hand_computed():
    # WordTokenizer: words + 1 (eos). Input "review: a b c" -> 5 tokens; max_length 40:
    # budget = 40 - min(5, 24) = 35; per item = (35 - 1 - 2) // 2 = 16; fixed part
    # '5 is the score for " " ' = 7 words + 1 = 8 -> each text keeps 16 - 8 - 1 = 7 words.
    words = " ".join(f"w{i}" for i in range(10))
    items = [{"text": words, "score": "5"}, {"text": words.replace("w", "v"), "score": "4"}]
    p = build_prompt("LaMP_3", "review: a b c", items, WordTokenizer(), max_length=40)
    assert p == ('5 is the score for "w0 w1 w2 w3 w4 w5 w6" , and '
                 '4 is the score for "v0 v1 v2 v3 v4 v5 v6" . review: a b c')
    # Unused budget rolls over: a 2-word first text (3 tokens) saves 16 - 3 - 8 = 5 tokens,
    # so the second text may use 16 + 5 - 8 = 13 tokens = 12 words.
    items[0]["text"] = "short one"
    long = " ".join(f"v{i}" for i in range(20))
    items[1]["text"] = long
    p = build_prompt("LaMP_3", "review: a b c", items, WordTokenizer(), max_length=40)
    assert p.endswith('"' + " ".join(f"v{i}" for i in range(12)) + '" . review: a b c')


def test_truncation_gives_up_and_returns_the_input():
    items = [{"text": "a b c", "score": "5"}, {"text": "d e f", "score": "4"}]
    assert build_prompt("LaMP_3", "review: a b c", items, WordTokenizer(), 10) == "review: a b c"


def test_official_file_round_trip(tmp_path):
    q = tmp_path / "q.json"
    q.write_text(json.dumps([{"id": 7, "input": "x", "profile": [{"id": "p", "text": "t"}]}]))
    qs = load_questions(q)
    assert qs[0].id == "7" and qs[0].profile[0]["text"] == "t"
    out = write_predictions(tmp_path / "p.json", "LaMP-7", {"7": "y"})
    assert json.loads(out.read_text()) == {"task": "LaMP_7", "golds": [{"id": "7", "output": "y"}]}
    assert load_outputs(out) == ("LaMP_7", {"7": "y"})
    (tmp_path / "bad.json").write_text(json.dumps([{"input": "x"}]))
    with pytest.raises(ValueError, match=r"bad.json\[0\]"):
        load_questions(tmp_path / "bad.json")
