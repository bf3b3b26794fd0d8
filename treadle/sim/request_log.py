"""What the simulator saw: one entry per chat completion request, served at GET /requests.

Bounded (the newest `maxlen` entries) so a long bench cannot grow it without end. Entries are made
at arrival and completed when the answer goes out, so an entry in flight has status None. Only
touched from the server's event loop.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

REQUEST_LOG_MAX = 200_000

Status = int | str  # an HTTP status, or "dropped" / "hung" / "cancelled" when no answer was sent


@dataclass(slots=True)
class LoggedRequest:
    index: int  # arrival order, from 0; never reused, not even after a reset
    t: float  # arrival, in seconds since the server started (its monotonic clock)
    model: str | None = None  # None when the body could not be parsed
    prompt_tokens: int | None = None  # None when the body could not be parsed
    status: Status | None = None  # None while in flight
    retry_after_s: float | None = None  # the wait the answer asked for, as its headers tell it
    t_end: float | None = None  # when the answer went out (or the connection was cut)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "t": self.t,
            "model": self.model,
            "status": self.status,
            "retry_after_s": self.retry_after_s,
            "prompt_tokens": self.prompt_tokens,
            "t_end": self.t_end,
        }


class RequestLog:
    def __init__(self, maxlen: int = REQUEST_LOG_MAX) -> None:
        if maxlen < 1:
            raise ValueError(f"request log size must be >= 1, got {maxlen!r}")
        self._entries: deque[LoggedRequest] = deque(maxlen=maxlen)
        self._indexes = itertools.count()
        self.next_index = 0  # what the next arrival gets: a poller's next `since`

    def arrived(self, t: float) -> LoggedRequest:
        entry = LoggedRequest(next(self._indexes), t)
        self.next_index = entry.index + 1
        self._entries.append(entry)
        return entry

    def since(self, index: int = 0) -> list[LoggedRequest]:
        """Entries with arrival index >= `index`, oldest first (evicted ones are gone)."""
        if not self._entries:
            return []
        skip = max(0, index - self._entries[0].index)  # indexes in the deque are consecutive
        return list(itertools.islice(self._entries, skip, None))

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
