"""Issue 22's vegetarian chat on the real local server, as a new user has it: one message
states a diet and an answer format; the next asks for dinner. Five tries (sampling seeds):
every time a diet card and a format card are stored and injected, and no dinner suggestion
names meat or fish. The default pipeline (fast path before the answer, background learning
after it) on the CPU default model."""

from __future__ import annotations

import re

import pytest

from vars_langgraph import build_graph
from vars_langgraph.state import message_text

pytestmark = pytest.mark.llm

STATED = "I'm vegetarian and I prefer short answers with bullet points."
ASK = "What should I make for dinner tonight?"
MEAT = re.compile(r"\b(?:chicken|beef|pork|bacon|ham|turkey|lamb|steaks?|sausages?|fish|salmon|"
                  r"tuna|shrimps?|prawns?|anchov\w*|pepperoni|prosciutto|meatballs?|duck)\b", re.I)


def test_meat_words_are_found():
    assert MEAT.search("A chicken stir-fry with garlic rice")
    assert MEAT.search("- Grilled salmon\n- Rice")
    assert not MEAT.search("Pasta with mushrooms, no meat. Meatless chili.")


@pytest.mark.parametrize("seed", range(5))
def test_vegetarian_chat(make_config, llm_base_url, seed):
    cfg = make_config(llm_url=llm_base_url, llm={"seed": seed, "temperature": 0.7,
                                                 "max_tokens": 48})
    graph = build_graph(cfg)
    run = {"configurable": {"thread_id": "t", "user_id": "veg"}}
    graph.invoke({"messages": [("user", STATED)]}, run)
    notes = [c.note.lower() for c in graph.engine.memory.list_cards("veg")]
    assert any("vegetarian" in n for n in notes), notes  # the diet, a card of its own
    assert any("bullet" in n for n in notes) and any("short" in n for n in notes), notes
    out = graph.invoke({"messages": [("user", ASK)]}, run)
    injected = " ".join(c["note"].lower() for c in out["selected"])
    assert "vegetarian" in injected and "bullet" in injected, injected
    answer = message_text(out["messages"][-1])
    assert answer.strip() and not MEAT.search(answer), answer
