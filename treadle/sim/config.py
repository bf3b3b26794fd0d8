"""SimConfig: every knob of the simulator's behaviour, validated once at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

LATENCY_DISTS = ("uniform", "lognormal")
RetryAfterFormat = Literal["seconds", "date", "ms"]
RETRY_AFTER_FORMATS: tuple[str, ...] = get_args(RetryAfterFormat)


@dataclass(frozen=True)
class SimConfig:
    """How the simulated endpoint behaves. Zero means "off" for every latency, limit and rate.

    The Python default is a zero-latency server (what tests and benches want); the CLI defaults
    `--latency-ms` to 300 to look like a real endpoint.
    """

    latency_ms: float = 0.0  # mean time before answering
    jitter_ms: float = 0.0  # uniform +- around latency_ms (latency_dist="uniform")
    latency_dist: str = "uniform"  # "uniform" or "lognormal" (mean latency_ms, shape latency_sigma)
    latency_sigma: float = 0.5
    tokens_per_s: float = 0.0  # completion tokens add time at this rate
    rpm: int = 0  # requests per minute (token bucket); over it -> 429
    tpm: int = 0  # prompt + completion tokens per minute; over it -> 429
    limit_per_model: bool = False  # rpm and tpm for each model apart (as providers do) instead of for all
    # A bucket holds `limit_window_s` worth of its rate: 60 lets a full minute's allowance burst (OpenAI);
    # 2 is a short sliding window (many gateways). The long-run rate is rpm/tpm either way.
    limit_window_s: float = 60.0
    ratelimit_headers: bool = True  # x-ratelimit-* on every chat answer while rpm or tpm is set
    # How a wait is told (429, overload 503, and 500 with fail_retry_after_s): "seconds" sends
    # `Retry-After: <int>` plus `retry-after-ms`; "date" only `Retry-After: <HTTP-date>`; "ms" only `retry-after-ms`.
    retry_after_format: RetryAfterFormat = "seconds"
    fail_rate: float = 0.0  # 500 with an OpenAI error body
    hang_rate: float = 0.0  # no answer until the client gives up (or hang_max_s, or shutdown)
    malformed_rate: float = 0.0  # 200 whose body is not valid JSON
    drop_rate: float = 0.0  # connection aborted without an answer
    overload_rate: float = 0.0  # 503 "overloaded" at once (no latency), with a retry hint
    overload_retry_after_s: float = 1.0  # the wait an overload 503 asks for
    fail_retry_after_s: float | None = None  # when set, 500 faults ask for this wait too
    hang_max_s: float = 600.0  # a hung request is released after this, so nothing leaks forever
    seed: int | None = None  # makes latency and faults repeatable per (prompt, attempt)
    book: str | None = None  # path of a YAML response book
    models: tuple[str, ...] = field(default=())  # empty: any model name is accepted
    api_key: str | None = None  # when set, requests need "Authorization: Bearer <api_key>"
    reasoning: bool = False  # add reasoning_content to every answer

    def __post_init__(self) -> None:
        # Accept any iterable of names (a list from YAML or a caller) but store a hashable tuple.
        object.__setattr__(self, "models", tuple(self.models))
        nonnegative = (
            "latency_ms",
            "jitter_ms",
            "latency_sigma",
            "tokens_per_s",
            "rpm",
            "tpm",
            "overload_retry_after_s",
        )
        for name in nonnegative:
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.fail_retry_after_s is not None and not (
            math.isfinite(self.fail_retry_after_s) and self.fail_retry_after_s >= 0
        ):
            raise ValueError(f"fail_retry_after_s must be a finite number >= 0, got {self.fail_retry_after_s!r}")
        if not math.isfinite(self.limit_window_s) or self.limit_window_s <= 0:
            raise ValueError(f"limit_window_s must be a finite number > 0, got {self.limit_window_s!r}")
        if self.retry_after_format not in RETRY_AFTER_FORMATS:
            raise ValueError(
                f"retry_after_format must be one of {', '.join(RETRY_AFTER_FORMATS)}, got {self.retry_after_format!r}"
            )
        if self.hang_max_s <= 0:
            raise ValueError(f"hang_max_s must be > 0, got {self.hang_max_s!r}")
        if self.latency_dist not in LATENCY_DISTS:
            raise ValueError(f"latency_dist must be one of {', '.join(LATENCY_DISTS)}, got {self.latency_dist!r}")
        rates = self.fault_rates()
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name}_rate must be between 0 and 1, got {rate!r}")
        # One uniform draw picks at most one fault, so the rates must fit in [0, 1] together.
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to more than 1: {rates}")
        if any(not isinstance(m, str) or not m for m in self.models):
            raise ValueError(f"models must be non-empty strings, got {self.models!r}")

    def fault_rates(self) -> dict[str, float]:
        # The order is the order of faults.FAULTS: overload comes last so that adding it leaves the
        # outcomes of the older faults under a seed unchanged.
        return {
            "fail": self.fail_rate,
            "hang": self.hang_rate,
            "malformed": self.malformed_rate,
            "drop": self.drop_rate,
            "overload": self.overload_rate,
        }
