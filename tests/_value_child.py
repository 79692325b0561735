"""Child process for tests/test_consolidation.py (not a test module): runs the update node in a
loop for one user until SIGKILLed, acknowledging each committed card-value update.

`python -m tests._value_child DATA_DIR ACK_FILE`: each turn writes pending feedback that
injected card CARD, then runs the graph's update node with reward 1 and gate 1; after it
returned, the ack file gets `VAL <n>` (n: the card's update count in the store)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests._reliability import HashEmbedder  # noqa: E402
from vars_langgraph import VARSConfig, VARSEngine  # noqa: E402
from vars_langgraph.learning import card_value  # noqa: E402
from vars_langgraph.storage import open_store  # noqa: E402
from vars_langgraph.types import CardSource, Preference  # noqa: E402

USER = "value-user"
PREF = Preference(condition="answering", action="use bullet points", confidence=0.9)
CARD = ""  # set below: the card's deterministic id
LR = card_value.VALUE_LR


def make(data_dir: str) -> VARSEngine:
    cfg = VARSConfig.from_dict({"data_dir": data_dir, "memory": {
                                                                 "consolidate": False}})
    return VARSEngine(cfg, open_store(cfg), index_dir=Path(data_dir) / "index",
                      embedder=HashEmbedder(32))


def expected(n: int) -> float:
    """The value after n updates toward target 1 at step LR from 0."""
    return 1.0 - (1.0 - LR) ** n


def main(data_dir: str, ack_path: str) -> None:
    from vars_langgraph.nodes.update import make_update

    engine = make(data_dir)
    card = engine.add_preferences(USER, [PREF], CardSource(thread_id="t", query="bullets"))[0]
    update = make_update(engine)
    config = {"configurable": {"thread_id": "t", "user_id": USER}}
    with open(ack_path, "a", buffering=1) as f:
        f.write("READY\n")
        while True:
            engine.memory.put_pending(USER, "t", {"query": "q", "selected_ids": [card.id],
                                                  "candidates": [{"id": card.id, "pi": 1.0,
                                                                  "chosen": True, "rank": 0}]})
            update({"reward": {"value": 1.0, "gate": 1.0}, "query": "thanks"}, config, None)
            n = int(engine.load_vector(USER).card_values[card.id][1])
            f.write(f"VAL {n}\n")


def _card_id() -> str:
    from vars_langgraph.types import PreferenceCard

    return PreferenceCard.make_id(USER, PREF.note)


CARD = _card_id()

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
