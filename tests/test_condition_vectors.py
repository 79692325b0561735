"""Condition vectors stored with the cards (issue 23, the memory's own time per turn): a card's
condition is embedded when the card is written (with its note, in one call) and stored as
`cemb16`; the rerank node's condition gate reads it and never embeds a stored condition on the
answer's path. Real SQLite/Postgres, FAISS and MiniLM; the wrapper below only counts calls."""

from __future__ import annotations

import numpy as np
import pytest

from vars_langgraph import VARSConfig, VARSEngine
from vars_langgraph.memory.store import COND_KEY, canonical_vector, decode_vector
from vars_langgraph.nodes.rerank import make_rerank
from vars_langgraph.nodes.retrieve import make_retrieve
from vars_langgraph.storage import open_store
from vars_langgraph.types import CardSource, Preference

U = "condvec-user"
CONFIG = {"configurable": {"thread_id": "t1", "user_id": U}}
PREFS = [("writing code", "add type hints to every function"),
         ("solving math problems", "show every step of the derivation"),
         ("planning travel", "list the train connections first")]


class CountingEmbedder:
    """The real MiniLM embedder, recording the texts of every `embed_documents` call."""

    def __init__(self, inner):
        self.inner, self.dim, self.calls = inner, inner.dim, []

    def embed_documents(self, texts):
        self.calls.append(list(texts))
        return self.inner.embed_documents(texts)

    def embed_query(self, text):
        return self.inner.embed_query(text)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


@pytest.fixture(scope="module")
def minilm():
    from vars_langgraph.models.embedder import load_embedder

    return load_embedder(VARSConfig().embedding)


def _engine(make_config, storage, emb) -> VARSEngine:
    cfg = make_config(storage, memory={"condition_min": 0.18})
    return VARSEngine(cfg, open_store(cfg), index_dir=str(cfg.data_path / "index"), embedder=emb)


def _write(engine) -> list:
    src = CardSource(thread_id="t1", turn=1, query="prefs")
    return engine.add_preferences(U, [Preference(condition=c, action=a, confidence=0.9)
                                      for c, a in PREFS], src)


def _turn(engine, query: str) -> list[str]:
    state = {"query": query, "messages": [("user", query)]}
    state.update(make_retrieve(engine)(state, CONFIG, None))
    return [c["id"] for c in make_rerank(engine)(state, CONFIG, None)["selected"]]


def _items(engine) -> dict:
    return {it.key: it.value for it in engine.store.search(engine.memory.ns(U, "cards"),
                                                           limit=100)}


def test_rerank_reads_stored_condition_vectors_no_embedder_call(make_config, storage, minilm):
    emb = CountingEmbedder(minilm)
    cards = _write(_engine(make_config, storage, emb))
    notes = [c.note for c in cards]
    assert emb.calls == [notes + [c for c, _ in PREFS]]  # note and condition: one call
    items = _items(_engine(make_config, storage, emb))
    for card, (cond, _) in zip(cards, PREFS, strict=True):
        want = canonical_vector(minilm.embed_documents([cond])[0])
        assert np.allclose(decode_vector(items[card.id][COND_KEY]), want, atol=2e-3)
    emb.calls.clear()
    engine = _engine(make_config, storage, emb)  # another process: cold cache, stored vectors
    code, math, _ = cards
    assert _turn(engine, "Write a Python function that parses a CSV file.") == [code.id]
    picked = _turn(engine, "Solve the equation 3x + 5 = 20 for x, a math problem.")
    assert math.id in picked and code.id not in picked  # the gate still gates
    assert not set(emb.texts()) & {c for c, _ in PREFS}  # no condition was embedded
    emb.calls.clear()  # the generic conditions: once per engine, already done
    _turn(engine, "Plan a trip from Paris to Rome by train.")
    assert emb.calls == []
    assert engine.index.get(U).cond_ok.all()


