"""README's commands run as written: every `vars-langgraph ...` line parses with the installed
command tree (the suites' own options included), every script and file it names exists, every
Python block compiles, and the file stays short enough for users to read."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vars_langgraph import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def command_lines() -> list[list[str]]:
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in re.split(r"\s*&&\s*", line):
                if part:
                    out.append(shlex.split(part))
    return out


def test_readme_is_short_and_has_no_machine_paths():
    assert len(README.splitlines()) < 250
    assert not re.search(r"/work/|/home/|/tmp/", README)
    assert not re.search(r"\b[0-9a-f]{7,40}\b commit|commit [0-9a-f]{7,40}", README)


def test_readme_has_the_two_commands_ci_runs():
    lines = [" ".join(c) for c in command_lines()]
    assert "bash scripts/setup.sh" in lines
    assert any(line.startswith(". .venv/bin/activate") for line in lines)
    test = next(line.strip() for b in blocks("bash") for line in b.splitlines() if "pytest" in line)
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert test in ci.splitlines()  # CI runs README's test command, exactly


@pytest.mark.parametrize("argv", [c for c in command_lines()
                                  if Path(c[0]).name == "vars-langgraph"],
                         ids=lambda c: " ".join(c[1:4]))
def test_every_vars_langgraph_command_parses(argv):
    args = argv[1:]
    words = cli._command_words(args)
    selected = next((k for k in cli.SUITE_HELP if tuple(words[: len(k)]) == k), None)
    parsed = cli.build_parser(selected).parse_args(args)  # SystemExit (a failure) if not
    assert parsed.cmd == words[0]


@pytest.mark.parametrize("argv", [c for c in command_lines() if c[0] in ("bash", "python")],
                         ids=lambda c: " ".join(c[:3]))
def test_every_script_it_names_exists(argv):
    if argv[0] == "python" and argv[1] == "-m":  # a module: it must import
        assert subprocess.run([sys.executable, "-c", f"import {argv[2]}"]).returncode == 0
        return
    script = next(a for a in argv[1:] if not a.startswith("-"))
    assert (ROOT / script).is_file(), script
    if script.endswith(".py"):
        r = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-1000:]


@pytest.mark.parametrize("code", blocks("python"), ids=lambda c: c.splitlines()[0][:40])
def test_every_python_block_compiles(code):
    compile(code, "README.md", "exec")


def test_every_linked_file_exists():
    links = re.findall(r"\]\(((?!https?:)[^)#]+)\)", README)
    missing = [p for p in links if not (ROOT / p).exists()]
    assert not missing
