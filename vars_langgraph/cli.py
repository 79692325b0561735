"""`vars-langgraph`: chat, inspect and manage per-user memory, run evaluations and benchmarks."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import logging
import math
import sys
import threading
import time
import uuid
from typing import Any, cast

from vars_langgraph.config import (
    VARSConfig,
    config_file,
    prefer_offline_hub,
    quiet_model_loading,
    set_env_setting,
)
from vars_langgraph.extras import MissingExtra


def _warm_extractor(engine: Any) -> None:
    """Start the extractor (its server, for the local default) and let it cache its prompt."""
    try:
        warm = getattr(engine.extractor, "warm", None)
        if warm is not None:
            warm()
    except Exception as e:  # noqa: BLE001 - the first message reports a real failure
        logging.getLogger(__name__).debug("extractor warm-up: %r", e)


def _config(args: argparse.Namespace) -> VARSConfig:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return VARSConfig.from_yaml(config_file(args.config), **overrides)


def _engine(cfg: VARSConfig):
    from vars_langgraph.engine import VARSEngine
    from vars_langgraph.graph import default_index_dir
    from vars_langgraph.storage import open_store

    return VARSEngine(cfg, open_store(cfg), index_dir=default_index_dir(cfg))


def _read_engine(cfg: VARSConfig):
    """The engine for a read-only command (`memories`, `export`): a SQLite data dir that
    cannot be written (read-only mount, no permission, full disk) is opened read-only."""
    import sqlite3

    try:
        return _engine(cfg)
    except (sqlite3.OperationalError, OSError) as e:
        if cfg.storage != "sqlite":
            raise
        from vars_langgraph.engine import VARSEngine
        from vars_langgraph.storage import STORE_FILE

        path = cfg.data_path / STORE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no VARS data in {cfg.data_path} ({e})") from None
        logging.getLogger(__name__).info("data dir not writable (%s): reading it read-only", e)
        from vars_langgraph.storage.sqlite import open_sqlite_store_read_only

        store = open_sqlite_store_read_only(path)
        return VARSEngine(cfg, store, index_dir=None)


QUIET_LOGGERS = ("httpx", "httpcore", "openai", "sentence_transformers", "transformers",
                 "huggingface_hub", "urllib3", "faiss", "filelock")


def setup_logging(level: str) -> None:
    """One level for everything: `--log-level INFO` shows HTTP requests and model loading;
    the default (WARNING) keeps `chat` to the conversation. The llama.cpp server's own output
    always goes to its log file (models/local_server.py)."""
    lvl = getattr(logging, level.upper())
    logging.basicConfig(level=lvl, format="%(levelname)s %(name)s: %(message)s", force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(lvl)
    if lvl > logging.INFO:  # no model-loading progress bars or notices either
        quiet_model_loading()


# printed between a streamed answer that generate discarded (it copied its prompt) and the
# answer it asked for again (nodes/generate.py)
RETRY_NOTE = "(that answer repeated its instructions; asked again:)"


def stream_turn(graph: Any, text: str, run_cfg: dict[str, Any],
                write: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one turn, writing the answer's tokens as they come; returns (final state, timings):
    `memory_s` (the recall path: every node before generate), `ttft_s` (first token),
    `total_s`, `tokens` (streamed chunks with text), `tokens_per_s` (after the first) and
    `nodes` (seconds from the start to each node's output)."""
    t0 = time.perf_counter()
    memory_s = ttft = None
    nodes: dict[str, float] = {}
    tokens = 0
    final: dict[str, Any] = {}
    message_id = None  # the streamed answer's id: a second one is generate's retry
    for mode, data in graph.stream({"messages": [("user", text)]}, run_cfg,
                                   stream_mode=["messages", "updates", "values"]):
        now = time.perf_counter() - t0
        if mode == "updates":
            for name in data:
                nodes.setdefault(name, now)
            if memory_s is None and "augment" in data:
                memory_s = now
        elif mode == "messages":
            chunk, meta = data
            if meta.get("langgraph_node") == "generate" and getattr(chunk, "content", ""):
                content = chunk.content if isinstance(chunk.content, str) else ""
                if content:
                    ttft = now if ttft is None else ttft
                    tokens += 1
                    cid = getattr(chunk, "id", None)
                    if write is not None and message_id is not None and cid != message_id:
                        write(f"\n{RETRY_NOTE}\n")
                    message_id = cid
                    if write is not None:
                        write(content)
        elif mode == "values":
            final = data
    total = time.perf_counter() - t0
    gen = total - (ttft if ttft is not None else total)
    return final, {
        "memory_s": memory_s if memory_s is not None else float("nan"),
        "ttft_s": ttft if ttft is not None else total, "total_s": total, "tokens": tokens,
        "tokens_per_s": (tokens - 1) / gen if tokens > 1 and gen > 0 else float("nan"),
        "nodes": nodes,
    }


