"""Headless runs (`treadle run --no-ui`): progress on a terminal or plain lines in CI, then a summary.

Uses rich for display; never imports textual.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from treadle.engine.controller import RunController, Snapshot
from treadle.engine.events import CacheUnavailable, RunFinished
from treadle.engine.result import RunResult

PLAIN_EVERY_S = 5.0
TICK_S = 0.2
_FINISHED = ("done", "failed", "blocked", "dropped", "degraded")


class Interrupts:
    """Ctrl-C / SIGTERM: the first stops new starts, a second one stops at once."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum, frame) -> None:
        self.count += 1

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _EventWriter:
    """The run's events: every one to `--events` (if given), and the warnings as lines on stderr."""

    def __init__(self, controller: RunController, target: str | None) -> None:
        self._queue = controller.subscribe()
        self._handle: IO[str] | None = None
        if target == "-":
            self._handle = sys.stdout
        elif target:
            self._handle = open(Path(target), "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def drain(self) -> None:
        handle = self._handle
        while not self._queue.empty():
            event = self._queue.get()
            if handle is not None:
                handle.write(event.to_json() + "\n")
            if isinstance(event.payload, CacheUnavailable):  # a path or an OS error may hold [brackets]: no markup
                warning = f"warning: {event.payload.message}"
                Console(stderr=True).print(warning, style="yellow", markup=False, highlight=False, soft_wrap=True)
        if handle is not None:
            handle.flush()

    def close(self) -> None:
        self.drain()
        if self._handle is not None and self._handle is not sys.stdout:
            self._handle.close()


def write_events_in_background(controller: RunController, target: str | None) -> None:
    """`--events FILE` while another display (the terminal app) owns the main thread."""
    if not target:
        return
    queue = controller.subscribe()

    def drain() -> None:
        with open(Path(target), "w", encoding="utf-8") as handle:
            while True:
                event = queue.get()
                handle.write(event.to_json() + "\n")
                handle.flush()
                if isinstance(event.payload, RunFinished):
                    return

    threading.Thread(target=drain, name="treadle-events", daemon=True).start()


def _done_cells(snapshot: Snapshot, column: str | None = None) -> int:
    counts = snapshot.cells if column is None else snapshot.by_column[column]
    return sum(counts[s] for s in _FINISHED)


def _plain_line(snapshot: Snapshot, rate: float) -> str:
    total = snapshot.total_cells
    done = _done_cells(snapshot)
    pct = 100.0 * done / total if total else 100.0
    eta = f"{(total - done) / rate:.0f}s" if rate > 0 else "?"
    c = snapshot.cells
    return (
        f"[{snapshot.elapsed_s:7.1f}s] {snapshot.status}: cells {done}/{total} ({pct:.1f}%) "
        f"done {c['done']} failed {c['failed']} blocked {c['blocked']} running {c['running']} "
        f"retry-wait {c['retry-wait']} | {rate:.1f} cells/s | ETA {eta}"
    )


def run_headless(
    controller: RunController,
    console: Console,
    interrupts: Interrupts,
    events: str | None = None,
    resumable: bool = True,
) -> RunResult:
    """Start the run, show progress until it ends, print the summary; returns the result.

    `interrupts` is installed by the caller, which takes Ctrl-C from before the run starts. `resumable`:
    `treadle resume` can go on with it (the summary says how), not so the demo's (its simulator is gone).
    """
    writer = _EventWriter(controller, events)
    live = console.is_terminal
    progress = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not live,
    )
    handled = 0
    stopped_early = False
    try:
        controller.start()
        first = controller.snapshot()
        overall = progress.add_task("all cells", total=first.total_cells, note="")
        column_tasks = {name: progress.add_task(f"  {name}", total=first.rows, note="") for name in first.columns}
        last_plain = time.monotonic()
        started = time.monotonic()

        def show(snapshot: Snapshot) -> float:
            rate = _done_cells(snapshot) / max(time.monotonic() - started, 1e-9)
            c = snapshot.cells
            note = f"failed {c['failed']}  running {c['running']}  {rate:,.0f} cells/s"
            progress.update(overall, completed=_done_cells(snapshot), note=note)
            for name, task in column_tasks.items():
                failed = snapshot.by_column[name]["failed"]
                note = f"failed {failed}" if failed else ""
                progress.update(task, completed=_done_cells(snapshot, name), note=note)
            return rate

        with progress:
            while (result := controller.wait(TICK_S)) is None:
                if interrupts.count > handled:
                    handled = interrupts.count
                    if handled == 1:
                        grace = controller.options.grace_s
                        console.print(
                            f"[yellow]stopping: running cells may finish within {grace:g} s "
                            "(press Ctrl-C again to stop now)[/]"
                        )
                        controller.cancel()
                    else:
                        controller.abort()
                writer.drain()
                snapshot = controller.snapshot()
                if snapshot.status == "paused" and snapshot.message and not stopped_early:
                    # Early stop paused the run: headless, nobody can look into it, so end it here.
                    stopped_early = True
                    Console(stderr=True).print(f"[red]{snapshot.message}[/]", highlight=False, soft_wrap=True)
                    controller.cancel()
                rate = show(snapshot)
                if not live and time.monotonic() - last_plain >= PLAIN_EVERY_S:
                    last_plain = time.monotonic()
                    console.print(_plain_line(snapshot, rate), highlight=False, soft_wrap=True)
            show(controller.snapshot())
    finally:
        writer.close()
    print_summary(console, result, resumable)
    return result


