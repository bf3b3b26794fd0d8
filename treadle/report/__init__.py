"""Reports of a run: where did the time go, what was my real concurrency, what did it cost.

`print_report` prints rich tables to a console; `write_html_report` writes one self-contained HTML
file (inline CSS and SVG charts drawn here: no script, no network). Both read the run directory
through `treadle.engine.analysis.metrics.measure_run` (and, for a run on several processes,
`treadle.engine.analysis.per_worker.measure_workers`). PNG charts are not offered: no installed
library draws them (matplotlib and Pillow are not dependencies).

Modules: `tables` (the tables both show, as plain rows), `console` (rich), `html_page` (HTML and SVG),
`text` (numbers as text), `prices` (a prices file).
"""

from treadle.report.console import print_report
from treadle.report.html_page import render_html, write_html_report
from treadle.report.prices import load_prices
from treadle.report.tables import (
    PACE_SOURCES,
    adaptive_change_rows,
    cache_line,
    first_row_text,
    pace_text,
    rate_limit_rows,
)
from treadle.report.text import sparkline

__all__ = [
    "PACE_SOURCES",
    "adaptive_change_rows",
    "cache_line",
    "first_row_text",
    "load_prices",
    "pace_text",
    "print_report",
    "rate_limit_rows",
    "render_html",
    "sparkline",
    "write_html_report",
]
