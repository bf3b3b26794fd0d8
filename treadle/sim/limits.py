"""Per-minute request and token limits as token buckets, with OpenAI's x-ratelimit headers.

A bucket holds up to `per_minute` units and refills continuously at per_minute/60 a second, so a
burst of a full minute's allowance passes at once and then the steady rate applies, as OpenAI's
limits behave.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


class TokenBucket:
    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` units are available (0 if they are now)."""
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)

    def until_full(self) -> float:
        return (self.capacity - self.level) / self.rate


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: float  # 0 when allowed
    headers: dict[str, str]


class RateLimiter:
    """Both limits must admit a request; a refused request consumes nothing."""

    def __init__(self, rpm: int, tpm: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        now = clock()
        self.requests = TokenBucket(rpm, now) if rpm else None
        self.tokens = TokenBucket(tpm, now) if tpm else None

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
            if self.requests is not None:
                self.requests.level -= 1
            if self.tokens is not None:
                # A request bigger than the whole bucket is let through on a full bucket.
                self.tokens.level -= min(tokens, self.tokens.capacity)
        return Verdict(wait == 0.0, wait, self._headers())

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for suffix, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{suffix}"] = str(int(bucket.capacity))
                headers[f"x-ratelimit-remaining-{suffix}"] = str(max(0, math.floor(bucket.level)))
                headers[f"x-ratelimit-reset-{suffix}"] = format_duration(bucket.until_full())
        return headers


def retry_headers(wait_s: float) -> dict[str, str]:
    # Retry-After is whole seconds by the HTTP spec; retry-after-ms (read by the openai SDK)
    # carries the precise wait so clients need not oversleep.
    return {"Retry-After": str(max(1, math.ceil(wait_s))), "retry-after-ms": str(math.ceil(wait_s * 1000))}


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s" if minutes else f"{rest_text}s"
