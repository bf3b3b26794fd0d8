"""What a finished run gives back to a script or notebook."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from treadle.engine.summary_record import RunSummary

if TYPE_CHECKING:
    from treadle.engine.run import Run

EXIT_CODES = {"done": 0, "failed": 1, "interrupted": 130}


@dataclass
class RunResult:
    run_dir: Path
    status: str
    """done (every row done), failed (some rows failed, or the run stopped early), interrupted."""
    summary: dict[str, Any] = field(repr=False)
    """What summary.json holds, as JSON: a script may add its own keys (the demo adds `accuracy`) and write
    it back. `record` is the same, typed."""
    message: str | None = None

    @classmethod
    def from_run(cls, run: Run) -> RunResult:
        return cls(run_dir=run.directory.path, status=run.status, summary=run.summary, message=run.message)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResult:
        """The result of a finished run from its run directory."""
        path = Path(run_dir)
        summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        record = RunSummary.from_json(summary)
        return cls(run_dir=path, status=record.status, summary=summary, message=record.message)

    @property
    def record(self) -> RunSummary:
        """`summary` as its typed record (read from the dict each time: a script may have changed it); keys
        it does not know are kept (`record.model_extra`)."""
        return RunSummary.from_json(self.summary)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    @property
    def output_path(self) -> Path:
        return self.run_dir / "output.parquet"

    @cached_property
    def output(self) -> pd.DataFrame:
        """One row per seed row that was not dropped; cells that did not finish are null."""
        return pd.read_parquet(self.output_path)

    @cached_property
    def failures(self) -> list[dict[str, Any]]:
        path = self.run_dir / "failures.jsonl"
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
