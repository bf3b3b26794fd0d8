"""What bounds a run's work in flight, handed to the scheduler as one value."""

from __future__ import annotations

from dataclasses import dataclass

from treadle.engine.limits import Limit
from treadle.engine.rate_limits import ModelRate


@dataclass(frozen=True)
class Capacity:
    """What bounds the work in flight."""

    limits: dict[str, Limit]
    """Row groups in flight (ROW_GROUPS), execution slots (SLOTS), and one per model (`model_limit`)."""
    rates: dict[str, ModelRate]
    """Per model limit name: when its requests may start (ceiling, budgets, adaptive pace)."""
    python_threads: int
    """Threads for sync python functions."""
