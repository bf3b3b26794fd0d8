"""Request counters served at GET /stats (only touched from the server's event loop)."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Stats:
    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        # in_flight is live state, not a tally: resetting keeps it, and restarts the peak from it.
        self.total = 0
        self.max_in_flight = self.in_flight
        self.by_status: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def started(self) -> None:
        self.total += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def finished(self, status: str) -> None:
        """status: an HTTP code as text, or "dropped" / "cancelled" when no answer was sent."""
        self.in_flight -= 1
        self.by_status[status] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests_total": self.total,
            "by_status": dict(self.by_status),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "by_model": dict(self.by_model),
            "faults": dict(self.faults),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
