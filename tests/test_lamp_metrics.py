"""LaMP metrics against hand-computed values, including the official edge rules."""

import math

import pytest

from vars_langgraph_eval.lamp.data import LABELS
from vars_langgraph_eval.lamp.metrics import (
    classification_metrics,
    evaluate_task,
    rating_value,
    regression_metrics,
    rouge_metrics,
    rouge_pair,
    score,
    utility,
)


def test_lamp1_accuracy_and_macro_f1_with_unknown_label():
    # gold [0, 0, 1, 1]; pred [0, 1, 1, -1] (" [1] " strips to a label, "foo" is unknown)
    m = classification_metrics([" [1] ", "[2]", "[2]", "foo"], ["[1]", "[1]", "[2]", "[2]"],
                               LABELS["LaMP_1"])
    assert m["accuracy"] == pytest.approx(0.5)
    # label 0: P 1/1, R 1/2 -> F1 2/3; label 1: P 1/2, R 1/2 -> 1/2; macro 7/12
    assert m["f1"] == pytest.approx(7 / 12)


def test_lamp2_macro_f1_averages_over_all_fifteen_tags_and_is_case_sensitive():
    m = score("LaMP_2", ["comedy", "comedy", "Comedy"], ["comedy", "action", "comedy"])
    assert m["accuracy"] == pytest.approx(1 / 3)
    # comedy: TP 1, FP 1, FN 1 -> F1 0.5; every other tag 0 -> 0.5 / 15
    assert m["f1"] == pytest.approx(0.5 / 15)


def test_lamp3_farthest_rating_rule():
    assert rating_value("abc", "5") == 1.0  # |1-5| > |5-5|
    assert rating_value("", "2") == 5.0  # |1-2| = 1 < |5-2| = 3
    assert rating_value("x", "4") == 1.0
    assert rating_value("?", "3") == 5.0  # tie: not strictly farther -> 5.0
    assert rating_value(" 4.5 ", "1") == 4.5  # parsed as float, no clamping/rounding
    assert rating_value("7", "1") == 7.0
    assert rating_value("nan", "2") == 5.0  # non-finite counts as unparsable


def test_lamp3_mae_rmse_hand_computed():
    # errors: |2-1| = 1, 0, farthest(5) = 1 -> 4, |4.5-2| = 2.5
    m = regression_metrics(["2", " 3 ", "abc", "4.5"], ["1", "3", "5", "2"])
    assert m["MAE"] == pytest.approx(7.5 / 4)
    assert m["RMSE"] == pytest.approx(math.sqrt((1 + 0 + 16 + 6.25) / 4))


def test_rouge_hand_computed_no_stemming():
    a = rouge_pair("The cat sat", "the cat sat on the mat")
    assert a["rouge-1"] == pytest.approx(2 / 3)  # P 3/3, R 3/6
    assert a["rouge-L"] == pytest.approx(2 / 3)  # LCS 3
    b = rouge_pair("mat on the cat", "the cat sat on the mat")
    assert b["rouge-1"] == pytest.approx(0.8)  # P 4/4, R 4/6
    assert b["rouge-L"] == pytest.approx(0.4)  # LCS 2: P 2/4, R 2/6
    assert rouge_pair("Cats running", "cat run")["rouge-1"] == 0.0  # no stemmer
    assert rouge_pair("Hello, World!", "hello world")["rouge-1"] == pytest.approx(1.0)
    m = rouge_metrics(["The cat sat", "mat on the cat"],
                      ["the cat sat on the mat", "the cat sat on the mat"])
    assert m["rouge-1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["rouge-L"] == pytest.approx((2 / 3 + 0.4) / 2)


def test_evaluate_task_requires_equal_id_sets_and_aligns_by_id():
    golds = {"a": "[1]", "b": "[2]"}
    assert evaluate_task("LaMP_1", golds, {"b": "[2]", "a": "[1]"})["accuracy"] == 1.0
    with pytest.raises(ValueError, match="do not match"):
        evaluate_task("LaMP_1", golds, {"a": "[1]"})
    with pytest.raises(ValueError, match="do not match"):
        evaluate_task("LaMP_1", golds, {"a": "[1]", "b": "[2]", "c": "[1]"})


def test_utility_feedback_per_task():
    assert utility("LaMP_2", " comedy", "comedy") == 1.0
    assert utility("LaMP_2", "nonsense", "nonsense") == 0.0  # unknown never counts
    # LaMP-3 gold 4: worst = max(3, 1) = 3; pred 3 -> (3 - 1) / 3
    assert utility("LaMP_3", "3", "4") == pytest.approx(2 / 3)
    assert utility("LaMP_3", "junk", "4") == 0.0  # farthest rating -> worst
    assert utility("LaMP_5", "The cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
