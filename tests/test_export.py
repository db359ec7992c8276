"""`instructkit export`: each format read back by `datasets` (the library trainers load data with) and
checked against its schema, seeded splits, instructkit columns kept apart, the card's YAML equal to the
manifest (a real pipeline on the local model), and --push-to-hub against a loopback fake Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructkit.data.card import read_card
from instructkit.data.export import ExportOptions, export_records, make_options, parse_split, split_indices

datasets = pytest.importorskip("datasets")
ROOT = Path(__file__).resolve().parents[1]

ROWS = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "alpagasus_score": 4.0,
     "provenance": {"step": "gen", "method": "bonito", "model": "local:x", "doc_id": "d1", "passage_index": 0}},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a colour."},
                  {"role": "assistant", "content": "Blue."}], "alpagasus_score": 3.5},
    {"conversations": [{"from": "human", "value": "Capital of France?"}, {"from": "gpt", "value": "Paris."}],
     "alpagasus_parse": "ok"},
    {"instruction": "No answer here.", "input": "", "output": ""},
    {"instruction": "Spell cat backwards.", "output": "tac", "task_type": "qa"},
]  # fmt: skip


def _load(folder: Path, tmp_path: Path) -> dict[str, list[dict]]:
    ds = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf_cache"))
    return {name: ds[name].to_list() for name in ds}


def _check_messages(msgs: list[dict]) -> None:
    roles = [m["role"] for m in msgs]
    body = roles[1:] if roles[0] == "system" else roles
    assert body and len(body) % 2 == 0 and body == ["user", "assistant"] * (len(body) // 2), roles
    assert all(isinstance(m["content"], str) and m["content"] for m in msgs)


def _check_sharegpt(conv: list[dict]) -> None:
    sides = [m["from"] for m in conv]
    assert sides == ["human", "gpt"] * (len(sides) // 2) and len(sides) >= 2, sides
    assert all(isinstance(m["value"], str) and m["value"] for m in conv)


@pytest.mark.parametrize("fmt", ["alpaca", "messages", "sharegpt", "hf"])
def test_each_format_reads_back_with_datasets(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / fmt
    figures = export_records(ROWS, out, make_options({"format": fmt, "split": "train=0.75,test=0.25", "seed": 1}))
    assert figures["rows_in"] == 5 and figures["rows_out"] == 4 and figures["skipped_no_response"] == 1
    assert figures["splits"] == {"train": 3, "test": 1}
    data = _load(out, tmp_path)
    assert {k: len(v) for k, v in data.items()} == figures["splits"]
    rows = data["train"] + data["test"]
    metas = [json.loads(r["meta"]) for r in rows]
    assert sorted(json.dumps(m, sort_keys=True) for m in metas) == sorted(
        json.dumps({k: v for k, v in r.items() if k not in ("instruction", "input", "output", "messages", "conversations")},
                   sort_keys=True) for r in ROWS if r is not ROWS[3])  # fmt: skip
    by_score = {m.get("alpagasus_score"): r for m, r in zip(metas, rows)}
    if fmt == "alpaca":
        assert all(set(r) >= {"instruction", "input", "output", "meta"} for r in rows)
        assert by_score[4.0]["instruction"] == "Add the numbers." and by_score[4.0]["input"] == "2 and 3"
        chat = by_score[3.5]
        assert chat["instruction"] == "Name a colour." and chat["output"] == "Blue." and chat["system"] == "Be brief."
        assert chat["history"] == [["Hi", "Hello."]]
    elif fmt == "sharegpt":
        for r in rows:
            _check_sharegpt(r["conversations"])
        assert by_score[3.5]["system"] == "Be brief." and len(by_score[3.5]["conversations"]) == 4
    else:
        for r in rows:
            _check_messages(r["messages"])
        assert by_score[4.0]["messages"][0] == {"role": "user", "content": "Add the numbers.\n\n2 and 3"}
        assert [m["role"] for m in by_score[3.5]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    if fmt == "hf":
        assert (out / "data" / "train-00000-of-00001.parquet").is_file()
    card, _ = read_card(out / "README.md")
    assert card["size_categories"] == ["n<1K"] and "question-answering" in card["task_categories"]
    assert card["license"] == "unknown" and card["language"] == ["en"]


def test_splits_are_seeded_and_meta_can_go_to_side_files(tmp_path: Path) -> None:
    rows = [{"instruction": f"q{i}", "output": f"a{i}", "score_x": i} for i in range(50)]
    a = split_indices(50, parse_split("train=0.8,dev=0.1,test=0.1"), seed=3)
    assert a == split_indices(50, parse_split({"train": 8, "dev": 1, "test": 1}), seed=3)
    assert a != split_indices(50, parse_split("train=0.8,dev=0.1,test=0.1"), seed=4)
    assert [len(v) for v in a.values()] == [40, 5, 5] and sorted(sum(a.values(), [])) == list(range(50))
    assert all(v == sorted(v) for v in a.values())
    out = tmp_path / "side"
    export_records(rows, out, ExportOptions(format="alpaca", split=parse_split("train=0.8,test=0.2"), meta="side", seed=3))
    data = _load(out, tmp_path)
    assert "meta" not in data["train"][0] and len(data["train"]) == 40
    for split in ("train", "test"):
        side = {m["id"]: m for m in map(json.loads, (out / f"{split}.meta.jsonl").read_text().splitlines())}
        assert [r["id"] for r in data[split]] == sorted(side)
        assert all(side[r["id"]]["score_x"] == int(r["instruction"][1:]) for r in data[split])
    export_records(rows, out, ExportOptions(format="hf", split=parse_split("all=1")))  # again, other splits
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name[0] != ".") == [
        "README.md", "data/all-00000-of-00001.parquet", "dataset_info.json"]  # the last export's files only
    with pytest.raises(ValueError, match="format must be one of"):
        make_options({"format": "csv"})
    with pytest.raises(ValueError, match="ratio > 0"):
        parse_split("train=1,test=0")


def test_export_of_a_single_command_output_reads_its_manifest(tmp_path: Path) -> None:
    from instructkit.cli import main

    src = tmp_path / "scored.jsonl"
    src.write_text("\n".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}", "x_score": i, "license": "mit"})
                             for i in range(5)) + "\n")  # fmt: skip
    best = tmp_path / "best.jsonl"
    assert main(["select", "topk", str(src), "--out", str(best), "-o", "score", "x_score", "-o", "k", "2"]) == 0
    assert main(["export", str(best), "--format", "alpaca", "--out", str(tmp_path / "sft"), "--name", "tiny"]) == 0
    manifest = json.loads((tmp_path / "best.jsonl.manifest.json").read_text())
    meta, body = read_card(tmp_path / "sft" / "README.md")
    assert meta["license"] == "mit" and meta["pretty_name"] == "tiny"
    step = meta["instructkit"]["steps"][0]
    assert (step["kind"], step["method"], step["rows_in"], step["rows_out"]) == ("select", "topk", 5, 2)
    assert manifest["selection"]["options"]["k"] == 2 and '"k": 2' in body and "2 of 5 rows" in body
    assert main(["export", str(best), "--format", "alpaca", "--out", str(tmp_path / "x"), "--split", "train=0"]) == 2


def test_pipeline_export_card_equals_manifest(tmp_path: Path) -> None:
    from huggingface_hub import DatasetCard

    from instructkit.run.pipeline import Pipeline

    data = tmp_path / "in.jsonl"
    pairs = [("What is 3 + 4?", "7"), ("Name the largest planet.", "Jupiter"), ("Spell 'cat' backwards.", "tac"),
             ("Give a synonym of happy.", "Glad."), ("What colour is the sky on a clear day?", "Blue."),
             ("Translate 'bonjour' to English.", "Hello.")]  # fmt: skip
    records = [{"instruction": q, "input": "", "output": a, "human_score": float(i % 4), "license": "cc-by-4.0"}
               for i, (q, a) in enumerate(pairs)]  # fmt: skip
    data.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    path = tmp_path / "p.yaml"
    path.write_text(f"""
