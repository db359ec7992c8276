"""Data IO: every format round-trips; bad input is located by file, line and field."""

from __future__ import annotations

import json

import pytest

from instructkit.data.io import InputError, read_records, require_fields, to_turns, write_records

RECORDS = [
    {"instruction": "Name a prime number.", "input": "", "output": "7"},
    {"instruction": "Translate 'cat' to French.", "input": "", "output": "chat"},
]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_round_trip(tmp_path, suffix):
    path = write_records(tmp_path / f"data{suffix}", RECORDS)
    assert read_records(path) == RECORDS


def test_hf_datasets_folder_round_trip(tmp_path):
    from datasets import Dataset

    from instructkit.data.io import from_dataset, to_dataset

    folder = write_records(tmp_path / "ds", RECORDS, fmt="hf")
    assert read_records(folder) == RECORDS
    ds = to_dataset(RECORDS)
    assert isinstance(ds, Dataset) and from_dataset(ds) == RECORDS


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + '{"instruction": "x", \n')
    with pytest.raises(InputError) as err:
        read_records(path)
    assert f"{path}:2" in str(err.value) and "malformed JSON" in str(err.value)


def test_missing_field_names_line_field_and_columns(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [RECORDS[0], {"prompt": "no instruction here", "output": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records = read_records(path)
    with pytest.raises(InputError) as err:
        require_fields(records, {"instruction": str, "output": str})
    message = str(err.value)
    assert f"{path}:2" in message and "'instruction'" in message and "['output', 'prompt']" in message


def test_wrong_type_and_empty_file(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"instruction": 5, "output": "x"}) + "\n")
    with pytest.raises(InputError, match="expected str, got int"):
        require_fields(read_records(path), {"instruction": str})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        read_records(empty)


def test_column_mapping(tmp_path):
    path = write_records(tmp_path / "d.jsonl", [{"q": "Why?", "a": "Because."}])
    rec = read_records(path, mapping={"instruction": "q", "output": "a"})[0]
    assert rec["instruction"] == "Why?" and rec["output"] == "Because."
    with pytest.raises(InputError, match="mapped column 'nope'"):
        read_records(path, mapping={"instruction": "nope"})


def test_conversation_formats():
    alpaca = {"instruction": "Sum", "input": "2 and 3", "output": "5"}
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    sharegpt = {
        "conversations": [
            {"from": "human", "value": "Q1"},
            {"from": "gpt", "value": "A1"},
            {"from": "human", "value": "Q2"},
            {"from": "gpt", "value": "A2"},
        ]
    }
    assert to_turns(alpaca) == [("Sum\n\n2 and 3", "5")]
    assert to_turns(chat) == [("Hi", "Hello")]
    assert to_turns(sharegpt) == [("Q1", "A1"), ("Q2", "A2")]
