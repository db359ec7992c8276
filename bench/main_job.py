"""The main job's two costs, apart: installing (scripts/setup.sh local,data) and running examples/pipeline.yaml.

Install: a throwaway clone of this checkout's HEAD gets its own fresh .venv from scripts/setup.sh, as a
new user's machine would; `--cold` gives pip an empty cache too (llama.cpp compiled from source, every
wheel fetched again), the default keeps the machine's pip cache (a second project on the same machine).
Pipeline: `instructkit run examples/pipeline.yaml` into a temporary folder with an empty response cache
and model folder (so every call is made and the GGUF is converted for the scorers as on first use),
from this checkout's .venv; the steps' rows and wall times come from its manifest. The reference is
the figure measured before the llama.cpp path (issue 11: 7.5 min); the target a quarter of it.

    python bench/main_job.py [--skip-install] [--cold] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE_S = 7.5 * 60  # pipeline wall time on the same example before this path (issue 11)


def install_time(cold: bool, keep: bool) -> float:
    work = Path(tempfile.mkdtemp(prefix="instructkit-install-"))
    clone = work / "instructkit"
    subprocess.run(["git", "clone", "-q", "--local", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()],
        check=True)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    if cold:
        env["PIP_CACHE_DIR"] = str(work / "pip-cache")
    start = time.monotonic()
    try:
        subprocess.run(["bash", "scripts/setup.sh", "local,data"], cwd=clone, env=env, check=True)
        return time.monotonic() - start
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def pipeline_time(keep: bool) -> tuple[float, list[dict]]:
    work = Path(tempfile.mkdtemp(prefix="instructkit-mainjob-"))
    env = {**os.environ, "INSTRUCTKIT_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    exe = Path(sys.executable).with_name("instructkit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "instructkit.cli"]
    start = time.monotonic()
    try:
        proc = subprocess.run([*cmd, "run", str(ROOT / "examples" / "pipeline.yaml"), "--out", str(work / "out")],
                              env=env, cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        wall = time.monotonic() - start
        if proc.returncode not in (0, 3):
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"pipeline failed ({proc.returncode})")
        print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "", file=sys.stderr)
        steps = json.loads((work / "out" / "manifest.json").read_text())["steps"]
        return wall, steps
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-install", action="store_true", help="time the pipeline only")
    ap.add_argument("--cold", action="store_true", help="install with an empty pip cache (as a fresh machine)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = ap.parse_args()
    installed = None if args.skip_install else install_time(args.cold, args.keep)
    wall, steps = pipeline_time(args.keep)
    print(f"\n{'step':<16}{'rows in':>8}{'rows out':>9}{'wall s':>8}")
    for s in steps:
        print(f"{s['step']:<16}{s.get('rows_in', ''):>8}{s.get('rows_out', ''):>9}{s.get('wall_s', 0.0):>8.1f}")
    print(f"\n{'':<28}{'ours':>9}{'before':>9}{'target':>9}")
    if installed is not None:
        print(f"{'install (' + ('cold' if args.cold else 'warm') + ' pip cache) s':<28}{installed:>9.0f}")
    print(f"{'pipeline s':<28}{wall:>9.0f}{BEFORE_S:>9.0f}{BEFORE_S / 4:>9.0f}")


if __name__ == "__main__":
    main()
