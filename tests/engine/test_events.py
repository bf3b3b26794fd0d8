"""Run events: each payload class writes the JSON line docs/EVENTS.md documents; subscribers get typed payloads."""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path

import pytest

from treadle.engine.events import (
    CacheUnavailable,
    CellFailed,
    CellRetried,
    EventBus,
    EventPayload,
    Idle,
    LimitAdapted,
    LimitChanged,
    Paused,
    Progress,
    Resumed,
    RowDropped,
    RunEvent,
    RunFinished,
    RunStarted,
    Salvage,
    Stopping,
)

EVENTS_DOC = Path(__file__).parents[2] / "docs" / "EVENTS.md"
PAYLOAD_CLASSES = typing.get_args(EventPayload)

SAMPLES = [
    RunStarted(name="hello", rows=3, columns=("greeting", "card"), run_dir="runs/hello"),
    Progress(cells={"done": 4, "running": 2}),
    CellFailed(row=3, column="a", error_class="ValueError", message="no", attempts=2, action="fail"),
    CellRetried(row=3, column="a"),
    RowDropped(row=7),
    LimitChanged(limit="slots", old=4, new=6),
    LimitAdapted(limit="model:m", concurrency=12, paced_rpm=1180.4, reason="429 from endpoint"),
    Paused(reason="stopped early: 5 of the last 5 attempts failed (last error: x)"),
    Resumed(),
    Stopping(reason="interrupted"),
    Idle(),
    Salvage(cells=2, rounds_left=0),
    CacheUnavailable(path="/home/me/.cache/treadle/responses.sqlite", reason="database disk image is malformed"),
    RunFinished(status="done", wall_s=0.578, message=None),
]

JSON_TYPES = {
    "string": lambda value: isinstance(value, str),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "object": lambda value: isinstance(value, dict),
    "list of strings": lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value),
    "null": lambda value: value is None,
}


def documented_events() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """From docs/EVENTS.md's sections: type -> (payload class name, [(field, JSON type), ...])."""
    events: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    fields: list[tuple[str, str]] | None = None
    for line in EVENTS_DOC.read_text(encoding="utf-8").splitlines():
        if heading := re.fullmatch(r"### `(\w+)` \((\w+)\)", line):
            fields = []
            events[heading[1]] = (heading[2], fields)
        elif line.startswith("## "):
            fields = None
        elif fields is not None and (row := re.match(r"\| `(\w+)` \| ([^|]+?) \|", line)):
            fields.append((row[1], row[2]))
    return events


def test_the_payload_classes_are_the_documented_event_types():
    documented = {name: class_name for name, (class_name, _) in documented_events().items()}
    assert documented == {cls.type: cls.__name__ for cls in PAYLOAD_CLASSES}
    assert sorted(type(sample).__name__ for sample in SAMPLES) == sorted(cls.__name__ for cls in PAYLOAD_CLASSES)


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda payload: payload.type)
def test_an_events_json_line_has_the_documented_fields_in_order(payload: EventPayload):
    _, fields = documented_events()[payload.type]
    line = json.loads(RunEvent(12.345678, payload).to_json())
    assert list(line) == ["type", "t", *(name for name, _ in fields)]
    assert line["type"] == payload.type and line["t"] == 12.3457
    hints = typing.get_type_hints(type(payload))
    for name, json_type in fields:
        kinds = json_type.split(" or ")
        assert any(JSON_TYPES[kind](line[name]) for kind in kinds), (name, line[name], json_type)
        may_be_none = isinstance(hints[name], types.UnionType) and type(None) in typing.get_args(hints[name])
        assert may_be_none == ("null" in kinds), name


def test_the_documented_example_lines_are_written_byte_for_byte():
    text = EVENTS_DOC.read_text(encoding="utf-8")
    examples = [line for line in text.splitlines() if line.startswith('{"type": ')]
    assert examples
    payload_class = {cls.type: cls for cls in PAYLOAD_CLASSES}
    for example in examples:
        fields = json.loads(example)
        kind, t = fields.pop("type"), fields.pop("t")
        assert RunEvent(t, payload_class[kind](**fields)).to_json() == example


def test_a_misspelt_field_is_an_error_not_a_new_key():
    with pytest.raises(TypeError):
        RowDropped(rows=3)  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        RowDropped(row=3).row = 4  # type: ignore[misc]


def test_subscribers_get_typed_payloads_timed_by_the_bus_clock():
    now = [100.0]
    bus = EventBus(keep=2, clock=lambda: now[0])
    before = bus.subscribe()
    now[0] = 102.5
    emitted = bus.emit(LimitChanged(limit="slots", old=4, new=6))
    after = bus.subscribe()
    bus.emit(Resumed())
    bus.unsubscribe(before)
    bus.emit(Idle())

    received = before.get_nowait()
    assert received is emitted and received.t == 2.5 and received.type == "limit_changed"
    match received.payload:
        case LimitChanged(limit=limit, old=old, new=new):
            assert (limit, old, new) == ("slots", 4, 6)
        case other:
            pytest.fail(f"a LimitChanged payload, not {other!r}")
    assert isinstance(before.get_nowait().payload, Resumed)
    assert before.empty()
    assert [type(after.get_nowait().payload) for _ in range(2)] == [Resumed, Idle]
    assert [type(event.payload) for event in bus.recent()] == [Resumed, Idle]
