"""Structured outputs: synthesised JSON validates against the requested schema, deterministically."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from treadle.sim import Simulator
from treadle.sim.schema_json import synthesize

Validate = Callable[[Any, dict[str, Any]], None]

SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 3, "maxLength": 5},
            "age": {"type": "integer", "minimum": 18, "maximum": 20},
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "active": {"type": "boolean"},
            "color": {"enum": ["red", "green"]},
            "kind": {"const": "fixed"},
            "nothing": {"type": "null"},
            "even": {"type": "integer", "multipleOf": 2, "minimum": 1, "maximum": 9},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "nested_arrays": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
            "grid": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            "unique": {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 3, "uniqueItems": True},
            "inner": {"type": "object", "properties": {"deep": {"type": ["string", "null"]}}},
        },
    },
    "pydantic_style_refs": {
        "$defs": {
            "Step": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "next": {"anyOf": [{"$ref": "#/$defs/Step"}, {"type": "null"}]},
                },
                "required": ["title", "next"],
            }
        },
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
            "when": {"type": "string", "format": "date-time"},
            "either": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            "both": {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"required": ["b"]}]},
        },
        "required": ["steps", "when", "either", "both"],
    },
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_synthesised_values_validate(name: str, validate_json: Validate) -> None:
    schema = SCHEMAS[name]
    for seed in range(25):  # many draws: bounds must hold for every one, not just the first
        validate_json(synthesize(schema, random.Random(seed)), schema)


def test_synthesis_is_deterministic_per_seed() -> None:
    schema = SCHEMAS["nested_arrays"]
    assert synthesize(schema, random.Random("a")) == synthesize(schema, random.Random("a"))


async def test_json_schema_request_gets_valid_json(session: aiohttp.ClientSession, validate_json: Validate) -> None:
    schema = SCHEMAS["pydantic_style_refs"]
    fmt = {"type": "json_schema", "json_schema": {"name": "plan", "strict": True, "schema": schema}}
    request = {"model": "m", "messages": [{"role": "user", "content": "plan"}], "response_format": fmt}
    async with Simulator() as url:
        async with session.post(f"{url}/chat/completions", json=request) as response:
            first = json.loads((await response.json())["choices"][0]["message"]["content"])
        async with session.post(f"{url}/chat/completions", json=request) as response:
            second = json.loads((await response.json())["choices"][0]["message"]["content"])
    validate_json(first, schema)
    assert first == second


async def test_json_object_request_gets_json(session: aiohttp.ClientSession) -> None:
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": "any json"}],
        "response_format": {"type": "json_object"},
    }
    async with Simulator() as url, session.post(f"{url}/chat/completions", json=request) as response:
        content = (await response.json())["choices"][0]["message"]["content"]
    assert isinstance(json.loads(content), dict)


async def test_forced_tool_call_gets_arguments_for_its_schema(
    session: aiohttp.ClientSession, validate_json: Validate
) -> None:
    params = SCHEMAS["flat"]
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": "call it"}],
        "tools": [{"type": "function", "function": {"name": "record", "parameters": params}}],
        "tool_choice": {"type": "function", "function": {"name": "record"}},
    }
    async with Simulator() as url, session.post(f"{url}/chat/completions", json=request) as response:
        choice = (await response.json())["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "record"
    validate_json(json.loads(call["function"]["arguments"]), params)
