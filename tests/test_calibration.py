"""The reranker calibration map: s0 = log P(useful | query, note), monotone, fitted on the
labelled set's fit queries and better than a constant predictor on its held-out queries."""

import json
import logging

import numpy as np
import pytest

from vars_langgraph.config import VARSConfig
from vars_langgraph.learning import calibration as cal

KEY = "embedding:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def minilm():
    from vars_langgraph.models.embedder import load_embedder

    return load_embedder(VARSConfig().embedding)


def test_shipped_map_loads_and_is_monotone_in_log_p_units():
    shipped = json.loads(cal.SHIPPED.read_text())["maps"][KEY]
    m = cal.load_calibration(KEY)
    assert (m.a, m.b, m.c) == (shipped["a"], shipped["b"], shipped["c"])
    raw = np.linspace(-1, 1, 201)
    for glob in (False, True):
        s0 = m.log_p(raw, np.full(len(raw), glob))
        assert np.all(np.diff(s0) > 0) and np.all(s0 < 0)  # increasing, log of a probability
    assert m.log_p([0.2], [True])[0] > m.log_p([0.2], [False])[0]  # the fitted global prior
    assert m.log_p([0.2], [True], bonus=0.0)[0] == pytest.approx(m.log_p([0.2], [False])[0])


def test_fit_recovers_known_parameters_and_rejects_a_useless_score():
    rng = np.random.default_rng(0)
    raw = rng.uniform(-1, 1, 20000)
    glob = rng.random(20000) < 0.3
    p = 1 / (1 + np.exp(-(6.0 * raw - 1.0 + 2.0 * glob)))
    y = rng.random(20000) < p
    a, b, c = cal.fit_logistic(raw, glob, y)
    assert (a, b, c) == pytest.approx((6.0, -1.0, 2.0), abs=0.25)
    with pytest.raises(ValueError, match="not positive"):
        cal.fit_logistic(raw, glob, ~y)  # higher score, less useful: no monotone map


def test_metrics_on_known_numbers():
    p, y = np.array([0.9, 0.1, 0.8, 0.3]), np.array([1, 0, 0, 1])
    assert cal.brier(p, y) == pytest.approx((0.01 + 0.01 + 0.64 + 0.49) / 4)
    assert cal.ece(np.array([0.95, 0.95]), np.array([1, 0])) == pytest.approx(0.45)
    assert cal.ece(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.0)


def test_split_is_by_query_fixed_and_holds_style_preferences():
    rows = cal.load_labelled()
    queries = {r["query"] for r in rows}
    held = {q for q in queries if cal.split_of(q) == "held_out"}
    assert 0.15 < len(held) / len(queries) < 0.45
    assert cal.split_of("Why is the sky blue?") == cal.split_of("Why is the sky blue?")
    style = [r for r in rows if r["kind"] == "style"]
    assert style and all(r["useful"] for r in style if "keep" in r["note"] and "short" in r["note"])
    assert any(r["global"] and not r["useful"] for r in rows)  # globals are not all useful


def test_held_out_brier_beats_a_constant_and_the_shipped_map_is_reproducible(minilm):
    rows = cal.load_labelled()
    notes = sorted({r["note"] for r in rows})
    queries = sorted({r["query"] for r in rows})
    n_vec = dict(zip(notes, minilm.embed_documents(notes), strict=True))
    q_vec = dict(zip(queries, minilm.embed_documents(queries), strict=True))  # MiniLM: no prompt
    raw = np.array([float(n_vec[r["note"]] @ q_vec[r["query"]]) for r in rows])
    report = cal.fit_and_validate(KEY, rows, raw)
    held = report["held_out"]
    assert held["brier"] < held["brier_constant"] and held["log_loss"] < held["log_loss_constant"]
    shipped = cal.load_calibration(KEY)
    assert (report["a"], report["b"], report["c"]) == pytest.approx(
        (shipped.a, shipped.b, shipped.c), abs=1e-3)


def test_backends_without_a_map_fall_back_safely(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ident = cal.load_calibration("llm:some-model")
        assert ident.log_p([np.log(0.8), np.log(0.05)]) == pytest.approx([np.log(0.8), np.log(0.05)])
        other = cal.load_calibration("embedding:some-other-embedder")
    assert other.a == cal.load_calibration(KEY).a
    assert "benchmarks/rerank.py --fit" in caplog.text
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a calibration file"):
        cal.load_calibration(KEY, bad)
    with pytest.raises(FileNotFoundError, match="calibration_path"):
        cal.load_calibration(KEY, tmp_path / "missing.json")


def test_custom_map_file_is_used(tmp_path):
    path = tmp_path / "mine.json"
    cal.write_map(path, "cross_encoder:my-model", {"a": 2.0, "b": 0.5, "c": 0.0, "held_out": {}},
                  {"note": "test"})
    cfg = VARSConfig.from_dict({"reranker": {"backend": "cross_encoder", "model": "my-model",
                                             "calibration_path": str(path)}})
    m = cal.load_calibration(cal.calibration_key(cfg), cfg.reranker.calibration_path)
    assert (m.a, m.b) == (2.0, 0.5)


def test_reranker_scale_is_not_a_setting():
    with pytest.raises(ValueError, match="scale"):
        VARSConfig.from_dict({"reranker": {"scale": 1.0}})


def test_rerank_node_puts_every_backend_in_log_p_units_and_the_tail_below_the_head(monkeypatch):
    from types import SimpleNamespace

    from vars_langgraph.nodes import rerank
    from vars_langgraph.nodes.rerank import base_scores, calibrations

    monkeypatch.setattr(rerank, "MAX_CANDIDATES", 3)

    class YesNo:  # an LLM reranker stand-in: log P("yes") per note
        def score(self, query, notes):
            return np.log([0.9, 0.2, 0.6][: len(notes)])

    cfg = VARSConfig.from_dict({"reranker": {"backend": "llm"},
                                "retrieval": {"select_k": 2}})
    engine = SimpleNamespace(config=cfg, reranker=YesNo())
    cands = [{"note": f"n{i}", "dense": d, "global": i == 1}
             for i, d in enumerate([0.6, 0.5, 0.4, 0.3, 0.2])]
    backend_cal, emb_cal = calibrations(engine)
    assert backend_cal.input == "log_p"  # no fitted map for this LLM: raw log P kept
    s0 = base_scores(engine, "q", cands, (backend_cal, emb_cal))
    assert s0[:3] == pytest.approx(np.log([0.9, 0.2, 0.6]))
    assert s0[3] < s0[:3].min() and s0[4] < s0[3]  # beyond MAX_CANDIDATES: below, cosine order
    few = base_scores(engine, "q", cands[:2], (backend_cal, emb_cal))  # K <= k: no reranker
    assert few == pytest.approx(emb_cal.log_p([0.6, 0.5], [False, True]))
