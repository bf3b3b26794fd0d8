"""The Python API: run a pipeline from a script, a notebook, or async code.

The run always happens on the engine's own thread and loop, so `run()` works the same from a plain
script and from inside a running event loop (a Jupyter cell): it never nests `asyncio.run`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

from treadle.engine.controller import RunController
from treadle.engine.pipeline import PipelineConfig
from treadle.engine.pipeline_loading import load_pipeline
from treadle.engine.pipeline_validation import LoadedPipeline, load_pipeline_config
from treadle.engine.response_cache import CacheMode
from treadle.engine.result import RunResult
from treadle.engine.run import RunOptions
from treadle.engine.workers import open_controller

PipelineLike = str | Path | PipelineConfig | dict[str, Any] | LoadedPipeline
Executor = Literal["local", "ray"]


def load(pipeline: PipelineLike, base_dir: str | Path | None = None) -> LoadedPipeline:
    """Load and validate a pipeline given as a file path, a config model, a dict, or already loaded."""
    if isinstance(pipeline, LoadedPipeline):
        return pipeline
    if isinstance(pipeline, str | Path):
        return load_pipeline(pipeline)
    return load_pipeline_config(pipeline, Path(base_dir or "."))


def _checked_executor(executor: str | None) -> Executor | None:
    """`executor=` as the CLI's --executor takes it: a typo is an error, not a run in this process."""
    if executor not in (None, "local", "ray"):
        raise ValueError(f"executor: expected 'local' or 'ray', got {executor!r}")
    return executor  # type: ignore[return-value]  # checked just above


def _options(out: str | Path | None, executor: str | None = None, **options: Any) -> RunOptions:
    return RunOptions(out=Path(out) if out is not None else None, executor=_checked_executor(executor), **options)


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
    executor: Executor | None = None,
    ray_address: str | None = None,
) -> RunController:
    """Start a run and return its controller (pause, resume, set_limit, retry, drop, snapshot).

    With `hold_open` the run waits, once every cell has finished, for retries or drops until
    `controller.close()`. `cache`: "use" the response cache, leave it "off", or "refresh" its answers.
    `workers`: engine processes (overrides run.workers; with more than one, a run is never held open).
    `executor`: where they run, "local" processes or "ray" actors (overrides run.executor; Ray is an
    extra, `pip install 'treadle[ray]'`); `ray_address`: the Ray cluster (overrides run.ray_address;
    none: a local Ray, or the one this process has already started). Ray that is missing or cannot be
    reached raises a TreadleError saying so.
    """
    options = _options(
        out,
        executor,
        rows=rows,
        max_parallel=max_parallel,
        hold_open=hold_open,
        cache=cache,
        workers=workers,
        ray_address=ray_address,
    )
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
    executor: Executor | None = None,
    ray_address: str | None = None,
) -> RunResult:
    """Run a pipeline to the end and return its result (blocks the calling thread); the arguments as
    for `start`."""
    controller = start(
        pipeline,
        out=out,
        rows=rows,
        max_parallel=max_parallel,
        base_dir=base_dir,
        cache=cache,
        workers=workers,
        executor=executor,
        ray_address=ray_address,
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
    executor: Executor | None = None,
    ray_address: str | None = None,
) -> RunResult:
    """Finish an interrupted or failed run in its directory; finished cells are never run again.
    `workers`, `executor` and `ray_address` as for `start` (a run may go on with other workers than it began with)."""
    loaded = None if pipeline is None else load(pipeline, base_dir)
    options = _options(None, executor, workers=workers, ray_address=ray_address)
    controller = RunController.from_run_dir(run_dir, pipeline=loaded, recompute=recompute, options=options).start()
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
    executor: Executor | None = None,
    ray_address: str | None = None,
) -> RunResult:
    """Run a pipeline without blocking the caller's event loop; cancelling it stops the run. The
    arguments as for `start`."""
    loaded = await asyncio.to_thread(load, pipeline, base_dir)
    options = _options(out, executor, rows=rows, max_parallel=max_parallel, workers=workers, ray_address=ray_address)
    controller = open_controller(loaded, options).start()
    try:
        result = await asyncio.to_thread(controller.wait)
    except asyncio.CancelledError:
        controller.abort()
        raise
    assert result is not None
    return result
