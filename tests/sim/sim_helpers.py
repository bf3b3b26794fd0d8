"""Helpers for the simulator tests: a fake clock, reading a retry hint back, and the politeness check."""

from __future__ import annotations

import email.utils
import heapq
from collections.abc import Iterable, Mapping
from typing import Any


class FakeClock:
    """A monotonic clock that moves only when told: steps the rate limits without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat(content: str = "Hello", model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def wait_from_headers(headers: Mapping[str, str], wall_now: float) -> float | None:
    """The wait an answer asks for, as a client reads it: retry-after-ms first (as the openai SDK
    does), then Retry-After in seconds or as an HTTP-date (relative to `wall_now`, a time.time())."""
    if "retry-after-ms" in headers:
        return int(headers["retry-after-ms"]) / 1000
    value = headers.get("Retry-After")
    if value is None:
        return None
    if value.isdecimal():
        return float(value)
    return email.utils.parsedate_to_datetime(value).timestamp() - wall_now


def early_arrivals(requests: Iterable[Mapping[str, Any]]) -> list[int]:
    """Arrival indexes of requests that came before a wait their model had been told had passed.

    Reads GET /requests entries: an answer sent at `t_end` that asked for `retry_after_s` forbids the
    same model until t_end + retry_after_s, for requests that arrived after it (by index) at or after
    t_end. Requests that arrived while that answer was still on its way could not know of it.
    """
    pending: dict[str | None, list[tuple[float, float]]] = {}  # per model: a heap of (t_end, until)
    not_before: dict[str | None, float] = {}
    early = []
    for entry in sorted(requests, key=lambda e: e["index"]):  # arrival order: t never decreases
        model, hints = entry["model"], pending.setdefault(entry["model"], [])
        while hints and hints[0][0] <= entry["t"]:
            not_before[model] = max(not_before.get(model, float("-inf")), heapq.heappop(hints)[1])
        if entry["t"] < not_before.get(model, float("-inf")):
            early.append(entry["index"])
        if entry["retry_after_s"] is not None and entry["t_end"] is not None:
            heapq.heappush(hints, (entry["t_end"], entry["t_end"] + entry["retry_after_s"]))
    return early
