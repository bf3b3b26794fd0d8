"""The terminal UI (Textual). Imported only by `treadle run`/`treadle demo` without `--no-ui`."""

from __future__ import annotations

from collections.abc import Mapping

from treadle.engine.controller import RunController
from treadle.engine.result import RunResult

__all__ = ["run_tui"]


def run_tui(controller: RunController, *, keymap: Mapping[str, str] | None = None) -> RunResult:
    """Start the run, show the app until the person quits, and return the run's result.

    Create the controller with `RunOptions(hold_open=True)` so failed cells can be retried after
    every cell has finished; quitting then closes the run. Quitting mid-run stops it (running cells
    get the grace period) and leaves a resumable run directory.
    """
    from treadle.tui.app import TreadleApp

    app = TreadleApp(controller, keymap=keymap)
    controller.start()
    try:
        app.run()
    finally:
        if not controller.finished:
            # The app left without stopping the run (an error, a signal): keep what is done.
            controller.abort()
    result = controller.wait()
    assert result is not None
    return result
