"""Per-user store and FAISS cache on real SQLite files and a real embedder."""

import json

import numpy as np
import pytest

from vars_langgraph import VARSConfig, VARSEngine
from vars_langgraph.memory.store import BadImport, InvalidUserId, UserMemory
from vars_langgraph.storage import open_store
from vars_langgraph.types import CardSource, Preference


@pytest.fixture
def engine(tmp_path):
    cfg = VARSConfig(data_dir=str(tmp_path))
    return VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "index")


def prefs(*pairs):
    return [Preference(condition=c, action=a, confidence=0.8) for c, a in pairs]


SRC = CardSource(thread_id="t1", turn=1, query="q")


def test_cards_round_trip_and_search_is_per_user(engine):
    engine.add_preferences("alice", prefs(("when writing code", "use type hints"),
                                          ("when explaining math", "show every step")), SRC)
    engine.add_preferences("bob", prefs(("when writing code", "never use type hints")), SRC)
    q = engine.embed_query("write a python function")
    alice = [c.note for c, _ in engine.index.search("alice", q, 5)]
    bob = [c.note for c, _ in engine.index.search("bob", q, 5)]
    assert alice[0] == "When writing code, use type hints."
    assert bob == ["When writing code, never use type hints."]
    assert engine.index.search("carol", q, 5) == []  # unknown user: empty, no error


def test_near_duplicates_merge_keeping_higher_confidence_and_both_sources(engine):
    engine.add_preferences("alice", prefs(("when writing code", "use type hints")), SRC)
    again = [Preference(condition="when writing code", action="use type hints.", confidence=0.95)]
    engine.add_preferences("alice", again, CardSource(thread_id="t2", turn=3, query="q2"))
    cards = engine.memory.list_cards("alice")
    assert len(cards) == 1
    assert cards[0].confidence == 0.95
    assert [s.thread_id for s in cards[0].sources] == ["t1", "t2"]
    engine.add_preferences("alice", prefs(("when cooking", "suggest vegetarian recipes")), SRC)
    assert len(engine.memory.list_cards("alice")) == 2


def test_index_sees_other_processes_writes(tmp_path, engine):
    engine.add_preferences("alice", prefs(("when writing code", "use type hints")), SRC)
    q = engine.embed_query("code")
    assert len(engine.index.search("alice", q, 5)) == 1
    cfg = engine.config
    other = VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "index")
    assert len(other.index.search("alice", q, 5)) == 1
    # the other process adds a card: this one sees its entry is stale and reopens the user
    other.add_preferences("alice", prefs(("when writing emails", "keep them short")), SRC)
    assert len(engine.index.search("alice", q, 5)) == 2
    assert engine.index.stats()["misses"] == 2


def test_index_rebuilt_when_missing_stale_or_corrupt(tmp_path, engine):
    engine.add_preferences("alice", prefs(("when writing code", "use type hints")), SRC)
    q = engine.embed_query("code")
    assert len(engine.index.search("alice", q, 5)) == 1
    engine.index.flush()
    d = next((tmp_path / "index").iterdir())
    assert (d / "cards.faiss").exists() and json.loads((d / "meta.json").read_text())["ids"]

    # a second process (fresh engine, same files) loads the index from disk: no rebuild
    cfg = engine.config
    other = VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "index")
    assert len(other.index.search("alice", q, 5)) == 1 and other.index.rebuilds == 0

    # the other process adds a card: this one sees its cache is stale and rebuilds
    other.add_preferences("alice", prefs(("when writing emails", "keep them short")), SRC)
    assert len(engine.index.search("alice", q, 5)) == 2

    # corrupt file on disk: detected and rebuilt from the store, nothing lost
    (d / "cards.faiss").write_bytes(b"garbage")
    third = VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "index")
    assert len(third.index.search("alice", q, 5)) == 2 and third.index.rebuilds == 1

    # missing files: rebuilt
    for f in d.iterdir():
        f.unlink()
    fourth = VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "index")
    assert len(fourth.index.search("alice", q, 5)) == 2


