"""The train/evaluate loop (instructkit/training.py): TRL's SFTTrainer on the embedded SmolLM2-135M and
on a tiny random LLaMA, the held-out answer loss against a plain forward pass, seeds, LoRA."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from instructkit.numerics import fp32_tolerance

pytest.importorskip("trl")
torch = pytest.importorskip("torch")
from instructkit.training import (  # noqa: E402
    SETTINGS_FILE,
    TrainOptions,
    answer_spans,
    chat_of,
    heldout_loss,
    make_train_options,
    train_sft,
    trl_rows,
)

from tiny_models import tiny_chat_llama  # noqa: E402

ROWS = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a colour."},
                  {"role": "assistant", "content": "Blue, like the sky on a clear summer day."}]},
    {"conversations": [{"from": "human", "value": "Capital of France?"}, {"from": "gpt", "value": "Paris."}]},
    {"instruction": "Spell cat backwards.", "output": "tac"},
    {"instruction": "No answer here.", "output": ""},
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_chat_llama(tmp_path_factory.mktemp("tiny") / "llama")


def test_rows_become_prompt_completion_chats() -> None:
    rows, skipped = trl_rows(ROWS)
    assert skipped == 1 and len(rows) == 4
    assert rows[0] == {"prompt": [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}],
                       "completion": [{"role": "assistant", "content": "5"}]}  # fmt: skip
    assert [m["role"] for m in rows[1]["prompt"]] == ["system", "user", "assistant", "user"]
    assert rows[2]["prompt"] == [{"role": "user", "content": "Capital of France?"}]  # human/gpt mapped
    assert chat_of(rows[1]) == ROWS[1]["messages"]  # prompt/completion rows read back as they are
    whole, _ = trl_rows(ROWS, loss="all")
    assert whole[1] == {"messages": ROWS[1]["messages"]}
    with pytest.raises(ValueError, match="unknown option"):
        make_train_options({"epoch": 1})
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainOptions(loss="prompt")
    assert make_train_options({"lora": "true", "max_steps": "2", "lr": "none"}).learning_rate == 2e-4


def test_heldout_loss_is_the_token_weighted_answer_nll_of_a_forward_pass(tiny: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [r for r in ROWS if chat_of(r)]
    got = heldout_loss(tiny, ROWS)
    assert got.rows == 4 and got.rows_without_answer == 1
    tok = AutoTokenizer.from_pretrained(str(tiny))
    model = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32).eval()
    nll, tokens, tol = 0.0, 0, 0.0
    for msgs in (chat_of(r) for r in rows):
        full = tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]
        prompt = tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        assert full[: len(prompt)] == prompt  # ChatML: the answer starts right after the generation prompt
        with torch.no_grad():
            logits = model(torch.tensor([full])).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        row = [-logp[t - 1, full[t]].item() for t in range(len(prompt), len(full))]
        assert tok.decode(full[len(prompt):]).startswith(msgs[-1]["content"])  # the answer, then end of turn
        nll, tokens = nll + sum(row), tokens + len(row)
        tol = max(tol, fp32_tolerance(model.config.hidden_size + model.config.vocab_size + len(full),
                                      float(logits.abs().max())))  # fmt: skip
    assert got.tokens == tokens and abs(got.nll_sum - nll) <= tol * tokens
    assert abs(got.loss - nll / tokens) <= tol
    assert got.loss == got.nll_sum / got.tokens  # per token: not a mean of row means (rows weighed alike)
    assert got.perplexity == pytest.approx(math.exp(got.loss))


def test_answer_spans_match_trl_tokenization(tiny: Path) -> None:
    """Our answer span is the completion mask TRL's SFTTrainer builds for the same row."""
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(str(tiny))
    rows, _ = trl_rows(ROWS)
    cfg = SFTConfig(output_dir=str(tiny.parent / "ck"), report_to=[], use_cpu=True, max_length=None)
    trainer = SFTTrainer(model=str(tiny), args=cfg, train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)
    prepared = {tuple(r["input_ids"]): r["labels"] for r in trainer.train_dataset}
    for p_ids, a_ids in answer_spans(tok, [chat_of(r) for r in rows]):
        labels = prepared[tuple(p_ids + a_ids)]
        assert labels == [-100] * len(p_ids) + a_ids


def test_train_sft_on_the_embedded_model_lowers_the_loss_of_a_repeated_batch(tmp_path: Path) -> None:
    result = train_sft(ROWS, "local", tmp_path / "run", epochs=10, max_steps=2, batch_size=4, lr=1e-4, seed=3)
    assert result.steps == 2 and result.rows == 4 and len(result.losses) == 2
    assert all(math.isfinite(x) for x in result.losses) and result.losses[1] < result.losses[0]
    saved = json.loads((result.model_path / SETTINGS_FILE).read_text())
    assert saved == json.loads(json.dumps(result.settings, default=str))
    assert saved["seed"] == 3 and saved["lr"] == 1e-4 and saved["max_steps"] == 2 and saved["versions"]["trl"]
    before, after = heldout_loss("local", ROWS), heldout_loss(result.model_path, ROWS)
    assert after.tokens == before.tokens and after.loss < before.loss


