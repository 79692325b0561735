"""Forget and export on real SQLite files, FAISS index files and MiniLM.

`forget` (CLI and API) deletes every trace of a user: cards, vector, pending feedback, the
thread registry, index files, and with `--threads` the checkpointed conversations. Proof: a
unique marker in the user's messages and preferences is absent from the raw bytes of every
file under the data dir afterwards (vars.sqlite, threads.sqlite and their -wal/-shm files),
while another user's marker is still there. `export` writes JSON that `import` restores.

A rule extractor and a recording chat model stand in for the LLMs: this is about storage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._reliability import MarkerExtractor, RecordingChat, marker
from vars_langgraph import VARSConfig, VARSEngine, build_graph
from vars_langgraph.cli import main
from vars_langgraph.storage import open_checkpointer, open_store

ALICE, BOB = "alice-7f3a9c", "bob-2d81e0"
SECRET_A, SECRET_B = "zqxj-alice-secret-8841", "wvkq-bob-secret-1937"


def make_graph(data_dir: Path):
    cfg = VARSConfig.from_dict({"data_dir": str(data_dir)})
    engine = VARSEngine(cfg, open_store(cfg), index_dir=data_dir / "index",
                        extractor=MarkerExtractor(), chat_model=RecordingChat())
    return build_graph(cfg, engine=engine, checkpointer=open_checkpointer(cfg))


def chat(graph, user: str, n: int, secret: str, thread: str, via_context: bool = False) -> None:
    msgs = [f"PREF cooking {marker(n, 0)} my note {secret}",
            f"PREF travel {marker(n, 1)} tell me about cooking {secret}",
            "no, that's not what I asked",
            f"and travel? {secret}"]
    for text in msgs:
        if via_context:  # user id in the runtime context only (LangGraph v1 style)
            graph.invoke({"messages": [("user", text)]}, {"configurable": {"thread_id": thread}},
                         context={"user_id": user})
        else:
            graph.invoke({"messages": [("user", text)]},
                         {"configurable": {"thread_id": thread, "user_id": user}})


def files_containing(root: Path, needle: str) -> list[str]:
    """Every file under root whose raw bytes hold `needle` (utf-8, also JSON/msgpack forms)."""
    hits = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if needle.encode() in data or needle.encode("utf-16-le") in data:
                hits.append(str(p.relative_to(root)))
    return hits


@pytest.fixture
def populated(tmp_path):
    data = tmp_path / "data"
    g = make_graph(data)
    chat(g, ALICE, 1, SECRET_A, "a-session-1")
    chat(g, ALICE, 1, SECRET_A, "plain-thread-42", via_context=True)  # no user prefix, no metadata
    chat(g, BOB, 2, SECRET_B, "b-session-1")
    g.engine.index.flush()
    assert len(g.engine.memory.list_cards(ALICE)) == 2
    assert files_containing(data, SECRET_A) and files_containing(data, SECRET_B)
    assert (data / "index").exists() and any((data / "index").iterdir())
    return g, data


def test_cli_forget_with_threads_leaves_no_trace_on_disk(populated, capsys):
    g, data = populated
    assert main(["--data-dir", str(data), "forget", "--user", ALICE, "--threads"]) == 0
    out = capsys.readouterr().out
    assert "2 threads" in out
    # nothing of alice anywhere under the data dir, in any file (db, -wal, -shm, index)
    assert files_containing(data, SECRET_A) == []
    assert files_containing(data, marker(1, 0)) == []
    assert files_containing(data, ALICE) == []
    # bob untouched: his text, cards, vector and threads are all still there
    assert files_containing(data, SECRET_B)
    assert len(g.engine.memory.list_cards(BOB)) == 2
    for tid in ("a-session-1", "plain-thread-42"):
        assert g.get_state({"configurable": {"thread_id": tid}}).values == {}
    assert g.get_state({"configurable": {"thread_id": "b-session-1"}}).values["messages"]
    # the live engine (another process, in effect) sees alice gone and recovers cleanly
    g.engine.index.invalidate(ALICE)
    out = g.invoke({"messages": [("user", "tell me about cooking")]},
                   {"configurable": {"thread_id": "a-new", "user_id": ALICE}})
    assert out["candidates"] == [] and "User Preferences" not in out["system_prompt"]


def test_api_forget_deletes_every_item_and_index_file(populated):
    g, data = populated
    engine = g.engine
    assert engine.memory.get_vector(ALICE) is not None
    assert engine.memory.get_pending(ALICE, "a-session-1") is not None
    n = engine.forget_user(ALICE)
    assert n >= 4
    exported = engine.memory.export_user(ALICE)
    assert all(not exported[part] for part in ("cards", "state", "pending"))
    assert ALICE not in engine.memory.users() and BOB in engine.memory.users()
    assert not [p for p in (data / "index").rglob("*") if ALICE in str(p)]
    # without --threads the conversations stay; the memory side is gone from the store file
    assert g.get_state({"configurable": {"thread_id": "a-session-1"}}).values["messages"]
    assert "vars.sqlite" not in " ".join(files_containing(data, marker(1, 0)))


def test_export_import_round_trip_via_cli(populated, tmp_path, capsys):
    g, data = populated
    before = g.engine.memory.export_user(ALICE)
    vec = g.engine.load_vector(ALICE)
    out_file = tmp_path / "alice.json"
    assert main(["--data-dir", str(data), "export", "--user", ALICE, "--out", str(out_file)]) == 0
    exported = json.loads(out_file.read_text())
    assert exported["format"] == "vars-langgraph/2" and exported["user_id"] == ALICE
    assert {c["note"] for c in exported["cards"].values()} == {
        f"When discussing cooking, mention the code word {marker(1, 0)}.",
        f"When discussing travel, mention the code word {marker(1, 1)}."}
    assert main(["--data-dir", str(data), "forget", "--user", ALICE]) == 0
    assert g.engine.memory.list_cards(ALICE) == []
    assert main(["--data-dir", str(data), "import", str(out_file)]) == 0
    capsys.readouterr()
    after = g.engine.memory.export_user(ALICE)
    assert after["cards"] == before["cards"] and after["pending"] == before["pending"]
    assert after["state"]["vector"] == before["state"]["vector"]
    assert g.engine.load_vector(ALICE).z_long.tolist() == vec.z_long.tolist()
    # the restored cards are searchable again (index rebuilt from the store)
    g.engine.index.invalidate(ALICE)
    out = g.invoke({"messages": [("user", "tell me about cooking")]},
                   {"configurable": {"thread_id": "a-2", "user_id": ALICE}})
    assert marker(1, 0) in out["system_prompt"]
    # memories --json shows them; import under another id works and keeps users apart
    assert main(["--data-dir", str(data), "memories", "--user", ALICE, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["cards"]) == 2 and "embedding" not in shown["cards"][0]
    assert main(["--data-dir", str(data), "import", str(out_file), "--user", "carol"]) == 0
    assert {c.user_id for c in g.engine.memory.list_cards("carol")} == {"carol"}


def test_forget_unknown_user_and_bad_id(tmp_path, capsys):
    data = tmp_path / "d"
    assert main(["--data-dir", str(data), "forget", "--user", "nobody", "--threads"]) == 0
    assert "0 stored items, 0 threads" in capsys.readouterr().out
    assert main(["--data-dir", str(data), "forget", "--user", "   "]) == 2
    assert "user id" in capsys.readouterr().err
