"""Run events: frozen records the engine emits; displays, `--events` files and the controller read them."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

EventType = Literal[
    "run_started",
    "progress",
    "cell_failed",
    "cell_retried",
    "row_dropped",
    "limit_changed",
    "limit_adapted",
    "paused",
    "resumed",
    "stopping",
    "idle",
    "salvage",
    "run_finished",
]


@dataclass(frozen=True, slots=True)
class RunEvent:
    type: EventType
    t: float
    """Seconds since the run started."""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"type": self.type, "t": round(self.t, 4), **self.data}, default=str)


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

    def emit(self, type: EventType, **data: Any) -> RunEvent:
        event = RunEvent(type, self._clock() - self._start, data)
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
