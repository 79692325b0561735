#!/usr/bin/env bash
# Fresh machine -> ready venv in .venv: CPU torch first (pinned: a range would pull CUDA), then
# the package with every extra the README needs ([all] = local, postgres, test) and the
# evaluation distribution in ./eval (vars-langgraph-eval).
# llama-cpp-python (the [local] extra) builds from source (~5-10 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[all]" -e ./eval
echo "setup done: $(python -c 'import vars_langgraph, torch; print("vars-langgraph", vars_langgraph.__version__, "torch", torch.__version__)')"
