"""VARSConfig: YAML, env overrides, and clear errors for unknown keys and missing files."""

from pathlib import Path

import pytest

from vars_langgraph import VARSConfig

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_cpu_yaml_equals_the_defaults():
    assert VARSConfig.from_yaml(ROOT / "configs" / "cpu.yaml") == VARSConfig()


def test_env_overrides_nested_keys(monkeypatch, tmp_path):
    monkeypatch.setenv("VARS_LLM__BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("VARS_RETRIEVAL__SELECT_K", "4")
    monkeypatch.setenv("VARS_DATA_DIR", str(tmp_path))
    cfg = VARSConfig.from_yaml(None)
    assert cfg.llm.base_url == "http://127.0.0.1:9/v1"
    assert cfg.retrieval.select_k == 4 and cfg.data_path == tmp_path


def test_unknown_key_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("retrieval:\n  topk: 3\n")
    with pytest.raises(ValueError, match=r"retrieval\.topk"):
        VARSConfig.from_yaml(f)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        VARSConfig.from_yaml(tmp_path / "nope.yaml")


def test_missing_model_file_is_named(tmp_path):
    from vars_langgraph.config import EmbeddingConfig
    from vars_langgraph.models.embedder import SentenceTransformerEmbedder

    with pytest.raises((FileNotFoundError, OSError), match="no-such-model"):
        SentenceTransformerEmbedder(EmbeddingConfig(model=str(tmp_path / "no-such-model")))


def test_unrelated_vars_env_is_ignored(monkeypatch):
    # another tool's variable that happens to start with VARS_ must not break every command
    monkeypatch.setenv("VARS_HOME", "/opt/other-tool")
    monkeypatch.setenv("VARS_SOMETHING__ELSE", "1")
    assert VARSConfig.from_yaml(None) == VARSConfig()


def test_typo_in_a_declared_section_is_named(monkeypatch):
    monkeypatch.setenv("VARS_LLM__BASEURL", "http://x")
    with pytest.raises(ValueError, match=r"llm\.baseurl"):
        VARSConfig.from_yaml(None)


def test_explicit_override_wins_over_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VARS_DATA_DIR", str(tmp_path / "env"))
    cfg = VARSConfig.from_dict({"data_dir": str(tmp_path / "yaml")}, data_dir=str(tmp_path / "arg"))
    assert cfg.data_path == tmp_path / "arg"
    assert VARSConfig.from_dict({"data_dir": str(tmp_path / "yaml")}).data_path == tmp_path / "env"


def test_the_environment_is_read_in_config_py_only(monkeypatch, tmp_path):
    from vars_langgraph.config import config_file, environment_without

    monkeypatch.delenv("VARS_CONFIG", raising=False)
    assert config_file() is None and config_file("mine.yaml") == "mine.yaml"
    monkeypatch.setenv("VARS_CONFIG", "")
    assert config_file() is None  # empty: the CPU defaults
    monkeypatch.setenv("VARS_CONFIG", str(tmp_path / "env.yaml"))
    assert config_file() == str(tmp_path / "env.yaml") and config_file("mine.yaml") == "mine.yaml"
    monkeypatch.setenv("API_KEY", "secret")
    env = environment_without({"api_key"})
    assert "API_KEY" not in env and env["VARS_CONFIG"] == str(tmp_path / "env.yaml")
    # no other runtime module reads or sets os.environ (the extractor is another branch's)
    root = Path(__file__).resolve().parents[1]
    readers = sorted(str(p.relative_to(root)) for p in (root / "vars_langgraph").rglob("*.py")
                     if "os.environ" in p.read_text() or "getenv" in p.read_text())
    allowed = {"vars_langgraph/config.py", "vars_langgraph/models/extraction/__init__.py"}
    assert set(readers) <= allowed, readers
