"""The log panel's lines: the run's events, a bounded number per tick, taken from the app's subscription."""

from __future__ import annotations

import queue
from collections.abc import Iterable

from treadle.engine.events import CacheUnavailable, RunEvent
from treadle.tui.model import clock_text, event_line

EVENTS_PER_TICK = 200
EVENT_BACKLOG = 5000
"""With more events than this waiting, all but one tick's worth are skipped (and the log says so)."""


def log_line(event: RunEvent) -> str | None:
    """The log's line for an event (None: not shown); a warning reads as one."""
    if isinstance(event.payload, CacheUnavailable):
        return f"{clock_text(event.t)} warning: {event.payload.message}"
    return event_line(event)


class EventFeed:
    """Log lines for the events since the last `take`: first the snapshot's recent events (from before
    the subscription), then the subscription's queue, which may repeat a few of those."""

    def __init__(self, events: queue.SimpleQueue[RunEvent], recent: Iterable[RunEvent]) -> None:
        self._events = events
        self._backlog = list(recent)
        self._backlog_ids = {id(event) for event in self._backlog}

    def take(self) -> list[str]:
        events = self._events
        lines = [line for line in map(log_line, self._backlog) if line is not None]
        self._backlog = []
        backlog = events.qsize()
        if backlog > EVENT_BACKLOG:
            skipped = backlog - EVENTS_PER_TICK
            for _ in range(skipped):
                events.get_nowait()
            lines.append(f"… {skipped:,} events not shown")
        for _ in range(EVENTS_PER_TICK):
            try:
                event = events.get_nowait()
            except queue.Empty:
                break
            if self._backlog_ids:
                if id(event) in self._backlog_ids:
                    continue
                self._backlog_ids = set()
            line = log_line(event)
            if line is not None:
                lines.append(line)
        return lines
