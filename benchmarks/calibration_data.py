"""Build the labelled (query, note, useful) set that calibrates every reranker backend.

    python benchmarks/calibration_data.py [--out vars_langgraph/data/calibration_labelled.jsonl]

Labels come from hand-assigned tags: each query carries the tags of what it asks for, each note
the tags of the requests it applies to ("*" = any request, e.g. "keep answers short"; a "-tag"
excludes a kind of request, e.g. bullet points do not apply to a poem). A note is useful for a
query when their tags meet. The set mixes
- topical conditional notes ("When writing SQL, assume PostgreSQL."), useful for few queries;
- query-independent style preferences, conditional or global ("In general, be friendly."),
  useful for nearly every task query although their cosine to it is low;
- topical notes stored as global ("In general, leave out meat ..."), as the extractor writes them.
Pairs per query: every applicable topical note, 4 inapplicable topical notes and 4 style notes,
drawn with a fixed seed (0). The split into fit / held-out is by query (calibration.split_of).
No text here comes from MultiSessionCollab or PrefEval.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "vars_langgraph" / "data" / "calibration_labelled.jsonl"

QUERIES: list[tuple[str, set[str]]] = [
    ("Write a Python function that merges two sorted lists.", {"code", "python", "algorithm"}),
    ("How do I test a function that reads from a file?", {"code", "python", "tests"}),
    ("Refactor this class so it is easier to unit test.", {"code", "python", "tests"}),
    ("Why does my recursive Fibonacci function run so slowly?", {"code", "python", "algorithm"}),
    ("Implement binary search over a sorted array.", {"code", "python", "algorithm"}),
    ("Write a React component that shows a list of todos.", {"code", "frontend"}),
    ("How do I debounce an input field in the browser?", {"code", "frontend"}),
    ("Give me a query that finds duplicate emails in the users table.", {"code", "sql"}),
    ("How do I add an index to speed up this slow join?", {"code", "sql"}),
    ("Write a bash script that renames all .txt files to .md.", {"code", "shell"}),
    ("How do I undo my last git commit but keep the changes?", {"code", "git", "shell"}),
    ("How do I find which process is listening on port 8080?", {"code", "shell"}),
    ("Solve the integral of x * e^x dx.", {"math"}),
    ("What is the derivative of sin(x^2)?", {"math"}),
    ("Prove that the square root of 2 is irrational.", {"math", "proof"}),
    ("Can you just tell me the answer to question 4 of my algebra worksheet?",
     {"math", "homework"}),
    ("Help me with my chemistry homework on balancing equations.", {"homework", "explain"}),
    ("Explain how TCP congestion control works.", {"explain", "tech"}),
    ("What is the difference between a process and a thread?", {"explain", "tech"}),
    ("Explain what inflation is and why it happens.", {"explain"}),
    ("How does photosynthesis work?", {"explain"}),
    ("Why is the sky blue?", {"explain"}),
    ("Draft an email to my manager asking for Friday off.", {"email", "writing"}),
    ("Write a follow-up email to a client who has not paid an invoice.", {"email", "writing"}),
    ("Reply to this meeting invite and decline politely.", {"email", "writing"}),
    ("Help me write an essay introduction about climate policy.", {"essay", "writing"}),
    ("Proofread this paragraph for my blog post.", {"essay", "writing"}),
    ("Summarize this article about renewable energy subsidies.", {"summary", "writing"}),
    ("Summarize the main points of the meeting notes below.", {"summary"}),
    ("Write a short poem about autumn leaves.", {"creative"}),
    ("Tell me a bedtime story about a brave little fox.", {"creative"}),
    ("Suggest a dinner recipe I can make in 20 minutes.", {"cooking"}),
    ("How long should I roast a chicken?", {"cooking"}),
    ("What can I bake with bananas and oats?", {"cooking"}),
    ("Plan a three-day trip to Lisbon.", {"travel"}),
    ("What should I pack for a week of hiking in Scotland?", {"travel", "fitness"}),
    ("Suggest a weekend itinerary for Tokyo.", {"travel"}),
    ("Give me a workout plan to build upper body strength.", {"fitness"}),
    ("How should I warm up before running?", {"fitness"}),
    ("Analyze this CSV of monthly sales and find the trend.", {"data", "code", "python"}),
    ("How do I plot a histogram of ages?", {"data", "code", "python"}),
    ("Which statistical test should I use to compare two groups?", {"data", "math", "explain"}),
    ("How should I prepare for a job interview at a startup?", {"career"}),
    ("Review my resume summary section.", {"career", "writing"}),
    ("How do I ask for a raise?", {"career"}),
    ("Recommend a few novels for a long flight.", {"books"}),
    ("Suggest some podcasts about history.", {"media"}),
    ("Translate 'see you tomorrow at the station' into Spanish.", {"translate"}),
    ("What should I name my new cat?", {"creative", "chat"}),
    ("Tell me the water temperature and steeping time for green tea.", {"tea", "cooking"}),
    ("Compare Postgres and MySQL for a small web app.", {"explain", "tech", "sql"}),
    ("What is a good way to learn Spanish vocabulary?", {"learning", "translate"}),
    ("Help me set up a monthly budget.", {"finance"}),
    ("Should I pay off debt or invest first?", {"finance"}),
    ("How do I keep my basil plant alive?", {"garden"}),
    ("Explain how vaccines train the immune system.", {"explain", "health"}),
    ("What are good stretches for lower back pain?", {"fitness", "health"}),
    ("Write a cover letter for a data analyst role.", {"career", "writing"}),
    ("Convert 5 miles to kilometres.", {"math", "units"}),
    ("Schedule a study plan for my exams in three weeks.", {"learning", "homework"}),
]

TOPICAL: list[tuple[str, set[str]]] = [
    ("When writing Python functions, add type hints and docstrings.", {"python"}),
    ("When writing tests, use pytest rather than unittest.", {"tests"}),
    ("When proposing an algorithm, include its time complexity.", {"algorithm"}),
    ("When writing frontend code, use TypeScript instead of JavaScript.", {"frontend"}),
    ("When answering SQL questions, assume PostgreSQL.", {"sql"}),
    ("When writing shell scripts, add a comment to each step.", {"shell"}),
    ("When giving git commands, explain every flag.", {"git"}),
    ("When writing math, format it in LaTeX.", {"math"}),
    ("When solving math problems, show every step of the derivation.", {"math"}),
    ("When helping with homework, give hints instead of the final answer.", {"homework"}),
    ("When suggesting recipes, leave out meat; the user is vegetarian.", {"cooking"}),
    ("When giving cooking quantities, use metric units.", {"cooking"}),
    ("When planning trips, suggest budget options first.", {"travel"}),
    ("When suggesting workouts, keep them under 30 minutes.", {"fitness"}),
    ("When drafting work emails, use a formal tone.", {"email"}),
    ("When writing emails, sign off with 'Best, Sam'.", {"email"}),
    ("When writing essays, use British spelling.", {"essay"}),
    ("When summarizing, keep it under five bullet points.", {"summary"}),
    ("When writing poems, make them rhyme.", {"creative"}),
    ("When analyzing data, use pandas rather than loops.", {"data"}),
    ("When making charts, use matplotlib.", {"data"}),
    ("When reviewing a resume, keep it to one page.", {"career"}),
    ("When recommending books, avoid horror.", {"books"}),
    ("When recommending a library, mention its license.", {"code"}),
    ("When describing editor actions, give vim keyboard shortcuts.", {"code"}),
    ("When discussing money, give amounts in euros.", {"finance"}),
    ("When translating, keep the informal register.", {"translate"}),
    ("When talking about health, mention when to see a doctor.", {"health"}),
    ("When explaining technical concepts, compare them with everyday objects.", {"tech"}),
    ("When writing dates, use the YYYY-MM-DD format.", {"email", "learning"}),
    # topical preferences stored as global, as the extractor often writes them
    ("In general, leave out meat; the user is vegetarian.", {"cooking"}),
    ("In general, the user does not like jazz.", {"media"}),
    ("In general, the user is allergic to cats.", {"pets"}),
    ("In general, suggest trains rather than flights.", {"travel"}),
    ("In general, use Python for code examples.", {"code"}),
    ("In general, prefer hiking over museums.", {"travel"}),
    ("In general, the user is training for a marathon.", {"fitness"}),
    ("In general, tell me the water temperature and steeping time.", {"tea"}),
]

STYLE: list[tuple[str, set[str]]] = [
    ("In general, use bullet points.", {"*", "-creative", "-translate"}),
    ("In general, keep answers short.", {"*"}),
    ("In general, be friendly and encouraging.", {"*"}),
    ("In general, do not give unsolicited suggestions.", {"*"}),
    ("In general, use a formal tone.", {"*", "-creative"}),
    ("In general, explain the reasoning step by step.", {"*", "-creative", "-translate"}),
    ("In general, avoid jargon.", {"*"}),
    ("In general, give the answer first, then the details.", {"*", "-creative"}),
    ("In general, do not use emojis.", {"*"}),
    ("In general, include a concrete example.", {"*", "-creative", "-translate"}),
    ("In general, ask a clarifying question when a request is ambiguous.", {"*"}),
    ("In general, use British spelling.", {"*"}),
    ("When answering questions, use bullet points.", {"*", "-creative", "-translate"}),
    ("When replying, keep it short.", {"*"}),
    ("When responding, be friendly.", {"*"}),
    ("When answering, do not add suggestions I did not ask for.", {"*"}),
    ("When explaining anything, avoid jargon.", {"*"}),
    ("When answering, put the answer first.", {"*", "-creative"}),
    ("When answering, include an example.", {"*", "-creative", "-translate"}),
    ("When responding, never use emojis.", {"*"}),
]


def applies(note_tags: set[str], query_tags: set[str]) -> bool:
    if query_tags & {t[1:] for t in note_tags if t.startswith("-")}:
        return False
    return "*" in note_tags or bool(note_tags & query_tags)


def build(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for query, qtags in QUERIES:
        pos = [n for n in TOPICAL if applies(n[1], qtags)]
        neg = [n for n in TOPICAL if not applies(n[1], qtags)]
        notes = pos + rng.sample(neg, 4) + rng.sample(STYLE, 4)
        for note, ntags in notes:
            rows.append({"query": query, "note": note, "useful": applies(ntags, qtags),
                         "kind": "style" if (note, ntags) in STYLE else "topical",
                         "global": note.startswith("In general")})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = build(args.seed)
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    n_pos = sum(r["useful"] for r in rows)
    print(f"wrote {len(rows)} pairs ({n_pos} useful) over {len(QUERIES)} queries to {args.out}")


if __name__ == "__main__":
    main()
