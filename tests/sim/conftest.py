"""Shared fixtures for the simulator tests: an HTTP session, a fake clock and a JSON Schema checker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from sim_helpers import FakeClock

try:  # the real validator when present; the venv may not have it
    import jsonschema
except ImportError:  # pragma: no cover - depends on the environment
    jsonschema = None


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def validate_json() -> Callable[[Any, dict[str, Any]], None]:
    """Raises AssertionError when `value` does not match `schema`."""

    def validate(value: Any, schema: dict[str, Any]) -> None:
        if jsonschema is not None:
            jsonschema.validate(value, schema)
        else:
            _check(value, schema, schema, "$")

    return validate


# A small validator for the keywords the simulator claims to honour (used without jsonschema).
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _check(value: Any, schema: Any, root: dict[str, Any], at: str) -> None:
    if schema is True or schema == {}:
        return
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        _check(value, target, root, at)
    if "const" in schema:
        assert value == schema["const"], f"{at}: {value!r} != const {schema['const']!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{at}: {value!r} not in {schema['enum']!r}"
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert any(_TYPES[k](value) for k in kinds), f"{at}: {value!r} is not {kinds}"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            assert any(_passes(value, s, root, at) for s in schema[key]), f"{at}: no {key} branch fits"
    for sub in schema.get("allOf", []):
        _check(value, sub, root, at)
    if isinstance(value, dict):
        for name in schema.get("required", []):
            assert name in value, f"{at}: missing required {name!r}"
        props = schema.get("properties", {})
        for name, item in value.items():
            if name in props:
                _check(item, props[name], root, f"{at}.{name}")
            else:
                assert schema.get("additionalProperties", True) is not False, f"{at}: extra {name!r}"
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0), f"{at}: too few items"
        assert len(value) <= schema.get("maxItems", len(value)), f"{at}: too many items"
        if schema.get("uniqueItems"):
            assert len({repr(v) for v in value}) == len(value), f"{at}: items not unique"
        for i, item in enumerate(value):
            _check(item, schema.get("items", {}), root, f"{at}[{i}]")
    if isinstance(value, str):
        assert schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)), at
    if _TYPES["number"](value):
        assert value >= schema.get("minimum", value), f"{at}: {value} < minimum"
        assert value <= schema.get("maximum", value), f"{at}: {value} > maximum"
        assert value > schema.get("exclusiveMinimum", value - 1), f"{at}: {value} <= exclusiveMinimum"
        assert value < schema.get("exclusiveMaximum", value + 1), f"{at}: {value} >= exclusiveMaximum"
        if "multipleOf" in schema:
            assert value % schema["multipleOf"] == 0, f"{at}: {value} not a multiple"


def _passes(value: Any, schema: Any, root: dict[str, Any], at: str) -> bool:
    try:
        _check(value, schema, root, at)
    except AssertionError:
        return False
    return True
