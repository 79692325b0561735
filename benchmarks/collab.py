"""Multi-session learning benchmark on MultiSessionCollab (thin wrapper).

    python benchmarks/collab.py [--users N] [--sessions 20] [--seed 0] [--out DIR] ...

Same as `vars-langgraph eval collab ...`; see docs/benchmarks.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vars_langgraph_eval.runner import collab_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(collab_main(sys.argv[1:]))
