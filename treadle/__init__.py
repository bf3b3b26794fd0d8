"""treadle: run LLM data pipelines over a table, cell by cell, and steer the run live.

Names are imported on first use, so `python -m treadle.sim` and `treadle --help` start without
loading pandas and the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from treadle.api import arun, load, resume, run, start
    from treadle.engine.controller import RunController, Snapshot
    from treadle.engine.errors import ConfigError, TreadleError
    from treadle.engine.pipeline import PipelineConfig
    from treadle.engine.result import RunResult

_EXPORTS = {
    "arun": "treadle.api",
    "load": "treadle.api",
    "resume": "treadle.api",
    "run": "treadle.api",
    "start": "treadle.api",
    "RunController": "treadle.engine.controller",
    "Snapshot": "treadle.engine.controller",
    "ConfigError": "treadle.engine.errors",
    "TreadleError": "treadle.engine.errors",
    "PipelineConfig": "treadle.engine.pipeline",
    "RunResult": "treadle.engine.result",
}

__all__ = [
    "ConfigError",
    "PipelineConfig",
    "RunController",
    "RunResult",
    "Snapshot",
    "TreadleError",
    "arun",
    "load",
    "resume",
    "run",
    "start",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'treadle' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
