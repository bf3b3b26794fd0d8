"""The Python API: run a pipeline from a script, a notebook, or async code.

The run always happens on the engine's own thread and loop, so `run()` works the same from a plain
script and from inside a running event loop (a Jupyter cell): it never nests `asyncio.run`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from treadle.engine.controller import RunController
from treadle.engine.pipeline import PipelineConfig
from treadle.engine.pipeline_loading import load_pipeline
from treadle.engine.pipeline_validation import LoadedPipeline, load_pipeline_config
from treadle.engine.response_cache import CacheMode
from treadle.engine.result import RunResult
from treadle.engine.run import RunOptions
from treadle.engine.workers import open_controller

PipelineLike = str | Path | PipelineConfig | dict[str, Any] | LoadedPipeline


def load(pipeline: PipelineLike, base_dir: str | Path | None = None) -> LoadedPipeline:
    """Load and validate a pipeline given as a file path, a config model, a dict, or already loaded."""
    if isinstance(pipeline, LoadedPipeline):
        return pipeline
    if isinstance(pipeline, str | Path):
        return load_pipeline(pipeline)
    return load_pipeline_config(pipeline, Path(base_dir or "."))


def _options(out: str | Path | None, **options: Any) -> RunOptions:
    return RunOptions(out=Path(out) if out is not None else None, **options)


def start(
    pipeline: PipelineLike,
    *,
    out: str | Path | None = None,
    rows: int | None = None,
    max_parallel: int | None = None,
    base_dir: str | Path | None = None,
    hold_open: bool = False,
    cache: CacheMode = "use",
    workers: int | None = None,
) -> RunController:
    """Start a run and return its controller (pause, resume, set_limit, retry, drop, snapshot).

    With `hold_open` the run waits, once every cell has finished, for retries or drops until
    `controller.close()`. `cache`: "use" the response cache, leave it "off", or "refresh" its answers.
    `workers`: engine processes (overrides run.workers; with more than one, a run is never held open).
    """
    options = _options(out, rows=rows, max_parallel=max_parallel, hold_open=hold_open, cache=cache, workers=workers)
    return open_controller(load(pipeline, base_dir), options).start()


def run(
    pipeline: PipelineLike,
    *,
    out: str | Path | None = None,
    rows: int | None = None,
    max_parallel: int | None = None,
    base_dir: str | Path | None = None,
    cache: CacheMode = "use",
    workers: int | None = None,
) -> RunResult:
    """Run a pipeline to the end and return its result (blocks the calling thread)."""
    controller = start(
        pipeline, out=out, rows=rows, max_parallel=max_parallel, base_dir=base_dir, cache=cache, workers=workers
    )
    result = controller.wait()
    assert result is not None
    return result


def resume(
    run_dir: str | Path,
    *,
    pipeline: PipelineLike | None = None,
    recompute: tuple[str, ...] | list[str] = (),
    base_dir: str | Path | None = None,
    workers: int | None = None,
) -> RunResult:
    """Finish an interrupted or failed run in its directory; finished cells are never run again."""
    loaded = None if pipeline is None else load(pipeline, base_dir)
    controller = RunController.from_run_dir(run_dir, pipeline=loaded, recompute=recompute, workers=workers).start()
    result = controller.wait()
    assert result is not None
    return result


async def arun(
    pipeline: PipelineLike,
    *,
    out: str | Path | None = None,
    rows: int | None = None,
    max_parallel: int | None = None,
    base_dir: str | Path | None = None,
    workers: int | None = None,
) -> RunResult:
    """Run a pipeline without blocking the caller's event loop; cancelling it stops the run."""
    loaded = await asyncio.to_thread(load, pipeline, base_dir)
    options = _options(out, rows=rows, max_parallel=max_parallel, workers=workers)
    controller = open_controller(loaded, options).start()
    try:
        result = await asyncio.to_thread(controller.wait)
    except asyncio.CancelledError:
        controller.abort()
        raise
    assert result is not None
    return result
