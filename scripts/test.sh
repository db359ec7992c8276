#!/usr/bin/env bash
# Set up everything (compiles llama-cpp-python's server once; pip caches the wheel) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "local,data,server,dev"
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest -q "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi
exit "$status"
