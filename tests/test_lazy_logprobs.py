"""Logprobs at the price of what is read: alternatives parsed lazily, and a request with
`logprobs_at="labels"` cached with alternatives only at score and verdict tokens. Every reader of
instructkit/shared/scores.py must get, from the kept entry, exactly what it got from the whole reply."""

from __future__ import annotations

import json
import random

import pytest

from instructkit.fastjson import loads
from instructkit.models import LLM
from instructkit.models.cache import ResponseCache
from instructkit.models.http_openai import loads_lazy_tops, parse_choices
from instructkit.models.logprobs import LazyTop, TopText, label_positions
from instructkit.models.types import Completion, GenParams, TokenLogprob
from instructkit.shared.scores import (
    expectation_from_logprobs,
    first_position,
    parse_score,
    score_at_end,
    score_completion,
    verdict_position,
    verdict_preference,
)

from fakes import chat_body

VOCAB = ["Score", ":", " ", "▁", "\n", " 4", "4", "▁3", "5", ".", "1", "10", "A", " B", "tie", "[[", "]]", "Ġ2",
         " good", " the", "answer", "0", " 7", "Verdict", '"', "\\", '\\"', "}]},", '}], "token": "', "{"]  # fmt: skip


def openai_body(rng: random.Random, top: int) -> dict:
    """One chat-completions body as OpenAI shapes it, with random tokens and alternatives."""
    tokens = [rng.choice(VOCAB) for _ in range(rng.randint(0, 12))]
    content = []
    for tok in tokens:
        alts = rng.sample(VOCAB, k=min(top, len(VOCAB)))
        content.append({"token": tok, "logprob": -rng.random(), "bytes": list(tok.encode()),
                        "top_logprobs": [{"token": a, "logprob": -3 * rng.random(), "bytes": list(a.encode())}
                                         for a in alts]})  # fmt: skip
    return {"choices": [{"index": 0, "message": {"content": "".join(tokens)}, "finish_reason": "stop",
                         "logprobs": {"content": content}}], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}


def eager(body: dict) -> Completion:
    """Today's parse (before lazy alternatives): every alternative of every token as a pair, at once."""
    choice = body["choices"][0]
    return Completion(choice["message"]["content"], logprobs=[
        TokenLogprob(t["token"], float(t["logprob"]), [(a["token"], float(a["logprob"])) for a in t["top_logprobs"]])
        for t in choice["logprobs"]["content"]])  # fmt: skip


def readings(comp: Completion) -> list:
    """What every reader in instructkit/shared/scores.py takes from a reply's logprobs."""
    lps = comp.logprobs
    out = []
    for lo, hi in ((0, 5), (1, 10), (1, 3)):
        first = score_completion(comp, lo, hi, mode="expected")
        end = score_at_end(comp, parse_score(comp.text, lo, hi, prefer="last"), lo, hi, mode="expected")
        out += [first["expected"], first["value"], end["expected"], end["value"]]
        exp = expectation_from_logprobs(lps, range(lo, hi + 1))
        out += [exp.value, exp.status, exp.argmax, exp.entropy, exp.mass, exp.probs]
    pos = first_position(lps)
    out += [pos, verdict_preference(lps), verdict_preference(lps, pos)]
    for last in (False, True):
        vpos = verdict_position(lps, last=last)
        out += [vpos, verdict_preference(lps, vpos) if vpos is not None else None]
    return out


