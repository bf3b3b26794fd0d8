"""What the app derives from snapshots: its status words, rate and ETA, the grid's follow target.

Plain Python (no textual): the tests check it directly.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from treadle.engine.controller import Snapshot
from treadle.engine.events import (
    CellFailed,
    CellRetried,
    LimitAdapted,
    LimitChanged,
    Progress,
    RowDropped,
    RunEvent,
    RunFinished,
    RunStarted,
)
from treadle.tui.theme import FINISHED_STATES

ViewStatus = Literal["starting", "running", "paused", "stopping", "idle", "closing", "done", "failed", "interrupted"]
FINAL = frozenset({"done", "failed", "interrupted"})


def finished_cells(snapshot: Snapshot) -> int:
    """Cells in a state they do not leave by themselves (every terminal state the engine has)."""
    cells = snapshot.cells
    return sum(cells.get(state, 0) for state in FINISHED_STATES)


def view_status(snapshot: Snapshot, closing: bool = False) -> ViewStatus:
    """The run's state in the words the header shows.

    `idle`: every cell has finished but the run is held open, so failed cells can still be retried;
    `closing`: the app asked the run to close and it is writing its outputs.
    """
    status = snapshot.status
    if status in FINAL:
        return status
    if closing:
        return "closing"
    if status in ("starting", "stopping"):
        return status
    if snapshot.total_cells and finished_cells(snapshot) == snapshot.total_cells:
        return "idle"
    return "paused" if status == "paused" else "running"


class RateMeter:
    """Finished cells per second over a sliding window of samples."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, t: float, finished: int) -> None:
        samples = self._samples
        if samples and finished < samples[-1][1]:
            samples.clear()  # retried cells left the finished states: start over
        samples.append((t, finished))
        while len(samples) > 2 and samples[1][0] <= t - self.window_s:
            samples.popleft()

    def rate(self) -> float | None:
        """Cells per second, or None until two samples some time apart exist."""
        if len(self._samples) < 2:
            return None
        (t0, f0), (t1, f1) = self._samples[0], self._samples[-1]
        if t1 - t0 < 0.5:
            return None
        return (f1 - f0) / (t1 - t0)


def eta_s(snapshot: Snapshot, rate: float | None) -> float | None:
    remaining = snapshot.total_cells - finished_cells(snapshot)
    if remaining <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return remaining / rate


def clock_text(seconds: float | None) -> str:
    """12:34, or 1:02:03 past an hour; an em dash when unknown."""
    if seconds is None or math.isinf(seconds) or math.isnan(seconds):
        return "—"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def compact(n: int) -> str:
    """A count in at most 5 characters: 999, 12.3k, 123k, 1.2M."""
    if n < 1000:
        return str(n)
    if n < 100_000:
        return f"{n / 1000:.1f}k".replace(".0k", "k")
    if n < 1_000_000:
        return f"{n // 1000}k"
    return f"{n / 1_000_000:.1f}M"


def duration_text(seconds: float | None) -> str:
    """A short duration: 850 us, 12 ms, 1.25 s, 3m 20s."""
    if seconds is None:
        return "—"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{int(seconds // 60)}m {int(seconds % 60)}s"


def row_finished(states: Sequence[str]) -> bool:
    return all(state in FINISHED_STATES for state in states)


def first_unfinished(window: Mapping[int, Sequence[str]], rows: Iterable[int]) -> int | None:
    """The first of `rows` (in order) whose cells have not all finished; None if all have."""
    for row in rows:
        states = window.get(row)
        if states is not None and not row_finished(states):
            return row
    return None


def limit_adapted_text(event: LimitAdapted) -> str:
    """`planner: adaptive 12, pace 1,180/min (429 from endpoint: ...)` for a `limit_adapted` event."""
    name = event.limit.removeprefix("model:")
    pace = f", pace {event.paced_rpm:,.0f}/min" if event.paced_rpm is not None else ""
    reason = f" ({event.reason})" if event.reason else ""
    return f"{name}: adaptive {event.concurrency}{pace}{reason}"


def event_line(event: RunEvent) -> str | None:
    """One log line for an event; None for the ones the log leaves out (periodic progress)."""
    match event.payload:
        case Progress():
            return None
        case RunStarted(name=name, rows=rows, columns=columns):
            text = f"started {name}: {rows} rows x {len(columns)} columns"
        case CellFailed(row=row, column=column, error_class=error_class, message=message, attempts=attempts):
            text = f"failed  row {row} {column}: {error_class}: {message}"
            if attempts:
                text += f" ({attempts} attempt{'s' if attempts != 1 else ''})"
        case CellRetried(row=row, column=column):
            text = f"retried row {row} {column}"
        case RowDropped(row=row):
            text = f"dropped row {row}"
        case LimitChanged(limit=limit, old=old, new=new):
            text = f"limit   {limit}: {old} -> {new}"
        case LimitAdapted() as adapted:
            text = limit_adapted_text(adapted)
        case RunFinished(status=status, wall_s=wall_s, message=message):
            text = f"finished: {status} in {wall_s} s" + (f" ({message})" if message else "")
        case payload:
            values = ((field.name, getattr(payload, field.name)) for field in dataclasses.fields(payload))
            extra = ", ".join(f"{name} {value}" for name, value in values if value is not None)  # not "reason None"
            text = payload.type + (f": {extra}" if extra else "")
    return f"{clock_text(event.t)} {text}"