def cmd_chat(args: argparse.Namespace) -> int:
    """Interactive personalized chat; one process run (or --session) is one session.

    The answer streams as it is generated; reward, update and preference extraction run in
    the background after it (background.py), except explicit "I prefer ..." statements,
    which the rule-based fast path stores before retrieval, so they shape this very answer."""
    from rich.console import Console

    from vars_langgraph.background import get_learner
    from vars_langgraph.graph import build_graph

    console = Console()
    cfg = _config(args)
    if cfg.background.enabled is None:  # the CLI learns after the answer by default
        cfg = cfg.model_copy(update={"background": cfg.background.model_copy(
            update={"enabled": True})})
    session = args.session or f"{args.user}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    with console.status("Loading models (first run assembles the local model, ~1 min)..."):
        graph = build_graph(cfg)
        if cfg.extractor.enabled:  # its server reads its long prompt while the rest loads
            threading.Thread(target=_warm_extractor, args=(graph.engine,), daemon=True).start()
        graph.engine.embedder  # noqa: B018 - load now, not on the first message
        graph.engine.chat_model  # noqa: B018 - starts the local server if needed
        learner = get_learner(graph.engine) if cfg.background.enabled else None  # + recovery
    run_cfg = {"configurable": {"thread_id": session, "user_id": args.user}}
    console.print(f"[bold]vars-langgraph[/] user [cyan]{args.user}[/], session [cyan]{session}[/]."
                  " Empty line or Ctrl-D to quit; /memories to list what I remember.")
    lines = iter(args.message) if args.message else None

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    try:
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
            console.print("[bold blue]assistant>[/] ", end="")
            out, t = stream_turn(graph, text, run_cfg, write)
            if t["tokens"] == 0:  # a model that does not stream: print the whole answer
                write(str(out["messages"][-1].content))
            write("\n")
            if getattr(graph.checkpointer, "last_error", None) is not None:  # fail_open
                console.print("(the conversation store failed: this answer was given without "
                              "the conversation's history and the turn is not saved)",
                              style="yellow", markup=False, highlight=False)
            if args.verbose:
                _print_turn_stats(console, graph.engine, learner, args.user, session, out, t)
    finally:
        graph.engine.index.flush()
        if learner is not None:
            with console.status("Saving what I learned from this session..."), \
                    contextlib.suppress(KeyboardInterrupt):  # jobs stay stored: redone next start
                learner.close(timeout=None)
            graph.engine.index.flush()
    return 0


def _print_turn_stats(console: Any, engine: Any, learner: Any, user: str, session: str,
                      out: dict[str, Any], t: dict[str, float]) -> None:
    notes = [c["note"] for c in out.get("selected", [])]
    humans = [str(m.content) for m in out.get("messages", []) if getattr(m, "type", "") == "human"]
    reward, turn = out.get("reward"), cast(int | None, len(humans))
    if learner is not None:  # learned in the background: the last finished job of this session
        last = learner.last.get((user, session)) or {}
        reward, turn = last.get("reward"), last.get("turn")
    v = engine.load_vector(user).norms()
    cut = out.get("input_cut")
    if cut:
        console.print(f"(your message was cut to fit the model's context window of "
                      f"{cut['budget']} tokens: {cut['tokens']} tokens, {cut['chars']} characters;"
                      f" its first and last {cut['kept_chars'] // 2} characters were kept)",
                      style="dim", markup=False, highlight=False)
    console.print(
        f"(first token {t['ttft_s']:.2f}s, total {t['total_s']:.1f}s, "
        + (f"{t['tokens_per_s']:.1f} tok/s; " if not math.isnan(t["tokens_per_s"]) else "")
        + f"memory {t['memory_s'] * 1000:.0f} ms; "
        f"preferences used: {notes}; stated now: {[c['note'] for c in out.get('extracted', [])]}; "
        f"{describe_reward(reward, turn, humans)}; |z_long| {v['z_long_norm']:.4f}, "
        f"|z_short| {v['z_short_norm']:.4f}, updates {v['updates']})",
        style="dim", markup=False, highlight=False)


