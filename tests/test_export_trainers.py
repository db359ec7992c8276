"""Each export read by `datasets` and prepared by TRL's own SFTTrainer as it is (trl is a test dependency):
the roles TRL's chat template sees, what it trains on, and the LLaMA-Factory / axolotl configs written
beside it. (LLaMA-Factory 0.9.5's loader and axolotl 0.19's strategies were run on these folders by hand;
neither installs beside this project's transformers, see docs/DEVELOPING.md.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")
pytest.importorskip("trl")
yaml = pytest.importorskip("yaml")
from instructkit.data.card import read_card  # noqa: E402
from instructkit.data.export import export_records, make_options  # noqa: E402

from tiny_models import tiny_chat_llama  # noqa: E402

ROWS = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "score": 1},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a colour."},
                  {"role": "assistant", "content": "Blue."}], "score": 2},
    {"conversations": [{"from": "human", "value": "Capital of France?"}, {"from": "gpt", "value": "Paris."}]},
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_chat_llama(tmp_path_factory.mktemp("tiny") / "llama")


def _trl_prepared(folder: Path, tiny: Path, tmp_path: Path) -> list[tuple[str, str]]:
    """(whole text, trained text) of every row as TRL's SFTTrainer prepares `load_dataset(folder)`."""
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(str(tiny))
    train = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "hf"))
    cfg = SFTConfig(output_dir=str(tmp_path / "ck"), report_to=[], use_cpu=True, max_steps=1, save_strategy="no")
    trainer = SFTTrainer(model=str(tiny), args=cfg, train_dataset=train, processing_class=tok)
    out = []
    for r in trainer.train_dataset:
        trained = [t for t, label in zip(r["input_ids"], r["labels"]) if label != -100]
        out.append((tok.decode(r["input_ids"]), tok.decode(trained)))
    trainer.train()  # one step: the prepared rows train
    return out


@pytest.mark.parametrize("fmt,roles", [("messages", "sharegpt"), ("hf", "sharegpt"), ("alpaca", "sharegpt"),
                                       ("sharegpt", "openai"), ("sharegpt", "sharegpt")])  # fmt: skip
def test_trl_trains_each_export_as_the_card_says(fmt: str, roles: str, tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    figures = export_records(ROWS, out, make_options({"format": fmt, "roles": roles}))
    rows = _trl_prepared(out, tiny, tmp_path)
    assert len(rows) == figures["rows_out"] == 3
    texts = " ".join(text for text, _ in rows)
    _, body = read_card(out / "README.md")
    if fmt == "sharegpt" and roles == "sharegpt":  # what the card warns about, shown with TRL's own code
        assert "<|im_start|>human" in texts and "<|im_start|>gpt" in texts
        assert "do not train on this folder as it is" in body and "--roles openai" in body
        return
    assert "<|im_start|>human" not in texts and "<|im_start|>gpt" not in texts
    assert texts.count("<|im_start|>user") == 4 and "<|im_start|>system\nBe brief." in texts
    trained = [t for _, t in rows]
    if fmt == "alpaca":  # prompt/completion: the loss is on the last answer alone
        assert sorted(trained) == sorted(["5<|im_end|>\n", "Blue.<|im_end|>\n", "Paris.<|im_end|>\n"])
        assert "`prompt`/`completion`" in body
    else:  # whole conversations
        assert all(text == t for text, t in rows)
        assert "as it is" in body


@pytest.mark.parametrize("fmt,roles", [("alpaca", "sharegpt"), ("messages", "sharegpt"), ("sharegpt", "sharegpt"),
                                       ("sharegpt", "openai"), ("hf", "sharegpt")])  # fmt: skip
def test_llamafactory_and_axolotl_configs_name_the_files_and_fields(fmt: str, roles: str, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    figures = export_records(ROWS, out, make_options({"format": fmt, "roles": roles, "split": "train=0.67,test=0.33"}))
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"train", "test"}
    for split, entry in info.items():
        rows = datasets.load_dataset("parquet" if fmt == "hf" else "json", data_files=str(out / entry["file_name"]),
                                     split="train", cache_dir=str(tmp_path / "hf")).to_list()  # fmt: skip
        assert len(rows) == figures["splits"][split]
        columns = entry["columns"]
        assert all(theirs in rows[0] for theirs in columns.values())  # every mapped column exists
        if fmt == "alpaca":
            assert "formatting" not in entry and columns["prompt"] == "instruction"
            continue
        assert entry["formatting"] == "sharegpt"
        tags = entry["tags"]
        for r in rows:  # LLaMA-Factory's converter: user turns odd, assistant turns even, by these tags
            turns = [m[tags["role_tag"]] for m in r[columns["messages"]] if m[tags["role_tag"]] != tags["system_tag"]]
            assert turns == [tags["user_tag"], tags["assistant_tag"]] * (len(turns) // 2)
    _, body = read_card(out / "README.md")
    snippet = yaml.safe_load(re.search(r"```yaml\n(.*?)```", body, re.S).group(1))["datasets"][0]
    assert snippet["path"] == f"sft/{figures['files']['train']}"
    if fmt == "alpaca":
        assert snippet["type"] == "alpaca"
    else:
        assert snippet["type"] == "chat_template"
        field = "conversations" if fmt == "sharegpt" else "messages"
        assert snippet["field_messages"] == field
        assert snippet["message_property_mappings"] == (
            {"role": "from", "content": "value"} if fmt == "sharegpt" else {"role": "role", "content": "content"})
    assert "dataset: train" in body and "eval_dataset: test" in body
