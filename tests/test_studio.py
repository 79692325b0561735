"""LangGraph Studio: every graph in langgraph.json loads the way the CLI loads it and runs a
turn; `langgraph dev` (when installed) serves them over its HTTP API."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.pregel import Pregel
from langgraph.store.memory import InMemoryStore

from tests.conftest import extractor_url

ROOT = Path(__file__).resolve().parents[1]
CONFIG = json.loads((ROOT / "langgraph.json").read_text())
VARS_NODES = {"reward", "update", "extract", "retrieve", "rerank", "augment", "generate"}


def load_graph(spec: str):
    """What `langgraph dev` does with "./path.py:var": import the file by path, take `var`."""
    path, var = spec.rsplit(":", 1)
    modname = path.replace("/", "__").replace(".py", "").replace(" ", "_").lstrip(".")
    modspec = importlib.util.spec_from_file_location(modname, ROOT / path)
    module = importlib.util.module_from_spec(modspec)
    sys.modules[modname] = module
    modspec.loader.exec_module(module)
    return module.__dict__[var]


@pytest.fixture
def llm_env(monkeypatch, llm_base_url) -> dict[str, str]:
    env = {"VARS_LLM__BASE_URL": llm_base_url, "VARS_LLM__MAX_TOKENS": "48",
           "VARS_LLM__TEMPERATURE": "0", "VARS_EXTRACTOR__LLM__BASE_URL": extractor_url(llm_base_url)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("VARS_CONFIG", raising=False)
    return env


def test_langgraph_json_shape():
    assert set(CONFIG["graphs"]) == {"vars_chat", "react_agent"}
    assert CONFIG["dependencies"] == ["."]
    for spec in CONFIG["graphs"].values():
        assert (ROOT / spec.split(":")[0]).is_file(), spec
    index = CONFIG["store"]["index"]
    path, fn = index["embed"].rsplit(":", 1)
    spec = importlib.util.spec_from_file_location("graphs__embeddings", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vecs = getattr(module, fn)(["answer in bullet points", "hello"])
    assert len(vecs) == 2 and all(len(v) == index["dims"] for v in vecs)


@pytest.mark.llm
def test_every_graph_loads_like_the_cli_and_runs_a_turn(llm_env):
    for graph_id, spec in CONFIG["graphs"].items():
        graph = load_graph(spec)
        assert isinstance(graph, Pregel), graph_id
        # `langgraph dev` refuses graphs that bring their own checkpointer or store
        assert graph.checkpointer is None and graph.store is None, graph_id
        nodes = set(graph.get_graph().nodes)
        if graph_id == "vars_chat":
            assert nodes >= VARS_NODES
        else:
            assert {"pre_model_hook", "agent", "tools", "post_model_hook"} <= nodes
        # the server attaches its own persistence per run, then streams the run
        store = InMemoryStore()
        run = graph.copy(update={"checkpointer": InMemorySaver(), "store": store})
        out = run.invoke({"messages": [{"role": "user", "content": "Hello! What is a unit test?"}]},
                         {"configurable": {"thread_id": f"{graph_id}-1"}},
                         context={"user_id": "studio-alice"})
        assert out["messages"][-1].type == "ai", graph_id
        for key in ("query", "candidates", "selected", "system_prompt", "user_vector"):
            assert key in out, (graph_id, key)  # what Studio's state view shows
        # VARS data went to the store the server gave the run (langgraph.json's store)
        assert store.list_namespaces(prefix=("vars", "studio-alice")), graph_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.llm
def test_langgraph_dev_serves_the_graphs(tmp_path, llm_env):
    if importlib.util.find_spec("langgraph_api") is None \
            or importlib.util.find_spec("langgraph_cli") is None:
        pytest.skip('langgraph dev needs `pip install "langgraph-cli[inmem]"` (not installed)')
    # run from a scratch directory (the dev server keeps its files in ./.langgraph_api)
    shutil.copy(ROOT / "langgraph.json", tmp_path / "langgraph.json")
    (tmp_path / "graphs").symlink_to(ROOT / "graphs")
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-c", "from langgraph_cli.cli import cli; cli()", "dev",
         "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload"],
        cwd=tmp_path, env={**os.environ, **llm_env}, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(1)
        with httpx.Client(base_url=base, timeout=600) as http:
            assistants = http.post("/assistants/search", json={}).json()
            ids = {a["graph_id"]: a["assistant_id"] for a in assistants}
            assert set(ids) == {"vars_chat", "react_agent"}
            drawn = http.get(f"/assistants/{ids['vars_chat']}/graph").json()
            assert {n["id"] for n in drawn["nodes"]} >= VARS_NODES

            thread = http.post("/threads", json={}).json()["thread_id"]
            r = http.post(f"/threads/{thread}/runs/wait", json={
                "assistant_id": "vars_chat",
                "input": {"messages": [{"role": "user", "content": "Hi! What is a unit test?"}]},
                "context": {"user_id": "http-alice"},
            })
            assert r.status_code == 200, r.text
            out = r.json()
            assert "__error__" not in out, out
            assert out["messages"][-1]["type"] == "ai"
            state = http.get(f"/threads/{thread}/state").json()["values"]
            assert {"candidates", "selected", "user_vector"} <= set(state)
            runs = http.get(f"/threads/{thread}/runs").json()
            assert [run["status"] for run in runs] == ["success"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
