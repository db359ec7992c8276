"""Hostile input and shared files (issue 21): nothing lost, nothing leaked, nothing executed, never a
traceback. Each test names the defect it holds; every one fails on the code before the fix."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

MODEL = "fake-model"


def cli(*args: str, env: dict | None = None, preexec=None, timeout: float = 120) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "instructkit.cli", *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, preexec_fn=preexec, timeout=timeout)
    assert "Unclosed" not in run.stderr, run.stderr[-2000:]
    return run


def no_traceback(run: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in run.stderr and "Exception in callback" not in run.stderr, run.stderr[-3000:]


def rows(path: Path, n: int = 16, text: str = "") -> Path:
    path.write_text("".join(json.dumps({"instruction": f"task {i}{text}", "output": f"answer {i}"}) + "\n"
                            for i in range(n)))
    return path


def judge(fake_server, src: Path, out: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return cli("judge", "alpagasus", str(src), "--out", str(out), "-m", f"{MODEL}@{fake_server.url}",
               "--quiet", "--cache-dir", str(out.parent / "cache"), *extra, **kw)


def unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot write in: mode 0500, or (as root, whom modes do not stop) /sys."""
    if os.geteuid() == 0:
        return Path("/sys/instructkit-test")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


# ----- data loss -------------------------------------------------------------------------------


def test_select_refuses_out_that_is_its_input_and_in_place_replaces_it(tmp_path):
    src = rows(tmp_path / "s.jsonl")
    before = src.read_bytes()
    run = cli("select", "random", str(src), "-o", "k", "3", "--out", str(src))
    no_traceback(run)
    assert run.returncode == 2 and "is the input" in run.stderr and "--in-place" in run.stderr
    assert src.read_bytes() == before  # all 16 rows still there
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    assert cli("select", "random", str(link), "-o", "k", "3", "--out", str(src)).returncode == 2
    assert cli("select", "random", str(src), "-o", "k", "3", "--out", str(src), "--in-place").returncode == 0
    assert len(src.read_text().splitlines()) == 3


def test_judge_refuses_out_that_is_its_input_before_any_call(fake_server, tmp_path):
    src = rows(tmp_path / "s.jsonl")
    before = src.read_bytes()
    run = judge(fake_server, src, src)
    no_traceback(run)
    assert run.returncode == 2 and "is the input" in run.stderr
    assert src.read_bytes() == before and fake_server.count() == 0


def test_unwritable_out_is_refused_before_any_call(fake_server, tmp_path):
    src = rows(tmp_path / "s.jsonl")
    out = unwritable(tmp_path) / "o.jsonl"
    run = cli("judge", "alpagasus", str(src), "--out", str(out), "--work-dir", str(tmp_path / "w"),
              "-m", f"{MODEL}@{fake_server.url}", "--quiet", "--cache-dir", str(tmp_path / "cache"))
    no_traceback(run)
    assert run.returncode == 2 and "not writable" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert fake_server.count() == 0  # nothing paid


def test_unwritable_cache_is_refused_before_any_call(fake_server, tmp_path):
    src = rows(tmp_path / "s.jsonl")
    run = cli("judge", "alpagasus", str(src), "--out", str(tmp_path / "o.jsonl"), "-m", f"{MODEL}@{fake_server.url}",
              "--quiet", "--cache-dir", str(unwritable(tmp_path) / "cache"))
    no_traceback(run)
    assert run.returncode == 2 and "response cache" in run.stderr and "not writable" in run.stderr
    assert fake_server.count() == 0


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG (a full disk, for a file)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_when_writing_the_output_is_one_line_and_the_journal_keeps_every_answer(fake_server, tmp_path):
    src = rows(tmp_path / "s.jsonl", n=40, text=" " + "long context " * 150)  # ~2 KB a row: the output is ~80 KB
    out = tmp_path / "o.jsonl"
    run = judge(fake_server, src, out, "--no-cache", preexec=_file_size_limit(48_000))
    no_traceback(run)
    assert run.returncode == 1 and "cannot write" in run.stderr and "run the same command again" in run.stderr
    assert len(run.stderr.strip().splitlines()) <= 2  # the summary-less failure: one line (plus a progress line)
    assert not out.exists()
    journal = [json.loads(line) for line in (tmp_path / "o.jsonl.work" / "alpagasus.rate.journal.jsonl").open()]
    assert sum(e["ok"] for e in journal) == 40 and fake_server.count() == 40
    again = judge(fake_server, src, out, "--no-cache")  # space again: nothing is paid twice
    assert again.returncode == 0, again.stderr
    assert fake_server.count() == 40 and len(out.read_text().splitlines()) == 40


