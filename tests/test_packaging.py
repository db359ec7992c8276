"""Packaging: one import namespace, templates as package data, the wheel works on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["instructkit.judge", "instructkit.generators", "instructkit.prompts", "instructkit.selection"]


def test_only_instructkit_is_importable_at_top_level(tmp_path):
    code = (
        "import importlib.util as u, sys\n"
        "assert all(u.find_spec(n) is None for n in ('judge', 'generators', 'prompts', 'selection'))\n"
        f"import {', '.join(SUBPACKAGES)}\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_built_wheel_imports_and_ships_templates(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    wheel = next((tmp_path / "dist").glob("instructkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"instructkit"}, tops
    fakes = [n for n in names if n.endswith(".py") and ("fake" in n or Path(n).stem.startswith("test"))]
    assert not fakes, f"test code in the wheel: {fakes}"  # it lives in tests/ (fakes.py, fake_batch.py)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    templates = [n for n in names if n.startswith("instructkit/prompts/") and n.endswith(".jinja")]
    code = (
        f"import instructkit, {', '.join(SUBPACKAGES)}\n"
        "from importlib import resources\n"
        f"assert instructkit.__file__.startswith({str(target)!r}), instructkit.__file__\n"
        f"for name in {[Path(t).name for t in templates]!r}:\n"
        "    assert resources.files('instructkit.prompts').joinpath(name).read_text()\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
