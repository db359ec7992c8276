"""One `ModelConfig`: a model option set in a pipeline's YAML and the same flag on the CLI give the
same model, because both become a `ModelConfig` and run through the one step runner."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from instructkit.cli import build_parser, main, model_config
from instructkit.models import LLM
from instructkit.models.config import ModelConfig, add_model_args
from instructkit.run.pipeline import Pipeline


def other_value(f: dataclasses.Field) -> object:
    """A value of the option other than its default (a choice where it has choices)."""
    choices = f.metadata.get("choices")
    if choices:
        return choices[-1] if choices[-1] != f.default else choices[0]
    if isinstance(f.default, bool):
        return not f.default
    if f.name in ("concurrency", "max_retries", "threads", "parallel", "n_ctx", "batch_size", "max_prompt_tokens"):
        return 3
    if f.name in ("rpm", "tpm", "retry_length", "timeout", "max_cost"):
        return 2.5
    return {"model": "m@http://127.0.0.1:9/v1", "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-test",
            "cache_dir": "/tmp/instructkit-cache", "device": "cpu"}[f.name]


def flag_argv(options: dict[str, object]) -> list[str]:
    argv: list[str] = []
    for f in dataclasses.fields(ModelConfig):
        if f.name in options:
            value = options[f.name]
            argv += [f.metadata["flag"]] if isinstance(value, bool) else [f.metadata["flag"], str(value)]
    return argv


def test_every_option_from_yaml_equals_the_same_flag(tmp_path: Path) -> None:
    options = {f.name: other_value(f) for f in dataclasses.fields(ModelConfig)}
    model = options.pop("model")
    args = build_parser().parse_args(["judge", "alpagasus", "rows.jsonl", "--out", "o.jsonl", "-m", str(model),
                                      *flag_argv(options)])
    from_flags = model_config(args)
    spec = tmp_path / "p.yaml"
    spec.write_text(yaml.safe_dump({"model": model, "model_options": options, "steps": [{"judge": "alpagasus"}]}))
    pipeline = Pipeline.from_yaml(spec)
    from_yaml = pipeline.model_config(pipeline.steps[0])
    assert from_flags == from_yaml
    # every option is set away from its default, so a flag that did not arrive would show here
    assert all(getattr(from_flags, f.name) != f.default for f in dataclasses.fields(ModelConfig))
    # the model built from it gives it back, without the key
    assert LLM(from_yaml).config == dataclasses.replace(from_yaml, api_key=None)


def test_flags_are_generated_once_per_option() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_model_args(parser)
    flags = {s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")}
    assert flags == {f.metadata["flag"] for f in dataclasses.fields(ModelConfig)} | {"-m"}


def test_pipeline_step_and_cli_call_run_the_same_model(fake_server: str, tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"Name colour {i}.", "output": "Red."}) + "\n" for i in range(3)))
    options = {"concurrency": 2, "rpm": 6000.0, "max_retries": 1, "retry_length": 2.0, "timeout": 30.0,
               "max_cost": 5.0, "cache_dir": str(tmp_path / "cache")}
    model = f"m@{fake_server}"
    out = tmp_path / "cli.jsonl"
    assert main(["judge", "alpagasus", str(rows), "--out", str(out), "-m", model, "--quiet",
                 *flag_argv(options)]) == 0
    cli_config = json.loads(out.with_name(out.name + ".manifest.json").read_text())["model_config"]

    spec = tmp_path / "p.yaml"
    spec.write_text(yaml.safe_dump({"model": model, "model_options": options, "out": str(tmp_path / "out"),
                                    "steps": [{"judge": "alpagasus", "input": str(rows)}]}))
    manifest = Pipeline.from_yaml(spec).run(progress=False)
    step = manifest["steps"][0]
    assert step["model_config"] == cli_config
    assert cli_config["concurrency"] == 2 and cli_config["max_cost"] == 5.0 and cli_config["retry_length"] == 2.0
    assert "api_key" not in cli_config
    # the same requests were answered: the pipeline's step reads them all from the CLI call's cache
    assert step["calls"]["cache_hits"] == 3 and step["calls"]["calls"] == 0
    assert [r["alpagasus_score"] for r in map(json.loads, out.read_text().splitlines())] == [
        r["alpagasus_score"] for r in map(json.loads, (tmp_path / "out" / "01_alpagasus.jsonl").read_text().splitlines())]


def test_a_misspelt_model_option_is_refused_before_any_call(fake_server: str, tmp_path: Path, capsys) -> None:
    spec = tmp_path / "p.yaml"
    (tmp_path / "rows.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    spec.write_text(yaml.safe_dump({"model": f"m@{fake_server}", "out": str(tmp_path / "out"), "steps": [
        {"judge": "alpagasus", "input": str(tmp_path / "rows.jsonl")},
        {"name": "second", "judge": "alpagasus", "model_options": {"concurency": 4}}]}))
    assert main(["run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "p.yaml:8: field 'concurency': step second: model_options: unknown model option 'concurency'; " \
        "did you mean 'concurrency'?" in err
    assert fake_server.count() == 0