def test_cache_filling_up_mid_run_is_one_warning_and_the_run_finishes(fake_server, tmp_path):
    import diskcache

    cache_dir = tmp_path / "cache"
    # SQLite's own "database or disk is full" (SQLITE_FULL), as on a full disk: the page count is capped
    # in the cache's stored settings, which diskcache applies each time it opens the folder.
    diskcache.Cache(str(cache_dir), sqlite_max_page_count=12).close()
    src = rows(tmp_path / "s.jsonl", n=60, text=" " + "filler " * 80)
    out = tmp_path / "o.jsonl"
    run = cli("judge", "alpagasus", str(src), "--out", str(out), "-m", f"{MODEL}@{fake_server.url}", "--quiet",
              "--cache-dir", str(cache_dir))
    no_traceback(run)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.count("cannot store answers") == 1
    assert len(out.read_text().splitlines()) == 60 and fake_server.count() == 60


# ----- silent misconfiguration -------------------------------------------------------------------


def pipeline_file(tmp_path: Path, text: str) -> Path:
    rows(tmp_path / "data.jsonl", n=4)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, line, key, near", [
    ("steps:\n  - {name: a, select: random, input: data.jsonl,\n     optoins: {k: 2}}\n", 3, "optoins", "options"),
    ("steps:\n  - name: a\n    select: random\n    input: data.jsonl\n    model_optoins: {timeout: 3}\n", 5,
     "model_optoins", "model_options"),
    ("model_option: {timeout: 3}\nsteps:\n  - {select: random, input: data.jsonl}\n", 1, "model_option",
     "model_options"),
    ("modle: gpt-4o\nsteps:\n  - {select: random, input: data.jsonl}\n", 1, "modle", "model"),
    ("steps:\n  - {select: random, input: data.jsonl, options: {kk: 2}}\n", 2, "options", "k"),
    ("model_options:\n  timout: 3\nsteps:\n  - {select: random, input: data.jsonl}\n", 2, "timout", "timeout"),
])
def test_misspelt_pipeline_keys_are_refused_with_file_line_key_and_nearest_name(tmp_path, text, line, key, near):
    path = pipeline_file(tmp_path, text)
    run = cli("run", str(path), "--out", str(tmp_path / "out"))
    no_traceback(run)
    assert run.returncode == 2, run.stderr
    assert f"{path}:{line}:" in run.stderr and key in run.stderr and near in run.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("steps, why", [
    ("  - {name: a, select: random, input: nosuchstep}\n", "neither an earlier step"),
    ("  - {name: a, select: random, input: b}\n  - {name: b, select: random, input: data.jsonl}\n", "later step"),
    ("  - {name: a, select: random, input: a}\n", "this step itself"),
    ("  - {name: a, select: random, input: missing.jsonl}\n", "neither an earlier step"),
])
def test_step_input_must_be_an_earlier_step_or_an_existing_file(tmp_path, steps, why):
    path = pipeline_file(tmp_path, "steps:\n" + steps)
    run = cli("run", str(path), "--out", str(tmp_path / "out"))
    no_traceback(run)
    assert run.returncode == 2 and why in run.stderr and f"{path}:" in run.stderr


def test_duplicate_step_names_are_refused(tmp_path):
    path = pipeline_file(tmp_path, "steps:\n  - {name: a, select: random, input: data.jsonl}\n"
                                   "  - {name: a, select: random}\n")
    run = cli("run", str(path), "--out", str(tmp_path / "out"))
    no_traceback(run)
    assert run.returncode == 2 and f"{path}:3:" in run.stderr and "unique" in run.stderr


