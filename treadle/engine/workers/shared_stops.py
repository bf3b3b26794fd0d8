"""Early stop and salvage over every worker of `--workers N`, decided by the parent as one process does.

Early stop looks at the run's most recent attempts, not one worker's: each worker counts its attempts
(its own early stop never fires) and sends in each tick how many it made and which failed; the parent
adds them to one window of the run's size and pauses every worker when it fills with failures.
Salvage is one more round, once every row group is written, for the cells that spent their attempts
on retryable errors, whichever worker ran them (a worker alone would salvage each time its own groups
ran out, long before the run's end).
"""

from __future__ import annotations

import math

from treadle.engine.pipeline import RunConfig
from treadle.engine.policy import CellFailure, ErrorWindow


class WorkerAttempts:
    """A worker's side: its scheduler's early-stop window, kept from firing, read at each tick."""

    def __init__(self, window: ErrorWindow) -> None:
        self.window = window
        window.threshold = math.inf  # the parent decides, from every worker's attempts
        self._told = 0

    def since_last(self) -> tuple[int, list[int]]:
        """Attempts made since the last call, and which of them failed (1 for the first)."""
        window = self.window
        if window.attempts < self._told:  # a resume cleared the window
            self._told = 0
        told, self._told = self._told, window.attempts
        return window.attempts - told, [n - told for n in window.failed_after(told)]


class SharedEarlyStop:
    """The parent's window over every worker's attempts, in the order their ticks tell them."""

    def __init__(self, run: RunConfig) -> None:
        config = run.early_stop
        self.window = None if config is None else ErrorWindow(config.window, config.error_rate)
        self.last_error: str | None = None
        """The latest failure a worker told of (for the reason a person reads)."""

    def counted(self, attempts: int, failed: list[int]) -> str | None:
        """A worker's attempts since its last tick; the reason to stop early once they fill the window."""
        window = self.window
        if window is None:
            return None
        stop = False
        done = 0
        for n in failed:
            window.attempts += n - done - 1
            stop = window.record_failure() or stop
            done = n
        window.attempts += attempts - done
        if not stop:
            return None
        reason = f"stopped early: {window.failed} of the last {window.size} attempts failed"
        return reason if self.last_error is None else f"{reason} (last error: {self.last_error})"

    def clear(self) -> None:
        """Resumed: the window starts over, as one process's does."""
        if self.window is not None:
            self.window.clear()


def salvageable(failures: dict[int, CellFailure]) -> list[int]:
    """The failed cells a salvage round runs again: failed for good (dependents blocked) on a retryable error."""
    return sorted(cell for cell, failure in failures.items() if failure.action == "fail" and failure.retryable)
