"""Optional parts: a missing one gives an error that names the pip extra to install."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

from vars_langgraph import cli
from vars_langgraph.config import VARSConfig
from vars_langgraph.extras import MissingExtra, require
from vars_langgraph.models import local_server


@pytest.fixture
def hide(monkeypatch):
    """Make the named top-level modules look uninstalled."""
    real = importlib.util.find_spec

    def hide_modules(*names: str) -> None:
        def find_spec(name, *args, **kwargs):
            if name.split(".")[0] in names:
                return None
            return real(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return hide_modules


def test_require_names_the_extra(hide):
    require("postgres", "json")  # present: nothing raised
    hide("psycopg")
    with pytest.raises(MissingExtra, match=r'pip install "vars-langgraph\[postgres\]"'):
        require("postgres", "json", "psycopg")


def test_require_handles_a_missing_parent_package():
    with pytest.raises(MissingExtra, match="no_such_pkg.sub"):
        require("postgres", "no_such_pkg.sub")


def test_local_server_without_llama_cpp(hide):
    hide("llama_cpp")
    with pytest.raises(MissingExtra, match=r"vars-langgraph\[local\]"):
        local_server.local_base_url(VARSConfig())


def test_eval_without_its_distribution_exits_2_with_the_message(monkeypatch, capsys):
    """Without vars-langgraph-eval (no entry points in its group) the suites name the package."""
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [] if kw.get("group") == cli.SUITE_GROUP else real(**kw))
    assert cli.main(["eval", "collab", "--sessions", "1", "--users", "1"]) == 2
    assert "pip install vars-langgraph-eval" in capsys.readouterr().err


def test_chat_without_the_local_server_says_which_extra(hide, tmp_path, capsys):
    hide("llama_cpp")
    rc = cli.main(["--data-dir", str(tmp_path), "chat", "--user", "a", "-m", "hi"])
    assert rc == 2
    assert "vars-langgraph[local]" in capsys.readouterr().err