def test_cards_stored_without_condition_vector_embed_once_then_repaired(make_config, minilm):
    emb = CountingEmbedder(minilm)
    engine = _engine(make_config, "sqlite", emb)
    cards = _write(engine)
    ui = engine.index.get(U)
    old = [c.model_copy(update={"embedding": ui.vectors([c.id])[0].tolist()}) for c in cards]
    engine.memory.put_cards(U, old)  # as written before condition vectors were stored
    assert not any(COND_KEY in v for v in _items(engine).values())
    engine = _engine(make_config, "sqlite", emb)
    emb.calls.clear()
    code = cards[0]
    assert _turn(engine, "Write a Python function that parses a CSV file.") == [code.id]
    assert "writing code" in emb.texts()  # embedded lazily, on the answer's path
    emb.calls.clear()
    assert _turn(engine, "Write a Python function that parses a CSV file.") == [code.id]
    assert "writing code" not in emb.texts()  # once per process
    src = CardSource(thread_id="t1", turn=2, query="more")
    engine.add_preferences(U, [Preference(condition="writing emails", action="be brief")], src)
    items = _items(engine)
    assert COND_KEY in items[code.id]  # the next write stored it
    assert engine.memory.get_card(U, code.id).sources == code.sources  # otherwise unchanged
    emb.calls.clear()
    fresh = _engine(make_config, "sqlite", emb)
    assert _turn(fresh, "Write a Python function that parses a CSV file.") == [code.id]
    assert "writing code" not in emb.texts()


def test_export_import_keep_condition_vectors_and_reembed_missing(make_config, storage, minilm):
    emb = CountingEmbedder(minilm)
    engine = _engine(make_config, storage, emb)
    cards = _write(engine)
    data = engine.memory.export_user(U)
    assert all(COND_KEY in data["cards"][c.id] for c in cards)  # export keeps them
    engine.memory.forget_user(U)
    emb.calls.clear()
    engine.memory.import_checked(data, U, embed=emb.embed_documents, dim=emb.dim)
    assert emb.calls == []  # nothing to re-embed
    for c in cards:
        del data["cards"][c.id][COND_KEY]
    del data["cards"][cards[0].id]["emb16"]
    engine.memory.forget_user(U)
    stats = engine.memory.import_checked(data, U, embed=emb.embed_documents, dim=emb.dim)
    assert stats["reembedded"] == 1
    assert emb.calls == [[cards[0].note] + [c for c, _ in PREFS]]  # one call for both
    items = _items(engine)
    for card, (cond, _) in zip(cards, PREFS, strict=True):
        want = canonical_vector(minilm.embed_documents([cond])[0])
        assert np.allclose(decode_vector(items[card.id][COND_KEY]), want, atol=2e-3)
    engine.index.invalidate(U)
    emb.calls.clear()
    assert _turn(engine, "Write a Python function that parses a CSV file.") == [cards[0].id]
    assert not set(emb.texts()) & {c for c, _ in PREFS}


def test_damaged_condition_vector_reads_as_none_card_still_served(make_config, minilm):
    emb = CountingEmbedder(minilm)
    engine = _engine(make_config, "sqlite", emb)
    code = _write(engine)[0]
    ns = engine.memory.ns(U, "cards")
    value = dict(engine.store.get(ns, code.id).value)
    value[COND_KEY] = "not base64 !!"
    engine.store.put(ns, code.id, value, index=False)
    engine.memory.put_cards(U, [])  # a new version token
    ui = engine.index.get(U)
    assert code.id in ui.rows and not ui.condition_vectors([code.id])[1][0]
    assert ui.cond_ok.sum() == len(PREFS) - 1
    emb.calls.clear()
    assert _turn(engine, "Write a Python function that parses a CSV file.") == [code.id]
    assert "writing code" in emb.texts()  # embedded instead, never served wrong


def test_consolidation_keeps_condition_vectors(make_config, minilm):
    from vars_langgraph.memory.consolidate import consolidate

    engine = _engine(make_config, "sqlite", CountingEmbedder(minilm))
    src = CardSource(thread_id="t1", turn=1, query="I'm vegetarian.")
    old = engine.add_preferences(U, [Preference(
        condition="choosing food", action="I am vegetarian and eat no fish or meat")], src)[0]
    src = CardSource(thread_id="t2", turn=1, query="I eat fish now.")
    new = engine.add_preferences(U, [Preference(condition="choosing food",
                                                action="I eat fish now")], src)[0]
    assert [c.id for c in consolidate(engine, U, "t2", {})] == [old.id]  # superseded
    items = _items(engine)
    assert items[old.id]["status"] == "superseded"
    assert COND_KEY in items[old.id] and COND_KEY in items[new.id]  # rewritten with it
