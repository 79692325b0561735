"""`vars-langgraph`: chat, inspect and manage per-user memory, run evaluations and benchmarks."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
import uuid
from typing import Any

from vars_langgraph.config import VARSConfig


def _config(args: argparse.Namespace) -> VARSConfig:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return VARSConfig.from_yaml(args.config or os.environ.get("VARS_CONFIG"), **overrides)


def _engine(cfg: VARSConfig):
    from vars_langgraph.engine import VARSEngine
    from vars_langgraph.graph import default_index_dir
    from vars_langgraph.storage import open_store

    return VARSEngine(cfg, open_store(cfg), index_dir=default_index_dir(cfg))


def cmd_chat(args: argparse.Namespace) -> int:
    """Interactive personalized chat; one process run (or --session) is one session."""
    from rich.console import Console

    from vars_langgraph.graph import build_graph

    console = Console()
    cfg = _config(args)
    session = args.session or f"{args.user}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    with console.status("Loading models (first run assembles the local model, ~1 min)..."):
        graph = build_graph(cfg)
        graph.engine.embedder  # noqa: B018 - load now, not on the first message
        graph.engine.chat_model  # noqa: B018 - starts the local server if needed
    run_cfg = {"configurable": {"thread_id": session, "user_id": args.user}}
    console.print(f"[bold]vars-langgraph[/] user [cyan]{args.user}[/], session [cyan]{session}[/]."
                  " Empty line or Ctrl-D to quit; /memories to list what I remember.")
    lines = iter(args.message) if args.message else None
    while True:
        try:
            text = next(lines) if lines is not None else console.input("[bold green]you> [/]")
        except (EOFError, StopIteration, KeyboardInterrupt):
            break
        if not text.strip():
            break
        if text.strip() == "/memories":
            _print_memories(graph.engine, args.user, console)
            continue
        t0 = time.perf_counter()
        out = graph.invoke({"messages": [("user", text)]}, run_cfg)
        dt = time.perf_counter() - t0
        console.print(f"[bold blue]assistant>[/] {out['messages'][-1].content}")
        if args.verbose:
            notes = [c["note"] for c in out.get("selected", [])]
            console.print(f"[dim]({dt:.1f}s; preferences used: {notes}; reward of last turn: "
                          f"{out.get('reward')}; vector: {out.get('user_vector')})[/]")
    graph.engine.index.flush()
    return 0


def _memories(engine, user: str) -> dict[str, Any]:
    cards = sorted(engine.memory.list_cards(user), key=lambda c: c.created_at)
    return {
        "user_id": user,
        "cards": [c.public() for c in cards],
        "vector": engine.load_vector(user).norms(),
    }


def _print_memories(engine, user: str, console) -> None:
    from rich.table import Table

    data = _memories(engine, user)
    table = Table(title=f"Preferences of {user} ({len(data['cards'])} cards)")
    for col in ("condition", "action", "conf", "learned", "where"):
        table.add_column(col)
    for c in data["cards"]:
        src = c["sources"][0] if c["sources"] else {}
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(src.get("created_at", c["created_at"])))
        where = f"{src.get('thread_id', '?')} turn {src.get('turn', '?')}"
        if len(c["sources"]) > 1:
            where += f" (+{len(c['sources']) - 1})"
        table.add_row(c["condition"], c["action"], f"{c['confidence']:.2f}", when, where)
    console.print(table)
    v = data["vector"]
    console.print(f"user vector: |z_long| = {v['z_long_norm']:.4f}, |z_short| = "
                  f"{v['z_short_norm']:.4f}, baseline = {v['baseline']:.3f}, "
                  f"updates = {v['updates']}")


def cmd_memories(args: argparse.Namespace) -> int:
    engine = _engine(_config(args))
    if args.json:
        print(json.dumps(_memories(engine, args.user), indent=2))
    else:
        from rich.console import Console

        _print_memories(engine, args.user, Console())
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from vars_langgraph.memory.store import check_user_id

    cfg = _config(args)
    check_user_id(args.user)
    engine = _engine(cfg)
    threads = 0
    if args.threads:  # first: the user's thread registry is deleted with the user
        from vars_langgraph.storage import open_checkpointer

        threads = forget_threads(open_checkpointer(cfg), args.user, engine.memory.threads(args.user))
    n = engine.forget_user(args.user)
    print(f"forgot user {args.user!r}: {n} stored items, {threads} threads deleted")
    return 0


def forget_threads(checkpointer, user: str, known: Any = ()) -> int:
    """Delete the checkpointed threads of this user: those in `known` (the store's registry,
    `UserMemory.threads`) and those whose checkpoints carry the user id in their metadata."""
    from vars_langgraph.storage import purge_deleted

    ids = set(known) | {
        t.config["configurable"]["thread_id"]
        for t in checkpointer.list(None)
        if (t.metadata or {}).get("user_id") == user
    }
    for tid in ids:
        checkpointer.delete_thread(tid)
    purge_deleted(checkpointer)
    return len(ids)


def cmd_export(args: argparse.Namespace) -> int:
    data = _engine(_config(args)).memory.export_user(args.user)
    text = json.dumps(data, indent=2)
    if args.out and args.out != "-":
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    with (sys.stdin if args.file == "-" else open(args.file)) as f:
        data = json.load(f)
    engine = _engine(_config(args))
    with engine.card_write_lock(args.user or data.get("user_id")):  # vs. other processes' caches
        n = engine.memory.import_user(data, args.user)
    engine.index.invalidate(args.user or data.get("user_id"))
    print(f"imported {n} items for {args.user or data.get('user_id')!r}")
    return 0


DELEGATED = {
    ("eval", "collab"): ("vars_langgraph.eval", "collab_main"),
    ("eval", "lamp"): ("vars_langgraph.lamp.harness", "lamp_main"),
    ("eval", "prefeval"): ("vars_langgraph.eval.prefeval", "prefeval_main"),
    ("bench",): ("vars_langgraph.bench", "bench_main"),
    ("loadtest",): ("vars_langgraph.loadtest", "loadtest_main"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vars-langgraph", description=__doc__)
    p.add_argument("--config", help="YAML config (default: CPU defaults; env VARS_CONFIG)")
    p.add_argument("--data-dir", help="override data_dir")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("chat", help="personalized chat in the terminal")
    c.add_argument("--user", required=True)
    c.add_argument("--session", help="thread id; a new one is one new session (default: new)")
    c.add_argument("-m", "--message", action="append", help="send this message (repeatable) "
                   "instead of reading the terminal")
    c.add_argument("--verbose", action="store_true", help="show the preferences used per turn")
    c.set_defaults(func=cmd_chat)

    m = sub.add_parser("memories", help="show a user's preference cards and vector")
    m.add_argument("--user", required=True)
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_memories)

    f = sub.add_parser("forget", help="delete everything stored for a user")
    f.add_argument("--user", required=True)
    f.add_argument("--threads", action="store_true", help="also delete the user's threads")
    f.set_defaults(func=cmd_forget)

    e = sub.add_parser("export", help="write a user's data as JSON")
    e.add_argument("--user", required=True)
    e.add_argument("--out", default="-")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("import", help="restore a user's data from an export")
    i.add_argument("file")
    i.add_argument("--user", help="import under this user id instead")
    i.set_defaults(func=cmd_import)

    # listed for --help only: main() hands these to their own parsers (see DELEGATED)
    ev = sub.add_parser("eval", help="evaluations: collab (MultiSessionCollab), prefeval (PrefEval), "
                        "lamp (LaMP)")
    suites = ev.add_subparsers(dest="suite")
    suites.add_parser("collab")
    suites.add_parser("prefeval")
    suites.add_parser("lamp")
    sub.add_parser("bench", help="latency and scale benchmark")
    sub.add_parser("loadtest", help="concurrent users load test")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for prefix, (module, func) in DELEGATED.items():  # these parse their own options
        if argv[: len(prefix)] == list(prefix):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            rest = [a for a in argv[len(prefix):] if a != "--"]
            return int(getattr(importlib.import_module(module), func)(rest) or 0)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
