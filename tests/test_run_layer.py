"""The run layer's contracts: stage-end hooks fire after every stage in order (batch mode's pass
barrier is one of them), and the cross-row needs a method declares in `@method(...)` decide where it
may be split (Ray batches), with no method named in the run layer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from instructkit import registry
from instructkit.run.execution import Execution
from instructkit.run.runner import RunContext, save_calibration

RUN = Path(__file__).resolve().parents[1] / "instructkit" / "run"


def test_stage_end_hooks_fire_after_each_stage_in_order_and_can_be_removed() -> None:
    ctx = RunContext(progress=False)
    assert ctx.stage_end == [save_calibration]  # the default: the dry-run calibration store
    seen: list[tuple[str, str, list]] = []
    remove = ctx.on_stage_end(lambda c, stage, results: seen.append(("first", stage, [r.value for r in results])))
    ctx.on_stage_end(lambda c, stage, results: seen.append(("second", stage, [r.ok for r in results])))

    async def double(x: int) -> int:
        return 2 * x

    ctx.map([1, 2], double, stage="a")
    remove()
    ctx.map([3], double, stage="b")
    assert seen == [("first", "a", [2, 4]), ("second", "a", [True, True]), ("second", "b", [True])]


def test_a_hook_that_raises_ends_the_stage_after_its_rows_ran() -> None:
    """Batch mode's barrier raises from its hook: the rows of that stage ran, the next stage never starts."""
    ctx = RunContext(progress=False)
    ran: list[int] = []

    class Stop(BaseException):
        pass

    def barrier(c, stage, results):
        raise Stop

    async def one(x: int) -> int:
        ran.append(x)
        return x

    ctx.on_stage_end(barrier)
    with pytest.raises(Stop):
        ctx.map([1, 2], one, stage="first")
        ctx.map([3], one, stage="second")
    assert sorted(ran) == [1, 2]


@pytest.mark.parametrize(
    ("kind", "name", "options", "cross_row"),
    [
        ("judge", "alpagasus", {}, False),
        ("judge", "instag", {}, True),
        ("judge", "eval", {}, True),
        ("score", "ifd", {}, False),
        ("score", "ifd", {"top_k": 3}, True),
        ("score", "superfiltering", {"ratio": 0.1}, True),
        ("score", "nuggets", {}, True),
        ("score", "nuggets", {"anchors_path": "anchors.jsonl"}, False),
        ("select", "kcenter", {}, True),
    ],
)
def test_declared_cross_row_needs_decide_whether_a_method_may_be_split(kind, name, options, cross_row) -> None:
    info = registry.get(kind, name)
    opts = info.make_options(options)
    assert bool(info.cross_row_reason(opts)) is cross_row
    if kind in ("judge", "score"):
        ray = Execution(engine="ray")
        if cross_row:
            with pytest.raises(ValueError, match="cannot run on Ray: " + re.escape(info.cross_row_reason(opts))):
                ray.check(info, opts)
        else:
            ray.check(info, opts)


def test_the_run_layer_names_no_method() -> None:
    """What a method needs is declared with it: no (kind, name) pair or method name in the run layer."""
    names = {"instag", "eval", "ifd", "superfiltering", "nuggets", "alpagasus", "deita", "kcenter"}
    for path in RUN.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        named = {n for n in names if re.search(rf"""["']{n}["']""", text)}
        assert not named, f"{path.name} names {sorted(named)}"


def test_the_input_is_checked_once_before_anything_is_written(tmp_path: Path, monkeypatch) -> None:
    """A bad row stops the command (exit 2, file:line and field) before a work folder or lock exists;
    a good input passes `check_input` once on its way from the CLI to the method."""
    from instructkit.cli import main
    from instructkit.registry import MethodInfo

    checks: list[int] = []
    real = MethodInfo.check_input
    monkeypatch.setattr(MethodInfo, "check_input", lambda self, records, options=None: (
        checks.append(len(records)), real(self, records, options))[1])
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    out = tmp_path / "out.jsonl"
    argv = ["judge", "alpagasus", str(src), "--out", str(out), "-m", "never-called@http://127.0.0.1:9/v1", "--quiet"]
    assert main(argv) == 2
    assert checks == [2] and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
    checks.clear()
    src.write_text('{"instruction": "a", "output": "b"}\n')
    assert main([*argv, "--dry-run"]) == 0 and checks == [1]
