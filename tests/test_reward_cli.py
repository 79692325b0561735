"""`chat --verbose`: the reward line names the turn it scored and what the update applied."""

from vars_langgraph.cli import describe_reward

HUMANS = ["How do I make dinner?", "That's not helpful. Give me an actual recipe, no meat."]


def test_names_the_turn_and_the_applied_reward():
    rew = {"value": -0.8, "label": "neg_correction", "gate": 0.9, "baseline": -0.05,
           "advantage": -0.675, "applied": True}
    line = describe_reward(rew, 2, HUMANS)
    assert line.startswith('reward read from turn 2 "That\'s not helpful.')
    assert "on answer 1: r = -0.80 [neg_correction]" in line and "applied A = -0.675" in line
    assert "still learning" not in line


def test_an_earlier_background_job_is_said_to_be_earlier():
    line = describe_reward(None, 1, HUMANS)
    assert "turn 1 'How do I make dinner?': none" in line
    assert line.endswith("turn 2 still learning in the background")
    assert describe_reward(None, None, HUMANS) == "reward of turn 2: not yet (learning in the background)"


def test_no_update_is_said():
    rew = {"value": 0.1, "label": "pos_progress", "gate": 0.5, "baseline": 0.0, "advantage": 0.05,
           "applied": False}
    assert describe_reward(rew, 2, HUMANS).endswith("applied A = +0.050 (no update applied)")
