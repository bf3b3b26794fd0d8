"""Reading a run directory for its analysis: summary.json (the trace: treadle.engine.trace_reader)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from treadle.engine.errors import ConfigError, Problem
from treadle.engine.summary_record import RunSummary


def load_summary(run_dir: Path) -> RunSummary | None:
    """summary.json of a run directory as its record, or None if the run has not written one (yet).
    A summary.json that is not JSON, or whose values have the wrong types, is a ConfigError."""
    path = Path(run_dir) / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), f"unreadable summary: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem(str(path), "unreadable summary: not a JSON object")])
    try:
        return RunSummary.from_json(data)
    except ValidationError as exc:
        problems = [
            Problem(str(path), f"unreadable summary: {error['msg']}", key=".".join(str(part) for part in error["loc"]))
            for error in exc.errors()
        ]
        raise ConfigError(problems) from None
