"""Child processes for tests/test_crash.py (not a test module).

`python -m tests._crash_child zygote DATA_DIR`: imports everything once, then for each seed
read from stdin forks a worker and prints its pid; the worker writes to DATA_DIR until the test
SIGKILLs it. Forking from a warm parent makes a restart cost milliseconds instead of seconds of
imports, so the test can kill many times within its time budget.

`python -m tests._crash_child writer DATA_DIR NAME SECONDS`: one of two processes writing the
same data dir at once; at the end it checks its own in-memory index against the store.

`python -m tests._crash_child answered DATA_DIR ACK_FILE`: one chat turn with learning in the
background (the CLI's default) whose extractor never returns; acks `ANSWERED` once the user
has the answer, then waits to be SIGKILLed between the answer and the extraction.

Every write is acknowledged on the ack file only after it returned (committed):
    CARD <user> <card id>    a card write (direct, or by the extract node of a graph turn)
    PEND <i>                 pending feedback i of user "vec-user" written
    VEC <i>                  vector i of "vec-user" committed (consuming pending i)
The vector i is self-describing: z_long = [i]*256, z_short = [-i]*256, baseline = updates = i,
so a half-written vector would show as a mix.

The embedder is a hash embedder (no model load per restart): these tests are about storage.
"""

from __future__ import annotations

import os
import random
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests._reliability import HashEmbedder, MarkerExtractor, RecordingChat, marker  # noqa: E402
from vars_langgraph import VARSConfig, VARSEngine, build_graph  # noqa: E402
from vars_langgraph.storage import open_checkpointer, open_store  # noqa: E402
from vars_langgraph.types import CardSource, Preference  # noqa: E402

DIM = 32
VEC_USER, CARD_USER, TURN_USER = "vec-user", "card-user", "turn-user"


def make(data_dir: str, background: bool = False, extractor=None):
    # keyword reward: these children test storage under kills and races; the hash embedder has
    # no classifier, and loading the reaction reader would take seconds of their time windows
    cfg = VARSConfig.from_dict({"data_dir": data_dir, "retrieval": {"dedup_threshold": 0.999},
                                "background": {"enabled": background}, "reward": {"backend": "keyword"}})
    engine = VARSEngine(cfg, open_store(cfg), index_dir=Path(data_dir) / "index",
                        embedder=HashEmbedder(DIM), extractor=extractor or MarkerExtractor(),
                        chat_model=RecordingChat())
    return engine, build_graph(cfg, engine=engine, checkpointer=open_checkpointer(cfg))


class StuckExtractor:
    """An extractor that never returns: the process dies before extraction finishes."""

    def extract(self, turns):  # noqa: ANN001
        time.sleep(3600)
        return []


ANSWERED_TEXT = f"PREF tea {marker(7, 1)}"


def answered(data_dir: str, ack_path: str) -> None:
    with open(ack_path, "w", buffering=1) as f:
        try:
            engine, graph = make(data_dir, background=True, extractor=StuckExtractor())
            out = graph.invoke({"messages": [("user", ANSWERED_TEXT)]},
                               {"configurable": {"thread_id": "t1", "user_id": TURN_USER}})
            f.write(f"ANSWERED {out['messages'][-1].content}\n")
        except BaseException:  # noqa: BLE001 - reported to the test, which fails on it
            f.write("ERROR " + traceback.format_exc().replace("\n", " | ") + "\n")
    time.sleep(3600)


def vector(i: int) -> dict:
    return {"z_long": [float(i)] * 256, "z_short": [float(-i)] * 256, "baseline": float(i),
            "updates": i, "session_id": "s", "history": []}


