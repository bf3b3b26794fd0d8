"""The app's derived numbers and words, and the keymap's consistency (no textual app needed)."""

from __future__ import annotations

from treadle.engine.controller import LimitView, Snapshot
from treadle.engine.events import CellFailed, Idle, LimitChanged, Paused, Progress, RunEvent, Stopping
from treadle.tui.actions import ACTIONS
from treadle.tui.keymap import DEFAULT_KEYS, bindings, key_text
from treadle.tui.model import (
    RateMeter,
    clock_text,
    compact,
    duration_text,
    eta_s,
    event_line,
    finished_cells,
    first_unfinished,
    view_status,
)
from treadle.tui.theme import GLYPHS, STATES


def snapshot(status="running", **cells) -> Snapshot:
    counts = {state: 0 for state in STATES}
    counts.update({k.replace("_", "-"): v for k, v in cells.items()})
    return Snapshot(
        status=status,
        elapsed_s=1.0,
        rows=10,
        columns=("a",),
        cells=counts,
        by_column={"a": counts},
        row_groups={"finished": 0, "in_flight": 1, "pending": 0},
        limits={"slots": LimitView(4, 0, 0)},
        recent_events=[],
    )


def test_status_words():
    assert view_status(snapshot(running=2, done=8)) == "running"
    assert view_status(snapshot("paused", ready=2, done=8)) == "paused"
    assert view_status(snapshot(done=8, failed=1, blocked=1)) == "idle"
    assert view_status(snapshot("paused", done=10)) == "idle"
    assert view_status(snapshot(done=10), closing=True) == "closing"
    assert view_status(snapshot("stopping", running=1, done=9)) == "stopping"
    assert view_status(snapshot("interrupted", waiting=3, done=7)) == "interrupted"
    assert finished_cells(snapshot(done=5, failed=1, blocked=1, dropped=1, running=2)) == 8


def test_rate_over_a_sliding_window_and_eta():
    meter = RateMeter(window_s=10)
    assert meter.rate() is None
    for t in range(0, 21):
        meter.add(float(t), t * 100)
    assert meter.rate() == 100.0
    meter.add(21.0, 50)  # a retry took cells back out of the finished states: start over
    assert meter.rate() is None
    assert eta_s(snapshot(running=2, done=8), 2.0) == 1.0
    assert eta_s(snapshot(done=10), None) == 0.0
    assert eta_s(snapshot(running=2, done=8), None) is None


def test_formatting():
    assert (clock_text(None), clock_text(75.9), clock_text(3723)) == ("—", "01:15", "1:02:03")
    assert [compact(n) for n in (999, 1000, 12_345, 123_456, 1_234_567)] == ["999", "1k", "12.3k", "123k", "1.2M"]
    assert [duration_text(s) for s in (0.0005, 0.012, 1.25, 200)] == ["500 us", "12 ms", "1.25 s", "3m 20s"]


def test_first_unfinished_row_in_order():
    window = {0: ("done", "done"), 1: ("failed", "blocked"), 2: ("done", "running"), 3: ("waiting", "waiting")}
    assert first_unfinished(window, range(0, 4)) == 2
    assert first_unfinished(window, range(0, 2)) is None
    assert first_unfinished({}, range(5)) is None


def test_event_lines():
    failed = CellFailed(row=3, column="a", error_class="ValueError", message="no", attempts=2, action="fail")
    assert event_line(RunEvent(62.0, failed)) == "01:02 failed  row 3 a: ValueError: no (2 attempts)"
    assert event_line(RunEvent(1.0, Progress(cells={}))) is None
    assert event_line(RunEvent(0.0, LimitChanged(limit="slots", old=4, new=6))).endswith("4 -> 6")
    assert event_line(RunEvent(5.0, Stopping(reason="closed"))) == "00:05 stopping: reason closed"
    assert event_line(RunEvent(6.0, Idle())) == "00:06 idle"
    assert event_line(RunEvent(7.0, Paused(reason=None))) == "00:07 paused"  # a person's pause: no reason given


def test_every_action_has_keys_and_every_state_a_glyph():
    ids = [spec.id for spec in ACTIONS]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(DEFAULT_KEYS)
    for scope in ("app", "grid", "help", "confirm", "detail", "summary"):
        assert {b.id for b in bindings(scope)} == {spec.id for spec in ACTIONS if spec.scope == scope}
    assert key_text("plus,equals_sign") == "+ ="
    assert set(STATES) <= set(GLYPHS)
