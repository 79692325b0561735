"""`vars-langgraph bench` on a tiny memory: real SQLite, FAISS and MiniLM; schema and sanity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vars_langgraph_eval.bench import STAGES, bench_main, faiss_growth, jittered, synthetic_notes


def test_synthetic_notes_are_distinct_and_deterministic():
    a, b = synthetic_notes(500, seed=4), synthetic_notes(500, seed=4)
    assert a == b and len(set(a)) == 500
    assert synthetic_notes(50, seed=5) != a[:50]


def test_faiss_growth_reports_flat_and_ivf_recall():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(400, 16)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    g = faiss_growth(m, m[:5], k=10)
    assert g["flat_ms"]["p50"] is not None and g["nlist"] == 80
    assert 0.0 <= g["ivf_recall_at_k"] <= 1.0


def test_tiny_bench_writes_json_and_markdown(tmp_path: Path):
    out = tmp_path / "bench"
    rc = bench_main(["--sizes", "30,120", "--queries", "6", "--out", str(out), "--no-progress",
                     "--no-langmem"])
    assert rc == 0
    res = json.loads((out / "bench.json").read_text())
    assert [r["cards"] for r in res["vars"]] == [30, 120]
    for r in res["vars"]:
        for s in (*STAGES, "feedback", "pending"):
            assert r["stages_ms"][s]["p50"] <= r["stages_ms"][s]["p95"]
        assert r["stages_ms"]["embed"]["p50"] > 0  # a fresh text is embedded every turn
        o = r["overhead_ms"]
        assert o["p50"] >= r["stages_ms"]["search"]["p50"]
        assert r["faiss_bytes"] == r["cards"] * 384 * 2  # float16 rows (IndexScalarQuantizer)
        assert r["index_rebuild_s"] >= 0 and r["store_bytes"] > 0
        # compact cards: float16 vectors in the store and in the one float16 index in RAM
        assert 384 * 2 < r["ram_bytes_per_card"] < 3 * 1024
        assert r["disk_bytes_per_card"] > 0 and r["index_file_bytes_per_card"] >= 384 * 2
    assert [g["cards"] for g in res["faiss"]] == [30, 120]
    for b in res["baselines"]:  # BaseStore.search needs SQLite with extension loading
        assert b["cards"] in (30, 120)
        if b.get("available"):
            assert b["search_ms"]["p50"] > 0
    md = (out / "bench.md").read_text()
    assert "| 120 |" in md and "overhead" in md and "RAM B/card" in md
    assert not (out / "work").exists()
    # the cached embeddings are reused by a second run
    assert any((out / "cache").glob("notes-s0-120.npy"))



def test_jittered_vectors_keep_the_real_ones_and_are_unit_length():
    rng = np.random.default_rng(7)  # not jittered()'s seed
    real = rng.normal(size=(10, 8)).astype(np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    v = jittered(real, 25)
    assert v.shape == (25, 8) and np.array_equal(v[:10], real)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert not np.allclose(v[10], real[0]) and float(v[10] @ real[0]) > 0.5


def test_many_users_variant_reports_warm_and_cold_turns(tmp_path: Path):
    out = tmp_path / "many"
    rc = bench_main(["--sizes", "40", "--many", "12", "--queries", "8", "--out", str(out),
                     "--no-progress", "--cache-mb", "0.2", "--embed-max", "20"])
    assert rc == 0
    res = json.loads((out / "bench.json").read_text())
    r = res["many"][0]
    assert r["users"] == 12 and r["cards_per_user"] == 40 and r["total_cards"] == 480
    for kind in ("warm", "cold"):
        o = r["turns"][kind]["overhead"]
        assert o["p50"] is not None and o["p50"] <= o["p95"]
    assert r["turns"]["cold"]["open"]["p50"] > r["turns"]["warm"]["open"]["p50"]
    st = r["index_cache"]
    assert st["misses"] >= 4 and st["hits"] > 0 and st["evictions"] > 0  # 0.2 MB: LRU evicts
    assert st["bytes"] <= st["max_bytes"] or st["users"] == 1
    assert res["settings"]["embedded_notes"] == 20
    assert "many users" in (out / "bench.md").read_text()
