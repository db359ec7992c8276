"""Structured output: JSON that validates against a schema, as a layer over the facade (as instructor
keeps its re-asking apart from providers). Constrained where the backend can (a grammar on llama.cpp
and transformers, `response_format` on servers), else, and as the fallback, parse, validate and ask
again with the error; each repair is its own cached chat request through `LLM.achat`."""

from __future__ import annotations

import json
from typing import Any, Protocol

from .types import Completion, GenParams


class Chat(Protocol):
    """What the layer needs of the facade (`LLM`)."""

    @property
    def supports_json_schema(self) -> bool: ...

    async def achat(self, messages: list[dict] | str, *, params: GenParams | None = None) -> Completion: ...


async def ajson(llm: Chat, msgs: list[dict], schema: dict | type, gen: GenParams, *, repairs: int = 2,
                constrained: bool | None = None) -> tuple[Any, Completion]:  # fmt: skip
    """JSON that validates against `schema`, a JSON Schema dict or a pydantic model class (then a
    validated instance is returned); `constrained=False` never asks the backend for a grammar. Raises
    ValueError carrying the last raw text when no attempt validates."""
    import jsonschema

    model_cls, json_schema = schema_of(schema)
    if constrained is not False and llm.supports_json_schema:
        gen = gen.replace(json_schema=json_schema)
    comp: Completion | None = None
    error = ""
    for _ in range(repairs + 1):
        comp = await llm.achat(msgs, params=gen)
        try:
            value = extract_json(comp.text)
            if model_cls is not None:
                return model_cls.model_validate(value), comp  # pydantic's ValidationError is a ValueError
            jsonschema.validate(value, json_schema)
            return value, comp
        except (ValueError, jsonschema.ValidationError) as exc:
            error = str(exc).splitlines()[0][:300]
            msgs = msgs + [
                {"role": "assistant", "content": comp.text},
                {
                    "role": "user",
                    "content": f"That reply is not valid JSON for the required schema ({error}). "
                    "Reply again with only the corrected JSON.",
                },
            ]
    raise ValueError(f"no valid JSON after {repairs + 1} attempts: {error}; raw: {comp.text if comp else ''!r}")


def schema_of(schema: dict | type) -> tuple[Any, dict]:
    """(pydantic model class or None, JSON Schema dict) for a schema given either way."""
    if isinstance(schema, dict):
        return None, schema
    if isinstance(schema, type) and hasattr(schema, "model_json_schema") and hasattr(schema, "model_validate"):
        return schema, schema.model_json_schema()
    raise TypeError(f"schema must be a JSON Schema dict or a pydantic model class, not {schema!r}")


def extract_json(text: str) -> Any:
    """The first JSON value in `text`, tolerating code fences and prose around it."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else stripped[3:]
        stripped = stripped.rsplit("```", 1)[0]
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "[{":
            try:
                return decoder.raw_decode(text[i:])[0]
            except ValueError:
                continue
    raise ValueError("no JSON value found in the reply")
