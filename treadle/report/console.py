"""The report in a terminal: rich tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from treadle.engine.analysis.cost import Prices
from treadle.engine.analysis.metrics import measure_run
from treadle.engine.analysis.per_worker import measure_workers
from treadle.report.tables import cache_line, headline, sections, worker_lines


def print_report(run_dir: Path, console: Console, prices: Prices | None = None, *, events: Path | None = None) -> None:
    """Print the report of a run directory: time, concurrency, cost, errors, throughput."""
    m = measure_run(Path(run_dir), prices, events=events)
    workers = measure_workers(Path(run_dir), m.wall_s)
    console.print(Text(headline(m), style="bold"), soft_wrap=True)
    for worker_line in worker_lines(workers):
        console.print(Text(worker_line), soft_wrap=True)
    if line := cache_line(None if m.summary is None else m.summary.cache):
        console.print(Text(line), soft_wrap=True)
    for title, headers, rows, note in sections(m, workers):
        if not rows:
            console.print(Text(title, style="bold"))
            console.print(Text(note or "nothing to show", style="dim"))
            continue
        table = Table(title=title, title_justify="left", title_style="bold")
        for i, header in enumerate(headers):
            table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in rows:
            table.add_row(*row, style="bold" if row and row[0] == "all" else None)
        parts: list[Any] = [table]
        if note:
            parts.append(Text(note, style="dim"))
        console.print(Group(*parts))
