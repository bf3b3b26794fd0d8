"""Fixtures for the TUI tests: the test columns module, and started controllers that are always stopped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tui_helpers import TUI_DATA

import treadle
from treadle.engine.controller import RunController
from treadle.engine.run import RunOptions


@pytest.fixture
def tui_cols():
    if str(TUI_DATA) not in sys.path:
        sys.path.insert(0, str(TUI_DATA))
    import tui_cols

    tui_cols.reset()
    yield tui_cols
    tui_cols.release()


@pytest.fixture
def make_controller(tmp_path, probe):
    """A started RunController held open; every one made is stopped after the test."""
    made: list[RunController] = []

    def make(config: dict, out: Path | None = None, base_dir: Path = TUI_DATA, **options) -> RunController:
        loaded = treadle.load(config, base_dir=base_dir)
        controller = RunController(loaded, RunOptions(out=out or tmp_path / "run", hold_open=True, **options))
        made.append(controller)
        return controller.start()

    yield make
    probe.open_gate()  # cells a failed test left at the gate finish before their loop closes
    for controller in made:
        if not controller.finished:  # a failed test left it running
            controller.abort()
            controller.wait(30)