def test_a_step_with_zero_input_rows_is_an_error_unless_allowed(tmp_path):
    body = ("steps:\n  - {name: none, select: threshold, input: data.jsonl, options: {score: s, threshold: 5}}\n"
            "  - {name: after, select: random, options: {k: 1}%s}\n")
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"instruction": "x", "s": i}) + "\n" for i in range(3)))
    path = tmp_path / "p.yaml"
    path.write_text(body % "")
    run = cli("run", str(path), "--out", str(tmp_path / "out"))
    no_traceback(run)
    assert run.returncode == 2 and "0 input rows" in run.stderr and "allow_empty" in run.stderr
    path.write_text(body % ", allow_empty: true")
    assert cli("run", str(path), "--out", str(tmp_path / "out")).returncode == 0


# ----- leaks -------------------------------------------------------------------------------------

KEY = "sk-secret-2f9c7e"


def as_text(name: str, data: bytes) -> str:
    """A written file's content as text (a Parquet file's rows and schema, which compression would hide)."""
    if name.endswith(".parquet"):
        import io

        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        return json.dumps(table.to_pylist(), default=str) + str(table.schema)
    return data.decode("utf-8", "replace")


def written_text(folder: Path) -> str:
    return "".join(as_text(p.name, p.read_bytes()) for p in folder.rglob("*") if p.is_file() and "cache" not in p.parts)


def test_a_key_inside_a_url_goes_to_the_header_and_into_no_file(fake_server, tmp_path):
    src = rows(tmp_path / "s.jsonl", n=4)
    base = fake_server.url.replace("http://", f"http://user:{KEY}@")
    (tmp_path / "a").mkdir()
    run = cli("judge", "alpagasus", str(src), "--out", str(tmp_path / "a" / "o.jsonl"), "-m", MODEL,
              "--api-base", base, "--quiet", "--cache-dir", str(tmp_path / "cache"))
    assert run.returncode == 0, run.stderr
    (tmp_path / "b").mkdir()
    run = cli("judge", "alpagasus", str(src), "--out", str(tmp_path / "b" / "o.jsonl"), "-m", f"{MODEL}@{base}",
              "-o", "max_tokens", "9", "--quiet", "--cache-dir", str(tmp_path / "cache"))
    assert run.returncode == 0, run.stderr
    assert KEY not in run.stderr and KEY not in written_text(tmp_path / "a") + written_text(tmp_path / "b")
    assert json.loads((tmp_path / "a" / "o.jsonl.manifest.json").read_text())["model_config"]["api_base"]
    sent = fake_server.requests()
    assert len(sent) == 8 and all(r["headers"].get("authorization") == f"Bearer {KEY}" for r in sent)


