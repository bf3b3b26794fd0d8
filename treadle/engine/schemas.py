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


def _check_schema(schema: Any, at: str) -> tuple[str, str] | None:
    def join(*parts: object) -> str:
        return ".".join(p for p in (at, *map(str, parts)) if p)

    if isinstance(schema, bool):
        return None
    if not isinstance(schema, dict):
        return at, f"a schema must be an object or a boolean, got {describe_value(schema)}"
    if "type" in schema:
        types = schema["type"]
        listed = types if isinstance(types, list) else [types]
        for t in listed:
            if t not in _JSON_TYPES:
                close = difflib.get_close_matches(str(t), _JSON_TYPES, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                return join("type"), f"unknown type {t!r} (expected one of {', '.join(_JSON_TYPES)}){hint}"
        if isinstance(types, list) and (not types or len(set(types)) != len(types)):
            return join("type"), "a list of types must be non-empty and without repeats"
    if "required" in schema:
        req = schema["required"]
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            return join("required"), "must be a list of property names"
        if len(set(req)) != len(req):
            return join("required"), "lists a property more than once"
    if "enum" in schema and not isinstance(schema["enum"], list):
        return join("enum"), f"must be a list, got {describe_value(schema['enum'])}"
    for key in _COUNTS:
        if key in schema and not (
            isinstance(schema[key], int) and not isinstance(schema[key], bool) and schema[key] >= 0
        ):
            return join(key), f"must be a non-negative integer, got {describe_value(schema[key])}"
    for key in _NUMBERS:
        value = schema.get(key)
        if key in schema and (isinstance(value, bool) or not isinstance(value, int | float)):
            return join(key), f"must be a number, got {describe_value(value)}"
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as exc:
            return join("pattern"), f"is not a valid regular expression: {exc}"
    for key in _SUBSCHEMA:
        if key in schema and (bad := _check_schema(schema[key], join(key))):
            return bad
    if "items" in schema:
        items = schema["items"]
        for k, sub in enumerate(items) if isinstance(items, list) else [(None, items)]:
            if bad := _check_schema(sub, join("items") if k is None else join("items", k)):
                return bad
    for key in _SCHEMA_LISTS:
        if key in schema:
            if not isinstance(schema[key], list) or not schema[key]:
                return join(key), "must be a non-empty list of schemas"
            for k, sub in enumerate(schema[key]):
                if bad := _check_schema(sub, join(key, k)):
                    return bad
    for key in _SCHEMA_MAPS:
        if key in schema:
            if not isinstance(schema[key], dict):
                return join(key), f"must be a mapping of names to schemas, got {describe_value(schema[key])}"
            for name, sub in schema[key].items():
                if bad := _check_schema(sub, join(key, name)):
                    return bad
    return None


# --- what `treadle validate` prints
