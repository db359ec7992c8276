"""IFD / Superfiltering on the real local model against a straightforward per-row reference in the test."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from instructkit.scorers.ifd import (  # noqa: E402
    IFDOptions,
    SuperfilteringOptions,
    finish_selection,
    get_template,
    prefix_token_count,
    score_ifd,
    select_by_ifd,
)

from instructkit.models import LLM  # noqa: E402
from instructkit.models.local import load_local_backend  # noqa: E402
from instructkit.run.runner import RunContext  # noqa: E402

ROWS = [
    {"instruction": "Name three primary colors.", "input": "", "output": "Red, blue and yellow."},
    {
        "instruction": "Translate the sentence to French.",
        "input": "The cat sleeps on the warm windowsill.",
        "output": "Le chat dort sur le rebord de fenêtre chaud.",
    },
    {
        "instruction": "Repeat the word: hello",
        "input": "",
        "output": "hello",
    },  # output also inside the prompt
    {
        "instruction": "Write a short paragraph about rivers.",
        "input": "",
        "output": "Rivers carry water from mountains to the sea. They shape valleys, feed farms and "
        "give homes to fish and birds. Many cities grew beside rivers because they offered water, "
        "food and an easy way to travel and trade goods over long distances.",
    },
    {"instruction": "Say nothing.", "input": "", "output": ""},  # empty answer: skipped
    {"instruction": "What is 2 + 2?", "input": "", "output": "\n4"},  # boundary starting with a newline
]

ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}\n\n### Response:"
)
ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)


@pytest.fixture(scope="module")
def backend():
    return load_local_backend("local", dtype="float32")


def _ctx(opts):
    return RunContext(llm=LLM("local"), options=opts, method="ifd", progress=False)


def _hf_part_loss(model, tok, text: str, target: str, max_length: int) -> tuple[float | None, int]:
    """The official `get_perplexity_and_embedding_part_text`: full logits, labels -100 before the span."""
    ids = tok.encode(text, return_tensors="pt", truncation=True, max_length=max_length)
    start = len(tok.encode(text[: text.rfind(target)]))
    n = ids.shape[1] - start
    if n <= 0:
        return None, 0
    labels = ids.clone()
    labels[0, :start] = -100
    with torch.no_grad():
        return float(model(ids, labels=labels).loss), n


def _reference_cherry(model, tok, rec: dict, max_length: int) -> tuple[str, float | None]:
    """Cherry v1 (alpaca): one row at a time, exactly as data_analysis.py + data_by_IFD.py."""
    tpl = ALPACA_INPUT if rec["input"] else ALPACA_NO_INPUT
    prompt = tpl.format(**rec)
    whole, direct = prompt + rec["output"], "### Response:" + rec["output"]
    instruct_len = len(tok.encode(prompt, truncation=True, max_length=max_length))
    if max_length - instruct_len <= 0:
        return "prompt_too_long", None
    k = len(tok.encode("### Response:"))
    l_dir, n_dir = _hf_part_loss(model, tok, direct, rec["output"], max_length - instruct_len + k)
    l_cond, n_cond = _hf_part_loss(model, tok, whole, rec["output"], max_length)
    if n_dir <= 0 or n_cond <= 0:
        return "empty_answer", None
    if instruct_len + n_dir > max_length:
        return "too_long", None
    ifd = l_cond / l_dir
    return ("gt1" if ifd > 1 else "ok"), ifd


@pytest.mark.parametrize("max_length", [512, 48])
def test_cherry_ifd_matches_per_row_reference(backend, max_length):
    opts = IFDOptions(max_length=max_length, batch_size=4)
    ours = score_ifd(ROWS, _ctx(opts), opts, backend)
    for rec, got in zip(ROWS, ours):
        status, ref = _reference_cherry(backend.model, backend.tokenizer, rec, max_length)
        assert got["ifd_status"] == status, (rec, got)
        if ref is None:
            assert got["ifd"] is None
        else:
            assert abs(got["ifd"] - ref) < 1e-5, (got["ifd"], ref)
    if max_length == 48:  # the long row is cut: the direct text must keep the same answer tokens
        assert {r["ifd_status"] for r in ours} >= {"ok", "empty_answer"}


def test_prefix_tokens_are_computed_for_the_tokenizer(backend):
    tok = backend.tokenizer
    assert prefix_token_count(tok, "### Response:") == len(tok.encode("### Response:")) == 3  # LLaMA: 4
    assert prefix_token_count(tok, "ASSISTANT:") == len(tok.encode("ASSISTANT:"))
    assert prefix_token_count(tok, "") == 1  # Superfiltering's +1 for the raw-output direct text


def test_templates_render_exactly():
    assert get_template("alpaca").prompt("Do X", "") == ALPACA_NO_INPUT.format(instruction="Do X")
    assert get_template("alpaca").prompt("Do X", "data") == ALPACA_INPUT.format(
        instruction="Do X", input="data"
    )
    assert get_template("wiz").prompt("Do X", "data") == "Do X\nInput:data\n\n### Response:"
    assert get_template("plain").prompt("Do X", "") == "Do X\n"
    assert get_template("plain").prompt("Do X", "data") == "Do X\ndata\n"
    vic = get_template("vicuna")
    assert (
        vic.prompt("Do X", "d").endswith("USER: Do X\nInput:\nd ASSISTANT:")
        and vic.direct_prefix == "ASSISTANT:"
    )


@pytest.mark.parametrize("which", ["local", "gpt2"])
def test_superfiltering_ppl_ratio_matches_reference(backend, tiny_gpt2, which):
    sf_backend = backend if which == "local" else tiny_gpt2
    opts = SuperfilteringOptions(batch_size=8)
    ours = score_ifd(ROWS, _ctx(opts), opts, sf_backend)
    model, tok = sf_backend.model, sf_backend.tokenizer
    for rec, got in zip(ROWS, ours):
        if rec["output"] == "":
            assert got["sf_status"] == "empty_answer" and got["sf"] is None
            continue
        prompt = rec["instruction"] + "\n" + (rec["input"] + "\n" if rec["input"] else "")
        instruct_len = len(tok.encode(prompt, truncation=True, max_length=1024))
        ids = tok.encode(
            rec["output"], return_tensors="pt", truncation=True, max_length=1024 - instruct_len + 1
        )
        if ids.shape[1] < 2:  # the official whole-text loss has nothing to score
            assert got["sf"] is None
            continue
        with torch.no_grad():
            l_dir = float(model(ids, labels=ids).loss)
        l_cond, _ = _hf_part_loss(model, tok, prompt + rec["output"], rec["output"], 1024)
        assert abs(got["sf_ppl_direct"] - math.exp(l_dir)) / math.exp(l_dir) < 1e-5
        assert abs(got["sf"] - math.exp(l_cond) / math.exp(l_dir)) < 1e-5


def test_selection_rules():
    values = [0.5, 1.2, None, 0.9, 0.7, 0.9]
    statuses = ["ok", "gt1", "empty_answer", "ok", "ok", "ok"]
    assert select_by_ifd(values, statuses, top_k=2) == [3, 5]  # ties broken by index, dataset order
    assert select_by_ifd(values, statuses, ratio=0.5) == [3, 5]  # int(4 * 0.5) of the candidates
    assert select_by_ifd(values, statuses, top_k=3, order="score") == [3, 5, 4]  # ties by index
    scored = [{"ifd": v, "ifd_status": s} for v, s in zip(values, statuses)]
    assert len(finish_selection(scored, IFDOptions())) == 5  # gt1 dropped by default
    assert len(finish_selection(scored, IFDOptions(drop_gt1=False))) == 6


def test_pre_experience_features_sample_and_warmup(backend, tmp_path):
    from instructkit.scorers.ifd import ifd, instruction_features

    rows = [
        {"instruction": f"Write the number {n} in words.", "input": "", "output": w}
        for n, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven"])
    ]
    texts = [get_template("alpaca").prompt(r["instruction"], "") for r in rows[:2]]
    emb, ppl = instruction_features(backend, texts)
    for text, e, p in zip(texts, emb, ppl):  # Cherry's --mod pre: mean last hidden, whole-text ppl
        ids = backend.tokenizer.encode(text, return_tensors="pt")
        with torch.no_grad():
            out = backend.model(ids, labels=ids, output_hidden_states=True)
        assert abs(p - math.exp(float(out.loss))) / p < 1e-5
        assert float((out.hidden_states[-1][0].mean(0) - torch.from_numpy(e)).abs().max()) < 1e-4
    # the warm-up runs on a tiny random Llama with the real tokenizer (the 135M model works the same, slower)
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(backend.tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    tiny = tmp_path / "tiny"
    LlamaForCausalLM(cfg).save_pretrained(str(tiny))
    backend.tokenizer.save_pretrained(str(tiny))
    opts = IFDOptions(
        pre_experience=True,
        pre_clusters=2,
        pre_per_cluster=2,
        warmup=True,
        warmup_batch_size=2,
        model=f"hf:{tiny}",
    )
    ctx = RunContext(llm=LLM("local"), options=opts, method="ifd", work_dir=tmp_path / "work", progress=False)
    out = ifd(rows, ctx)
    sample = ctx.extras["cherry_pre_sample"]
    assert 1 <= len(sample) <= 4 and len(set(sample)) == len(sample)
    saved = list((tmp_path / "work" / "cherry_pre_models").iterdir())
    assert len(saved) == 1 and (saved[0] / "config.json").is_file()
    assert all(r["ifd_status"] in ("ok", "empty_answer") for r in out) and any(r["ifd"] for r in out)


def test_selection_options_reuse_the_journal(backend, tmp_path):
    from instructkit.scorers.ifd import ifd

    rows = ROWS[:2]
    ctx = RunContext(
        llm=LLM("local"), options=IFDOptions(top_k=1), method="ifd", work_dir=tmp_path, progress=False
    )
    first = ifd(rows, ctx)
    assert len(first) == 1
    ctx2 = RunContext(
        llm=LLM("local"), options=IFDOptions(ratio=1.0), method="ifd", work_dir=tmp_path, progress=False
    )
    assert len(ifd(rows, ctx2)) == 2 and ctx2.stats.reused == 2
