"""Failure policy: retries and backoff, per-column timeouts and fallbacks, early stop, failure records."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from treadle.engine.errors import CellError, one_line

FailureAction = Literal["fail", "skip_row", "default", "filtered"]
RATE_LIMIT_EXTRA_ATTEMPTS = 20
"""Attempts a rate-limited cell gets beyond its retries: waiting on a busy endpoint spends no retry."""
MAX_MESSAGE = 500
"""The longest error message kept in a failure record or a trace."""


@dataclass(frozen=True)
class RetryPolicy:
    backoff_s: float = 1.0
    """First retry delay; doubles each attempt, with jitter (x0.5 to x1.5)."""
    max_backoff_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        backoff = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + rng.random())
        return max(backoff, retry_after or 0.0)


@dataclass(frozen=True)
class NodePolicy:
    """How one column's cells are retried, timed out and settled when they fail for good."""

    retries: int = 3
    timeout_s: float = 120.0
    on_failure: FailureAction = "fail"
    default: Any = None
    """The value of a cell settled by `on_failure: {default: ...}`."""
    deadline_s: float | None = None
    """No retry starts later than this many seconds after the cell's first attempt started."""


@dataclass
class CellFailure:
    row: int
    column: str
    error_class: str
    message: str
    attempts: int
    action: FailureAction = "fail"
    """What became of the cell: failed (dependents blocked), its row skipped, or a default value."""
    retryable: bool = False

    def record(self) -> dict[str, Any]:
        """The failures.jsonl line: row, column, error_class, message, attempts, action."""
        return {
            "row": self.row,
            "column": self.column,
            "error_class": self.error_class,
            "message": self.message,
            "attempts": self.attempts,
            "action": self.action,
        }


def error_message(error: BaseException) -> str:
    """An error as a failure record's message: one line, at most MAX_MESSAGE characters, or its class name."""
    return one_line(error, MAX_MESSAGE) or type(error).__name__


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, TimeoutError) or (isinstance(error, CellError) and error.retryable)


def is_rate_limit(error: BaseException) -> bool:
    """An answer that asks to wait (429, or 503 with Retry-After): the endpoint works, it is just busy."""
    return isinstance(error, CellError) and error.rate_limited


class ErrorWindow:
    """The share of failed attempts among the most recent `size` ones.

    Successes only advance a counter (the scheduler bumps `attempts` inline, on the hot path); the
    window keeps the numbers of recent failed attempts and forgets those older than `size` attempts.
    """

    def __init__(self, size: int, threshold: float) -> None:
        self.size = size
        self.threshold = threshold
        self.attempts = 0
        self._failures: deque[int] = deque()

    @property
    def failed(self) -> int:
        return len(self._failures)

    def record_failure(self) -> bool:
        """Count one failed attempt; True when the last `size` attempts fail at the threshold rate."""
        self.attempts += 1
        failures = self._failures
        failures.append(self.attempts)
        oldest = self.attempts - self.size
        while failures and failures[0] <= oldest:
            failures.popleft()
        return self.attempts >= self.size and len(failures) >= self.threshold * self.size

    def failed_after(self, attempt: int) -> list[int]:
        """The numbers of the failed attempts after `attempt` that the window still holds, oldest first."""
        return [n for n in self._failures if n > attempt]

    def clear(self) -> None:
        self._failures.clear()
        self.attempts = 0


class NoWindow(ErrorWindow):
    """Early stop turned off."""

    def __init__(self) -> None:
        super().__init__(1, 1.0)

    def record_failure(self) -> bool:
        return False


@dataclass(frozen=True)
class FailurePolicies:
    """How a run treats failed attempts: backoff, each column's policy, early stop and salvage rounds."""

    retry: RetryPolicy
    nodes: Sequence[NodePolicy]
    """Per node (in topological order): retries, timeout, deadline, on_failure."""
    error_window: ErrorWindow
    """Early stop: pauses the run when too many of the recent attempts failed (NoWindow: never)."""
    salvage_rounds: int
    """Extra rounds, once nothing else is left, for cells that spent their attempts on retryable errors."""
    redact: Callable[[str], str]
    """Takes API keys out of error messages before they are kept or shown."""
    jitter_seed: int = 0
    """Seeds the backoff jitter (of cells and of `ctx.llm` calls)."""