def print_summary(console: Console, result: RunResult, resumable: bool = True) -> None:
    """The run's end: how it ended, each column's counts and latencies, where its files are."""
    print_headline(console, result)
    table = Table(title=None, box=None, pad_edge=False)
    for header in ("column", "done", "failed", "blocked", "p50 s", "p95 s"):
        table.add_column(header, justify="left" if header == "column" else "right")
    for name, column in result.record.columns.items():
        cells, latency = column.cells, column.latency_s
        table.add_row(
            name,
            str(cells["done"]),
            str(cells["failed"]),
            str(cells["blocked"]),
            f"{latency.p50:.3f}",
            f"{latency.p95:.3f}",
        )
    console.print(table)
    print_where(console, result, resumable)


def print_headline(console: Console, result: RunResult) -> None:
    """How the run ended, in one line, and the message that ended it early (on stderr)."""
    summary = result.record
    rows = summary.rows
    counts = (
        "rows not recorded"  # a summary.json by hand or from an older tool; a run always records them
        if rows is None
        else f"{rows.done}/{rows.total} rows done, {rows.failed} failed, {rows.dropped} dropped"
        + (f", {rows.filtered} filtered" if rows.filtered else "")
        + (f", {rows.unfinished} unfinished" if rows.unfinished else "")
    )
    if result.status == "done":
        headline = f"[bold green]done[/] in {summary.wall_s:.2f} s: {counts}"
    elif result.status == "interrupted":
        headline = f"[bold yellow]interrupted[/] after {summary.wall_s:.2f} s: {counts}"
    elif result.message:
        headline = f"[bold red]stopped early[/] after {summary.wall_s:.2f} s: {counts}"
    else:
        headline = f"[bold]finished[/] in {summary.wall_s:.2f} s [red]with failed rows[/]: {counts}"
    console.print(headline, highlight=False, soft_wrap=True)
    if result.message:
        Console(stderr=True).print(f"[red]{result.message}[/]", highlight=False, soft_wrap=True)


def print_where(console: Console, result: RunResult, resumable: bool = True) -> None:
    """Where the run's files are; for a run stopped before its end, how to go on with it (if `resumable`)."""
    outputs = result.record.outputs
    console.print(f"output:   {outputs.output}", highlight=False, soft_wrap=True)
    console.print(f"failures: {outputs.failures}", highlight=False, soft_wrap=True)
    console.print(f"summary:  {outputs.summary}", highlight=False, soft_wrap=True)
    if result.status == "interrupted" and resumable:
        console.print(f"resume:   treadle resume {result.run_dir}", highlight=False, soft_wrap=True)
