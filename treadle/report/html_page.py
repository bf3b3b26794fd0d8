"""The report as one self-contained HTML page: the tables, and SVG charts drawn inline (no script, no
stylesheet or font from elsewhere: it opens offline and can be mailed)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from treadle.engine.analysis.cost import Prices
from treadle.engine.analysis.metrics import measure_run
from treadle.engine.analysis.metrics_record import RunMetrics
from treadle.engine.analysis.per_worker import WorkerUse, measure_workers
from treadle.engine.analysis.series import nice_width
from treadle.report.tables import Section, cache_line, headline, sections, worker_lines

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1100px;color:#222;
padding:0 16px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}tr.all td{font-weight:600}
.note{color:#666;font-size:12px}.chart{margin:6px 0 14px}svg text{font-size:11px;fill:#555}
.legend span{display:inline-block;margin-right:14px;font-size:12px}.sw{display:inline-block;width:12px;height:3px;
vertical-align:middle;margin-right:4px}
"""
_W, _H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 1000, 210, 48, 12, 22, 24
_WORKER_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#eeca3b", "#9d755d")


def _ticks(top: float, n: int = 4) -> list[float]:
    if top <= 0:
        return [0.0]
    step = nice_width(top, n)
    ticks, value = [], 0.0
    while value <= top * 1.0001:
        ticks.append(value)
        value += step
    return ticks


def _fmt_tick(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.2e}"


class _Chart:
    """An SVG chart with a time axis from 0 to `wall` seconds."""

    def __init__(self, wall: float, top: float, unit: str) -> None:
        self.wall = wall if wall > 0 else 1.0
        self.top = top if top > 0 else 1.0
        self.unit = unit
        self.parts: list[str] = []

    def x(self, t: float) -> float:
        return _PAD_L + (_W - _PAD_L - _PAD_R) * min(max(t / self.wall, 0.0), 1.0)

    def y(self, v: float) -> float:
        return _H - _PAD_B - (_H - _PAD_T - _PAD_B) * min(max(v / self.top, 0.0), 1.0)

    def steps(self, times: Sequence[float], values: Sequence[float], colour: str, dash: bool = False) -> None:
        if not times:
            return
        d = [f"M{self.x(times[0]):.1f},{self.y(values[0]):.1f}"]
        for t, v in zip(times[1:], values[1:], strict=True):
            d.append(f"H{self.x(t):.1f}V{self.y(v):.1f}")
        d.append(f"H{self.x(self.wall):.1f}")
        extra = ' stroke-dasharray="6 4"' if dash else ""
        self.parts.append(f'<path d="{"".join(d)}" fill="none" stroke="{colour}" stroke-width="1.5"{extra}/>')

    def bars(self, starts: Sequence[float], width: float, values: Sequence[float], colour: str, base=None) -> None:
        base = base or [0.0] * len(values)
        w = max(self.x(width) - self.x(0) - 0.5, 0.5)
        for t, v, b in zip(starts, values, base, strict=True):
            if v <= 0:
                continue
            y0, y1 = self.y(b), self.y(b + v)
            self.parts.append(
                f'<rect x="{self.x(t):.1f}" y="{y1:.1f}" width="{w:.1f}" height="{max(y0 - y1, 0.5):.1f}" '
                f'fill="{colour}"/>'
            )

    def svg(self, label: str) -> str:
        grid = []
        for tick in _ticks(self.top):
            y = self.y(tick)
            grid.append(f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
            grid.append(f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt_tick(tick)}</text>')
        for tick in _ticks(self.wall, 8):
            x = self.x(tick)
            grid.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_PAD_T}" y2="{_H - _PAD_B}" stroke="#f3f3f3"/>')
            grid.append(f'<text x="{x:.1f}" y="{_H - 8}" text-anchor="middle">{_fmt_tick(tick)} s</text>')
        axis = (
            f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{_H - _PAD_B}" y2="{_H - _PAD_B}" stroke="#999"/>'
            f'<text x="4" y="12">{html.escape(self.unit)}</text>'
        )
        return (
            f'<svg class="chart" viewBox="0 0 {_W} {_H}" width="100%" role="img" aria-label="{html.escape(label)}">'
            + "".join(grid)
            + axis
            + "".join(self.parts)
            + "</svg>"
        )


def _legend(items: Sequence[tuple[str, str]]) -> str:
    spans = "".join(f'<span><i class="sw" style="background:{c}"></i>{html.escape(t)}</span>' for t, c in items)
    return f'<div class="legend">{spans}</div>'