def describe_reward(reward: Any, turn: int | None, humans: list[str]) -> str:
    """Which message scored which answer, the reward read and what the update applied.

    `turn` counts the session's user messages (1 = the first); message `turn` scores answer
    `turn - 1`. In the background the latest finished job may be an earlier turn than the one
    just answered: the line then says so."""
    now = len(humans)
    if turn is None:
        return f"reward of turn {now}: not yet (learning in the background)"
    quote = humans[turn - 1] if 0 < turn <= now else ""
    quote = f" {quote[:60]!r}" if quote else ""
    head = f"reward read from turn {turn}{quote}"
    if not isinstance(reward, dict) or reward.get("value") is None:
        out = f"{head}: none (no earlier answer in this session)"
    else:
        label = reward.get("label") or reward.get("backend") or "keyword"
        out = (f"{head} on answer {turn - 1}: r = {reward['value']:+.2f} [{label}], "
               f"gate {reward.get('gate', 0.0):.2f}")
        if "advantage" in reward:
            out += f", baseline {reward.get('baseline', 0.0):+.2f}, applied A = {reward['advantage']:+.3f}"
            out += "" if reward.get("applied") else " (no update applied)"
    if turn < now:
        out += f"; turn {now} still learning in the background"
    return out


def _memories(engine, user: str) -> dict[str, Any]:
    cards = sorted(engine.memory.list_cards(user), key=lambda c: c.created_at)
    values = engine.load_vector(user).card_values  # learned card values (card_value.py)
    return {
        "user_id": user,
        "cards": [{**c.public(), "value": values[c.id][0] if c.id in values else None}
                  for c in cards],
        "vector": engine.load_vector(user).norms(),
    }


def _print_memories(engine, user: str, console) -> None:
    from rich.table import Table

    data = _memories(engine, user)
    table = Table(title=f"Preferences of {user} ({len(data['cards'])} cards)")
    for col in ("condition", "action", "conf", "learned", "where", "status"):
        table.add_column(col)
    for c in data["cards"]:
        src = c["sources"][0] if c["sources"] else {}
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(src.get("created_at", c["created_at"])))
        where = f"{src.get('thread_id', '?')} turn {src.get('turn', '?')}"
        if len(c["sources"]) > 1:
            where += f" (+{len(c['sources']) - 1})"
        status = c.get("status", "active")
        if status != "active":  # archived / superseded cards stay, with why
            status = f"{status}: {c.get('status_reason', '')}"
        table.add_row(c["condition"], c["action"], f"{c['confidence']:.2f}", when, where, status)
    console.print(table)
    v = data["vector"]
    console.print(f"user vector: |z_long| = {v['z_long_norm']:.4f}, |z_short| = "
                  f"{v['z_short_norm']:.4f}, baseline = {v['baseline']:.3f}, "
                  f"updates = {v['updates']}")


def cmd_memories(args: argparse.Namespace) -> int:
    engine = _read_engine(_config(args))
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
    with engine.user_lock(args.user), engine.card_write_lock(args.user):
        engine.memory.bump_generation(args.user)  # from now on running sessions write nothing
    threads = 0
    if args.threads:  # first: the user's thread registry is deleted with the user
        from vars_langgraph.storage import open_checkpointer

        threads = forget_threads(open_checkpointer(cfg), args.user, engine.memory.threads(args.user))
    n = engine.forget_user(args.user)
    print(f"forgot user {args.user!r}: {n} stored items, {threads} threads deleted")
    return 0


