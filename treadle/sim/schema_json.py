"""Synthesise a JSON value that validates against a JSON Schema (the subset structured outputs use).

Covers objects (every property, required or not), strings (length bounds and common formats),
numbers and integers (bounds, multipleOf), booleans, null, arrays (item bounds, uniqueItems),
enum, const, $ref into $defs/definitions, anyOf/oneOf (first usable branch), allOf (merged) and
type lists. `pattern` is not honoured. The values come from the given Random, so the same seed
gives the same value.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

_MAX_DEPTH = 8  # past this, recursive schemas get only what they require (and null branches)
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
_FORMATS = {
    "date": "2024-01-{day:02d}",
    "date-time": "2024-01-{day:02d}T12:00:00Z",
    "time": "12:00:{day:02d}",
    "email": "user{day}@example.com",
    "uri": "https://example.com/item/{day}",
    "hostname": "host{day}.example.com",
    "ipv4": "192.0.2.{day}",
}


def synthesize(schema: dict[str, Any], rng: random.Random) -> Any:
    return _Synth(schema, rng).value(schema, 0)


class _Synth:
    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def value(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict):  # `true` or `{}`: anything goes
            return self._string({})
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.value(self._branch(schema[key], depth), depth + 1)
        if schema.get("allOf"):
            return self.value(self._merge(schema), depth + 1)
        kind = _type_of(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    def _branch(self, options: list[Any], depth: int) -> Any:
        """The first non-null branch; past the depth limit the null one, which ends recursion."""
        if depth >= _MAX_DEPTH:
            return next((o for o in options if _is_null(o)), options[0])
        return next((o for o in options if not _is_null(o)), options[0])

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < _MAX_DEPTH:
            ref = schema["$ref"]
            if not ref.startswith("#"):
                raise ValueError(f"only local $ref is supported, got {ref!r}")
            target: Any = self.root
            for part in filter(None, ref[1:].split("/")):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            # Keywords next to $ref (e.g. a description) are kept; the target's win on conflicts.
            schema = {**{k: v for k, v in schema.items() if k != "$ref"}, **target}
            seen += 1
        return schema

    def _merge(self, schema: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = self._resolve(part) if isinstance(part, dict) else {}
            for key, val in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **val}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *val]
                else:
                    merged.setdefault(key, val)
        return merged

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties", {})
        required = schema.get("required", [])
        names = list(props) if depth < _MAX_DEPTH else [n for n in props if n in required]
        out = {name: self.value(props[name], depth + 1) for name in names}
        for name in required:  # required names without a property schema still need a value
            out.setdefault(name, self._string({}))
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, 3)))
        count = lo if depth >= _MAX_DEPTH else self.rng.randint(max(lo, min(1, hi)), max(lo, min(3, hi)))
        prefix = schema.get("prefixItems", [])
        items = schema.get("items", {})
        out: list[Any] = []
        seen: set[str] = set()
        for _ in range(count * 10):  # bounded retries: uniqueItems over a tiny enum may run short
            if len(out) == count:
                break
            item = self.value(prefix[len(out)] if len(out) < len(prefix) else items, depth + 1)
            key = json.dumps(item, sort_keys=True)
            if schema.get("uniqueItems") and key in seen:
                continue
            seen.add(key)
            out.append(item)
        return out

    def _integer(self, schema: dict[str, Any]) -> int:
        lo, hi = _bounds(schema, step=1)
        lo, hi = math.ceil(lo), math.floor(hi)
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first = -(-lo // step) * step
            return first + step * self.rng.randint(0, max(0, (hi - first) // step))
        return self.rng.randint(lo, max(lo, hi))

    def _number(self, schema: dict[str, Any]) -> float | int:
        if isinstance(schema.get("multipleOf"), int):
            return self._integer(schema)
        lo, hi = _bounds(schema, step=0.01)
        value = round(self.rng.uniform(lo, hi), 2)
        return min(max(value, lo), hi)  # rounding must not step outside the bounds

    def _string(self, schema: dict[str, Any]) -> str:
        day = self.rng.randint(1, 28)
        fmt = schema.get("format")
        if fmt == "uuid":
            return f"{self.rng.getrandbits(32):08x}-0000-4000-8000-{self.rng.getrandbits(48):012x}"
        if fmt in _FORMATS:
            return _FORMATS[fmt].format(day=day)
        text = " ".join(self.rng.choice(_WORDS) for _ in range(self.rng.randint(1, 3)))
        lo = int(schema.get("minLength", 0))
        hi = int(schema.get("maxLength", max(lo, len(text))))
        text = text.ljust(lo, "x")[:hi]
        return text


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return kinds[0] if kinds else "null"
    if kind is not None:
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _is_null(option: Any) -> bool:
    return isinstance(option, dict) and option.get("type") == "null"


def _bounds(schema: dict[str, Any], step: float) -> tuple[float, float]:
    lo = schema.get("minimum", -math.inf)
    hi = schema.get("maximum", math.inf)
    if "exclusiveMinimum" in schema:
        lo = max(lo, schema["exclusiveMinimum"] + step)
    if "exclusiveMaximum" in schema:
        hi = min(hi, schema["exclusiveMaximum"] - step)
    # Open ends get a small, readable range next to the bound that is given.
    if math.isinf(lo) and math.isinf(hi):
        lo, hi = 0, 100
    elif math.isinf(lo):
        lo = hi - 100
    elif math.isinf(hi):
        hi = lo + 100
    return lo, max(lo, hi)
