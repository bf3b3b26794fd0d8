"""What the controller hands a user interface: snapshots of a run, a cell in detail, a limit in use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from treadle.engine.events import RunEvent
from treadle.engine.rate_limits import RateView
from treadle.engine.run import RunStatus
from treadle.engine.tracing import TaskTrace
from treadle.engine.tracker import TERMINAL


@dataclass(frozen=True)
class LimitView:
    total: int
    in_use: int
    peak: int


@dataclass(frozen=True)
class WorkerView:
    """One worker process of a run on several (`--workers N`), as its last report showed it."""

    index: int
    alive: bool
    groups_done: int
    """Row groups it has written."""
    groups_in_flight: int
    """Row groups given to it and not written yet."""
    cells_in_flight: int
    calls_per_s: float
    """Model requests started per second, over the last couple of seconds."""
    pid: int | None = None
    """Its process's id, once started (None for a Ray actor)."""


@dataclass(frozen=True)
class CellDetail:
    """One cell as a person inspects it: value or error, attempts with timings, inputs."""

    row: int
    column: str
    state: str
    value: Any
    """The column's value (a dict of values for a multi-output python column); None until done."""
    error: dict[str, Any] | None
    """row, column, error_class, message, attempts: for a failed cell."""
    attempts: list[TaskTrace]
    """Recent attempts (from the trace ring buffer), oldest first."""
    inputs: dict[str, Any]
    """The values of the seed fields and columns this column references."""


@dataclass(frozen=True)
class Snapshot:
    """A consistent picture of a run, cheap enough to take 15 times a second."""

    status: RunStatus
    elapsed_s: float
    rows: int
    columns: tuple[str, ...]
    cells: dict[str, int]
    """Cells by state label over all columns."""
    by_column: dict[str, dict[str, int]]
    row_groups: dict[str, int]
    limits: dict[str, LimitView]
    recent_events: list[RunEvent]
    message: str | None = None
    """Why the run paused or stopped on its own (early stop, a fatal endpoint error)."""
    loop_lag_ms: dict[str, float] = field(default_factory=dict)
    """How late the engine loop wakes (p50, p99, max): high values mean blocking work on the loop."""
    window: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """States of the requested rows, column by column."""
    rates: dict[str, RateView] = field(default_factory=dict)
    """Per model limit (`model:<name>`): ceiling, adaptive value, pace, measured rate, 429s, hold."""
    cache: dict[str, int] = field(default_factory=dict)
    """The response cache so far (hits, misses); empty when the run uses none."""
    filtered: int = 0
    """Rows a filter column turned away so far (their cells count as `dropped` in `cells`)."""
    workers: tuple[WorkerView, ...] = ()
    """A run on several worker processes: each of them; empty for one process."""

    @property
    def finished_cells(self) -> int:
        return sum(self.cells[s.label] for s in TERMINAL)

    @property
    def total_cells(self) -> int:
        return sum(self.cells.values())
