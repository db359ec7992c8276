#!/usr/bin/env bash
# Set up everything (llama-cpp-python and its server compiled once per machine) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "local,data,server,dev,ray,prometheus,train"
# The report test opens the HTML in Debian's headless Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: install Debian's chromium package to run the report test" >&2
  fi
fi
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest -q "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi
exit "$status"
