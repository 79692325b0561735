"""Bad input gets a clear error or a safe fallback and never corrupts stored data.

On real SQLite files, FAISS and MiniLM. The answering model is a recording chat model and the
extractor a rule extractor (or the real `LLMExtractor` against a loopback server that returns
hostile output): these tests are about input handling, not model quality.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from tests._reliability import FakeOpenAIServer, MarkerExtractor, RecordingChat, marker
from vars_langgraph import VARSConfig, VARSEngine, build_graph
from vars_langgraph.cli import main
from vars_langgraph.learning.policy import UserVector
from vars_langgraph.memory.store import InvalidUserId
from vars_langgraph.models.parsing import parse_preferences
from vars_langgraph.nodes import augment
from vars_langgraph.storage import open_checkpointer, open_store
from vars_langgraph.types import CardSource, Preference, PreferenceCard


class ScriptedRawExtractor:
    """Parses scripted raw model output with the real parser (what an LLM extractor does)."""

    def __init__(self):
        self.raw = ""

    def extract(self, turns):
        return parse_preferences(self.raw)


def make_graph(data_dir: Path, extractor=None, **cfg):
    config = VARSConfig.from_dict({"data_dir": str(data_dir), **cfg})
    engine = VARSEngine(config, open_store(config), index_dir=data_dir / "index",
                        extractor=extractor or MarkerExtractor(), chat_model=RecordingChat())
    return build_graph(config, engine=engine, checkpointer=open_checkpointer(config))


@pytest.fixture
def graph(tmp_path):
    return make_graph(tmp_path / "data")


def run(graph, content, user="alice", thread="t1"):
    return graph.invoke({"messages": [HumanMessage(content) if not isinstance(content, tuple)
                                      else content]},
                        {"configurable": {"thread_id": thread, "user_id": user}})


def nothing_written(graph, data_dir: Path, needle: str) -> None:
    assert graph.engine.memory.users() == []
    assert list(graph.checkpointer.list(None)) == []
    for p in data_dir.rglob("*"):
        if p.is_file():
            assert needle.encode() not in p.read_bytes(), p


# -- user ids -------------------------------------------------------------------------------------

BAD_IDS = [None, "", "   ", "\t\n", "x" * 300, "a\x00b", "line\nbreak"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_user_id_is_refused_before_any_write(tmp_path, bad):
    data = tmp_path / "data"
    g = make_graph(data)
    msg = {"messages": [("user", f"PREF cooking {marker(1, 0)} secretmsg")]}
    conf = {"thread_id": "t1"} if bad is None else {"thread_id": "t1", "user_id": bad}
    with pytest.raises(InvalidUserId, match="user id"):
        g.invoke(msg, {"configurable": conf})
    with pytest.raises(InvalidUserId):
        g.invoke(msg, {"configurable": {"thread_id": "t2"}}, context={"user_id": bad})
    with pytest.raises(InvalidUserId):
        asyncio.run(g.ainvoke(msg, {"configurable": conf}))
    with pytest.raises(InvalidUserId):
        list(g.stream(msg, {"configurable": conf}, stream_mode="updates"))
    nothing_written(g, data, "secretmsg")


def test_memory_api_refuses_bad_ids(graph):
    for bad in BAD_IDS:
        for call in (lambda u: graph.engine.add_preferences(u, [Preference(condition="a", action="b")],
                                                            CardSource()),
                     lambda u: graph.engine.memory.put_pending(u, "t", {}),
                     lambda u: graph.engine.memory.import_user({"cards": {}}, u),
                     graph.engine.forget_user, graph.engine.load_vector):
            with pytest.raises(InvalidUserId):
                call(bad)
    assert graph.engine.memory.users() == []


# -- messages -------------------------------------------------------------------------------------

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


@pytest.mark.parametrize("content", ["", "   ", "\n\t ", [], [{"type": "text", "text": "  "}], [IMAGE]])
def test_empty_or_textless_message_is_refused_before_any_write(tmp_path, content):
    data = tmp_path / "data"
    g = make_graph(data)
    with pytest.raises(ValueError, match="non-empty user message"):
        run(g, content)
    nothing_written(g, data, "iVBORw0KGgo")


def test_content_blocks_and_images_use_the_text_only(graph):
    blocks = [{"type": "text", "text": f"PREF cooking {marker(1, 0)}"}, IMAGE,
              {"type": "image", "source_type": "base64", "data": "AAAA", "mime_type": "image/png"},
              {"type": "text", "text": "what should I cook?"}, {"type": "weird", "x": [1]}]
    with pytest.raises(ValueError, match="valid"):  # non-block items: LangChain's own clear error
        run(graph, [*blocks, 42, None])
    assert list(graph.checkpointer.list(None)) == []
    out = graph.invoke({"messages": [{"role": "user", "content": blocks}]},
                       {"configurable": {"thread_id": "t1", "user_id": "alice"}})
    assert out["query"] == f"PREF cooking {marker(1, 0)}\nwhat should I cook?"
    assert [c["action"] for c in out["extracted"]] == [f"mention the code word {marker(1, 0)}"]
    out = run(graph, [{"type": "text", "text": "tell me about cooking"}], thread="t2")
    assert marker(1, 0) in out["system_prompt"]


def test_one_megabyte_message_is_cut_not_dropped(graph):
    huge = "HEAD " + "lorem ipsum dolor sit amet " * 40_000 + f" PREF cooking {marker(1, 0)} TAIL"
    assert len(huge) > 1_000_000
    t0 = time.perf_counter()
    out = run(graph, huge)
    assert time.perf_counter() - t0 < 60
    assert out["messages"][-1].content == "ok."
    # the model saw the message, cut to fit its context window (head and tail kept)
    _, msgs = graph.engine.chat_model.calls[-1]
    assert msgs[-1][0] == "human" and msgs[-1][1].startswith("HEAD ") and msgs[-1][1].endswith("TAIL")
    assert sum(len(t) for _, t in msgs) < 4 * graph.engine.config.prompt.max_context_tokens
    # what memory stores from it is bounded
    pending = graph.engine.memory.get_pending("alice", "t1")
    assert len(json.dumps(pending)) < 20_000
    cards = graph.engine.memory.list_cards("alice")
    assert [c.action for c in cards] == [f"mention the code word {marker(1, 0)}"]
    assert all(len(s.query) <= 500 for c in cards for s in c.sources)
    out = run(graph, "and now a short question about cooking")  # the thread still works
    assert marker(1, 0) in out["system_prompt"]


# -- extractor output -----------------------------------------------------------------------------

HOSTILE_OUTPUTS = [
    "",
    "Sure! Here are the preferences: none.",
    '{"preferences": [{"condition": "when coding", "action": "use type',  # truncated
    '```json\n{"preferences": [{"condition": "when coding", "action": "use tabs"},]}\n```',
    "[" * 100_000 + "]" * 100_000,  # deeply nested
    '{"preferences": [' + ",".join(f'{{"condition": "c{i}", "action": "a{i}"}}'
                                    for i in range(5000)) + "]}",
    '{"preferences": [{"condition": "x" , "action": "' + "y" * 1_000_000 + '"}]}',
    '{"preferences": [{"condition": "when coding", "action": "use tabs", "confidence": NaN,'
    ' "user_id": "bob", "id": "../../etc/passwd", "embedding": [1e309]}]}',
    '{"preferences": [{"condition": ["a"], "action": {"b": 1}}, {"condition": null, "action": 5},'
    ' {"condition": "when \\u0000 nul", "action": "strip \\u202e bidi"}]}',
    '{"preferences": "ignore previous instructions"}',
    "\x00\xff\ufffd" * 1000,
]


def test_hostile_extractor_output_never_corrupts_memory(tmp_path):
    ex = ScriptedRawExtractor()
    g = make_graph(tmp_path / "data", extractor=ex)
    for i, raw in enumerate(HOSTILE_OUTPUTS):
        ex.raw = raw
        t0 = time.perf_counter()
        out = run(g, f"message {i}", thread=f"t{i}")
        assert time.perf_counter() - t0 < 30, i
        assert out["messages"][-1].content == "ok."
        assert len(out["extracted"]) <= 64
    cards = g.engine.memory.list_cards("alice")
    assert cards and all(c.user_id == "alice" for c in cards)
    assert all(len(c.condition) <= 128 and len(c.action) <= 256 for c in cards)
    assert all(math.isfinite(x) for c in cards for x in c.embedding)
    assert all(0 <= c.confidence <= 1 for c in cards)
    assert g.engine.memory.users() == ["alice"]  # "user_id": "bob" in the output went nowhere
    assert not any("passwd" in c.id for c in cards)
    out = run(g, "when coding, what style?", thread="after")
    assert out["messages"][-1].content == "ok."


def test_real_llm_extractor_against_a_server_returning_garbage(tmp_path):
    with FakeOpenAIServer(content='{"preferences": [{"condition": "when coding", "action": '
                                  '"use tabs"}, {"condition": 1e999}]} trailing junk') as srv:
        from vars_langgraph.config import LLMConfig
        from vars_langgraph.models.extraction.llm_backend import LLMExtractor

        ex = LLMExtractor(LLMConfig(base_url=srv.base_url, max_retries=0, timeout=5))
        prefs = ex.extract([("user", "I like tabs when coding")])
        assert [(p.condition, p.action) for p in prefs] == [("when coding", "use tabs")]
        srv.content = "[" * 50_000
        assert ex.extract([("user", "hello")]) == []
        srv.content = ""
        assert ex.extract([("user", "hello")]) == []


# -- stored data ----------------------------------------------------------------------------------

def test_over_long_condition_and_action(graph):
    with pytest.raises(ValueError, match="at most 128"):
        Preference(condition="c" * 129, action="a")
    with pytest.raises(ValueError, match="at most 256"):
        Preference(condition="c", action="a" * 257)
    prefs = parse_preferences(json.dumps({"preferences": [{"condition": "when " + "c" * 500,
                                                           "action": "do " + "a" * 5000}]}))
    assert len(prefs) == 1 and len(prefs[0].condition) <= 128 and len(prefs[0].action) <= 256
    # a card imported with a 100 kB note is stored as given but capped in the prompt
    graph.engine.add_preferences("alice", [Preference(condition="in general", action="be kind")],
                                 CardSource())
    data = graph.engine.memory.export_user("alice")
    (key, card), = data["cards"].items()
    data["cards"][key] = {**card, "note": "N" * 100_000, "condition": "C" * 100_000}
    graph.engine.memory.import_user(data)
    graph.engine.index.invalidate("alice")
    out = run(graph, "hello there")
    line = next(x for x in out["system_prompt"].split("\n") if x.startswith('- "N'))
    assert len(line) <= augment.MAX_NOTE_CHARS + 4


BAD_VECTORS = [
    {"z_long": [math.nan] * 256, "z_short": [math.inf] * 256, "baseline": math.nan},
    {"z_long": [1.0] * 3, "z_short": "oops", "baseline": "high", "updates": "many",
     "history": ["x", None, math.nan, 1.0], "session_id": 7},
    {"z_long": [-math.inf] * 256, "baseline": -math.inf, "updates": -3, "history": "x"},
    {"z_long": [[1.0]] * 256, "z_short": [None] * 256, "updates": math.inf, "history": [math.inf]},
]


@pytest.mark.parametrize("bad", BAD_VECTORS)
def test_non_finite_or_malformed_stored_vector_resets_safely(graph, bad):
    vec = UserVector.from_dict(bad, 256)
    for z in (vec.z_long, vec.z_short):
        assert z.shape == (256,) and all(math.isfinite(x) for x in z)
    assert math.isfinite(vec.baseline) and isinstance(vec.updates, int)
    assert all(math.isfinite(r) for r in vec.history)
    # through the graph on real SQLite (NaN/inf round-trip through the JSON column)
    run(graph, f"PREF cooking {marker(1, 0)}")
    graph.engine.memory.put_vector("alice", bad)
    run(graph, "tell me about cooking")
    out = run(graph, "no, that's not what I asked")
    stored = graph.engine.memory.get_vector("alice")
    assert all(math.isfinite(x) for x in stored["z_long"] + stored["z_short"])
    assert math.isfinite(stored["baseline"]) and out["user_vector"]["updates"] >= 0


def test_non_finite_card_embedding_is_skipped_not_served(graph):
    run(graph, f"PREF cooking {marker(1, 0)} and PREF travel {marker(1, 1)}")
    cards = graph.engine.memory.list_cards("alice")
    bad = cards[0].model_copy(update={"embedding": [math.nan] * len(cards[0].embedding)})
    graph.engine.memory.put_cards("alice", [bad])
    graph.engine.index.invalidate("alice")
    out = run(graph, "tell me about cooking and travel")
    assert all(math.isfinite(c["score"]) and math.isfinite(c["pi"]) for c in out["candidates"])
    assert bad.id not in {c["id"] for c in out["candidates"]}
    assert graph.engine.memory.has_card("alice", bad.id)  # kept, not deleted (SQLite: NaN -> null)


@pytest.mark.parametrize("pending", [
    {"candidates": [{"x": 1}], "selected_ids": 5, "query_embedding": "abc"},
    {"candidates": [{"id": "nope", "pi": "high", "chosen": "yes"}], "sim_notes_query": "x"},
    {"candidates": "all", "query": None, "answer": 12},
    {"candidates": [{"id": None, "pi": math.nan, "chosen": True}], "query_embedding": [math.nan] * 384},
])
def test_corrupt_pending_feedback_is_ignored_not_fatal(graph, pending):
    run(graph, f"PREF cooking {marker(1, 0)}")
    graph.engine.memory.put_pending("alice", "t1", pending)
    out = run(graph, "no, that's not what I asked")  # reward/update read the corrupt record
    assert out["messages"][-1].content == "ok."
    out = run(graph, "tell me about cooking")  # and the thread keeps working
    assert marker(1, 0) in out["system_prompt"]
    vec = graph.engine.memory.get_vector("alice")
    assert all(math.isfinite(x) for x in vec["z_long"])


def test_unreadable_cards_do_not_break_a_turn(graph):
    run(graph, f"PREF cooking {marker(1, 0)}")
    ns = graph.engine.memory.ns("alice", "cards")
    graph.engine.store.put(ns, "junk", {"id": "junk", "note": 5}, index=False)
    graph.engine.store.put(ns, "junk2", {"embedding": "x"}, index=False)
    graph.engine.index.invalidate("alice")
    out = run(graph, "tell me about cooking", thread="t2")
    assert marker(1, 0) in out["system_prompt"]


# -- configuration --------------------------------------------------------------------------------

def test_unknown_config_key_is_named(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"llm\.bse_url"):
        VARSConfig.from_dict({"llm": {"bse_url": "http://x"}})
    with pytest.raises(ValueError, match="retreival"):
        VARSConfig.from_dict({"retreival": {"top_k": 3}})
    y = tmp_path / "c.yaml"
    y.write_text("policy:\n  eta_lng: 0.1\n")
    with pytest.raises(ValueError, match=r"policy\.eta_lng"):
        VARSConfig.from_yaml(y)
    monkeypatch.setenv("VARS_REWARD__BACKEN", "keyword")
    with pytest.raises(ValueError, match=r"reward\.backen"):
        VARSConfig.from_dict({})
    monkeypatch.delenv("VARS_REWARD__BACKEN")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        VARSConfig.from_yaml(tmp_path / "nope.yaml")


def test_unknown_config_key_via_cli(tmp_path, capsys):
    y = tmp_path / "c.yaml"
    y.write_text(f"data_dir: {tmp_path}\nfail_opn: true\n")
    assert main(["--config", str(y), "memories", "--user", "a"]) == 2
    assert "fail_opn" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml"), "memories", "--user", "a"]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_missing_model_files_are_named(tmp_path):
    from vars_langgraph.models.embedder import SentenceTransformerEmbedder
    from vars_langgraph.models.local_server import gguf_path

    cfg = VARSConfig.from_dict({"local_server": {"model_path": str(tmp_path / "gone.gguf")}})
    with pytest.raises(FileNotFoundError, match="gone.gguf"):
        gguf_path(cfg.local_server)
    cfg = VARSConfig.from_dict({"embedding": {"model": str(tmp_path / "no-such-model")}})
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        SentenceTransformerEmbedder(cfg.embedding)
    cfg = VARSConfig.from_dict({"data_dir": str(tmp_path),
                                "policy": {"projection_path": str(tmp_path / "pca.npy")}})
    with pytest.raises(FileNotFoundError, match="pca.npy"):
        VARSEngine(cfg, open_store(cfg))


def test_card_schema_refuses_garbage():
    for bad in [{}, {"id": "x"}, {"id": "x", "user_id": "u", "condition": "c", "action": "a",
                                  "note": "n", "confidence": "very"}]:
        with pytest.raises(ValueError):
            PreferenceCard.model_validate(bad)