def test_seeded_runs_repeat_and_lora_is_merged_into_a_plain_folder(tiny: Path, tmp_path: Path) -> None:
    opts = dict(epochs=1, max_steps=2, batch_size=2, lr=5e-3, lora=True, lora_r=4, lora_dropout=0.1)
    a = train_sft(ROWS, f"hf:{tiny}", tmp_path / "a", seed=1, **opts)
    b = train_sft(ROWS, str(tiny), tmp_path / "b", seed=1, **opts)
    c = train_sft(ROWS, str(tiny), tmp_path / "c", seed=2, **opts)
    assert a.losses == b.losses and a.losses != c.losses
    assert not (a.model_path / "adapter_config.json").exists() and (a.model_path / "config.json").is_file()
    assert a.settings["lora"] is True and a.settings["lr"] == 5e-3
    assert heldout_loss(a.model_path, ROWS).loss != heldout_loss(tiny, ROWS).loss  # the adapter is in the weights
    with pytest.raises(ValueError, match="none of the 1 rows"):
        train_sft(ROWS[-1:], str(tiny), tmp_path / "d", max_steps=1)


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "instructkit.cli", *args], capture_output=True, text=True, timeout=600)


def test_train_and_evaluate_commands_on_a_tiny_llama(tiny: Path, tmp_path: Path) -> None:
    """The acceptance loop: 2 steps on a repeated batch, the loss finite and falling, every setting in the
    manifest; evaluate's held-out loss equals the function's; a judge's win rate against the base model."""
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    run = tmp_path / "run"
    proc = _cli(["train", str(data), "--base", str(tiny), "--out", str(run), "--max-steps", "2", "--batch-size", "4",
                 "--lr", "5e-3", "--seed", "7"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "train: 4 rows, 2 steps, loss" in proc.stderr
    manifest = json.loads((run / "train.manifest.json").read_text())
    losses = manifest["losses"]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses) and losses[1] < losses[0]
    settings = manifest["settings"]
    assert {k: settings[k] for k in ("seed", "lr", "max_steps", "batch_size", "lora", "loss")} == {
        "seed": 7, "lr": 5e-3, "max_steps": 2, "batch_size": 4, "lora": False, "loss": "answer"}
    assert set(TrainOptions.__dataclass_fields__) <= set(settings)  # every setting recorded
    report = tmp_path / "eval.json"
    proc = _cli(["evaluate", str(run / "model"), "--data", str(data), "--out", str(report),
                 "--baseline", str(tiny), "--judge", "local", "--max-tokens", "4", "--limit", "2"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(report.read_text())
    assert figures["heldout_loss"] == pytest.approx(heldout_loss(run / "model", data).loss, abs=1e-6)
    judge = figures["judge"]
    assert judge["pairs"] == 2 and judge["wins"] + judge["losses"] + judge["ties"] + judge["unjudged"] == 2
    assert "held-out loss" in proc.stderr and "win rate vs baseline" in proc.stderr
    bad = _cli(["train", str(data), "--base", str(tiny), "--out", str(run), "--loss", "prompt"])
    assert bad.returncode == 2 and "loss must be one of" in bad.stderr and "Traceback" not in bad.stderr


def test_pipeline_trains_on_its_export_folder_and_skips_an_unchanged_step(tiny: Path, tmp_path: Path) -> None:
    from instructkit.run.pipeline import Pipeline

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    path = tmp_path / "p.yaml"
    path.write_text(f"""
name: loop
out: {tmp_path / "out"}
seed: 4
steps:
  - {{name: sft, export: messages, input: {data}, options: {{split: "train=0.75,test=0.25"}}}}
  - {{name: model, train: {tiny}, input: sft, options: {{max_steps: 1, batch_size: 2, lr: 0.001}}}}
""")
    manifest = Pipeline.from_yaml(path).run()
    step = manifest["steps"][1]
    assert step["kind"] == "train" and step["steps"] == 1 and step["rows"] == 3  # the train split alone
    assert step["settings"]["seed"] == 4 and step["settings"]["lr"] == 0.001
    assert Path(step["model_path"]).is_dir()
    again = Pipeline.from_yaml(path).run()
    assert again["steps"][1].get("skipped") is True and again["steps"][1]["losses"] == step["losses"]
    path.write_text(path.read_text().replace("max_steps: 1", "max_step: 1"))
    with pytest.raises(ValueError, match="unknown option"):
        Pipeline.from_yaml(path)
