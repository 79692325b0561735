"""The local llama.cpp server, the LLM extractor and the LLM reranker (real model, CPU).

Tests marked `llm` share one server (the session fixture `llm_base_url` in conftest.py) and
keep generations short. The rest is pure logic: GGUF verification, decision log-probs, windows.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import httpx
import pytest

from tests.conftest import extractor_url
from vars_langgraph.config import ExtractorConfig, LLMConfig, LocalServerConfig, VARSConfig
from vars_langgraph.models import local_server as ls
from vars_langgraph.models.extraction import load_extractor
from vars_langgraph.models.extraction.llm_backend import LLMExtractor
from vars_langgraph.models.extraction.postprocess import decision_from_logprobs
from vars_langgraph.models.extraction.prompts import dialogue_window
from vars_langgraph.models.extraction.transformers_backend import TransformersExtractor
from vars_langgraph.models.llm import resolve_llm
from vars_langgraph.models.reranker import EmbeddingReranker, LLMReranker

# ---------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def extractor(llm_base_url: str) -> LLMExtractor:
    cfg = VARSConfig(extractor=ExtractorConfig(llm=LLMConfig(base_url=extractor_url(llm_base_url),
                                                             max_retries=0)))
    return LLMExtractor(resolve_llm(cfg.extractor.llm, cfg), cfg.extractor, max_new_tokens=64)


@pytest.mark.llm
def test_server_answers(llm_base_url: str):
    models = httpx.get(f"{llm_base_url}/models", timeout=10).json()
    assert models["data"][0]["id"] == ls.MODEL_ALIAS
    r = httpx.post(
        f"{llm_base_url}/chat/completions",
        json={"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 4},
        timeout=120,
    )
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"].strip()


@pytest.mark.llm
def test_extractor_finds_a_stated_preference(extractor: LLMExtractor):
    res = extractor.extract_detailed([("user", "I prefer answers in bullet points.")])
    assert res.preferences, res
    assert any("bullet" in p.note.lower() for p in res.preferences)
    assert res.p_open is not None and 0.0 < res.p_open <= 1.0  # log-prob confidence
    assert all(p.confidence == pytest.approx(res.p_open, abs=1e-3) for p in res.preferences)


@pytest.mark.llm
def test_extractor_leaves_a_neutral_question_empty(extractor: LLMExtractor):
    assert extractor.extract([("user", "What is the capital of France?")]) == []
    assert extractor.extract([("assistant", "Hi!")]) == []  # no user message at all


@pytest.mark.llm
def test_extractor_complaint_is_not_a_card_and_no_invented_condition(llm_base_url: str):
    """Issue 11/12 transcript: the complaint yields no card, the bullet/short statement no
    "writing code" condition and nothing global (the user did not say "always")."""
    ex = LLMExtractor(LLMConfig(base_url=extractor_url(llm_base_url), max_retries=0), ExtractorConfig(),
                      max_new_tokens=48)
    complaint = [("user", "How do I brew green tea?"), ("assistant", "Green tea is a kind of tea."),
                 ("user", "no, that's not what I asked. Tell me the water temperature and steeping time.")]
    assert ex.extract(complaint) == []
    prefs = ex.extract([("user", "I prefer answers in bullet points, and please keep them short.")])
    assert prefs, "the stated preference was lost"
    assert not any("code" in p.condition.lower() or p.is_global for p in prefs), [p.note for p in prefs]


@pytest.mark.llm
def test_llm_reranker_prefers_the_relevant_note(llm_base_url: str):
    rr = LLMReranker(LLMConfig(base_url=llm_base_url, max_retries=0), max_workers=2)
    s = rr.score(
        "Write a Python function that parses ISO dates.",
        ["When writing Python code, add type hints.", "When suggesting recipes, avoid meat."],
    )
    assert s.shape == (2,)
    assert s[0] > s[1]
    assert all(math.log(1e-6) - 1e-9 <= x <= 0.0 for x in s)


def test_extractor_raises_on_unreachable_server():
    port = ls._free_port()  # nothing listens there
    ex = LLMExtractor(LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=5))
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}"):
        ex.extract([("user", "I like short answers.")])


# ---------------------------------------------------------------- GGUF verification


def _parts(tmp_path: Path, chunks: list[bytes]) -> list[Path]:
    out = []
    for i, c in enumerate(chunks, 1):
        p = tmp_path / "pkg" / f"part{i:02d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(c)
        out.append(p)
    return out


def test_gguf_hash_check_rejects_a_corrupted_file(tmp_path: Path, monkeypatch):
    chunks = [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]
    good = b"".join(chunks)
    parts = _parts(tmp_path, chunks)
    monkeypatch.setattr(ls, "qwen_parts", lambda: parts)
    monkeypatch.setattr(ls, "QWEN_SHA256", hashlib.sha256(good).hexdigest())
    monkeypatch.setattr(ls, "QWEN_SIZE", len(good))
    cfg = LocalServerConfig(cache_dir=str(tmp_path / "cache"))

    path = ls.gguf_path(cfg)  # assembled, verified
    assert path.read_bytes() == good
    assert ls.gguf_path(cfg) == path  # reused

    # the cached file goes bad (same size) and its marker is gone: verified again, rebuilt
    path.write_bytes(b"X" * len(good))
    path.with_name(path.name + ".sha256").unlink()
    assert ls.gguf_path(cfg).read_bytes() == good

    # a corrupted chunk: clear error, no file left behind (neither final nor temporary)
    parts[1].write_bytes(b"B" * 50)
    path.unlink()
    with pytest.raises(ValueError, match="corrupt"):
        ls.gguf_path(cfg)
    assert not path.exists()
    assert list(path.parent.iterdir()) == [path.with_name(path.name + ".sha256")]


def test_gguf_wrong_size_is_rejected(tmp_path: Path):
    parts = _parts(tmp_path, [b"abc"])
    dest = tmp_path / "m.gguf"
    with pytest.raises(ValueError, match="corrupt"):
        ls.assemble_gguf(parts, dest, hashlib.sha256(b"abc").hexdigest(), 4)
    assert not dest.exists()


def test_model_path_must_exist(tmp_path: Path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        ls.gguf_path(LocalServerConfig(model_path=str(missing)))


def test_server_start_failure_reports_the_log(tmp_path: Path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file")
    cfg = LocalServerConfig(model_path=str(fake), cache_dir=str(tmp_path))
    server = ls.LocalServer(ls.gguf_path(cfg), cfg)
    with pytest.raises(RuntimeError, match="exited"):
        server.start()
    assert not server.alive()


# ---------------------------------------------------------------- pure logic


def test_decision_from_logprobs_open_and_close():
    lp = math.log
    steps = [
        ('{"', {'{"': 0.0}),
        ("preferences", {"preferences": 0.0}),
        ('":', {'":': 0.0}),
        (' [{"', {' [{"': lp(0.6), " []}": lp(0.3), ' ["': lp(0.1)}),
        ("cond", {}),
    ]
    d = decision_from_logprobs(steps)
    assert d.chosen == "open"
    assert d.p_open == pytest.approx(0.6 / 0.9)
    # the bracket in its own token, the decision in the next one
    steps = [('{"preferences": [', {}), ("]}", {"]}": lp(0.8), "{": lp(0.2)})]
    d = decision_from_logprobs(steps)
    assert d.chosen == "close" and d.p_open == pytest.approx(0.2)
    assert decision_from_logprobs([("Sure", {"Sure": 0.0})]).chosen is None


def test_dialogue_window_ends_at_last_user_message():
    turns = [("user", "a"), ("assistant", "b"), ("human", "c"), ("ai", "d"), ("tool", "x")]
    assert dialogue_window(turns, 6) == [("user", "a"), ("assistant", "b"), ("user", "c")]
    assert dialogue_window(turns, 1) == [("user", "c")]
    assert dialogue_window([("assistant", "b")], 6) == []


def test_embedding_reranker_fast_path_matches():
    import numpy as np

    class Toy:
        dim = 3

        def embed_documents(self, texts):
            return np.array([[1.0, 0, 0] if "a" in t else [0, 1.0, 0] for t in texts], np.float32)

        def embed_query(self, text):
            return np.array([0.8, 0.6, 0.0], np.float32)

    rr = EmbeddingReranker(Toy(), scale=10.0)
    s = rr.score("q", ["a note", "other"])
    assert s == pytest.approx([8.0, 6.0])
    assert rr.score_embeddings(Toy().embed_query("q"), Toy().embed_documents(["a", "b"])) == (
        pytest.approx([8.0, 6.0])
    )
    assert rr.score("q", []).shape == (0,)


def test_transformers_extractor_reports_missing_model():
    with pytest.raises(FileNotFoundError, match="no-such-org/no-such-model"):
        TransformersExtractor("no-such-org/no-such-model", local_files_only=True)


def test_config_selects_the_transformers_extractor(tmp_path, monkeypatch):
    from vars_langgraph.config import VARSConfig

    with pytest.raises(ValueError, match="extractor.model"):
        load_extractor(VARSConfig.from_dict({"extractor": {"backend": "transformers"}}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "no-model-here")
    cfg = VARSConfig.from_dict({"extractor": {"backend": "transformers", "model": missing}})
    with pytest.raises(FileNotFoundError, match="no-model-here"):
        load_extractor(cfg)