def test_ivf_index_file_loaded_when_fresh_rebuilt_when_missing_or_corrupt(tmp_path):
    cfg = VARSConfig.from_dict({"data_dir": str(tmp_path), "retrieval": {"flat_index_max": 3}})

    def new_engine():
        return VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "index")

    engine = new_engine()
    engine.add_preferences("alice", prefs(
        ("when writing code", "use type hints"), ("when cooking", "suggest vegetarian recipes"),
        ("when planning travel", "list train options first"), ("in general", "be concise"),
        ("when explaining math", "show every step"), ("when drafting emails", "keep them short"),
    ), SRC)
    assert len(engine.memory.list_cards("alice")) == 6
    q = engine.embed_query("help me write a python script")
    want = [c.note for c, _ in engine.index.search("alice", q, 3)]
    assert len(want) == 3
    d = next(p for p in (tmp_path / "index").iterdir() if p.is_dir())
    assert (d / "cards.faiss").exists() and len(json.loads((d / "meta.json").read_text())["ids"]) == 6

    second = new_engine()  # a second process: loads the IVF file, no training
    assert [c.note for c, _ in second.index.search("alice", q, 3)] == want
    assert second.index.loads == 1

    (d / "cards.faiss").write_bytes(b"garbage")  # corrupt: rebuilt from the store, nothing lost
    third = new_engine()
    assert [c.note for c, _ in third.index.search("alice", q, 3)] == want
    assert third.index.loads == 0 and (d / "cards.faiss").stat().st_size > 100

    for f in d.iterdir():
        f.unlink()
    fourth = new_engine()
    assert [c.note for c, _ in fourth.index.search("alice", q, 3)] == want


def test_forget_removes_every_trace(tmp_path, engine):
    engine.add_preferences("alice", prefs(("when writing code", "use type hints")), SRC)
    engine.add_preferences("bob", prefs(("when writing code", "use tabs")), SRC)
    engine.memory.put_pending("alice", "t1", {"query": "secret"})
    engine.save_vector("alice", engine.load_vector("alice"))
    engine.index.flush()
    assert engine.forget_user("alice") >= 4
    assert engine.memory.export_user("alice")["cards"] == {}
    assert not any(p.name.startswith("alice") for p in (tmp_path / "index").iterdir())
    assert len(engine.memory.list_cards("bob")) == 1


def test_export_import_round_trip(engine):
    engine.add_preferences("alice", prefs(("when writing code", "use type hints")), SRC)
    data = json.loads(json.dumps(engine.memory.export_user("alice")))
    engine.forget_user("alice")
    assert engine.memory.import_user(data) >= 1
    q = engine.embed_query("code")
    assert [c.note for c, _ in engine.index.search("alice", q, 3)] == ["When writing code, use type hints."]
    engine.memory.import_user(data, user_id="alice.copy@example.com")  # dots are escaped
    assert len(engine.memory.list_cards("alice.copy@example.com")) == 1
    assert "alice.copy@example.com" in engine.memory.users()


@pytest.mark.parametrize("bad", [None, "", "   ", "x" * 300, "a\x00b", 42])
def test_bad_user_ids_are_refused_before_any_write(engine, bad):
    with pytest.raises(InvalidUserId):
        engine.add_preferences(bad, prefs(("a", "b")), SRC)
    with pytest.raises(InvalidUserId):
        UserMemory(engine.store).put_vector(bad, {})


def test_unreadable_card_items_are_skipped_not_deleted(engine):
    engine.add_preferences("alice", prefs(("when writing code", "use type hints")), SRC)
    engine.store.put(UserMemory.ns("alice", "cards"), "broken", {"not": "a card"}, index=False)
    assert len(engine.memory.list_cards("alice")) == 1
    assert engine.store.get(UserMemory.ns("alice", "cards"), "broken") is not None


def test_embeddings_are_normalised(engine):
    v = engine.embedder.embed_documents(["hello world", "type hints"])
    assert v.shape == (2, engine.embedder.dim) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)


def test_entry_has_global_ids_and_vectors_of_stored_cards(engine):
    engine.add_preferences("alice", prefs(("in general", "be concise"),
                                          ("when writing code", "use type hints")), SRC)
    ui = engine.index.get("alice")
    stored = {c.id: c for c in engine.memory.list_cards("alice")}
    assert [stored[i].is_global for i in ui.global_ids] == [True] and len(ui.global_ids) == 1
    ids = list(reversed(ui.ids))
    vecs = ui.vectors(ids)
    assert vecs.dtype == np.float32 and vecs.shape == (2, engine.embedder.dim)
    assert np.array_equal(vecs, np.asarray([stored[i].embedding for i in ids], np.float32))
    assert ui.cards[ids[0]].embedding == []  # in memory the vector lives in the matrix only
    # a fresh open from the store gives the same entry (ids, globals, vectors)
    engine.index.invalidate("alice")
    again = engine.index.get("alice")
    assert again.global_ids == ui.global_ids and np.array_equal(again.vectors(ids), vecs)


