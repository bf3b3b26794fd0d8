"""Screenshots of a finished (idle) run with two known failures, at 160x48 and 80x24.

The run is deterministic (async cells on the engine loop, a fixed clock, latencies left out of the
summary, a relative run directory). Update after a deliberate change: pytest tests/tui --snapshot-update
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_helpers import pipeline, until

from treadle.tui.app import TreadleApp
from treadle.tui.screens import SummaryScreen

CHECKED = [
    {"name": "answer", "kind": "python", "function": "tui_cols:checked"},
    {"name": "sentence", "kind": "template", "template": "the answer is {{ answer }}"},
    {"name": "shout", "kind": "template", "template": "{{ sentence | upper }}!"},
]


@pytest.fixture
def finished_app(tmp_path, monkeypatch, tui_cols, make_controller):
    """An app over a 14-row run whose rows 1 and 5 fail; ready once the run is idle."""
    monkeypatch.chdir(tmp_path)
    tui_cols.failing.update({1, 5})

    def make(**options) -> tuple[TreadleApp, object]:
        controller = make_controller(pipeline(tmp_path, 14, CHECKED), out=Path("run"))
        app = TreadleApp(controller, clock=lambda: 1000.0, show_latency=False, **options)

        async def ready(pilot) -> None:
            await until(pilot, lambda: app.status == "idle" and len(app.failures) == 2, what="the idle run")
            await pilot.pause()

        return app, ready

    return make


def test_main_screen_wide(snap_compare, finished_app):
    app, ready = finished_app(summary_on_idle=False)
    assert snap_compare(app, terminal_size=(160, 48), run_before=ready)


def test_main_screen_small(snap_compare, finished_app):
    app, ready = finished_app(summary_on_idle=False)
    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)


def test_failed_panel_small(snap_compare, finished_app):
    app, ready = finished_app(summary_on_idle=False)
    assert snap_compare(app, terminal_size=(80, 24), run_before=ready, press=["3"])


def test_summary(snap_compare, finished_app):
    app, ready = finished_app()

    async def summary_shown(pilot) -> None:
        await ready(pilot)
        await until(pilot, lambda: isinstance(app.screen, SummaryScreen), what="the summary")

    assert snap_compare(app, terminal_size=(120, 36), run_before=summary_shown)
