"""Issue 22's four-turn chat on the real local server, as a new user has it: the preference is
stated in the chat (the default pipeline learns it), then three questions. A turn passes when
its answer has what the turn asks for and copies neither a note, an earlier answer nor the user
(`conversations.echo_of`). One line per seed; the pass count and every answer go to `--out`.

    python benchmarks/four_turn_chat.py [--seeds 5] [--out results/four_turn_chat.json]

Nothing is tuned on it: it is the issue's acceptance chat, run as a report."""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path

from conversations import echo_of
from tqdm import tqdm

from vars_langgraph import VARSConfig, build_graph
from vars_langgraph.state import message_text

CHAT = [
    ("I prefer answers in bullet points, and please keep them short.",
     r"bullet|short|concise|brief|\bwill\b|sure|noted|got it|\bok|thank"),
    ("How do I brew green tea?", r"water|steep|leaves|minute|temperature|boil|°|degree|\bcup"),
    ("no, that's not what I asked. Tell me the water temperature and steeping time.",
     r"\d[^\n]{0,16}(?:°|degree|minute|\bmins?\b|celsius|fahrenheit|\b[cf]\b)"),
    ("What is the capital of France?", r"paris"),
]


def run_seed(seed: int, max_tokens: int) -> dict:
    cfg = VARSConfig.from_dict({"data_dir": tempfile.mkdtemp(prefix="vars-4turn-"),
                                "llm": {"seed": seed, "max_tokens": max_tokens}})
    graph = build_graph(cfg)
    run = {"configurable": {"thread_id": "t", "user_id": "tea"}}
    earlier: list[str] = []
    turns = []
    for text, topic in CHAT:
        out = graph.invoke({"messages": [("user", text)]}, run)
        answer = message_text(out["messages"][-1])
        notes = [c["note"] for c in out["selected"]]
        echo = echo_of(answer, notes, earlier, text)["echo"]
        on_topic = bool(re.search(topic, answer, re.I))
        turns.append({"user": text, "answer": answer, "notes": notes, "echo": echo,
                      "on_topic": on_topic, "ok": on_topic and not echo})
        earlier.append(answer)
    return {"seed": seed, "passed": all(t["ok"] for t in turns), "turns": turns}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", default="results/four_turn_chat.json")
    args = ap.parse_args()
    runs = [run_seed(s, args.max_tokens) for s in tqdm(range(args.seeds), desc="seeds")]
    for r in runs:
        bad = [f"turn {i + 1}: {t['answer'][:80]!r}" for i, t in enumerate(r["turns"]) if not t["ok"]]
        print(f"seed {r['seed']}: {'pass' if r['passed'] else 'FAIL ' + '; '.join(bad)}")
    n = sum(r["passed"] for r in runs)
    print(f"{n} of {len(runs)} chats pass every turn (load {os.getloadavg()[0]:.2f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"passed": n, "seeds": len(runs), "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