def test_cards_are_stored_compactly_as_float16_base64(engine):
    engine.add_preferences("alice", prefs(("when writing code", "use type hints")), SRC)
    item = engine.store.search(UserMemory.ns("alice", "cards"))[0]
    assert "embedding" not in item.value and len(item.value["emb16"]) == 4 * 384 * 2 // 3
    assert len(item.value["cemb16"]) == len(item.value["emb16"])  # the condition's vector
    body = {k: v for k, v in item.value.items() if k != "cemb16"}
    assert len(json.dumps(body)) < 1800  # a float list alone was ~8 KB
    card = engine.memory.list_cards("alice")[0]
    assert len(card.embedding) == 384
    assert abs(np.linalg.norm(card.embedding) - 1) < 1e-3


def test_import_refuses_the_unreleased_format_1(engine):
    data = {"format": "vars-langgraph/1", "user_id": "x", "cards": {}}
    with pytest.raises(BadImport, match="unknown format"):
        engine.memory.import_user(data, user_id="carol")


def test_lru_bounds_entry_bytes_and_counts_hits_and_misses(tmp_path):
    cfg = VARSConfig.from_dict({"data_dir": str(tmp_path), "cache": {"index_max_mb": 0.004}})
    engine = VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "index")
    for u in ("u1", "u2", "u3"):
        engine.add_preferences(u, prefs((f"when talking to {u}", "use their name")), SRC)
    idx = engine.index
    for u in ("u1", "u2", "u3"):
        idx.get(u)
    st = idx.stats()
    assert st["bytes"] <= st["max_bytes"] or st["users"] == 1
    assert st["evictions"] >= 1 and st["users"] < 3
    hits, misses = st["hits"], st["misses"]
    idx.get("u3")  # the most recent entry stays
    assert idx.stats()["hits"] == hits + 1 and idx.stats()["misses"] == misses
    idx.get("u1")  # evicted: opened again from the store, results unchanged
    assert idx.stats()["misses"] == misses + 1
    q = engine.embed_query("talking to u1")
    assert [c.note for c, _ in idx.search("u1", q, 3)] == ["When talking to u1, use their name."]


def test_lexical_cache_keeps_the_users_used_last(tmp_path):
    from vars_langgraph.memory.lexical import LexicalCache

    cfg = VARSConfig.from_dict({"data_dir": str(tmp_path)})
    engine = VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "index")
    for u in ("u1", "u2", "u3"):
        engine.add_preferences(u, prefs((f"when talking to {u}", "use their name")), SRC)
    lex = LexicalCache(max_users=2)

    def search(u: str) -> None:
        assert lex.search(u, engine.index.get(u), "use their name", 1)

    for u in ("u1", "u2", "u1", "u3"):  # u3 evicts u2, the user used least recently
        search(u)
    assert lex.rebuilds == 3
    search("u1")
    assert lex.rebuilds == 3
    search("u2")
    assert lex.rebuilds == 4


def test_device_settings_fall_back_to_cpu_without_a_gpu(tmp_path):
    """The GPU path is chosen by config; on a CPU-only build "auto" stays on the CPU and "gpu"
    is a clear error (scripts/gpu_check.py runs the GPU path on a GPU machine)."""
    import faiss
    import torch

    from vars_langgraph.memory.index import set_faiss_device
    from vars_langgraph.models.embedder import resolve_device

    assert resolve_device("cuda:1") == "cuda:1"
    if torch.cuda.is_available() or (hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus()):
        pytest.skip("this machine has a GPU: scripts/gpu_check.py covers it")
    assert resolve_device("auto") == "cpu"
    assert set_faiss_device("auto") is False
    with pytest.raises(RuntimeError, match=r"vars-langgraph\[gpu\]"):
        set_faiss_device("gpu")
    cfg = VARSConfig.from_dict({"data_dir": str(tmp_path), "cache": {"faiss_device": "auto"}})
    engine = VARSEngine(cfg, open_store(cfg), index_dir=tmp_path / "index")
    engine.add_preferences("alice", prefs(("when writing code", "use type hints")), SRC)
    q = engine.embed_query("code")
    assert [c.note for c, _ in engine.index.search("alice", q, 1)] == ["When writing code, use type hints."]
    set_faiss_device("cpu")
