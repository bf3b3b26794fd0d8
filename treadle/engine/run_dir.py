"""A new run's directory: `--out` checked, or a fresh `runs/<name>-<timestamp>` claimed; then created
with its run record (run.json)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from treadle.engine.errors import ConfigError, Problem
from treadle.engine.outputs import RunDirectory
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.resume import RunRecord

if TYPE_CHECKING:
    from treadle.engine.run import RunOptions

_MAX_SAME_SECOND_RUNS = 10_000


def claim_default_run_dir(name: str) -> RunDirectory:
    """A new, empty `runs/<name>-<timestamp>[-N]`, made here: mkdir is atomic, so runs started at the
    same second (threads, processes, a notebook cell run twice) each get their own."""
    base = Path("runs") / f"{name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, _MAX_SAME_SECOND_RUNS + 1):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError([Problem(str(path), f"cannot create the run directory: {exc.strerror}")]) from exc
        return RunDirectory(path, claimed=True)
    raise ConfigError([Problem(str(base), f"{_MAX_SAME_SECOND_RUNS:,} runs already started this second")])


def new_run_dir(loaded: LoadedPipeline, options: RunOptions) -> RunDirectory:
    """Where a new run goes: `options.out` if it holds nothing (created later, by `create_run_dir`),
    else a fresh default directory, claimed now (`RunDirectory.release` gives it back)."""
    path = options.out
    if path is None:
        return claim_default_run_dir(loaded.name)
    if (path / "run.json").exists():
        raise ConfigError(
            [Problem(str(path), f"already holds a run: finish it with 'treadle resume {path}' or choose another --out")]
        )
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError([Problem(str(path), "the output directory is not empty; choose another --out")])
    return RunDirectory(path)


def create_run_dir(directory: RunDirectory, loaded: LoadedPipeline, options: RunOptions) -> None:
    """Create the run directory and its run record (run.json)."""
    path = directory.path
    try:
        directory.create()
        RunRecord(
            name=loaded.name,
            pipeline=None if loaded.path is None else str(loaded.path),
            source_hash=loaded.source_hash,
            columns=list(loaded.graph.order),
            seed_rows=len(loaded.seed.frame),
            rows=options.rows,
            max_parallel=options.max_parallel,
        ).write(directory)
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot write the run directory: {exc.strerror}")]) from exc
