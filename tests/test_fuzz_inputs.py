"""Fuzzing the trust boundary: random bytes and random YAML given to the readers and the pipeline loader
end in one located error and exit 2, never a traceback (hypothesis; bounded to a few seconds)."""

from __future__ import annotations

import contextlib
import io
import json
import string
import tempfile
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from instructkit.cli import main  # noqa: E402
from instructkit.data.io import InputError, read_records  # noqa: E402

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
WORDS = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=8)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(WORDS, inner, max_size=3)), max_leaves=8)
NOT_TEXT = st.one_of(st.none(), st.booleans(), st.integers(), st.lists(JSON, max_size=2),
                     st.dictionaries(WORDS, JSON, max_size=2), st.just(""), st.just("  "))
# Rows that look like records but never hold a usable instruction and output: every one must be refused.
ROW = st.dictionaries(st.sampled_from(["instruction", "output", "input", "messages", "conversations", "x"]),
                      NOT_TEXT, max_size=4)
PIPELINE_KEYS = ["name", "model", "out", "seed", "model_options", "steps", "optoins", "input", "select", "judge",
                 "concat", "export", "options", "batch", "engine", "ray", "allow_empty", "modle"]
YAML_VALUE = st.recursive(
    st.one_of(SCALARS, WORDS),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(PIPELINE_KEYS) | WORDS,
                                                                         inner, max_size=4)),
    max_leaves=12)


def run_cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))  # an exception here is the traceback a user would see
    return code, err.getvalue()


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def check_refused(code: int, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and err.startswith(("error: ", "stopped")), err


@FAST
@given(data=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_are_read_or_refused_with_a_located_error(folder, data, suffix):
    path = folder / f"in{suffix}"
    path.write_bytes(data)
    try:
        read_records(path)
    except InputError as exc:
        assert str(exc).startswith(str(path))
    code, err = run_cli("judge", "alpagasus", str(path), "--out", str(folder / "o.jsonl"), "--dry-run")
    check_refused(code, err)


@FAST
@given(lines=st.lists(st.one_of(ROW.map(json.dumps), JSON.map(json.dumps), st.text(max_size=30)), min_size=1,
                      max_size=5), suffix=st.sampled_from((".jsonl", ".json")))
def test_random_json_rows_are_refused_before_any_model(folder, lines, suffix):
    path = folder / f"rows{suffix}"
    path.write_text("\n".join(lines) if suffix == ".jsonl" else "[" + ",".join(lines) + "]", encoding="utf-8")
    code, err = run_cli("judge", "alpagasus", str(path), "--out", str(folder / "o.jsonl"), "--dry-run")
    check_refused(code, err)


@FAST
@given(doc=st.one_of(YAML_VALUE.map(lambda v: yaml.safe_dump(v, allow_unicode=True)), st.text(max_size=120),
                     st.binary(max_size=120)))
def test_random_yaml_is_refused_by_the_pipeline_loader(folder, doc, monkeypatch):
    monkeypatch.chdir(folder)  # relative names the YAML makes up resolve here, where nothing exists
    path = folder / "p.yaml"
    path.write_bytes(doc if isinstance(doc, bytes) else doc.encode("utf-8"))
    code, err = run_cli("run", str(path), "--out", str(folder / "out"))
    check_refused(code, err)
