"""Multi-turn rows in judges and scorers: turn views, `-o turns last|all`, results folded back into the
chat rows, and the acceptance check that per-turn IFD of a two-turn chat equals IFD of the two
single-turn rows its turns read as (real local model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from instructkit import registry
from instructkit.cli import main
from instructkit.data.io import Records, read_records
from instructkit.data.turns import TurnOptions, split_turn_options, turn_views, views_of
from instructkit.run.steps import execute
from instructkit.shared.rows import triplet

Q1, A1 = "Name a primary color.", "Red is a primary color."
Q2, A2 = "Name another one.", "Blue is another primary color."
CHAT = {"id": "c1", "messages": [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1},
                                 {"role": "user", "content": Q2}, {"role": "assistant", "content": A2}]}
SHAREGPT = {"id": "c1", "conversations": [{"from": "human", "value": Q1}, {"from": "gpt", "value": A1},
                                          {"from": "human", "value": Q2}, {"from": "gpt", "value": A2}]}
SECOND = f"User: {Q1}\n\nAssistant: {A1}\n\nUser: {Q2}"  # turn 2 with turn 1 as its context


def test_views_of_a_chat() -> None:
    views = turn_views(CHAT)
    assert views == [{"instruction": Q1, "input": "", "output": A1}, {"instruction": SECOND, "input": "", "output": A2}]
    assert turn_views(SHAREGPT) == views
    assert [v["instruction"] for v in turn_views(CHAT, "none")] == [Q1, Q2]
    system = {"messages": [{"role": "system", "content": "Be brief."}, *CHAT["messages"][:2]]}
    assert turn_views(system)[0]["instruction"] == f"System: Be brief.\n\nUser: {Q1}"
    unanswered = {"messages": [*CHAT["messages"][:2], {"role": "user", "content": "And?"}]}
    assert turn_views(unanswered) == views[:1]  # a trailing question with no reply is not a turn
    assert triplet(CHAT) == (SECOND, "", A2)  # called directly, a judge reads the last turn
    alpaca = {"instruction": "Do it.", "input": "now", "output": "Done."}
    assert triplet(alpaca) == ("Do it.", "now", "Done.") and turn_views(alpaca) == [
        {"instruction": "Do it.", "input": "now", "output": "Done."}]


def test_turn_options_are_split_and_checked() -> None:
    turns, rest = split_turn_options({"turns": "all", "threshold": "4"})
    assert turns == TurnOptions("all", "history") and rest == {"threshold": "4"}
    with pytest.raises(ValueError, match="turns must be one of last, all"):
        split_turn_options({"turns": "first"})
    assert registry.get("judge", "alpagasus").takes_turn_options
    assert not registry.get("judge", "deita").takes_turn_options  # it scores every turn itself
    assert not registry.get("select", "random").takes_turn_options


def count_words(rows: list[dict]) -> list[dict]:
    """A method in miniature: a column per row, rows whose answer says 'drop' dropped, order reversed."""
    return [{**r, "words": len(r["output"].split()), "kind": "x"} for r in reversed(rows) if "drop" not in r["output"]]


def run_per_turn(method, records: list[dict], opts: TurnOptions | None = None) -> list[dict]:
    """What `run.steps.execute` does around a judge: the method on the turn views, its output folded back."""
    views = views_of(records, opts)
    return method(records) if views is None else views.fold(method(views.rows))


def test_results_fold_back_into_the_chat_rows() -> None:
    alpaca = {"instruction": "Hi", "output": "Hello there"}
    dropped = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "fine"},
                            {"role": "user", "content": "b"}, {"role": "assistant", "content": "drop"}]}
    records = Records([CHAT, alpaca, dropped], "chats.jsonl", [3, 5, 9])
    seen: list[Records] = []

    def method(rows: list[dict]) -> list[dict]:
        seen.append(rows)
        return count_words(rows)

    out = run_per_turn(method, records, TurnOptions("all"))
    assert seen[0].lines == [3, 3, 5, 9, 9]  # located errors still name the input's line
    assert all("messages" not in r for r in seen[0])  # the method sees views, never chat rows
    # The chat whose second turn was dropped is dropped; order is the method's.
    assert [r.get("id") for r in out] == [None, "c1"]
    chat = out[1]
    assert chat["messages"] == CHAT["messages"] and "instruction" not in chat
    assert chat["words"] == len(A2.split()) and chat["words_turns"] == [len(A1.split()), len(A2.split())]
    assert chat["kind_turns"] == ["x", "x"]
    assert out[0]["words"] == 2 and out[0]["words_turns"] == [2]
    last = run_per_turn(count_words, [CHAT], TurnOptions("last"))
    assert last == [{**CHAT, "words": len(A2.split()), "kind": "x"}]
    plain = [alpaca]
    assert run_per_turn(count_words, plain) == count_words(plain)  # no chat rows: run as they are
    assert run_per_turn(count_words, plain, TurnOptions("all"))[0]["words_turns"] == [2]  # same columns
    # Two copies of one chat are two rows; a view's marker (part of its journal key) does not depend on
    # where its row stands.
    twice = run_per_turn(count_words, [CHAT, CHAT], TurnOptions("all"))
    assert len(twice) == 2 and twice[0] == twice[1] and twice[0]["words_turns"] == [len(A1.split()), len(A2.split())]
    first_run = [r["_turn_view"] for r in seen[0]]  # CHAT's two turns came first there
    run_per_turn(method, [alpaca, CHAT], TurnOptions("all"))
    assert [r["_turn_view"] for r in seen[-1]][1:] == first_run[:2]


@pytest.fixture(scope="module")
def local_llm(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    from instructkit.models import LLM
    from instructkit.models.cache import ResponseCache

    # The transformers engine: fp32 greedy rewrites are the same on every CPU (llama.cpp's depend on the
    # SIMD kernels it was built with), so the generator tests below see the same rewrite everywhere.
    return LLM("local", engine="transformers", cache=ResponseCache(tmp_path_factory.mktemp("turns_cache")))


def ifd_of(records: list[dict], llm, work_dir: Path, turns: TurnOptions | None = None) -> list[dict]:
    from instructkit.scorers.ifd import IFDOptions

    from instructkit.run.runner import RunContext

    ctx = RunContext(llm=llm, options=IFDOptions(drop_gt1=False), method="ifd", work_dir=work_dir,
                     progress=False, turns=turns)
    return execute(registry.get("score", "ifd"), records, ctx)


def test_per_turn_ifd_of_a_two_turn_chat_equals_two_single_turn_rows(local_llm, tmp_path: Path) -> None:
    (chat,) = ifd_of([CHAT], local_llm, tmp_path / "chat", TurnOptions("all"))
    singles = ifd_of([{"instruction": Q1, "input": "", "output": A1},
                      {"instruction": SECOND, "input": "", "output": A2}], local_llm, tmp_path / "singles")
    # Separate work dirs: nothing is reused from a journal, both are computed. Each IFD is a ratio of
    # two mean fp32 answer losses; span scoring holds each loss to a full forward pass within 1e-5
    # relative (tests/test_span_scoring.py), so a ratio may move by the sum of the two: 2e-5.
    assert chat["ifd_status_turns"] == [s["ifd_status"] for s in singles] == ["ok", "ok"]
    for turn, single in zip(chat["ifd_turns"], singles):
        assert math.isclose(turn, single["ifd"], rel_tol=2e-5)
    for col in ("ifd_loss_cond", "ifd_loss_direct"):
        for turn, single in zip(chat[f"{col}_turns"], singles):
            assert math.isclose(turn, single[col], rel_tol=1e-5)
    assert chat["ifd"] == chat["ifd_turns"][-1] and chat["messages"] == CHAT["messages"]
    assert chat["ifd_turns"][0] != pytest.approx(chat["ifd_turns"][1], rel=1e-3)  # two different turns


def test_score_command_takes_the_turn_options(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(SHAREGPT) + "\n")
    out = tmp_path / "scored.jsonl"
    args = ["score", "perplexity", str(path), "--out", str(out), "-o", "turns", "all", "--quiet",
            "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    (row,) = read_records(out)
    assert row["conversations"] == SHAREGPT["conversations"] and len(row["ppl_response_turns"]) == 2
    assert main(["judge", "deita", str(path), "--out", str(out), "-o", "turns", "all"]) == 2  # not a deita option


HISTORY = [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}]


def answered_after_history(llm, text: str, gen) -> bool:
    """Whether the model was asked `text` after the chat's first turn (the cache holds that request),
    and never without it."""
    with_history = llm.cache.get(llm.chat_key([*HISTORY, {"role": "user", "content": text}], gen))
    alone = llm.cache.get(llm.chat_key([{"role": "user", "content": text}], gen))
    return with_history is not None and alone is None


def test_evol_instruct_rewrites_the_last_turn_of_a_chat(local_llm, tmp_path: Path) -> None:
    from instructkit.generators import evol_instruct as ev
    from instructkit.generators.common import call_seed

    from instructkit.models import GenParams
    from instructkit.run.runner import RunContext

    opts = ev.EvolInstructOptions(rounds=1, max_tokens=32, answer_max_tokens=16, equality_check=False)
    ctx = RunContext(llm=local_llm, options=opts, method="evol_instruct", work_dir=tmp_path, progress=False)
    out = ev.evol_instruct([SHAREGPT], ctx)
    original = out[0]
    assert original["round"] == 0 and original["messages"] == CHAT["messages"]  # ShareGPT in, messages out
    side = tmp_path / "evol_instruct.eliminated.jsonl"
    tried = [(r["operation"], r["messages"][2]["content"]) for r in out[1:]]
    tried += [(e["operation"], e["evolved"]) for e in map(json.loads, side.read_text().splitlines())]
    ((operation, evolved),) = tried
    # The last question (not the first, not the transcript) was evolved.
    gen = GenParams(temperature=opts.temperature, top_p=opts.top_p, max_tokens=opts.max_tokens,
                    seed=call_seed(ctx, "evolve", 1, "c1"))
    asked = [{"role": "user", "content": ev.evolution_prompt(Q2, operation)}]
    assert local_llm.cache.get(local_llm.chat_key(asked, gen)) is not None
    for rec in out[1:]:  # (the tiny model's evolutions usually copy the prompt's wording and are dropped)
        assert rec["messages"][:2] == HISTORY and rec["messages"][3]["role"] == "assistant"
        answer_gen = GenParams(temperature=opts.temperature, top_p=opts.top_p, max_tokens=opts.answer_max_tokens,
                               seed=call_seed(ctx, "answer", 1, "c1"))
        assert answered_after_history(local_llm, rec["messages"][2]["content"], answer_gen)


def test_tree_instruct_rewrites_the_last_turn_of_a_chat(local_llm, tmp_path: Path) -> None:
    from instructkit.generators import tree_instruct as ti
    from instructkit.generators.common import call_seed

    from instructkit.models import GenParams
    from instructkit.run.runner import RunContext
    from instructkit.templates import render

    # Greedy decoding: the same rewrite wherever it runs (the local model's greedy one passes the rules).
    opts = ti.TreeInstructOptions(max_tokens=48, response_max_tokens=16, temperature=0.0, response_temperature=0.0)
    ctx = RunContext(llm=local_llm, options=opts, method="tree_instruct", work_dir=tmp_path, progress=False)
    (rec,) = ti.tree_instruct([CHAT], ctx)
    assert rec["messages"][:2] == HISTORY and rec["old_instruction"] == Q2 and rec["old_output"] == A2
    question = rec["messages"][2]["content"]
    assert len(question.split()) > len(Q2.split())
    gen = GenParams(temperature=opts.response_temperature, max_tokens=opts.response_max_tokens,
                    seed=call_seed(ctx, "tree-answer", "c1"))
    wrapped = render(ti.TEMPLATES[1], instruction=question)
    assert answered_after_history(local_llm, wrapped, gen)
