"""Helpers for driving the real app over real runs: pipelines of python columns and `until`, for the
few waits on the engine thread that cannot be avoided."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from rich.console import Console

TUI_DATA = Path(__file__).parent / "data"
PROBE_DIR = Path(__file__).parents[1] / "data" / "probe"


def pipeline(tmp_path: Path, rows: int, columns: list[dict], **run) -> dict:
    seed = tmp_path / "seed.csv"
    pd.DataFrame({"id": range(rows)}).to_csv(seed, index=False)
    return {
        "seed": {"path": str(seed)},
        "columns": columns,
        "run": {"name": "tui", "row_group_size": 10, "row_groups_in_flight": 100, "max_parallel": 4, **run},
    }


async def until(pilot, predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Let the app run until `predicate()` holds (it reads the engine thread's doing); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline or not pilot.app.is_running:
            ended = "the app exited" if not pilot.app.is_running else f"timed out after {timeout} s"
            raise AssertionError(f"{ended} waiting for {what or predicate}")
        await pilot.pause(0.05)


def plain(widget) -> str:
    """The text a Static shows, without styles."""
    console = Console(width=200, file=io.StringIO(), color_system=None)
    console.print(widget.content)
    return console.file.getvalue()
