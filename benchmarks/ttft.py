"""Time to first token of a chat turn with 1k cards stored for the user, and memory's share.

    python benchmarks/ttft.py [--cards 1000] [--turns 10] [--llm-url URL] [--out results/ttft.json]

The CLI's default path (learning in the background, after the answer) on the CPU stack: real
llama.cpp server, SQLite, FAISS, MiniLM. Per turn, in one thread:
- `vars`: the VARS graph streamed as `chat` streams it; `memory_s` is the time until `augment`
  finished (every node before `generate`: job record, fast preference path, retrieve over the
  user's cards, rerank, augment), `ttft_s` the time to the first streamed token.
- `bare`: the same model streamed on the same history without memory (the base system prompt
  alone), in the same run; the order of the two alternates per turn (the server reuses a
  common prompt prefix, so neither always goes second).
- `same_prompt`: the exact prompt the VARS turn sent (system prompt with the preferences),
  streamed directly: the model's own cost of the longer prompt, without our code.
Before each measured call an unrelated prompt empties the server's prompt-prefix cache, as
the background extraction does between the turns of a chat; every call then prefills its
whole prompt. `memory adds` = vars ttft - bare ttft, paired per turn: our code (`memory_s`)
plus the prefill of the longer system prompt (`same_prompt` - `bare`). The background
learner is drained between turns (a user's reading time covers it in a chat; `drain_s` says
how long it took), so the turns measure the answer path alone. Nothing here is tuned: no
split of the question set is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, SystemMessage
from tqdm import tqdm

from vars_langgraph import VARSConfig, build_graph
from vars_langgraph.background import get_learner
from vars_langgraph.cli import stream_turn
from vars_langgraph.types import CardSource, Preference
from vars_langgraph_eval.stats import summary

QUESTIONS = [
    "How do I brew green tea?",
    "Write a Python function that reverses a string.",
    "What is a hash map?",
    "Explain recursion in two sentences.",
    "How do I center a div in CSS?",
    "What are the benefits of code review?",
    "Give me a tip for learning Spanish.",
    "How long should I boil an egg?",
    "What is the difference between a list and a tuple?",
    "Suggest a name for a cat.",
    "How do I make a git branch?",
    "What is the capital of Australia?",
]
TOPICS = ["Python code", "emails", "recipes", "travel plans", "math proofs", "SQL queries",
          "poems", "history", "fitness", "music theory", "product reviews", "shell scripts",
          "physics", "job interviews", "budgets", "gardening", "chess", "essays", "Rust", "CSS"]
ACTIONS = ["use bullet points", "keep it under {n} words", "give {n} examples", "cite sources",
           "use a formal tone", "avoid jargon", "end with a summary", "number the steps",
           "use metric units", "include a table", "start with the answer", "ask one question back",
           "show code in {lang}", "avoid emojis", "mention pitfalls", "compare {n} options"]
LANGS = ["Python", "Go", "TypeScript", "Java", "C"]


def synthetic_preferences(n: int, seed: int = 0) -> list[Preference]:
    """n distinct, plausible cards (seeded)."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        cond = f"when {rng.choice(['writing', 'discussing', 'asking about', 'planning'])} " \
               f"{rng.choice(TOPICS)}"
        act = rng.choice(ACTIONS).format(n=rng.randint(2, 400), lang=rng.choice(LANGS))
        if (cond, act) not in seen:
            seen.add((cond, act))
            out.append(Preference(condition=cond, action=act, confidence=0.8))
    return out


class Capture(BaseCallbackHandler):
    """The exact messages each chat model call of the graph was given."""

    def __init__(self) -> None:
        self.inputs: list[list] = []

    def on_chat_model_start(self, serialized, messages, **kw) -> None:  # noqa: ANN001
        self.inputs.append(list(messages[0]))


def node_gaps(done: dict[str, float]) -> dict[str, float]:
    """Seconds each node took: the gap between consecutive node outputs."""
    out, last = {}, 0.0
    for name, at in sorted(done.items(), key=lambda kv: kv[1]):
        out[name], last = round(at - last, 4), at
    return out


def bare_ttft(model, messages: list) -> float:
    """Time to the first token; the stream is read to its end, so the server is idle after."""
    t0 = time.perf_counter()
    first = None
    for chunk in model.stream(messages):
        if first is None and isinstance(chunk.content, str) and chunk.content:
            first = time.perf_counter() - t0
    return first if first is not None else time.perf_counter() - t0


def flush(model, i: int) -> None:
    """An unrelated prompt, so the next measured call finds no reusable prompt prefix in the
    server's cache (as in a chat, where the background extraction used the server between
    turns)."""
    bare_ttft(model, [HumanMessage(f"Reply with the number {i}.")])