name: tiny-card
model: local
out: {tmp_path / "out"}
seed: 5
steps:
  - name: rated
    judge: alpagasus
    input: {data}
    options: {{max_tokens: 6}}
  - name: ifd
    score: ifd
    options: {{drop_gt1: false}}
  - name: best
    select: topk
    options: {{score: ifd, k: 3}}
  - name: sft
    export: sharegpt
    options: {{split: {{train: 2, test: 1}}}}
""")
    Pipeline.from_yaml(path).run(progress=False)
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    meta, body = read_card(out / "sft" / "README.md")
    card = DatasetCard.load(out / "sft" / "README.md")  # the Hub library reads the header too
    assert card.data.license == "cc-by-4.0" and card.data.pretty_name == "tiny-card"
    ik = meta["instructkit"]
    assert [s["step"] for s in ik["steps"]] == [s["step"] for s in manifest["steps"]] == ["rated", "ifd", "best", "sft"]
    for mine, theirs in zip(ik["steps"], manifest["steps"]):
        assert (mine["rows_in"], mine["rows_out"]) == (theirs["rows_in"], theirs["rows_out"])
        calls = theirs.get("calls") or {}
        assert mine["prompt_tokens"] == calls.get("prompt_tokens", 0)
        assert mine["completion_tokens"] == calls.get("completion_tokens", 0) and mine["cost"] == calls.get("cost", 0.0)
    assert ik["seed"] == manifest["seed"] == 5 and ik["pipeline"] == "tiny-card"
    assert ik["splits"] == manifest["steps"][-1]["export"]["splits"] == {"train": 2, "test": 1}
    assert manifest["steps"][0]["calls"]["prompt_tokens"] > 0
    # The body's step table holds the same figures.
    table = [line.split(" | ") for line in body.splitlines() if line.startswith("| rated ") or line.startswith("| best ")]
    rated = manifest["steps"][0]
    assert table[0][4:8] == [str(rated["rows_in"]), str(rated["rows_out"]), str(rated["calls"]["prompt_tokens"]),
                             str(rated["calls"]["completion_tokens"])]  # fmt: skip
    # Parse failures, agreement, templates and the selection report are the manifest's.
    parse = rated["parse"]["alpagasus_parse"]
    assert parse["rows"] == 6 and f"| rated | alpagasus_parse | 6 | {parse['failed']} |" in body
    assert "alpagasus.jinja" in rated["templates"] and rated["templates"]["alpagasus.jinja"] in body
    agreement = {(a["a"], a["b"]): a for a in manifest["steps"][1]["agreement"]}
    ifd_human = agreement[("ifd", "human_score")]  # the earlier score on the same rows
    assert ifd_human["rows"] == 6 and -1 <= ifd_human["spearman"] <= 1
    assert f"| ifd | ifd | human_score | 6 | {ifd_human['spearman']:.4g} | {ifd_human['kendall']:.4g} |" in body
    report = manifest["steps"][2]["selection"]["report"]
    assert report["selection"]["n"] == report["random"]["n"] == 3 and "beside a random subset" in body
    assert f"{report['selection']['vendi']:.4g}" in body
    assert "`local:" in body or '"family": "local"' in body


def test_push_to_hub_uploads_the_folder_to_a_loopback_hub(fake_hub, tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    hub = fake_hub
    src = tmp_path / "selected.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    out = tmp_path / "export"
    offline = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")  # loading the local model sets the first two
    env = {k: v for k, v in os.environ.items() if k not in offline}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_test_token_not_real", HF_HUB_DISABLE_TELEMETRY="1")
    proc = subprocess.run([sys.executable, "-m", "instructkit.cli", "export", str(src), "--format", "messages",
                           "--out", str(out), "--push-to-hub", "me/tiny-sft"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Unclosed" not in proc.stderr  # HTTP sessions closed on every exit path
    assert "pushed:" in proc.stderr and "me/tiny-sft" in proc.stderr
    assert len(hub.repos) == 1 and hub.repos[0]["name"] == "tiny-sft" and hub.repos[0]["organization"] == "me"
    assert hub.repos[0]["type"] == "dataset"
    assert len(hub.commits) == 1 and hub.commits[0]["repo"] == "me/tiny-sft"
    uploaded = hub.commits[0]["files"]
    local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name[0] != "."}
    assert uploaded == local and set(local) == {"README.md", "train.jsonl", "dataset_info.json"}
    assert hub.validated == [local["README.md"].decode()]
    assert all(b"hf_test_token_not_real" not in v for v in uploaded.values())

    env["HF_HUB_OFFLINE"] = "1"  # offline: one clear line, no traceback, nothing sent
    proc = subprocess.run([sys.executable, "-m", "instructkit.cli", "export", str(src), "--out", str(out),
                           "--push-to-hub", "me/tiny-sft"], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(hub.commits) == 1
    assert "Unclosed" not in proc.stderr
    assert "error: push to me/tiny-sft" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr


def test_a_bad_export_step_fails_when_the_pipeline_is_read(tmp_path: Path) -> None:
    from instructkit.run.pipeline import Pipeline

    path = tmp_path / "p.yaml"
    (tmp_path / "in.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    path.write_text("steps:\n  - {name: rated, judge: alpagasus, input: in.jsonl}\n"
                    "  - {name: sft, export: alpaca, options: {meta: elsewhere}}\n")  # fmt: skip
    with pytest.raises(ValueError, match=r"p.yaml:3: field 'options': step 2: export: meta must be one of field, side, none"):
        Pipeline.from_yaml(path)


def test_agreement_imports_scipy_only_when_there_is_a_pair() -> None:
    # scipy.stats takes seconds to import: a single judge step (no earlier score) must not pay for it.
    code = (
        "import sys\n"
        "from instructkit.data.card import agreement_figures\n"
        "rows = [{'instruction': str(i)} for i in range(5)]\n"
        "assert agreement_figures(rows, [{**r, 'alpagasus_score': i} for i, r in enumerate(rows)]) == []\n"
        "assert 'scipy.stats' not in sys.modules\n"
        "out = agreement_figures([{**r, 'a_score': i} for i, r in enumerate(rows)],\n"
        "                        [{**r, 'a_score': i, 'b_score': -i} for i, r in enumerate(rows)])\n"
        "assert out[0]['spearman'] == -1.0 and 'scipy.stats' in sys.modules, out\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