def forget_threads(checkpointer, user: str, known: Any = ()) -> int:
    """Delete the checkpointed threads of this user: those whose checkpoints carry the user id
    in their metadata, and those in `known` (the store's registry, `UserMemory.threads`) whose
    checkpoints name no other user (a registry entry never deletes another user's thread)."""
    from vars_langgraph.storage import purge_deleted

    ids = {
        t.config["configurable"]["thread_id"]
        for t in checkpointer.list(None)
        if (t.metadata or {}).get("user_id") == user
    }
    for tid in set(known) - ids:
        owners = {(t.metadata or {}).get("user_id")
                  for t in checkpointer.list({"configurable": {"thread_id": tid}})}
        if owners - {None, user}:
            logging.getLogger(__name__).warning(
                "forget: thread %r is recorded for %r but its checkpoints belong to another "
                "user; left alone", tid, user)
            continue
        ids.add(tid)
    for tid in ids:
        checkpointer.delete_thread(tid)
    purge_deleted(checkpointer)
    return len(ids)


def cmd_export(args: argparse.Namespace) -> int:
    data = _read_engine(_config(args)).memory.export_user(args.user)
    text = json.dumps(data, indent=2)
    if args.out and args.out != "-":
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Restore an export into one user's namespaces (`UserMemory.import_checked`: foreign user
    ids refused, jobs and thread records never imported, cards without a vector re-embedded)."""
    from vars_langgraph.memory.store import BadImport, check_user_id

    try:
        with (sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")) as f:
            data = json.load(f)
    except (ValueError, UnicodeError) as e:
        raise BadImport(f"import: {args.file} is not a JSON export: {e}") from None
    user = args.user or (data.get("user_id") if isinstance(data, dict) else None)
    try:
        user = check_user_id(user)
    except ValueError:
        raise BadImport("import: no usable user id: pass --user or import a file with a "
                        "user_id") from None
    engine = _engine(_config(args))
    with engine.card_write_lock(user):  # vs. other processes' caches
        stats = engine.memory.import_checked(  # the model loads only to re-embed a card
            data, user, embed=lambda texts: engine.embedder.embed_documents(texts),
            dim=lambda: engine.dim)
    engine.index.invalidate(user)
    notes = [f"{stats[k]} {what}" for k, what in (
        ("reembedded", "cards re-embedded from their notes"),
        ("clamped", "confidences clamped to [0, 1]"),
        ("skipped_cards", "cards skipped (confidence not a number)"),
        ("skipped_jobs", "learning jobs not imported"),
        ("skipped_threads", "thread records not imported")) if stats[k]]
    print(f"imported {stats['imported']} items for {user!r}"
          + (f" ({'; '.join(notes)})" if notes else ""))
    return 0


# The evaluation suites live in their own distribution, vars-langgraph-eval, which registers
# each under this entry-point group ("eval collab" -> its main function).
SUITE_GROUP = "vars_langgraph.suites"
SUITE_HELP = {
    ("eval", "collab"): "MultiSessionCollab: simulated users over several sessions",
    ("eval", "lamp"): "LaMP personalization tasks",
    ("eval", "prefeval"): "PrefEval: are stated preferences followed later",
    ("bench",): "latency and scale benchmark",
    ("loadtest",): "concurrent users load test",
}
NO_SUITES = "the evaluation suites are not installed: pip install vars-langgraph-eval"
GLOBAL_WITH_VALUE = ("--config", "--data-dir", "--log-level")


def _suite_entry(key: tuple[str, ...]) -> importlib.metadata.EntryPoint | None:
    """The installed entry point of a suite (vars-langgraph-eval), or None."""
    name = " ".join(key)
    return next((ep for ep in importlib.metadata.entry_points(group=SUITE_GROUP) if ep.name == name),
                None)


def _suite_parent(key: tuple[str, ...]) -> argparse.ArgumentParser | None:
    """The suite's own parser (its options are attached to this tree), or None when it is not
    installed or its module has no `build_parser` (then options pass through unchecked)."""
    ep = _suite_entry(key)
    if ep is None:
        return None
    build = getattr(importlib.import_module(ep.module), "build_parser", None)
    return build() if build is not None else None


def _command_words(argv: list[str]) -> list[str]:
    """The first two positional words of argv, global options (and their values) skipped."""
    words: list[str] = []
    i = 0
    while i < len(argv) and len(words) < 2:
        a = argv[i]
        if a in GLOBAL_WITH_VALUE:
            i += 2
            continue
        if a.startswith("-"):
            if words:  # an option of the command itself: no suite word follows
                break
            i += 1
            continue
        words.append(a)
        i += 1
    return words


def build_parser(selected: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The whole command tree. `selected` (e.g. ("bench",)) attaches that suite's own options,
    imported on demand so `chat` does not load evaluation code."""
    p = argparse.ArgumentParser(prog="vars-langgraph", description=__doc__)
    p.add_argument("--config", help="YAML config (default: CPU defaults; env VARS_CONFIG)")
    p.add_argument("--data-dir", help="override data_dir")
    p.add_argument("--log-level", default="WARNING", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log level (default WARNING; INFO shows HTTP requests, model loading)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    c = sub.add_parser("chat", help="personalized chat in the terminal")
    c.add_argument("--user", required=True)
    c.add_argument("--session", help="thread id; a new one is one new session (default: new)")
    c.add_argument("-m", "--message", action="append", help="send this message (repeatable) "
                   "instead of reading the terminal")
    c.add_argument("--verbose", action="store_true", help="per turn: time to first token, total "
                   "time, tokens/s, memory time, preferences used, reward, vector norms")
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

    ev = sub.add_parser("eval", help="evaluations: collab (MultiSessionCollab), prefeval "
                        "(PrefEval), lamp (LaMP)")
    ev.set_defaults(func=lambda _a: _usage_error(ev))
    suites = ev.add_subparsers(dest="suite", metavar="SUITE")
    for key in SUITE_HELP:
        parent = _suite_parent(key) if key == selected else None
        kw: dict[str, Any] = {"help": SUITE_HELP[key]}
        if parent is not None:
            kw.update(parents=[parent], add_help=False, description=parent.description,
                      formatter_class=parent.formatter_class)
        sp = (suites if key[0] == "eval" else sub).add_parser(key[-1], **kw)
        if parent is None and key == selected:  # unknown options: the suite's own parser checks
            sp.add_argument("rest", nargs=argparse.REMAINDER)
        sp.set_defaults(func=None, delegated=key)
    return p


def _usage_error(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _delegate(key: tuple[str, ...], argv: list[str], args: argparse.Namespace) -> int:
    """Run a suite's own main on its own options (after the command words); global options
    given before the command reach it as its --config/--data-dir, else through the env."""
    ep = _suite_entry(key)
    if ep is None:
        print(f"error: {NO_SUITES}", file=sys.stderr)
        return 2
    words = 0
    rest: list[str] = []
    i = 0
    while i < len(argv):  # drop the global options and the command words
        a = argv[i]
        if words < len(key) and a in GLOBAL_WITH_VALUE:
            i += 2
            continue
        if words < len(key) and not a.startswith("-"):
            words += 1
        elif words >= len(key) and a != "--":
            rest.append(a)
        i += 1
    parent = _suite_parent(key)
    own = {o for a in (parent._actions if parent else []) for o in a.option_strings}
    for opt, value in (("--config", args.config), ("--data-dir", args.data_dir)):
        if value and opt not in rest:
            if opt in own:
                rest = [opt, value, *rest]
            else:
                set_env_setting(opt[2:].replace("-", "_"), value)
    return int(ep.load()(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prefer_offline_hub()
    words = _command_words(argv)
    selected = next((k for k in SUITE_HELP if tuple(words[: len(k)]) == k), None)
    if selected is not None and _suite_entry(selected) is None:
        print(f"error: {NO_SUITES}", file=sys.stderr)
        return 2
    args = build_parser(selected).parse_args(argv)
    setup_logging(args.log_level)
    if getattr(args, "delegated", None):
        return _delegate(args.delegated, argv, args)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, MissingExtra) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
