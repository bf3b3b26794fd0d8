"""The errors treadle raises. User errors carry a place and a one-line message; the CLI prints them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class TreadleError(Exception):
    """Base of every error treadle reports to a user; `exit_code` is what the CLI exits with."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline or its inputs, and where it is (file, column, key)."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ConfigError(TreadleError):
    """Every problem found in a pipeline file, its seed files and its references, reported at once."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class CellError(Exception):
    """Raised by a generator for a cell that failed; `retryable` says whether another attempt may help."""

    retryable = False

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds the endpoint asked to wait before trying again (its Retry-After), if it said."""
        self.status = status
        """The endpoint's HTTP status, for an error it answered."""

    @property
    def rate_limited(self) -> bool:
        """The endpoint works but is busy (429, or 503 asking to wait): waiting does not spend the retries."""
        return self.status == 429 or (self.status == 503 and self.retry_after is not None)


class RetryableCellError(CellError):
    """A transient failure: timeouts, rate limits, 5xx, dropped connections, unparsable structured output."""

    retryable = True


class StorageError(TreadleError):
    """The run directory cannot be written (disk full, read-only, gone): the run stops, exit 1."""

    exit_code = 1


class FatalRunError(TreadleError):
    """A failure that dooms every cell alike (bad key, unknown model): the run stops with this one message."""

    exit_code = 1


def one_line(text: object, limit: int | None = None) -> str:
    """`text` on one line (runs of whitespace become one space), cut to `limit` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"


def describe_value(value: Any) -> str:
    """A short phrase for a value in an error message: `a string 'x'`, `a list`, `nothing (null)`."""
    kinds = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    kind = kinds.get(type(value), type(value).__name__)
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict | list):
        return kind
    shown = repr(value)
    return f"{kind} {shown if len(shown) <= 40 else shown[:37] + '...'}"
