"""Stage journals written by parallel workers (RunContext.journal_tag) and read back together."""

from __future__ import annotations

import json
from pathlib import Path

from instructkit.run.runner import Journal, RunContext


def write(path: Path, *entries: dict) -> None:
    with path.open("a", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry) + "\n")


def test_a_stage_journal_reads_its_tagged_siblings_and_success_wins(tmp_path: Path) -> None:
    main = tmp_path / "m.rate.journal.jsonl"
    write(main, {"key": "a", "ok": True, "value": 1})
    write(
        tmp_path / "m.rate.journal.ray-2.jsonl",
        {"key": "b", "ok": True, "value": 2},
        {"key": "c", "ok": False},
    )
    write(
        tmp_path / "m.rate.journal.ray-1.jsonl",
        {"key": "c", "ok": True, "value": 3},
        {"key": "d", "ok": False},
    )
    write(tmp_path / "m.rate2.journal.jsonl", {"key": "x", "ok": True, "value": 9})  # another stage
    journal = Journal(main)
    assert {k: (e["ok"], e.get("value")) for k, e in journal.entries.items()} == {
        "a": (True, 1),
        "b": (True, 2),
        "c": (True, 3),
        "d": (False, None),
    }
    assert journal.done("c")["value"] == 3 and journal.done("d") is None
    assert Journal(tmp_path / "other.jsonl").entries == {}  # a plain file reads only itself


def test_a_tagged_context_writes_its_own_file_and_every_run_reuses_it(tmp_path: Path) -> None:
    async def double(x: int) -> int:
        return 2 * x

    tagged = RunContext(method="m", work_dir=tmp_path, progress=False, journal_tag="w1")
    assert [r.value for r in tagged.map([1, 2], double, stage="s")] == [2, 4]
    assert (tmp_path / "m.s.journal.w1.jsonl").exists() and not (tmp_path / "m.s.journal.jsonl").exists()
    plain = RunContext(method="m", work_dir=tmp_path, progress=False)
    results = plain.map([1, 2, 3], double, stage="s")
    assert [r.value for r in results] == [2, 4, 6] and [r.reused for r in results] == [True, True, False]


def test_row_keys_are_the_row_key_of_each_item():
    # Journals written by earlier versions must resume: the batched keys are byte for byte row_key's.
    from instructkit.run.runner import row_key, row_keys

    base = {"method": "m", "stage": "s", "options": '{"a":1}', "model": {"family": "x", "model": "é"}}
    items = [{"instruction": "q", "n": 1.5, "t": ["a", None]}, "plain", 3, {"z": {"é": [1, 2]}, "a": True}]
    assert row_keys("s", base, items) == [row_key("s", {"base": base, "item": it}) for it in items]
