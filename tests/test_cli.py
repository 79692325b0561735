"""CLI plumbing: delegated commands receive their own options untouched."""

import pytest

from vars_langgraph.cli import main


@pytest.mark.parametrize("argv,module,func", [
    (["bench", "--sizes", "100,1000", "--no-baselines"], "vars_langgraph.bench", "bench_main"),
    (["eval", "collab", "--sessions", "2", "--users", "1"], "vars_langgraph.eval", "collab_main"),
    (["eval", "lamp", "--task", "LaMP_2", "--k", "4", "--questions", "q.json"], "vars_langgraph.lamp.harness", "lamp_main"),
])
def test_delegated_options_pass_through(monkeypatch, argv, module, func):
    seen: list[list[str]] = []

    def fake(rest):
        seen.append(list(rest))
        return 0

    monkeypatch.setattr(f"{module}.{func}", fake)
    assert main(argv) == 0
    assert seen == [argv[2:] if argv[0] == "eval" else argv[1:]]


def test_unknown_option_of_a_builtin_command_is_an_error():
    with pytest.raises(SystemExit):
        main(["memories", "--user", "a", "--bogus"])
