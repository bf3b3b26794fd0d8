"""Run events: frozen records the engine emits; displays, `--events` files and the controller read them.

Each event type is one payload class; its `type` (a class attribute) is the name the JSON line carries,
and its fields, in order, are the line's other keys (docs/EVENTS.md is the contract).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from treadle.engine.policy import FailureAction


@dataclass(frozen=True, slots=True)
class RunStarted:
    """The run begins (the first event of a session)."""

    type: ClassVar[str] = "run_started"
    name: str
    rows: int
    """Seed rows in this run."""
    columns: tuple[str, ...]
    """Column names in run order (the DAG's topological order)."""
    run_dir: str


@dataclass(frozen=True, slots=True)
class Progress:
    """Every second while running."""

    type: ClassVar[str] = "progress"
    cells: dict[str, int]
    """Count of cells by state label, only states with a non-zero count."""


@dataclass(frozen=True, slots=True)
class CellFailed:
    """A cell failed for good: its attempts are spent, or the error is not retryable."""

    type: ClassVar[str] = "cell_failed"
    row: int
    column: str
    error_class: str
    """The exception's class name."""
    message: str
    """One line, keys redacted, at most 500 characters."""
    attempts: int
    action: FailureAction


@dataclass(frozen=True, slots=True)
class CellRetried:
    """A failed cell was turned back into work (a person's retry, or a salvage round)."""

    type: ClassVar[str] = "cell_retried"
    row: int
    column: str


@dataclass(frozen=True, slots=True)
class RowDropped:
    """A row was excluded from work and output."""

    type: ClassVar[str] = "row_dropped"
    row: int


@dataclass(frozen=True, slots=True)
class LimitChanged:
    """A limit (`slots`, `row_groups` or `model:<name>`) was resized."""

    type: ClassVar[str] = "limit_changed"
    limit: str
    old: int
    new: int


@dataclass(frozen=True, slots=True)
class LimitAdapted:
    """treadle changed what it sends a model below the ceiling a person sets (concurrency or pace)."""

    type: ClassVar[str] = "limit_adapted"
    limit: str
    """`model:<name>`."""
    concurrency: int
    paced_rpm: float | None
    """Requests per minute starts are paced to; None when not paced."""
    reason: str
    """Why, in words (for people; the wording may change)."""


@dataclass(frozen=True, slots=True)
class Paused:
    """New starts stopped."""

    type: ClassVar[str] = "paused"
    reason: str | None
    """None for a person's pause, else why (early stop)."""


@dataclass(frozen=True, slots=True)
class Resumed:
    """Starts again after a pause."""

    type: ClassVar[str] = "resumed"


@dataclass(frozen=True, slots=True)
class Stopping:
    """The run stops starting cells; running ones may finish."""

    type: ClassVar[str] = "stopping"
    reason: str
    """`interrupted`, `closed`, or `stopped early: <message>`."""


@dataclass(frozen=True, slots=True)
class Idle:
    """Every cell has finished but the run is held open for retries or drops."""

    type: ClassVar[str] = "idle"


@dataclass(frozen=True, slots=True)
class Salvage:
    """A salvage round starts: cells that spent their attempts on retryable errors get one more round."""

    type: ClassVar[str] = "salvage"
    cells: int
    rounds_left: int


@dataclass(frozen=True, slots=True)
class CacheUnavailable:
    """The response cache cannot be used (locked, corrupt or unwritable): the run goes on without it."""

    type: ClassVar[str] = "cache_unavailable"
    path: str
    """The cache file."""
    reason: str
    """What went wrong, as SQLite or the file system said it."""

    @property
    def message(self) -> str:
        """The one warning line displays show."""
        return f"response cache {self.path} is not usable ({self.reason}); the run goes on without it"


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The run has ended and written its directory (the last event)."""

    type: ClassVar[str] = "run_finished"
    status: str
    """`done`, `failed` or `interrupted`."""
    wall_s: float
    message: str | None
    """None, or why the run stopped early."""


EventPayload = (
    RunStarted
    | Progress
    | CellFailed
    | CellRetried
    | RowDropped
    | LimitChanged
    | LimitAdapted
    | Paused
    | Resumed
    | Stopping
    | Idle
    | Salvage
    | CacheUnavailable
    | RunFinished
)


@dataclass(frozen=True, slots=True)
class RunEvent:
    t: float
    """Seconds since the run started."""
    payload: EventPayload

    @property
    def type(self) -> str:
        """The event type's name, as its JSON line spells it."""
        return self.payload.type

    def to_json(self) -> str:
        payload = self.payload
        line: dict[str, Any] = {"type": payload.type, "t": round(self.t, 4)}
        for name in payload.__slots__:  # a slots dataclass's fields, in order (dataclasses.fields is slower)
            line[name] = getattr(payload, name)
        return json.dumps(line, default=str)


class EventBus:
    """Fans events out to subscribers (thread-safe queues) and keeps the most recent ones."""

    def __init__(self, keep: int = 200, clock=time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self._recent: deque[RunEvent] = deque(maxlen=keep)
        self._subscribers: list[queue.SimpleQueue[RunEvent]] = []
        self._lock = threading.Lock()

    def restart_clock(self) -> None:
        self._start = self._clock()

    def elapsed(self) -> float:
        return self._clock() - self._start

    def emit(self, payload: EventPayload) -> RunEvent:
        event = RunEvent(self._clock() - self._start, payload)
        with self._lock:
            self._recent.append(event)
            for subscriber in self._subscribers:
                subscriber.put(event)
        return event

    def subscribe(self) -> queue.SimpleQueue[RunEvent]:
        """A queue receiving every event from now on."""
        subscriber: queue.SimpleQueue[RunEvent] = queue.SimpleQueue()
        with self._lock:
            self._subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: queue.SimpleQueue[RunEvent]) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def recent(self) -> list[RunEvent]:
        with self._lock:
            return list(self._recent)
