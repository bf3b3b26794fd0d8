"""treadle: run LLM data pipelines over a table, cell by cell, and steer the run live."""

from treadle.api import arun, load, run, start
from treadle.engine.controller import RunController, Snapshot
from treadle.engine.errors import ConfigError, TreadleError
from treadle.engine.pipeline import PipelineConfig
from treadle.engine.result import RunResult

__all__ = [
    "ConfigError",
    "PipelineConfig",
    "RunController",
    "RunResult",
    "Snapshot",
    "TreadleError",
    "arun",
    "load",
    "run",
    "start",
]