def step(engine, graph, ack, rng: random.Random, i: int, users: tuple[str, str, str]) -> None:
    vec_user, card_user, turn_user = users
    op = rng.choice(("turn", "card", "card", "vec"))
    if op == "turn":  # reward -> update -> extract (card write) -> ... -> generate (pending)
        out = graph.invoke({"messages": [("user", f"PREF t{i} {marker(i % 1000, i)}")]},
                           {"configurable": {"thread_id": f"thread-{turn_user}",
                                             "user_id": turn_user}})
        for c in out["extracted"]:
            ack(f"CARD {turn_user} {c['id']}")
    elif op == "card":
        prefs = [Preference(condition=f"when topic {i} {j}", action=f"say ack {i} {j}")
                 for j in range(rng.randint(1, 3))]
        for c in engine.add_preferences(card_user, prefs, CardSource(thread_id="direct", turn=i)):
            ack(f"CARD {card_user} {c.id}")
    else:
        engine.memory.put_pending(vec_user, "t", {"i": i})
        ack(f"PEND {i}")
        engine.memory.commit_update(vec_user, "t", vector(i), drop_pending=True)
        ack(f"VEC {i}")
    if rng.random() < 0.7:
        engine.index.flush()  # FAISS index + meta files


def worker(data_dir: str, seed: int, ack_path: str) -> None:
    f = open(ack_path, "w", buffering=1)  # noqa: SIM115 - line-buffered: one write() per ack

    def ack(line: str) -> None:
        f.write(line + "\n")

    try:
        engine, graph = make(data_dir)
        engine.index.get(CARD_USER)  # load or rebuild the index on start, as a restart does
        rng = random.Random(seed)
        ack("READY")
        i = seed * 100_000
        while True:
            i += 1
            step(engine, graph, ack, rng, i, (VEC_USER, CARD_USER, TURN_USER))
    except BaseException:  # noqa: BLE001 - reported to the test, which fails on it
        ack("ERROR " + traceback.format_exc().replace("\n", " | "))
    finally:
        f.flush()
        os._exit(0)


def zygote(data_dir: str) -> None:
    print("ZYGOTE", flush=True)
    for line in sys.stdin:
        seed, ack_path = line.split()
        pid = os.fork()
        if pid == 0:
            worker(data_dir, int(seed), ack_path)
        print(pid, flush=True)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # reap killed workers
                pass
        except ChildProcessError:
            pass


def writer(data_dir: str, name: str, seconds: float) -> None:
    """One of two processes writing the same data dir: own users and a shared one."""
    engine, graph = make(data_dir)
    rng = random.Random(name)
    acks: list[str] = []
    t_end = time.monotonic() + seconds
    i = 0 if name == "p1" else 50_000
    stale = 0
    while time.monotonic() < t_end:
        i += 1
        users = (f"vec-{name}", "shared" if rng.random() < 0.5 else f"cards-{name}", f"turn-{name}")
        step(engine, graph, acks.append, rng, i, users)
        # this process's cache of the shared user must match the store whenever the store's
        # version did not move while we looked (else the other process just wrote)
        v1 = engine.memory.version("shared")
        stored = {c.id for c in engine.memory.list_cards("shared")}
        ui = engine.index.get("shared")
        if v1 == engine.memory.version("shared") == ui.version and stored != set(ui.cards):
            stale += 1
    for line in acks:
        print(line)
    print(f"STALE {stale}", flush=True)


def open_race(root: str, rounds: int) -> None:
    """Three forked processes open the same new data dir at the same instant, `rounds` times;
    prints how many of them failed."""
    from vars_langgraph.storage.sqlite import open_sqlite_checkpointer, open_sqlite_store

    failed = 0
    for r in range(rounds):
        data = Path(root) / str(r)
        start = time.monotonic() + 0.05
        pids = []
        for k in range(3):
            pid = os.fork()
            if pid == 0:
                while time.monotonic() < start:
                    pass
                try:
                    open_sqlite_store(data / "vars.sqlite").put(("u",), str(k), {"k": k})
                    open_sqlite_checkpointer(data / "threads.sqlite")
                    os._exit(0)
                except Exception:
                    traceback.print_exc()
                    os._exit(1)
            pids.append(pid)
        failed += sum(os.waitpid(pid, 0)[1] != 0 for pid in pids)
    print(f"FAILED {failed}", flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "open_race":
        open_race(sys.argv[2], int(sys.argv[3]))
    elif mode == "zygote":
        zygote(sys.argv[2])
    elif mode == "answered":
        answered(sys.argv[2], sys.argv[3])
    else:
        writer(sys.argv[2], sys.argv[3], float(sys.argv[4]))
