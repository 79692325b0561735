#!/usr/bin/env bash
# Time `pip install` of the core (wheels only: nothing may compile) into a fresh venv, with the
# pinned CPU torch first, pip's cache off; then check the missing-extra messages there.
# Writes results/install.json. Usage: bash scripts/measure_install.sh [venv dir]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/vars-core-venv}
PY=${PYTHON:-python3}
rm -rf "$VENV" /tmp/vars-core-wheel
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip wheel --quiet --no-deps -w /tmp/vars-core-wheel .
rm -rf build  # setuptools leaves it in the tree
t0=$(date +%s.%N)
"$VENV/bin/python" -m pip install --quiet --no-cache-dir torch==2.13.0
t1=$(date +%s.%N)
"$VENV/bin/python" -m pip install --quiet --no-cache-dir --only-binary=:all: /tmp/vars-core-wheel/*.whl
t2=$(date +%s.%N)
pkgs=$("$VENV/bin/python" -m pip list --format=freeze | wc -l)
msg_chat=$(HF_HUB_OFFLINE=1 "$VENV/bin/vars-langgraph" --data-dir /tmp/vars-core-data chat --user a -m hi 2>&1 | tail -1 || true)
msg_eval=$("$VENV/bin/vars-langgraph" eval collab --sessions 1 2>&1 | tail -1 || true)
"$VENV/bin/python" - "$t0" "$t1" "$t2" "$pkgs" "$msg_chat" "$msg_eval" <<'PY'
import json, os, sys
t0, t1, t2 = map(float, sys.argv[1:4])
out = {"torch_s": round(t1 - t0, 1), "core_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1),
       "packages": int(sys.argv[4]), "only_binary": True, "pip_cache": "off",
       "load_average": os.getloadavg(), "cpus": os.cpu_count(),
       "missing_local_message": sys.argv[5], "missing_eval_message": sys.argv[6]}
os.makedirs("results", exist_ok=True)
json.dump(out, open("results/install.json", "w"), indent=1)
print(json.dumps(out, indent=1))
PY
