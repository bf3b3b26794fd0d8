"""The errors treadle raises. User errors carry a place and a one-line message; the CLI prints them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class TreadleError(Exception):
    """Base of every error treadle reports to a user; `exit_code` is what the CLI exits with."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline or its inputs, and where: the file, the key path in it, the line.

    Printed as one line, the place first: `pipeline.yaml: columns[3] 'plan'.prompt: <message>`,
    `questions.jsonl: line 7: <message>`, `pipeline.yaml: <message>`.
    """

    file: str
    """The file as the user named it (`pipeline.yaml`, `questions.jsonl`, a run directory), or what stands
    in for one: a flag (`--recompute`), `PipelineConfig` for a config built in Python."""
    message: str
    key: str = ""
    """Key path inside the file (`columns[3] 'plan'.prompt`, `seed.join.on`, `item 4`); empty when none."""
    line: int | None = None
    """Line in the file, when known (YAML syntax, a data file's bad row)."""
    column_index: int | None = None
    """Index of the pipeline column the key lies under (`columns[3]...`), for listing problems in file order."""

    def __str__(self) -> str:
        place = [self.file]
        if self.line is not None:
            place.append(f"line {self.line}")
        if self.key:
            place.append(self.key)
        return ": ".join([*place, self.message])


def in_file_order(problems: Iterable[Problem]) -> list[Problem]:
    """Problems about the file as a whole and its other sections first, then those about columns by
    column index; the sort is stable, so each group keeps the order the checks found them in."""
    return sorted(problems, key=lambda p: -1 if p.column_index is None else p.column_index)


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
