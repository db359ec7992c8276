"""A backend added from outside models/: a toy `EchoBackend`, registered through the public registry,
runs `judge alpagasus` through the CLI with the cache, a dry run, a budget and retries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from instructkit.cli import main
from instructkit.models import (
    BackendSettings,
    Completion,
    GenParams,
    ModelRef,
    TransientError,
    Usage,
    register_backend,
    unregister_backend,
)

PRICES = (1e-4, 2e-4)  # dollars per prompt and reply token
ROWS = 4


@dataclass
class Wire:
    """What the echo backends of one test saw: every try, and how many to fail first."""

    fail_first: int = 0
    tries: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return len(self.tries) - min(self.fail_first, len(self.tries))


class EchoBackend:
    """Answers every chat with a fixed AlpaGasus rating and honest usage; fails the first tries."""

    supports_n = False
    supports_json_schema = False
    supports_penalties = True

    def __init__(self, model: str, wire: Wire):
        self.model_id = model
        self.wire = wire

    async def chat(self, messages: list[dict], params: GenParams, n: int = 1) -> list[Completion]:
        self.wire.tries.append(messages[-1]["content"])
        if len(self.wire.tries) <= self.wire.fail_first:
            raise TransientError("echo: busy", status=503, retry_after=0.0)
        prompt = sum(len(m["content"]) for m in messages) // 4
        return [Completion("Score: 5\nThe answer is right.", usage=Usage(prompt, 9)) for _ in range(n)]

    async def aclose(self) -> None:
        pass


@pytest.fixture
def wire() -> Iterator[Wire]:
    wire = Wire()

    def factory(ref: ModelRef, settings: BackendSettings) -> EchoBackend:
        return EchoBackend(ref.model, wire)

    register_backend("echo", factory, prices=PRICES)
    yield wire
    unregister_backend("echo")


def run(tmp_path: Path, *flags: str, rows: int = ROWS, out_name: str = "out.jsonl") -> tuple[int, dict]:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Name colour {i}.", "output": "Red."}) + "\n"
                            for i in range(rows)))  # fmt: skip
    out = tmp_path / out_name
    code = main(["judge", "alpagasus", str(data), "--out", str(out), "-m", "echo/any", "--quiet",
                 "--cache-dir", str(tmp_path / "cache"), "--concurrency", "1", *flags])  # fmt: skip
    manifest = out.with_name(out.name + ".manifest.json")
    return code, json.loads(manifest.read_text()) if manifest.exists() else {}


def calls_of(manifest: dict) -> dict:
    return manifest.get("calls") or manifest["summary"]["calls"]


def test_retries_then_the_cache(wire: Wire, tmp_path: Path) -> None:
    wire.fail_first = 2
    code, manifest = run(tmp_path)
    assert code == 0
    calls = calls_of(manifest)
    assert calls["retries"] == 2 and calls["calls"] == ROWS + 2 and wire.answered == ROWS
    assert calls["completion_tokens"] == 9 * ROWS  # priced by the registered prices, nothing else
    assert calls["cost"] == pytest.approx(calls["prompt_tokens"] * PRICES[0] + calls["completion_tokens"] * PRICES[1])
    scores = [json.loads(line)["alpagasus_score"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert scores == [5.0] * ROWS
    tries = len(wire.tries)
    code, manifest = run(tmp_path, out_name="again.jsonl")  # the same rows elsewhere: all from the cache
    assert code == 0 and len(wire.tries) == tries
    assert calls_of(manifest)["cache_hits"] == ROWS and calls_of(manifest)["calls"] == 0


def test_dry_run_calls_nothing_and_prints_an_estimate(wire: Wire, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    code, _ = run(tmp_path, "--dry-run")
    assert code == 0 and wire.tries == []
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("dry run:"))
    assert line.startswith(f"dry run: {ROWS} calls, ~")
    cost = float(line.split("~$")[1].split()[0])
    assert cost > 0  # priced by the registered backend's prices


def test_the_budget_stops_spending(wire: Wire, tmp_path: Path) -> None:
    # Each call reserves its prompt plus max_tokens (256) replies: about 0.052 dollars; two fit in 0.11.
    code, manifest = run(tmp_path, "--max-cost", "0.11", rows=10)
    assert code == 3
    assert 1 <= wire.answered < 10
    assert calls_of(manifest)["cost"] <= 0.11