def test_a_jury_members_url_key_stays_out_of_columns_card_and_export(fake_server, tmp_path, fake_hub):
    base = fake_server.url.replace("http://", f"http://:{KEY}@")
    rows(tmp_path / "data.jsonl", n=4)
    path = tmp_path / "p.yaml"
    path.write_text(f"model: {MODEL}@{fake_server.url}\nsteps:\n"
                    "  - {name: rated, judge: jury, input: data.jsonl, options: "
                    f"{{models: ['{MODEL}@{base}', '{MODEL}@{fake_server.url}'], judge: alpagasus}}}}\n"
                    "  - {name: picked, select: random, options: {k: 2}}\n"
                    "  - {name: sft, export: hf}\n")
    run = cli("run", str(path), "--out", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert KEY not in run.stderr and KEY not in written_text(tmp_path / "out")
    assert "jury_scores" in (tmp_path / "out" / "selected.jsonl").read_text()
    offline = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in offline}
    env.update(HF_ENDPOINT=fake_hub.url, HF_TOKEN="hf_test_token_not_real", HF_HUB_DISABLE_TELEMETRY="1")
    pushed = subprocess.run([sys.executable, "-m", "instructkit.cli", "export", str(tmp_path / "out" / "selected.jsonl"),
                             "--out", str(tmp_path / "x"), "--format", "hf", "--push-to-hub", "me/set"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    uploaded = "".join(as_text(name, data) for c in fake_hub.commits for name, data in c["files"].items())
    assert "jury_scores" in uploaded and KEY not in uploaded and KEY not in written_text(tmp_path / "x")
    assert any(r["headers"].get("authorization") == f"Bearer {KEY}" for r in fake_server.requests())


def test_a_providers_environment_key_never_goes_to_another_server(fake_server, tmp_path):
    src = rows(tmp_path / "s.jsonl", n=2)
    run = judge(fake_server, src, tmp_path / "o.jsonl", env={"OPENAI_API_KEY": KEY, "INSTRUCTKIT_API_KEY": ""})
    assert run.returncode == 0, run.stderr
    assert all("authorization" not in r["headers"] for r in fake_server.requests())
    fake_server.reset()
    run = judge(fake_server, src, tmp_path / "o2.jsonl", "--key", "given", "--no-cache", env={"OPENAI_API_KEY": KEY})
    assert run.returncode == 0 and all(r["headers"]["authorization"] == "Bearer given" for r in fake_server.requests())


# ----- code execution ----------------------------------------------------------------------------

ATTACK = "{{ cycler.__init__.__globals__.os.popen('touch %s').read() }}"


def test_a_template_option_cannot_run_code(fake_server, tmp_path):
    marker = tmp_path / "pwned"
    template = tmp_path / "t.jinja"
    template.write_text("Rate it. " + ATTACK % marker)
    src = rows(tmp_path / "s.jsonl", n=2)
    run = judge(fake_server, src, tmp_path / "o.jsonl", "-o", "system_template", str(template))
    no_traceback(run)
    assert not marker.exists()
    assert run.returncode == 2 and "sandbox" in run.stderr and fake_server.count() == 0


def test_a_pipeline_text_template_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    rows(tmp_path / "data.jsonl", n=4)
    path = tmp_path / "p.yaml"
    path.write_text("steps:\n  - name: picked\n    select: kcenter\n    input: data.jsonl\n    options:\n"
                    "      k: 2\n      text_template: \"" + (ATTACK % marker).replace('"', '\\"') + "\"\n")
    run = cli("run", str(path), "--out", str(tmp_path / "out"))
    no_traceback(run)
    assert not marker.exists()
    assert run.returncode == 2 and "text_template" in run.stderr


def _sample_values(template_source: str, env) -> list[dict]:
    """Variable sets for a template: every undeclared name a `Sample`, once per literal it is compared with."""
    from jinja2 import meta, nodes

    tree = env.parse(template_source)
    names = meta.find_undeclared_variables(tree)
    literals: dict[str, set] = {}
    for cmp in tree.find_all(nodes.Compare):
        if isinstance(cmp.expr, nodes.Name):
            for op in cmp.ops:
                if isinstance(op.expr, nodes.Const):
                    literals.setdefault(cmp.expr.name, set()).add(op.expr.value)
    base = {n: Sample(n) for n in names}
    sets = [base, {n: "" for n in names}]
    for name, values in literals.items():
        sets += [{**base, name: v} for v in sorted(values, key=str)]
    return sets


class Sample(str):
    """A value that is text, has any attribute, and iterates as two of itself (pairs unpack)."""

    def __getattr__(self, name: str) -> Sample:
        if name.startswith("_"):
            raise AttributeError(name)
        return Sample(f"{self}.{name}")

    def __iter__(self):
        return iter([Sample(f"{self}[0]"), Sample(f"{self}[1]")])


def test_every_packaged_template_renders_the_same_bytes_in_the_sandbox():
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    from instructkit.templates import _environment, _exact_environment, render, template_source

    env = _environment()
    assert isinstance(env, SandboxedEnvironment) and isinstance(_exact_environment(), SandboxedEnvironment)
    # The environment as it was before the sandbox: the same options, a plain Environment.
    plain = jinja2.Environment(loader=jinja2.PackageLoader("instructkit.prompts", "."), undefined=jinja2.StrictUndefined,
                               keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    exact = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
    names = sorted(n for n in env.list_templates() if n.endswith(".jinja"))
    assert len(names) >= 30
    rendered = 0
    for name in names:
        source = template_source(name)
        for variables in _sample_values(source, plain):
            try:
                want = plain.get_template(name).render(**variables).strip()
            except (jinja2.UndefinedError, TypeError, ValueError):
                continue
            assert render(name, **variables) == want, name
            assert env.from_string(source).render(**variables) == plain.from_string(source).render(**variables)
            assert (jinja2.sandbox.SandboxedEnvironment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
                    .from_string(source).render(**variables) == exact.from_string(source).render(**variables))
            rendered += 1
    assert rendered >= len(names)


# ----- tracebacks instead of one-line errors -----------------------------------------------------


@pytest.mark.parametrize("text, line, what", [
    ("steps:\n  - {name: a, select: random\n", 3, "not valid YAML"),
    ("- a\n- b\n", None, "expected a mapping"),
    ("steps: !!python/object:os.system {}\n", 1, "not valid YAML"),
    ("name: x\n", None, "no steps"),
    ("", None, "is empty"),
])
def test_bad_pipeline_files_are_one_line_errors(tmp_path, text, line, what):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    run = cli("run", str(path), "--out", str(tmp_path / "out"))
    no_traceback(run)
    assert run.returncode == 2 and what in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert (f"{path}:{line}:" if line else f"{path}:") in run.stderr


def test_dataset_folders_that_are_not_one_split_are_one_line_errors(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"instruction": "a", "output": "b"}])})
    dd.save_to_disk(str(tmp_path / "dd"))
    (tmp_path / "empty").mkdir()
    for folder, what in ((tmp_path / "dd", "DatasetDict"), (tmp_path / "empty", "empty folder")):
        run = cli("select", "random", str(folder), "-o", "k", "1", "--out", str(tmp_path / "o.jsonl"))
        no_traceback(run)
        assert run.returncode == 2 and what in run.stderr, run.stderr


