"""What an endpoint's `x-ratelimit-*` headers say about its limits, read from one answer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class LimitHeaders:
    """What `x-ratelimit-*` headers of one answer say (each None when absent or unreadable)."""

    limit_requests: float | None = None
    remaining_requests: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None

    @classmethod
    def read(cls, headers: Mapping[str, str]) -> LimitHeaders | None:
        def number(name: str) -> float | None:
            value = headers.get(name)
            if not value:
                return None
            try:
                parsed = float(value)
            except ValueError:
                return None
            return parsed if math.isfinite(parsed) and parsed >= 0 else None

        found = cls(
            number("x-ratelimit-limit-requests"),
            number("x-ratelimit-remaining-requests"),
            number("x-ratelimit-limit-tokens"),
            number("x-ratelimit-remaining-tokens"),
        )
        return None if found == cls() else found
