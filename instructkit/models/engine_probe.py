"""Can llama.cpp run on this machine? A child process tries it first; the verdict is kept per build and machine.

A CPU can advertise a feature that the machine cannot run (AMX under some hypervisors): llama.cpp built
for that CPU dies by SIGILL at its first matrix product and takes the whole process with it. So before
this process first generates with llama.cpp, a child process makes the generation copy of the model
(llama.cpp's own quantizer), loads it, reads a prompt in passes of many tokens and again one token at a
time, and checks that both give finite logits and the same choices. Whatever ends the child (a signal, a
hang, a wrong answer), this process does not use that build: `local` generates with transformers and
one line says why and how to fix it. The verdict is stored under the models folder, keyed by the
llama-cpp-python build (version and library files) and the machine (CPU model, its flags, the kernel),
so the child runs once per build and machine (`instructkit doctor --probe-again` runs it anew).

`INSTRUCTKIT_PROBE_FAULT=sigill|hang|wrong` makes the child fail that way (tests of the fallback); a
forced verdict is never stored.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .local_files import models_dir

FAULT_VARIABLE = "INSTRUCTKIT_PROBE_FAULT"
PROBE_TIMEOUT_S = 180.0  # loading and two passes take ~2 s on a quiet core; a busy shared one is far slower
PROBE_PROMPT = "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is"
PROBE_TOKENS = 8  # greedy tokens decoded after the prompt
# Passes of 64 and of 1 token run different kernels (activations quantized per block vs per row): on
# SmolLM2's Q8_0 copy their logits differ by up to 1.07 with the same choices (measured); kernels that
# compute garbage differ by tens.
MAX_LOGIT_DIFFERENCE = 4.0
FIX = ("rebuild it for this machine's safe features: LLAMA_BUILD=portable bash scripts/setup.sh "
       "(or pass -m local -o engine transformers)")  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """What the probe found: whether llama.cpp may run here, and why not when it may not."""

    ok: bool
    reason: str  # "" when ok
    build: str  # llama-cpp-python version and its library files' tag
    machine: str  # CPU model and features tag
    seconds: float
    features: str = ""  # the CPU features llama.cpp's build reports (llama_print_system_info)
    lasting: bool = True  # stored for the build and machine: a pass, a fault or wrong answers, not a hang

    def line(self) -> str:
        """The one-line form (`instructkit doctor`'s first line, the demo's first line)."""
        if self.ok:
            return f"llama.cpp {self.build}: usable here (probed in a child process in {self.seconds:.1f} s)"
        return f"llama.cpp {self.build}: NOT usable here ({self.reason}); local models use transformers"


def llamacpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def build_tag() -> str:
    """`VERSION/TAG`: the installed llama-cpp-python and a tag of its native libraries (path, size, mtime),
    read without importing it."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return "not installed"
    version = importlib.metadata.version("llama-cpp-python")
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    files = sorted(lib.glob("*.so*")) + sorted(lib.glob("*.dylib")) + sorted(lib.glob("*.dll"))
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return f"{version}/{h.hexdigest()[:10]}"


def cpu_description() -> tuple[str, list[str]]:
    """(CPU model name, its advertised feature flags) from /proc/cpuinfo; the platform's words elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), []
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = (fields.get("flags") or fields.get("Features") or "").split()
    return fields.get("model name") or fields.get("CPU part") or platform.machine(), flags


def machine_tag() -> str:
    name, flags = cpu_description()
    h = hashlib.sha256(f"{name}|{' '.join(sorted(flags))}|{platform.release()}".encode()).hexdigest()[:10]
    return f"{name}/{h}"


def _verdict_file(build: str, machine: str) -> Path:
    key = hashlib.sha256(f"{build}|{machine}".encode()).hexdigest()[:16]
    return models_dir() / "engine-probe" / f"llama.cpp-{key}.json"


_VERDICT: Verdict | None = None
_VERDICT_LOCK = threading.Lock()
_WARNED = False


def llamacpp_verdict(gguf: Path | None = None, *, again: bool = False) -> Verdict:
    """This process's verdict on llama.cpp: stored (per build and machine), or probed now in a child."""
    global _VERDICT
    with _VERDICT_LOCK:
        if _VERDICT is not None and not again:
            return _VERDICT
        build, machine = build_tag(), machine_tag()
        fault = os.environ.get(FAULT_VARIABLE, "")
        path = _verdict_file(build, machine)
        if not again and not fault and path.is_file():
            try:
                _VERDICT = Verdict(**json.loads(path.read_text()))
                return _VERDICT
            except (OSError, ValueError, TypeError):
                pass  # unreadable: probe again
        _VERDICT = run_probe(gguf, build, machine)
        if not fault and _VERDICT.lasting:  # a hang or a killed child may be the machine's load: this run only
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(asdict(_VERDICT), indent=1))
            os.replace(tmp, path)
        return _VERDICT