@pytest.mark.parametrize("top", [0, 1, 5, 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_kept_entries_read_exactly_as_the_whole_reply(top: int, indent: int | None) -> None:
    """Bodies compact and indented (OpenAI's are), tokens with quotes, brackets and braces: the body
    read with its alternatives left as text (or whole, where the split does not check out), then kept
    for `labels`, reads exactly as today's whole parse at every reader."""
    rng = random.Random(top)
    split = 0
    for _ in range(400):
        body = openai_body(rng, top)
        whole = eager(body)
        raw = json.dumps(body, indent=indent).encode()
        data = loads_lazy_tops(raw)
        split += data is not None
        (lazy,) = parse_choices(data if data is not None else loads(raw))
        kept = Completion.from_json(loads(json.dumps(lazy.to_json("labels")).encode()))
        assert readings(lazy) == readings(whole)
        assert readings(kept) == readings(whole)
        # Only the positions a reader can use keep their alternatives; every token is kept.
        positions = label_positions([t.token for t in whole.logprobs])
        assert [t.token for t in kept.logprobs] == [t.token for t in whole.logprobs]
        assert [i for i, t in enumerate(kept.logprobs) if t.top is not None] == sorted(positions)
        assert [t.logprob for i, t in enumerate(kept.logprobs) if i in positions] == \
            [t.logprob for i, t in enumerate(whole.logprobs) if i in positions]
    assert split >= 300  # most bodies were read with their alternatives as text


def test_alternatives_are_read_only_where_a_reader_looks() -> None:
    body = chat_body({"messages": [{"role": "user", "content": "rate this"}], "logprobs": True, "top_logprobs": 20},
                     "m", style="score", words=40)  # fmt: skip
    data = loads_lazy_tops(json.dumps(body).encode())
    assert data is not None and all(isinstance(t["top_logprobs"], TopText) for t in data["choices"][0]["logprobs"]["content"])
    (comp,) = parse_choices(data)
    tops = [t.top for t in comp.logprobs]
    assert all(isinstance(t, LazyTop) and t._pairs is None for t in tops)
    score_completion(comp, 0, 5, mode="auto")
    assert [i for i, t in enumerate(tops) if t._pairs is not None] == [0]  # the score token alone


def test_keys_after_top_logprobs_fall_back_to_the_whole_body() -> None:
    """A server that puts a key after `top_logprobs` (not OpenAI's order): a cut that does not parse
    as a list is taken from the whole body instead, so every reading is still exact."""
    rng = random.Random(7)
    for _ in range(50):
        body = openai_body(rng, 5)
        for t in body["choices"][0]["logprobs"]["content"]:
            t["extra"] = [1, 2]  # after top_logprobs
        data = loads_lazy_tops(json.dumps(body).encode())
        (lazy,) = parse_choices(data if data is not None else body)
        assert readings(lazy) == readings(eager(body))
        assert [list(t.top) for t in lazy.logprobs] == [list(t.top) for t in eager(body).logprobs]


def test_cache_keys_stay_and_the_labels_entry_is_its_own(tmp_path) -> None:
    """The default request's key is what it always was; `logprobs_at="labels"` is a key of its own
    (an entry kept for it never answers a reader of every position); the body sent is the same."""
    from instructkit.models.http_openai import chat_payload

    base = GenParams(logprobs=True, top_logprobs=20)
    labels = base.replace(logprobs_at="labels")
    assert "logprobs_at" not in base.canonical() and labels.canonical()["logprobs_at"] == "labels"
    assert chat_payload("m", [], base, 1) == chat_payload("m", [], labels, 1)
    llm = LLM("m", api_base="http://127.0.0.1:9/v1", cache=ResponseCache(tmp_path / "c"))
    msgs = [{"role": "user", "content": "x"}]
    assert llm.chat_key(msgs, base) != llm.chat_key(msgs, labels)


def test_a_judge_run_from_its_cache_scores_as_the_first(fake_server, tmp_path) -> None:
    """alpagasus against a server that returns OpenAI's top-20 logprobs: the cached re-run gives the
    same expected scores as the answered run, from entries that keep the score token's alternatives."""
    from instructkit.registry import get
    from instructkit.run.runner import RunContext

    fake_server.configure(reply="score", reply_words=30)
    rows = [{"instruction": f"Say {i}.", "output": f"{i}."} for i in range(12)]
    info = get("judge", "alpagasus")
    cache = ResponseCache(tmp_path / "cache")

    def run(work: str) -> list[dict]:
        llm = LLM("fake-model", api_base=fake_server, cache=cache)
        ctx = RunContext(llm=llm, options=info.options(), method="alpagasus", work_dir=tmp_path / work,
                         progress=False)  # fmt: skip
        out = info.func(rows, ctx)
        llm.close()
        return out

    first = run("a")
    assert fake_server.count() == len(rows)
    again = run("b")
    assert fake_server.count() == len(rows)  # every row from the cache
    cols = ("alpagasus_score", "alpagasus_expected", "alpagasus_score_source")
    assert [[r[c] for c in cols] for r in again] == [[r[c] for c in cols] for r in first]
    assert all(r["alpagasus_expected"] is not None for r in first)
    stored = [v for k in cache.store.iterkeys() if (v := cache.get(k)) and v.get("logprobs")]
    assert stored and all([i for i, _, _ in v["logprobs"]["at"]] == [0] for v in stored)  # the score token alone
