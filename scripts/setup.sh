#!/usr/bin/env bash
# Fresh machine -> ready venv in .venv: CPU torch first (pinned: a range would pull CUDA), then
# the package with every extra the README needs ([all] = local, postgres, fit, test) and the
# evaluation distribution in ./eval (vars-langgraph-eval).
# llama-cpp-python (the [local] extra) builds from source (~5-10 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet torch==2.13.0
# llama.cpp built for the host CPU (-march=native) puts weights in AMX buffers where the CPU
# advertises AMX, and faults in VMs that advertise it without enabling it: build those portable.
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null && [ -z "${CMAKE_ARGS:-}" ]; then
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
fi
python -m pip install --quiet -e ".[all]" -e ./eval
echo "setup done: $(python -c 'import vars_langgraph, torch; print("vars-langgraph", vars_langgraph.__version__, "torch", torch.__version__)')"
