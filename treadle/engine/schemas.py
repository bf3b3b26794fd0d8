"""JSON schemas for structured outputs: checking a schema, and checking a value against one."""

from __future__ import annotations

import difflib
import re
from typing import Any

import jsonschema

from treadle.engine.errors import describe_value

_JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_SUBSCHEMA = (
    "not",
    "additionalProperties",
    "additionalItems",
    "contains",
    "propertyNames",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_COUNTS = (
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minContains",
    "maxContains",
)
_NUMBERS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a valid JSON schema, or None.

    The common mistakes get a pointed message (an unknown type with a suggestion, a bad `required`);
    anything else is left to `jsonschema`'s meta-schema check.
    """
    problem = _check_schema(schema, "")
    if problem is not None:
        return f"invalid JSON schema at {problem[0] or '(top)'}: {problem[1]}"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = ".".join(str(p) for p in exc.absolute_path) or "(top)"
        return f"invalid JSON schema at {path}: {' '.join(exc.message.split())}"
    return None


def instance_problem(schema: Any, value: Any) -> str | None:
    """Why `value` does not match `schema`, in one line, or None."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    path = ".".join(str(p) for p in error.absolute_path) or "(top)"
    return f"at {path}: {' '.join(error.message.split())}"


_SchemaProblem = tuple[str, str]
"""(where in the schema, what is wrong there)."""


def _check_schema(schema: Any, at: str) -> _SchemaProblem | None:
    """The first common mistake in `schema` (found at the path `at`), or None."""
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, dict):
        return at, f"a schema must be an object or a boolean, got {describe_value(schema)}"
    for check in (_check_type, _check_required, _check_values, _check_subschemas):
        if problem := check(schema, at):
            return problem
    return None


def _join(at: str, *parts: object) -> str:
    """A path inside the schema: `properties.answer.type`."""
    return ".".join(p for p in (at, *map(str, parts)) if p)


def _check_type(schema: dict[str, Any], at: str) -> _SchemaProblem | None:
    if "type" not in schema:
        return None
    types = schema["type"]
    for t in types if isinstance(types, list) else [types]:
        if t not in _JSON_TYPES:
            close = difflib.get_close_matches(str(t), _JSON_TYPES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            return _join(at, "type"), f"unknown type {t!r} (expected one of {', '.join(_JSON_TYPES)}){hint}"
    if isinstance(types, list) and (not types or len(set(types)) != len(types)):
        return _join(at, "type"), "a list of types must be non-empty and without repeats"
    return None


def _check_required(schema: dict[str, Any], at: str) -> _SchemaProblem | None:
    if "required" not in schema:
        return None
    required = schema["required"]
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return _join(at, "required"), "must be a list of property names"
    if len(set(required)) != len(required):
        return _join(at, "required"), "lists a property more than once"
    return None


def _check_values(schema: dict[str, Any], at: str) -> _SchemaProblem | None:
    """Keywords taking a plain value: `enum` a list, counts and bounds numbers, `pattern` a regex."""
    if "enum" in schema and not isinstance(schema["enum"], list):
        return _join(at, "enum"), f"must be a list, got {describe_value(schema['enum'])}"
    for key in _COUNTS:
        value = schema.get(key)
        if key in schema and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return _join(at, key), f"must be a non-negative integer, got {describe_value(value)}"
    for key in _NUMBERS:
        value = schema.get(key)
        if key in schema and (isinstance(value, bool) or not isinstance(value, int | float)):
            return _join(at, key), f"must be a number, got {describe_value(value)}"
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as exc:
            return _join(at, "pattern"), f"is not a valid regular expression: {exc}"
    return None


def _check_subschemas(schema: dict[str, Any], at: str) -> _SchemaProblem | None:
    """Every schema nested in this one, in keyword order: single ones, `items`, lists, then maps."""
    for key in _SUBSCHEMA:
        if key in schema and (bad := _check_schema(schema[key], _join(at, key))):
            return bad
    if "items" in schema and (bad := _check_items(schema["items"], _join(at, "items"))):
        return bad
    for key in _SCHEMA_LISTS:
        if key in schema and (bad := _check_schema_list(schema[key], _join(at, key))):
            return bad
    for key in _SCHEMA_MAPS:
        if key in schema and (bad := _check_schema_map(schema[key], _join(at, key))):
            return bad
    return None


def _check_items(items: Any, at: str) -> _SchemaProblem | None:
    """`items`: one schema, or (older drafts) a list of them, one per position."""
    if not isinstance(items, list):
        return _check_schema(items, at)
    return next((bad for k, sub in enumerate(items) if (bad := _check_schema(sub, _join(at, k)))), None)


def _check_schema_list(schemas: Any, at: str) -> _SchemaProblem | None:
    if not isinstance(schemas, list) or not schemas:
        return at, "must be a non-empty list of schemas"
    return next((bad for k, sub in enumerate(schemas) if (bad := _check_schema(sub, _join(at, k)))), None)


def _check_schema_map(schemas: Any, at: str) -> _SchemaProblem | None:
    if not isinstance(schemas, dict):
        return at, f"must be a mapping of names to schemas, got {describe_value(schemas)}"
    return next((bad for name, sub in schemas.items() if (bad := _check_schema(sub, _join(at, name)))), None)