def memory_only(cfg: VARSConfig, engine, user: str, turns: int) -> list[float]:
    """`memory_s` of `turns` turns on the same store and cards, answered by a stub model (no
    LLM): many samples of the memory path alone. The learning jobs are not run (held ones are
    released to a worker that this engine's extractor would serve: the extractor is off)."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from vars_langgraph import VARSEngine

    if turns <= 0:
        return []
    quiet = cfg.model_copy(update={"extractor": cfg.extractor.model_copy(update={"enabled": False})})
    stub = VARSEngine(quiet, engine.store, index_dir=None, embedder=engine.embedder,
                      chat_model=FakeListChatModel(responses=["ok"]))
    graph = build_graph(quiet, engine=stub, checkpointer=False)
    out = []
    for i in tqdm(range(turns), desc="memory path"):
        cfg_i = {"configurable": {"thread_id": f"mem-{i}", "user_id": user}}
        out.append(stream_turn(graph, QUESTIONS[i % len(QUESTIONS)], cfg_i)[1]["memory_s"])
    get_learner(stub).close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cards", type=int, default=1000)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=16, help="answer length (TTFT needs few)")
    ap.add_argument("--llm-url", help="a running OpenAI-compatible server (default: start one)")
    ap.add_argument("--memory-turns", type=int, default=50,
                    help="extra turns of the memory path alone (a stub model answers)")
    ap.add_argument("--out", default="results/ttft.json")
    args = ap.parse_args()
    llm = {"max_tokens": args.max_tokens, "temperature": 0.0}
    if args.llm_url:
        llm["base_url"] = args.llm_url
    # the synthetic cards are template-alike: a high merge threshold keeps ~all of them
    cfg = VARSConfig.from_dict({"data_dir": tempfile.mkdtemp(prefix="vars-ttft-"), "llm": llm,
                                "background": {"enabled": True},
                                "retrieval": {"dedup_threshold": 0.995}})
    graph = build_graph(cfg)
    engine = graph.engine
    model = engine.chat_model  # starts the local server when no URL is given
    user = "ttft-user"
    t0 = time.perf_counter()
    prefs = synthetic_preferences(args.cards)
    for i in tqdm(range(0, len(prefs), 100), desc="storing cards"):
        engine.add_preferences(user, prefs[i:i + 100], CardSource(thread_id="seed", turn=0))
    n_cards = len(engine.memory.list_cards(user))
    seed_s = time.perf_counter() - t0
    learner = get_learner(engine)
    capture = Capture()
    run_cfg = {"configurable": {"thread_id": "ttft", "user_id": user}, "callbacks": [capture]}
    stream_turn(graph, "Hello!", run_cfg)  # warm-up: first-call costs, not measured
    learner.drain(600)
    rows = []
    history: list = []
    for i in tqdm(range(args.turns), desc="turns"):
        q = QUESTIONS[i % len(QUESTIONS)]
        bare_msgs = [SystemMessage(cfg.prompt.base_system), *history, HumanMessage(q)]
        bare_first = i % 2 == 0
        if bare_first:
            flush(model, i)
            b = bare_ttft(model, bare_msgs)
        flush(model, i)
        out, t = stream_turn(graph, q, run_cfg)
        if not bare_first:
            flush(model, i)
            b = bare_ttft(model, bare_msgs)
        flush(model, i)
        sp = bare_ttft(model, capture.inputs[-1])
        td = time.perf_counter()
        learner.drain(600)
        history = [m for m in out["messages"] if m.type in ("human", "ai")]
        rows.append({"question": q, "vars_ttft_s": t["ttft_s"], "memory_s": t["memory_s"],
                     "bare_ttft_s": b, "memory_adds_s": t["ttft_s"] - b,
                     "same_prompt_ttft_s": sp, "system_prompt_chars": len(out["system_prompt"]),
                     "total_s": t["total_s"], "selected": len(out.get("selected", [])),
                     "nodes_s": node_gaps(t["nodes"]),
                     "drain_s": time.perf_counter() - td})
    mem_only = memory_only(cfg, engine, user, args.memory_turns)
    load = os.getloadavg()
    res = {
        "cards": n_cards, "turns": len(rows), "max_tokens": args.max_tokens,
        "seed_cards_s": round(seed_s, 2), "load_avg_1_5_15": [round(x, 2) for x in load],
        "cpus": os.cpu_count(), "python": sys.version.split()[0],
        "vars_ttft_s": summary([r["vars_ttft_s"] for r in rows]),
        "bare_ttft_s": summary([r["bare_ttft_s"] for r in rows]),
        "memory_s": summary([r["memory_s"] for r in rows]),
        "memory_adds_s": summary([r["memory_adds_s"] for r in rows]),
        "same_prompt_ttft_s": summary([r["same_prompt_ttft_s"] for r in rows]),
        "drain_s": summary([r["drain_s"] for r in rows]),
        "memory_only_s": summary(mem_only) if mem_only else None,
        "memory_only_turns": len(mem_only),
        "nodes_s": {n: summary([r["nodes_s"][n] for r in rows if n in r["nodes_s"]])
                    for n in ("learn", "retrieve", "rerank", "augment")},
        "target": "memory adds < 0.100 s to time to first token", "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"{n_cards} cards, {len(rows)} turns, load {res['load_avg_1_5_15']} on {res['cpus']} CPUs")
    print("| measure | p50 s | p95 s |\n|---|---|---|")
    for k in ("vars_ttft_s", "bare_ttft_s", "same_prompt_ttft_s", "memory_adds_s", "memory_s",
              "drain_s"):
        print(f"| {k} | {res[k]['p50']:.3f} | {res[k]['p95']:.3f} |")
    if mem_only:
        m = res["memory_only_s"]
        print(f"| memory path alone ({len(mem_only)} turns, stub model) | {m['p50']:.3f} | "
              f"{m['p95']:.3f} |")
    for n, v in res["nodes_s"].items():
        print(f"| node {n} | {v['p50']:.3f} | {v['p95']:.3f} |")
    print(f"-> {args.out}")
    learner.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