@pytest.mark.parametrize("row, field", [
    ({"messages": ["hello", "world"]}, "messages"),
    ({"messages": [{"role": "user", "content": {"text": "hi"}}]}, "messages"),
    ({"instruction": 42, "output": "x"}, "instruction"),
    ({"instruction": ["a", "b"], "output": "x"}, "instruction"),
    ({"instruction": {"text": "a"}, "output": "x"}, "instruction"),
    ({"instruction": None, "output": "x"}, "instruction"),
    ({"instruction": "fine", "output": 7}, "output"),
])
def test_rows_of_the_wrong_type_are_refused_before_any_call(fake_server, tmp_path, row, field):
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"instruction": "ok", "output": "ok"}) + "\n" + json.dumps(row) + "\n")
    run = judge(fake_server, src, tmp_path / "o.jsonl")
    no_traceback(run)
    assert run.returncode == 2 and f"{src}:2:" in run.stderr and repr(field) in run.stderr
    assert fake_server.count() == 0


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_byte_that_is_not_utf8_names_the_file_and_line(tmp_path, suffix):
    src = tmp_path / f"s{suffix}"
    if suffix == ".jsonl":
        data = b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "b"}\n'
    elif suffix == ".json":
        data = b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "caf\xe9", "output": "b"}\n]\n'
    else:
        data = b"instruction,output\na,b\ncaf\xe9,b\n"
    src.write_bytes(data)
    run = cli("select", "random", str(src), "-o", "k", "1", "--out", str(tmp_path / "o.jsonl"))
    no_traceback(run)
    assert run.returncode == 2 and "0xe9" in run.stderr
    assert f"{src}:{2 if suffix == '.jsonl' else 3}:" in run.stderr


# ----- paid for nonsense -------------------------------------------------------------------------


def test_a_row_longer_than_the_model_takes_is_refused_before_any_call(fake_server, tmp_path):
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"instruction": "short", "output": "x"}) + "\n"
                   + json.dumps({"instruction": "x" * 600_000, "output": "y"}) + "\n")
    run = judge(fake_server, src, tmp_path / "o.jsonl")
    no_traceback(run)
    assert run.returncode == 2 and f"{src}:2:" in run.stderr and "--max-prompt-tokens" in run.stderr
    assert "150,001 tokens" in run.stderr and fake_server.count() == 0
    # The boundary: 600,004 characters of text are 150,001 estimated tokens.
    assert judge(fake_server, src, tmp_path / "o.jsonl", "--max-prompt-tokens", "150000").returncode == 2
    assert judge(fake_server, src, tmp_path / "o.jsonl", "--max-prompt-tokens", "150001").returncode == 0
    assert fake_server.count() == 2


