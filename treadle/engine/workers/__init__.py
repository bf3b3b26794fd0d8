"""Several engine processes on one machine (`--workers N`, `run.workers: N`), or Ray actors on many
(`--executor ray`).

The unit of work is the row group. The parent process (parent.py) owns the run and its directory: it
hands row groups to N worker processes (worker.py), each a real engine running the same Scheduler
over the groups it is given, shares out the limits, passes commands on, and writes the run directory
with the same files as one process. Messages between them: messages.py; the parent's side of the
processes: pool.py, which has them forked from a warm process (forkserver.py); of Ray actors:
ray_pool.py (the actor: ray_worker.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from treadle.engine.errors import TreadleError

if TYPE_CHECKING:  # the engine is imported when a run opens: `forkserver` can start before that
    from treadle.engine.column_edits import Versions
    from treadle.engine.controller import RunController
    from treadle.engine.pipeline_validation import LoadedPipeline
    from treadle.engine.resume import Recovery
    from treadle.engine.run import RunOptions


def open_controller(
    loaded: LoadedPipeline,
    options: RunOptions | None = None,
    *,
    recovery: Recovery | None = None,
    versions: Versions | None = None,
) -> RunController:
    """The controller of a run: on this process's engine thread (one worker: the usual path), or the
    parent of `RunOptions.workers` (else run.workers) engine processes."""
    from treadle.engine.controller import RunController
    from treadle.engine.run import RunOptions

    options = options or RunOptions()
    run = loaded.config.run
    ray = (options.executor or run.executor) == "ray"
    if ray:
        _check_ray()
    if (options.workers or run.workers) > 1 or ray:
        from treadle.engine.workers.controller import WorkersController  # process machinery, only when used

        if not ray:
            from treadle.engine.workers.forkserver import FORK_SERVER

            FORK_SERVER.start()  # its imports go on while this process opens the run (and the terminal app)
        return WorkersController(loaded, options, recovery=recovery, versions=versions)
    return RunController(loaded, options, recovery=recovery, versions=versions)


def _check_ray() -> None:
    """Ray is an optional extra: without it, one line saying how to get it (before anything starts)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise TreadleError("--executor ray needs Ray: pip install 'treadle[ray]'") from None
