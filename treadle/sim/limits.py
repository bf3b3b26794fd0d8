"""Per-minute request and token limits as token buckets, OpenAI's x-ratelimit headers, and retry hints.

A bucket holds `window_s` seconds' worth of its rate and refills continuously at per_minute/60 a
second. With the default 60 s window a burst of a full minute's allowance passes at once and then
the steady rate applies, as OpenAI's limits behave; a short window (2 s) behaves like the sliding
windows of many gateways: a small burst, then the steady rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from .config import RetryAfterFormat

_SLACK_S = 1e-9  # a wait this short is float noise from refilling, not a real shortfall


class TokenBucket:
    def __init__(self, per_minute: int, now: float, window_s: float = 60.0) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = self.rate * window_s
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` units are available (0 if they are now).

        More than the whole bucket waits for a full bucket, then passes and leaves the bucket in
        debt, so the long-run rate holds even when one request outweighs a short window.
        """
        wait = (min(amount, self.capacity) - self.level) / self.rate
        return wait if wait > _SLACK_S else 0.0

    def until_full(self) -> float:
        return (self.capacity - self.level) / self.rate


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: float  # 0 when allowed
    headers: dict[str, str]  # x-ratelimit-* after this request (what it took, if allowed)


class RateLimiter:
    """Both limits must admit a request; a refused request consumes nothing."""

    def __init__(self, rpm: int, tpm: int, clock: Callable[[], float] = time.monotonic, window_s: float = 60.0) -> None:
        self.clock = clock
        now = clock()
        self.requests = TokenBucket(rpm, now, window_s) if rpm else None
        self.tokens = TokenBucket(tpm, now, window_s) if tpm else None

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def admit(self, tokens: int) -> Verdict:
        now = self.clock()
        wait = 0.0
        for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait_for(amount))
        if wait == 0.0:
            for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
                if bucket is not None:
                    bucket.level -= amount
        return Verdict(wait == 0.0, wait, self._headers())

    def headers(self) -> dict[str, str]:
        """The x-ratelimit-* headers as of now, taking nothing (for answers that never reach admit)."""
        now = self.clock()
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.refill(now)
        return self._headers()

    def _headers(self) -> dict[str, str]:
        # limit-* is the per-minute limit, as OpenAI reports it, whatever the window; remaining-*
        # is what the bucket holds now (at most a window's worth) and reset-* when it is full again.
        headers: dict[str, str] = {}
        for suffix, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{suffix}"] = str(bucket.per_minute)
                headers[f"x-ratelimit-remaining-{suffix}"] = str(max(0, math.floor(bucket.level)))
                headers[f"x-ratelimit-reset-{suffix}"] = format_duration(bucket.until_full())
        return headers


@dataclass(frozen=True)
class RetryHint:
    headers: dict[str, str]
    wait_s: float  # the wait the headers tell, after rounding (the shortest if they differ)


def retry_hint(wait_s: float, fmt: RetryAfterFormat, wall_now: float) -> RetryHint:
    """Headers that ask the client to wait `wait_s`, in one of SimConfig's retry_after_formats.

    Retry-After is whole seconds or an HTTP-date (one-second resolution), both rounded up;
    retry-after-ms (read by the openai SDK) carries the precise wait so clients need not oversleep.
    `wall_now` is time.time() when the answer is made, for the date.
    """
    if fmt == "date":
        at = math.ceil(wall_now + wait_s)
        date = format_datetime(datetime.fromtimestamp(at, UTC), usegmt=True)
        return RetryHint({"Retry-After": date}, at - wall_now)
    ms = math.ceil(wait_s * 1000)
    if fmt == "ms":
        return RetryHint({"retry-after-ms": str(ms)}, ms / 1000)
    return RetryHint({"Retry-After": str(math.ceil(wait_s)), "retry-after-ms": str(ms)}, ms / 1000)


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s" if minutes else f"{rest_text}s"