def run_probe(gguf: Path | None, build: str, machine: str, timeout: float = PROBE_TIMEOUT_S) -> Verdict:
    """Run the probe child on `gguf` (default: the embedded model) and judge how it ended."""
    from .local_files import smollm2_gguf

    start = time.perf_counter()
    gguf = Path(gguf) if gguf is not None else smollm2_gguf()
    cmd = [sys.executable, "-m", "instructkit.models.engine_probe", str(gguf)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"the probe did not answer in {timeout:.0f} s", build, machine, timeout, lasting=False)
    seconds = time.perf_counter() - start
    report: dict = {}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            try:
                report = json.loads(line)
                break
            except ValueError:
                continue
    if done.returncode < 0:
        sig = signal.Signals(-done.returncode)
        why = {signal.SIGILL: "an instruction this build uses faults on this machine",
               signal.SIGSEGV: "the build crashed at its first model pass on this machine"}.get(sig, "it crashed")
        faults = (signal.SIGILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE)  # the build's own doing
        return Verdict(False, f"the probe was killed by {sig.name}: {why}", build, machine, seconds,
                       lasting=sig in faults)  # fmt: skip
    if done.returncode != 0 or not report:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return Verdict(False, f"the probe failed (exit {done.returncode}): {tail}", build, machine, seconds,
                       lasting=False)  # fmt: skip
    return Verdict(bool(report.get("ok")), report.get("reason", ""), build, machine, seconds,
                   report.get("features", ""))  # fmt: skip


def warn_fallback(verdict: Verdict) -> None:
    """The one line a run prints (once per process) when it generates on transformers instead."""
    global _WARNED
    if not _WARNED:
        _WARNED = True
        print(f"warning: llama.cpp cannot run on this machine ({verdict.reason}); local models generate "
              f"with transformers instead (slower). Fix: {FIX}", file=sys.stderr, flush=True)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# The child: everything below runs only in the probe process.


def _child(gguf: Path) -> dict:
    fault = os.environ.get(FAULT_VARIABLE, "")
    if fault == "sigill":
        os.kill(os.getpid(), signal.SIGILL)
    if fault == "hang":
        time.sleep(1e6)
    import numpy as np

    from .local_files import generation_gguf

    path = generation_gguf(gguf)  # the quantizer is llama.cpp code too: it runs here, not in the parent
    import llama_cpp
    from llama_cpp._logger import set_verbose

    set_verbose(False)
    features = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    threads = 1  # the kernels are the same at any count (faults too); 2 busy-waiting threads crawl on shared cores

    def logits(n_batch: int) -> tuple[np.ndarray, list[int]]:
        model = llama_cpp.Llama(str(path), n_ctx=256, n_batch=n_batch, n_ubatch=n_batch, n_threads=threads,
                                n_threads_batch=threads, logits_all=True, verbose=False)  # fmt: skip
        ids = model.tokenize(PROBE_PROMPT.encode(), add_bos=True)
        model.eval(ids)
        scores = np.array(model.scores[: len(ids)], dtype=np.float32)
        out: list[int] = []
        for _ in range(PROBE_TOKENS):  # greedy decoding, one token per pass
            tok = int(np.argmax(model.scores[model.n_tokens - 1]))
            out.append(tok)
            model.eval([tok])
        model.close()
        return scores, out

    batched, answer = logits(64)  # the prompt in one pass: the matrix kernels
    single, answer_single = logits(1)  # one token per pass: the vector kernels
    if fault == "wrong":
        batched = batched + np.random.default_rng(0).normal(0, 50, batched.shape).astype(np.float32)
    if not (np.isfinite(batched).all() and np.isfinite(single).all()):
        return {"ok": False, "reason": "the probe's logits are not finite", "features": features}
    agree = float(np.mean(batched.argmax(-1) == single.argmax(-1)))
    spread = float(np.max(np.abs(batched - single)))
    if agree < 0.9 or spread > MAX_LOGIT_DIFFERENCE:
        return {"ok": False, "reason": f"wrong answers: passes of 64 and of 1 token disagree (max logit "
                f"difference {spread:.2f}, {agree:.0%} same choices)", "features": features}  # fmt: skip
    if answer != answer_single:
        return {"ok": False, "reason": "wrong answers: greedy decoding differs between kernels", "features": features}
    return {"ok": True, "reason": "", "features": features, "agree": agree, "max_logit_difference": spread}



def main() -> None:
    result = _child(Path(sys.argv[1]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