def _workers_chart(m: RunMetrics, workers: Sequence[WorkerUse]) -> str:
    """Each worker's cells in flight, one line each (a run on several processes)."""
    chart = _Chart(m.wall_s, max((w.peak_in_flight for w in workers), default=0) * 1.05, "cells")
    legend = []
    for i, w in enumerate(workers):
        colour = _WORKER_COLOURS[i % len(_WORKER_COLOURS)]
        chart.steps(w.in_flight_t, w.in_flight_v, colour)
        legend.append((f"worker {w.worker}", colour))
    return "<h2>Cells in flight per worker</h2>" + _legend(legend) + chart.svg("cells in flight per worker")


def _charts(m: RunMetrics, workers: Sequence[WorkerUse] = ()) -> str:
    """Throughput, cells in flight against the slot limit (and per worker), cells queued, and each
    model's requests."""
    wall = m.wall_s
    tp = m.throughput
    width = tp.bucket_s
    done = [n / width for n in tp.done]
    failed = [n / width for n in tp.failed]
    top = max((d + f for d, f in zip(done, failed, strict=True)), default=0.0)
    chart = _Chart(wall, top, "cells/s")
    chart.bars(tp.t, width, done, "#4c78a8")
    chart.bars(tp.t, width, failed, "#e45756", base=done)
    out = ["<h2>Throughput</h2>" + _legend([("done", "#4c78a8"), ("failed", "#e45756")]) + chart.svg("throughput")]

    slots = m.limits.get("slots")
    limit_series = (slots.series if slots else None) or []
    in_flight = m.in_flight
    top = max([*in_flight.v, *(v for _, v in limit_series)], default=0)
    chart = _Chart(wall, top * 1.05, "cells")
    chart.steps(in_flight.t, in_flight.v, "#4c78a8")
    if limit_series:
        chart.steps([t for t, _ in limit_series], [v for _, v in limit_series], "#e45756", dash=True)
    out.append(
        "<h2>Cells in flight and the slot limit</h2>"
        + _legend([("cells in flight", "#4c78a8"), ("slot limit", "#e45756")])
        + chart.svg("cells in flight")
    )
    if workers:
        out.append(_workers_chart(m, workers))

    queued = m.queued
    chart = _Chart(wall, max(queued.v, default=0) * 1.05, "cells")
    chart.steps(queued.t, queued.v, "#f58518")
    out.append("<h2>Cells queued (ready, waiting for a slot or a model)</h2>" + chart.svg("cells queued"))

    for model, info in m.models.items():
        series = info.in_flight
        limit = info.limit_series or []
        top = max([*series.v, *(v for _, v in limit)], default=0)
        chart = _Chart(wall, top * 1.05, "requests")
        chart.steps(series.t, series.v, "#54a24b")
        if limit:
            chart.steps([t for t, _ in limit], [v for _, v in limit], "#e45756", dash=True)
        out.append(
            f"<h2>Model {html.escape(model)}: requests in flight and its limit</h2>"
            + _legend([("requests in flight", "#54a24b"), ("limit", "#e45756")])
            + chart.svg(f"model {model}")
        )
    return "\n".join(out)


def _html_table(section: Section) -> str:
    title, headers, rows, note = section
    if not rows:
        return f'<h2>{html.escape(title)}</h2><p class="note">{html.escape(note or "nothing to show")}</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cls = ' class="all"' if row and row[0] == "all" else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{''.join(body)}</table>{note_html}"


def render_html(
    metrics: RunMetrics | Mapping[str, Any], refresh_s: int | None = None, workers: Sequence[WorkerUse] = ()
) -> str:
    """The self-contained HTML report of a run's metrics, or of their JSON from `run_metrics` (reloading
    every `refresh_s`); `workers`: theirs, for a run on several processes (`measure_workers`). Reads no file."""
    m = metrics if isinstance(metrics, RunMetrics) else RunMetrics.from_json(metrics)
    tables = "\n".join(_html_table(section) for section in sections(m, workers))
    title = html.escape(f"treadle report: {m.name or Path(m.run_dir).name}")
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    cache = cache_line(None if m.summary is None else m.summary.cache)
    head_html = "".join(f"<p>{html.escape(line)}</p>\n" for line in [*worker_lines(workers), *filter(None, [cache])])
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{refresh}<title>{title}</title><style>{_CSS}</style></head>\n'
        f"<body><h1>{title}</h1><p>{html.escape(headline(m))}</p>\n{head_html}"
        f"{_charts(m, workers) if m.has_trace else ''}\n{tables}\n"
        f'<p class="note">run directory: {html.escape(m.run_dir)}</p></body></html>\n'
    )


def write_html_report(run_dir: Path, out: Path, prices: Prices | None = None, *, events: Path | None = None) -> None:
    """Write a self-contained HTML report (inline CSS and SVG charts, nothing fetched) to `out`."""
    m = measure_run(Path(run_dir), prices, events=events)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(m, workers=measure_workers(Path(run_dir), m.wall_s)), encoding="utf-8")
    tmp.replace(out)
