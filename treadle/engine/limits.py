"""Named concurrency limits that a person can resize while the run goes on."""

from __future__ import annotations

from dataclasses import dataclass

ROW_GROUPS = "row_groups"
SLOTS = "slots"


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
