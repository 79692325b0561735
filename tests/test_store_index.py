"""Per-user store and FAISS cache on real SQLite files and a real embedder."""

import json

import numpy as np
import pytest

from vars_langgraph import VARSConfig, VARSEngine
from vars_langgraph.memory.store import InvalidUserId, UserMemory
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
