"""fastjson reads and writes every value as the standard library does (orjson only where it agrees)."""

from __future__ import annotations

import json
import math

import pytest

from instructkit import fastjson

VALUES = [
    {"text": "é ✓ \\n", "logprobs": [["tok", -0.25, [["a", -1.5], ["b", -2.0]]]], "usage": [3, 4], "cost": 0.0},
    {"score": None, "ok": True},  # None: orjson's null would be ambiguous, so the standard library writes it
    {"lp": float("-inf"), "x": float("nan"), "y": float("inf")},  # orjson would write null
    {"big": 2**70, "neg": -(2**64)},  # past 64 bits
    {1: "int key", "s": "x"},  # json.dumps turns the key into "1"
    {"surrogate": "\ud800"},
    [1.0, 1e16, 5e-324, 0.1 + 0.2],
]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("value", VALUES)
def test_values_come_back_as_the_standard_library_gives_them(value):
    expected = json.loads(json.dumps(value, ensure_ascii=False))
    assert same(fastjson.loads(fastjson.dumps(value)), expected)
    assert same(fastjson.loads(fastjson.dumps_text(value)), expected)
    assert same(json.loads(fastjson.dumps(value)), expected)  # readable by the standard library too
    assert same(fastjson.loads(json.dumps(value)), expected)  # and reads what it wrote


def test_invalid_json_raises_the_standard_error():
    with pytest.raises(json.JSONDecodeError) as info:
        fastjson.loads('{"a": 1,}')
    assert info.value.colno == 9


def test_small_ints_reads_replies_as_json_loads():
    body = json.dumps({"choices": [{"index": 0, "message": {"content": "4"}}], "usage": {"prompt_tokens": 12}})
    assert fastjson.loads(body.encode(), small_ints=True) == json.loads(body)
