"""Named concurrency limits that a person can resize while the run goes on."""

from __future__ import annotations

from dataclasses import dataclass

ROW_GROUPS = "row_groups"
SLOTS = "slots"
LIMIT_MAX = 1_000_000_000
"""The largest value of any limit (max_parallel, row groups in flight, row group size). A limit costs
only the work that exists, so a large value is harmless; a larger one is a typo."""
PYTHON_THREADS_MAX = 4096
"""The most threads for sync python functions; by default as many as max_parallel, up to 1024."""
PYTHON_THREADS_DEFAULT_MAX = 1024
WORKERS_MAX = 64
"""The most engine processes of one run (`--workers`, `run.workers`)."""


def check_limit(name: str, total: object) -> int:
    """`total` as a limit's new size, or ValueError saying why not (a whole number from 1 to LIMIT_MAX)."""
    if isinstance(total, bool) or not isinstance(total, int):
        raise ValueError(f"limit {name!r} must be a whole number, got {total!r}")
    if not 1 <= total <= LIMIT_MAX:
        raise ValueError(f"limit {name!r} must be from 1 to {LIMIT_MAX:,}, got {total:,}")
    return total


def model_limit(model: str) -> str:
    return f"model:{model}"


@dataclass
class Limit:
    """A capacity and how much of it is held. Lowering `total` never takes back what is held."""

    name: str
    total: int
    in_use: int = 0
    peak: int = 0

    def acquire(self) -> None:
        self.in_use += 1
        if self.in_use > self.peak:
            self.peak = self.in_use

    def release(self) -> None:
        self.in_use -= 1
