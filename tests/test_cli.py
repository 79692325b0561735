"""CLI: delegated commands receive their own options; the installed `vars-langgraph` as users
run it (subprocess), global options before any command, quiet streaming chat."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import extractor_url
from vars_langgraph.cli import main


@pytest.mark.parametrize("argv,module,func", [
    (["bench", "--sizes", "100,1000", "--no-baselines"], "vars_langgraph_eval.bench", "bench_main"),
    (["eval", "collab", "--sessions", "2", "--users", "1"], "vars_langgraph_eval.runner", "collab_main"),
    (["eval", "lamp", "--task", "LaMP_2", "--k", "4", "--questions", "q.json"],
     "vars_langgraph_eval.lamp.harness", "lamp_main"),
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


# the installed executable, as users run it ------------------------------------------------------
EXE = shutil.which("vars-langgraph") or str(Path(sys.executable).parent / "vars-langgraph")


def run_cli(*argv: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VARS_")}
    return subprocess.run([EXE, *argv], capture_output=True, text=True, timeout=timeout,
                          env={**base, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_eval_without_a_suite_prints_help_not_a_traceback():
    r = run_cli("eval")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "collab" in r.stderr and "prefeval" in r.stderr


@pytest.mark.parametrize("argv", [
    ["bench", "--help"], ["--data-dir", "DATA", "bench", "--help"],
    ["--log-level", "INFO", "--data-dir", "DATA", "eval", "collab", "--help"],
    ["loadtest", "--help"], ["--config", "configs/cpu.yaml", "eval", "lamp", "--help"],
])
def test_every_command_dispatches_with_and_without_global_options(argv, tmp_path):
    argv = [str(tmp_path) if a == "DATA" else a for a in argv]
    r = run_cli(*argv)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage: vars-langgraph" in r.stdout and "Traceback" not in r.stderr
    assert "--" in r.stdout.split("usage:", 1)[1]  # the suite's own options are listed


def test_bad_option_of_a_suite_is_reported_by_the_tree():
    r = run_cli("--data-dir", "/tmp/x", "bench", "--no-such-option")
    assert r.returncode == 2 and "unrecognized arguments: --no-such-option" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.llm
def test_chat_then_manage_memories_with_the_installed_command(tmp_path, llm_base_url):
    """`chat -m` on the real local server (streams; learns after the answer; the process
    drains its learning jobs before it exits), then memories/export/forget/import."""
    data = str(tmp_path / "data")
    env = {"VARS_LLM__BASE_URL": llm_base_url, "VARS_LLM__MAX_TOKENS": "32",
           "VARS_LLM__TEMPERATURE": "0", "VARS_EXTRACTOR__LLM__BASE_URL": extractor_url(llm_base_url)}
    r = run_cli("--data-dir", data, "chat", "--user", "alice", "--verbose",
                "-m", "I prefer answers in bullet points.", env=env, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "assistant>" in r.stdout and "first token" in r.stdout and "memory" in r.stdout
    assert "HTTP Request" not in r.stdout + r.stderr  # quiet by default
    assert "Traceback" not in r.stderr
    mem = json.loads(run_cli("--data-dir", data, "memories", "--user", "alice", "--json").stdout)
    notes = [c["note"].lower() for c in mem["cards"]]
    assert any("bullet" in n for n in notes), notes
    out = tmp_path / "alice.json"
    assert run_cli("--data-dir", data, "export", "--user", "alice", "--out", str(out)).returncode == 0
    r = run_cli("--data-dir", data, "forget", "--user", "alice", "--threads")
    assert r.returncode == 0 and "forgot user 'alice'" in r.stdout
    env_dir = {"VARS_DATA_DIR": data}  # the same setting through the environment
    assert json.loads(run_cli("memories", "--user", "alice", "--json", env=env_dir).stdout)[
        "cards"] == []
    r = run_cli("import", str(out), "--user", "alice2", env=env_dir)
    assert r.returncode == 0 and "imported" in r.stdout
    mem2 = json.loads(run_cli("--data-dir", data, "memories", "--user", "alice2", "--json").stdout)
    assert sorted(c["note"] for c in mem2["cards"]) == sorted(c["note"] for c in mem["cards"])


def test_stream_turn_marks_a_retried_answer():
    """generate's retry streams a second message: the chat says so between the two instead of
    running them together ("...bullet points.Yes, I will ...")."""
    from langchain_core.messages import AIMessageChunk

    from vars_langgraph.cli import RETRY_NOTE, stream_turn

    meta = {"langgraph_node": "generate"}
    chunks = [AIMessageChunk("Based on the notes", id="a"), AIMessageChunk(" provided.", id="a"),
              AIMessageChunk("Use lentils", id="b"), AIMessageChunk(".", id="b")]

    class Graph:  # the stream of a turn whose first answer was discarded
        def stream(self, *args, **kwargs):
            yield from (("messages", (c, meta)) for c in chunks)
            yield "values", {"messages": []}

    out: list[str] = []
    _, t = stream_turn(Graph(), "dinner?", {}, out.append)
    assert "".join(out) == f"Based on the notes provided.\n{RETRY_NOTE}\nUse lentils."
    assert t["tokens"] == 4
    out.clear()
    chunks[2:] = []
    stream_turn(Graph(), "dinner?", {}, out.append)
    assert RETRY_NOTE not in "".join(out)  # one answer: no note


def test_a_confirmation_that_replaces_two_copies_reaches_the_chat(tmp_path):
    """When both tries copy a statement, generate answers with a confirmation of its own (a
    message with a new id): the chat shows it after the retry note, and it is what is kept."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from vars_langgraph import VARSConfig, VARSEngine, build_graph
    from vars_langgraph.cli import RETRY_NOTE, stream_turn
    from vars_langgraph.nodes.generate import CONFIRMATION
    from vars_langgraph.storage import open_checkpointer, open_store

    config = VARSConfig.from_dict({"data_dir": str(tmp_path), "extractor": {"enabled": False}})
    echo = "I prefer answers in bullet points."
    engine = VARSEngine(config, open_store(config), index_dir=tmp_path / "index",
                        chat_model=FakeListChatModel(responses=[echo, echo]))
    graph = build_graph(config, engine=engine, checkpointer=open_checkpointer(config))
    out: list[str] = []
    final, _ = stream_turn(graph, "I prefer answers in bullet points, and please keep them short.",
                           {"configurable": {"thread_id": "t", "user_id": "u"}}, out.append)
    assert "".join(out) == f"{echo}\n{RETRY_NOTE}\n{echo}\n{RETRY_NOTE}\n{CONFIRMATION}"
    assert final["messages"][-1].content == CONFIRMATION
