"""Reading a run directory for its analysis: summary.json (the trace: treadle.engine.trace_reader)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from treadle.engine.errors import ConfigError, Problem


def load_summary(run_dir: Path) -> dict[str, Any] | None:
    """summary.json of a run directory, or None if the run has not written one (yet)."""
    path = Path(run_dir) / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), f"unreadable summary: {exc}")]) from None
