"""`instructkit doctor`: which engines this machine has, which one `local` uses, and why.

It reads everything without loading a model in this process: the llama.cpp verdict comes from the
probe child (models/engine_probe.py, run once per build and machine), versions from package metadata.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

# The CPU features worth naming: what llama.cpp's kernels use, and the ones that fault under some hypervisors.
NAMED_FEATURES = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                  "avx512_fp16", "avx512vbmi", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "sve")  # fmt: skip


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def diagnose(probe: bool = True, again: bool = False) -> dict[str, Any]:
    """The facts `doctor` prints: engines, the one `local` uses, the probe's verdict, CPU, threads, versions."""
    from .models.engine_probe import cpu_description, llamacpp_installed, llamacpp_verdict

    name, flags = cpu_description()
    facts: dict[str, Any] = {
        "cpu": name, "cores": usable_cores(),
        "cpu_features": [f for f in NAMED_FEATURES if f in flags],
        "versions": {d: version(d) for d in ("instructkit", "llama-cpp-python", "torch", "transformers")},
    }  # fmt: skip
    engines = ["transformers"] if version("transformers") != "not installed" else []
    verdict = None
    if llamacpp_installed():
        engines.insert(0, "llama.cpp")
        if probe:
            verdict = llamacpp_verdict(again=again)
    facts["engines"] = engines
    facts["llama.cpp"] = None if verdict is None else {
        "ok": verdict.ok, "reason": verdict.reason, "build": verdict.build, "probe_s": round(verdict.seconds, 2),
        "build_features": verdict.features}  # fmt: skip
    if verdict is not None and verdict.ok:
        from .models.local.llamacpp import default_threads

        facts["local"] = "llama.cpp generates, transformers scores"
        half, every = default_threads()
        facts["threads"] = {"llama.cpp": f"{half} or {every}, chosen per pass by measured speed", "torch": torch_threads()}
    elif engines:
        facts["local"] = "transformers generates and scores" + (
            f" (llama.cpp is installed but {verdict.reason})" if verdict is not None and not verdict.ok else "")
        facts["threads"] = {"torch": torch_threads()}
    else:
        facts["local"] = "no local engine installed (bash scripts/setup.sh)"
        facts["threads"] = {}
    return facts


def torch_threads() -> int | str:
    """torch's intra-op threads as it will start (its default is the usable cores), without importing it."""
    if version("torch") == "not installed":
        return "torch not installed"
    return int(os.environ.get("OMP_NUM_THREADS") or usable_cores())


def one_line(facts: dict[str, Any]) -> str:
    """The short form the demo prints first."""
    lc = facts.get("llama.cpp")
    probe = "" if lc is None else f"; llama.cpp {lc['build']} {'passed' if lc['ok'] else 'FAILED: ' + lc['reason']}"
    feats = ",".join(f for f in facts["cpu_features"] if f in ("avx2", "avx512f", "amx_tile")) or "baseline"
    return f"local model: {facts['local']}{probe} [{facts['cores']} cores, {feats}]"


def doctor_command(args: Any) -> int:
    from .models.engine_probe import FIX

    facts = diagnose(again=bool(getattr(args, "probe_again", False)))
    if getattr(args, "short", False):
        print(one_line(facts))
        return 0
    v = facts["versions"]
    print(f"instructkit {v['instructkit']}")
    print(f"local:    {facts['local']}")
    print(f"engines:  {', '.join(facts['engines']) or 'none'}")
    lc = facts["llama.cpp"]
    if lc is not None:
        print(f"llama.cpp: llama-cpp-python {v['llama-cpp-python']} (build {lc['build']}); probe "
              + ("passed" if lc["ok"] else f"FAILED: {lc['reason']}") + f" ({lc['probe_s']} s in a child process)")
        if lc["build_features"]:
            text = lc["build_features"].split(":", 1)[-1] if lc["build_features"].startswith("CPU") else lc["build_features"]
            on = [kv.split("=")[0].strip() for kv in text.split("|") if kv.strip().endswith("= 1")]
            print(f"  build uses: {' '.join(on)}")
            if any(f.startswith("amx") for f in facts["cpu_features"]) and not any(f.startswith("AMX") for f in on):
                print("  build leaves out: AMX (advertised by this CPU; faults under some hypervisors)")
        if not lc["ok"]:
            print(f"  fix: {FIX}")
    print(f"cpu:      {facts['cpu']}, {facts['cores']} usable cores; advertises {' '.join(facts['cpu_features'])}")
    print("threads:  " + (", ".join(f"{k} {t}" for k, t in facts["threads"].items()) or "none"))
    print(f"versions: torch {v['torch']}, transformers {v['transformers']}, llama-cpp-python {v['llama-cpp-python']}")
    return 0 if facts["engines"] else 1
