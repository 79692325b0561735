"""Latency and scale benchmark of the memory (thin wrapper).

    python benchmarks/latency.py [--sizes 100,1000,10000,100000] [--queries 200] [--out DIR]

Same as `vars-langgraph bench ...`; see docs/benchmarks.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vars_langgraph_eval.bench import bench_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