def test_the_prompt_limit_defaults_to_the_models_context_length_where_known(fake_server, tmp_path):
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"instruction": "x" * 515_999, "output": "y"}) + "\n")  # 129,000 tokens
    out = tmp_path / "o.jsonl"
    known = cli("judge", "alpagasus", str(src), "--out", str(out), "-m", f"gpt-4o-mini@{fake_server.url}", "--quiet",
                "--cache-dir", str(tmp_path / "cache"))
    no_traceback(known)
    assert known.returncode == 2 and "over the 128,000 the model takes" in known.stderr and fake_server.count() == 0
    assert judge(fake_server, src, out).returncode == 0 and fake_server.count() == 1  # unknown: 131,072


def test_a_second_run_on_the_same_work_folder_stops_instead_of_paying_again(fake_server, tmp_path):
    from instructkit.guard import RunLock

    src = rows(tmp_path / "s.jsonl", n=4)
    out = tmp_path / "o.jsonl"
    with RunLock(tmp_path / "o.jsonl.work"):  # the first run, still going
        run = judge(fake_server, src, out)
    no_traceback(run)
    assert run.returncode == 2 and "another instructkit run" in run.stderr and f"pid {os.getpid()}" in run.stderr
    assert fake_server.count() == 0
    assert judge(fake_server, src, out).returncode == 0 and fake_server.count() == 4  # the lock went with it


def test_two_identical_commands_at_once_pay_once(fake_server, tmp_path):
    import time

    fake_server.configure(latency=1.0)  # the first run takes about 6 s
    src = rows(tmp_path / "s.jsonl", n=6)
    out = tmp_path / "o.jsonl"
    argv = [sys.executable, "-m", "instructkit.cli", "judge", "alpagasus", str(src), "--out", str(out), "-m",
            f"{MODEL}@{fake_server.url}", "--quiet", "--cache-dir", str(tmp_path / "cache"), "--concurrency", "1"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while fake_server.count() == 0:  # the first run is paying
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert fake_server.count() == 6  # every row paid once
    no_traceback(second)
    assert second.returncode == 2 and "another instructkit run" in second.stderr


def test_outputs_have_the_manifests_permissions(tmp_path):
    src = rows(tmp_path / "s.jsonl")
    out = tmp_path / "o.jsonl"
    old = os.umask(0o022)
    try:
        assert cli("select", "random", str(src), "-o", "k", "3", "--out", str(out)).returncode == 0
    finally:
        os.umask(old)
    mode = stat.S_IMODE(out.stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "o.jsonl.manifest.json").stat().st_mode) == 0o644


def test_the_card_counts_every_session_of_a_resumed_run(fake_server, tmp_path):
    from fakes import Fault

    src = rows(tmp_path / "s.jsonl", n=6)
    out = tmp_path / "o.jsonl"
    fake_server.configure(faults=[Fault("status", match="task 3", status=400)])  # one row fails for good
    first = judge(fake_server, src, out, "--max-retries", "0")
    assert first.returncode == 1
    fake_server.configure(faults=[])
    second = judge(fake_server, src, out)
    assert second.returncode == 0
    manifest = json.loads((tmp_path / "o.jsonl.manifest.json").read_text())
    assert manifest["calls"]["calls"] == 1 and manifest["calls_total"]["calls"] == 7  # 6 (one refused) + 1
    x = cli("export", str(out), "--out", str(tmp_path / "sft"))
    assert x.returncode == 0, x.stderr
    card = (tmp_path / "sft" / "README.md").read_text()
    total = manifest["calls_total"]["prompt_tokens"] + manifest["calls_total"]["completion_tokens"]
    last = manifest["calls"]["prompt_tokens"] + manifest["calls"]["completion_tokens"]
    assert total > last and f"Total: {total:,} tokens" in card
