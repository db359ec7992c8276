"""What each SFT trainer needs, beside an export, to load it as it is: LLaMA-Factory's `dataset_info.json`,
an axolotl `datasets:` snippet and a TRL note (both in the card).

Checked against the trainers' own loaders (tests/test_export_trainers.py): TRL's SFTTrainer reads
`messages` and conversational prompt/completion rows as they are, and renames ShareGPT's `from`/`value`
keys but not its role names (so `human`/`gpt` rows reach the chat template as roles of those names:
export with `roles=openai` for TRL); LLaMA-Factory reads a dataset only through a `dataset_info.json`
entry and refuses a folder holding any file that is not data (our README.md), so each entry names one
split's file; axolotl's `chat_template` type wants `field_messages` and `message_property_mappings`
(its `sharegpt` type is gone).
"""

from __future__ import annotations

from typing import Any

LLAMAFACTORY_FILE = "dataset_info.json"
ROLE_NAMES = ("sharegpt", "openai")  # ShareGPT `from` values: human/gpt, or user/assistant (OpenAI's)


def llamafactory_entry(fmt: str, file_name: str, roles: str, columns: list[str]) -> dict[str, Any]:
    """One `dataset_info.json` entry for a split's file (LLaMA-Factory's data/README.md layout)."""
    entry: dict[str, Any] = {"file_name": file_name}
    if fmt == "alpaca":
        entry["columns"] = {"prompt": "instruction", "query": "input", "response": "output",
                            **{c: c for c in ("system", "history") if c in columns}}  # fmt: skip
        return entry
    entry["formatting"] = "sharegpt"
    if fmt == "sharegpt":
        user, assistant = ("human", "gpt") if roles == "sharegpt" else ("user", "assistant")
        entry["columns"] = {"messages": "conversations", **({"system": "system"} if "system" in columns else {})}
        entry["tags"] = {"role_tag": "from", "content_tag": "value", "user_tag": user, "assistant_tag": assistant,
                         "system_tag": "system"}  # fmt: skip
    else:  # messages, hf
        entry["columns"] = {"messages": "messages"}
        entry["tags"] = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                         "assistant_tag": "assistant", "system_tag": "system"}  # fmt: skip
    return entry


def llamafactory_info(figures: dict[str, Any]) -> dict[str, Any]:
    """`dataset_info.json` for an export: one dataset per split, named after it (`dataset: train`,
    `eval_dataset: test` with `dataset_dir` set to the export folder)."""
    return {split: llamafactory_entry(figures["format"], path, figures.get("roles", "sharegpt"), figures["columns"])
            for split, path in figures["files"].items()}  # fmt: skip


def axolotl_snippet(figures: dict[str, Any], folder: str) -> str:
    """The `datasets:` block of an axolotl config that reads the export's train split (its default roles
    map human/gpt and user/assistant alike, and its `field_system` default reads our `system` column)."""
    fmt, path = figures["format"], figures["files"].get("train") or next(iter(figures["files"].values()))
    ds_type = "parquet" if fmt == "hf" else "json"
    lines = ["datasets:", f"  - path: {folder}/{path}", f"    ds_type: {ds_type}"]
    if fmt == "alpaca":
        lines.append("    type: alpaca")
    elif fmt == "sharegpt":
        lines += ["    type: chat_template", "    field_messages: conversations",
                  "    message_property_mappings:", "      role: from", "      content: value"]  # fmt: skip
    else:
        lines += ["    type: chat_template", "    field_messages: messages",
                  "    message_property_mappings:", "      role: role", "      content: content"]  # fmt: skip
    return "\n".join(lines)


def trl_note(figures: dict[str, Any]) -> str:
    """How TRL's SFTTrainer reads this export (or why it should not, as it is)."""
    fmt = figures["format"]
    load = "`SFTTrainer(..., train_dataset=load_dataset(FOLDER, split=\"train\"))`"
    if fmt == "alpaca":
        return (f"TRL: {load} trains on the `prompt`/`completion` columns (conversational prompt-completion rows: the "
                "chat template applies and the loss is on the answer); the Alpaca columns are for other trainers.")
    if fmt == "sharegpt" and figures.get("roles", "sharegpt") == "sharegpt":
        return ("TRL: do not train on this folder as it is. TRL renames `from`/`value` to `role`/`content` but keeps "
                "the role names, so the chat template would see `human` and `gpt` turns. Export with `--roles openai` "
                "(or as `messages`) for TRL.")
    what = "`conversations` (TRL renames `from`/`value` to `role`/`content`)" if fmt == "sharegpt" else "`messages`"
    return f"TRL: {load} trains on {what} as it is (whole conversations; `assistant_only_loss` where the template allows)."
