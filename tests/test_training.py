"""The train/evaluate loop (instructkit/training.py): TRL's SFTTrainer on the embedded SmolLM2-135M and
on a tiny random LLaMA, the held-out answer loss against a plain forward pass, seeds, LoRA."""

from __future__ import annotations

import json
import math
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
