#!/usr/bin/env bash
# The drop-in and tool tests against the newest LangChain releases the core's ranges allow,
# without touching .venv: they are installed into a throwaway folder that goes first on
# PYTHONPATH (the venv keeps the oldest supported versions the rest of the suite runs on).
#
#   bash scripts/test_newest.sh            # newest langchain / langchain-core / langchain-openai
#   NEWEST="langchain==1.5.0" bash scripts/test_newest.sh
#   bash scripts/test_newest.sh -k create_agent   # extra pytest arguments (CI: .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# the newest releases below the next major, with their dependencies (~120 MB, pip --target)
# shellcheck disable=SC2086
python -m pip install --quiet --target "$dir" \
  ${NEWEST:-"langchain<2" "langchain-core<2" "langchain-openai<2"}
python -c "import sys; sys.path.insert(0, '$dir'); import langchain, langchain_core, langchain_openai; \
print('testing on langchain', langchain.__version__, 'langchain-core', langchain_core.__version__, \
'langchain-openai', langchain_openai.__version__)"
PYTHONPATH="$dir:$PWD${PYTHONPATH:+:$PYTHONPATH}" python -m pytest -q tests/test_dropin.py tests/test_tools.py "$@"
