"""Reports of a run: where did the time go, what was my real concurrency, what did it cost.

`print_report` prints rich tables to a console; `write_html_report` writes one self-contained HTML
file (inline CSS and SVG charts drawn here: no script, no network). Both read the run directory
through `treadle.engine.analysis.metrics.run_metrics`. PNG charts are not offered: no installed library draws
them (matplotlib and Pillow are not dependencies).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from treadle.engine.analysis.metrics import Prices, run_metrics

_SPARKS = "▁▂▃▄▅▆▇█"


def load_prices(path: Path) -> dict[str, dict[str, float]]:
    """Prices from a JSON or YAML file: {model: {input_per_1m: USD, output_per_1m: USD}}."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: prices must be a mapping of model name to input_per_1m/output_per_1m")
    return data


# ---- formatting ----------------------------------------------------------------------------------


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 100:
        return f"{seconds:,.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def _n(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def _cost(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4f}"


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """A one-line chart of `values` (re-bucketed to at most `width` characters)."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [max(values[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)]) for i in range(width)]
    top = max(values) or 1
    return "".join(_SPARKS[min(int(v / top * (len(_SPARKS) - 1) + 0.5), len(_SPARKS) - 1)] for v in values)


# ---- the sections (shared by the console and the HTML report) ----------------------------------------


def _sections(m: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str | None]]:
    """(title, headers, rows, note) of every table."""
    if not m["has_trace"]:
        return _summary_sections(m)
    sections: list[tuple[str, list[str], list[list[str]], str | None]] = []
    own = {name: c for name, c in m["columns"].items() if c["parent"] is None}
    calls = {name: c for name, c in m["columns"].items() if c["parent"] is not None}

    rows = []
    for name, c in own.items():
        queue, run = c["queue_wait_s"], c["run_s"]["total"]
        total = queue["total"] + run
        rows.append(
            [
                name,
                _n(c["attempts"]),
                _s(run),
                _s(queue["total"]),
                _pct(queue["total"] / total if total else 0.0),
                _s(queue["p50"]),
                _s(queue["p95"]),
                _s(c["latency_s"]["p50"]),
                _s(c["latency_s"]["p95"]),
                _s(c["latency_s"]["p99"]),
            ]
        )
    for name, c in calls.items():
        rows.append(
            [
                name,
                _n(c["attempts"]),
                _s(c["run_s"]["total"]),
                "-",
                "-",
                "-",
                "-",
                _s(c["latency_s"]["p50"]),
                _s(c["latency_s"]["p95"]),
                _s(c["latency_s"]["p99"]),
            ]
        )
    time = m["time"]
    rows.append(
        [
            "all",
            _n(m["attempts"]["total"]),
            _s(time["run_s"]),
            _s(time["queue_wait_s"]),
            _pct(time["queue_share"]),
            "",
            "",
            "",
            "",
            "",
        ]
    )
    sections.append(
        (
            "Where did the time go",
            ["column", "attempts", "run", "queue wait", "waiting", "wait p50", "wait p95", "p50", "p95", "p99"],
            rows,
            "run: time attempts held an execution slot; queue wait: time ready but not started (a slot or model "
            "limit was full); both summed over attempts. p50-p99: run time of successful attempts. ctx calls "
            "(<column>:llm) run inside their cell.",
        )
    )

    conc = m["concurrency"]
    limit = conc["slot_limit"]
    rows = [
        ["execution slots (limit)", _n(limit) if limit is not None else "unknown"],
        *(
            [["  mean limit over the run", _n(conc["mean_slot_limit"])]]
            if conc["mean_slot_limit"] not in (None, limit)
            else []
        ),
        ["peak cells in flight", f"{conc['peak_in_flight']}" + (f" of {limit}" if limit else "")],
        ["mean cells in flight", _n(conc["mean_in_flight"])],
        ["slot utilisation", _pct(conc["slot_utilisation"])],
        ["parallel efficiency (useful run time / wall)", _n(conc["parallel_efficiency"])],
        ["  as a share of the limit", _pct(conc["efficiency_share_of_limit"])],
        ["peak cells queued", _n(conc["peak_queued"])],
        ["wall time", _s(m["wall_s"])],
    ]
    summary = m["summary"] or {}
    if summary.get("engine_cpu_s") is not None and summary.get("wall_s"):
        # Near 100%, treadle itself bounded the run (very cheap cells), not the endpoint or the cells' waits.
        rows.append(["engine loop busy (its CPU / wall)", _pct(summary["engine_cpu_s"] / summary["wall_s"])])
    for model, info in m["models"].items():
        model_limit = (info["limit"] or {}).get("total")
        rows.append(
            [
                f"model {model}: peak requests in flight",
                f"{info['peak_in_flight']}" + (f" of {model_limit}" if model_limit else ""),
            ]
        )
    sections.append(("What was my real concurrency", ["measure", "value"], rows, None))

    rows = []
    for name, c in m["columns"].items():
        if not (c["tokens_in"] or c["tokens_out"] or c["model"]):
            continue
        counted = c["tokens_counted_in"]
        rows.append(
            [
                name,
                c["model"] or "-",
                _n(c["tokens_in"]),
                _n(c["tokens_out"]),
                f"(counted in {counted})" if counted else _cost(c["cost"]),
            ]
        )
    tokens, cost = m["tokens"], m["cost"]
    if rows:
        rows.append(["all", "", _n(tokens["in"]), _n(tokens["out"]), _cost(cost["total"]) if cost else "-"])
    if not rows:
        note = "no model calls: nothing to pay for"
    elif cost is None:
        note = "no prices given: pass per-model prices (input_per_1m, output_per_1m) to see the cost"
    elif cost["unpriced_models"]:
        note = f"no price for {', '.join(cost['unpriced_models'])}: their tokens are not in the cost"
    else:
        note = "cost in the currency of the prices given"
    sections.append(("What did it cost", ["column", "model", "tokens in", "tokens out", "cost"], rows, note))

    errors = m["errors"]
    rows = [
        [error_class, *(_n(counts[s]) for s in ("retry", "timeout", "failed", "cancelled"))]
        for error_class, counts in errors["by_class"].items()
    ]
    note = (
        f"{errors['retries']} attempts retried, {errors['timeouts']} timed out, "
        f"{errors['failed_attempts']} failed for good"
        if rows
        else "no retries and no errors"
    )
    waited = errors.get("retry_after") or {}
    if waited.get("waits"):
        note += f"; the endpoint asked to wait (Retry-After) {waited['waits']} times, {waited['total_s']:g} s in all"
    sections.append(("Retries and errors", ["error class", "retried", "timed out", "failed", "cancelled"], rows, note))

    tp = m["throughput"]
    rate = [n / tp["bucket_s"] for n in tp["done"]] if tp["bucket_s"] else []
    rows = [
        ["cells done per second (mean)", _n(tp["mean_per_s"])],
        [f"peak (per {_s(tp['bucket_s'])})", _n(tp["peak_per_s"])],
        ["over time", sparkline(rate)],
    ]
    sections.append(("Throughput", ["measure", "value"], rows, None))
    return sections + _rate_sections(m["summary"])


def _summary_sections(m: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str | None]]:
    """What summary.json alone tells (a run without trace.jsonl)."""
    summary = m["summary"] or {}
    rows = []
    for name, column in (summary.get("columns") or {}).items():
        cells, latency = column.get("cells") or {}, column.get("latency_s") or {}
        rows.append(
            [
                name,
                _n(cells.get("done")),
                _n(cells.get("failed")),
                *(_s(latency.get(q)) for q in ("p50", "p95", "p99")),
            ]
        )
    note = (
        f"parallel efficiency {summary.get('parallel_efficiency', 0):.2f}; without trace.jsonl (run.trace: false) "
        "there is no queue wait, concurrency over time, tokens or errors by class"
    )
    limits = [
        [name, _n(info.get("total")), _n(info.get("peak"))] for name, info in (summary.get("limits") or {}).items()
    ]
    return [
        ("Columns (from summary.json)", ["column", "done", "failed", "p50", "p95", "p99"], rows, note),
        ("Limits", ["limit", "total", "peak in use"], limits, None),
        *_rate_sections(summary),
    ]


PACE_SOURCES = {"learned": "learned from 429s", "headers": "from x-ratelimit headers", "rpm": "told", "tpm": "told"}
"""How summary.json's `rate_limits.<model>.source` reads."""


def pace_text(paced_rpm: float | None, tpm: float | None = None, source: str | None = None) -> str:
    """`1,180/min learned from 429s`; `-` without a pace."""
    paces = ([] if paced_rpm is None else [f"{paced_rpm:,.0f}/min"]) + (
        [] if tpm is None else [f"{tpm:,.0f} tokens/min"]
    )
    if not paces:
        return "-"
    where = PACE_SOURCES.get(source or "", "")
    return ", ".join(paces) + (f" {where}" if where else "")


def rate_limit_rows(summary: dict[str, Any] | None) -> list[list[str]]:
    """One row per model of summary.json's `rate_limits` (absent in older runs: no rows): requests,
    answers that asked to wait (429s), the final pace and its source, the adaptive value and ceiling."""
    rows = []
    for model, r in ((summary or {}).get("rate_limits") or {}).items():
        adaptive = f"{r.get('concurrency')} of {r.get('ceiling')}" if r.get("adaptive") else f"off ({r.get('ceiling')})"
        rows.append(
            [
                model,
                _n(r.get("requests")),
                _n(r.get("rate_limited")),
                pace_text(r.get("paced_rpm"), r.get("tpm"), r.get("source")),
                adaptive,
            ]
        )
    return rows


def adaptive_change_rows(summary: dict[str, Any] | None, last: int | None = None) -> list[list[str]]:
    """Every adaptive change (or each model's `last` ones): model, time from the start, value, pace, reason."""
    rows = []
    for model, r in ((summary or {}).get("rate_limits") or {}).items():
        changes = r.get("changes") or []
        for t, concurrency, paced_rpm, reason in changes[-last:] if last else changes:
            rows.append([model, _s(t), str(concurrency), pace_text(paced_rpm), str(reason)])
    return rows


def first_row_text(summary: dict[str, Any] | None) -> str | None:
    """`first complete row after 0.14 s`, or None when summary.json does not say (older runs)."""
    first = (summary or {}).get("first_row_s")
    return None if first is None else f"first complete row after {_s(first)}"


def _rate_sections(summary: dict[str, Any] | None) -> list[tuple[str, list[str], list[list[str]], str | None]]:
    """Each model's requests, 429s and pace, and every adaptive change; nothing for runs without them."""
    rows = rate_limit_rows(summary)
    if not rows:
        return []
    changes = adaptive_change_rows(summary)
    return [
        (
            "Rate limits per model",
            ["model", "requests", "asked to wait (429)", "final pace", "adaptive (of ceiling)"],
            rows,
            first_row_text(summary),
        ),
        ("Adaptive changes", ["model", "at", "adaptive", "pace", "why"], changes, None if changes else "none"),
    ]


def _headline(m: dict[str, Any]) -> str:
    rows = m.get("rows") or {}
    done = f"{rows.get('done', '?')}/{rows.get('total', '?')} rows done" if rows else "no summary.json yet"
    name = m.get("name") or Path(m["run_dir"]).name
    sessions = m["trace"]["sessions"]
    resumed = f", {sessions} sessions (resumed)" if sessions > 1 else ""
    trace = "" if m["has_trace"] else " (no trace.jsonl: the run had run.trace: false)"
    return f"{name}: {m['status']} in {_s(m['wall_s'])}, {done}{resumed}{trace}"


# ---- console ---------------------------------------------------------------------------------------


def print_report(run_dir: Path, console: Console, prices: Prices | None = None, *, events: Path | None = None) -> None:
    """Print the report of a run directory: time, concurrency, cost, errors, throughput."""
    m = run_metrics(Path(run_dir), prices, events=events)
    console.print(Text(_headline(m), style="bold"), soft_wrap=True)
    for title, headers, rows, note in _sections(m):
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


# ---- HTML ------------------------------------------------------------------------------------------

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


def _ticks(top: float, n: int = 4) -> list[float]:
    if top <= 0:
        return [0.0]
    from treadle.engine.analysis.metrics import nice_width

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


def _charts(m: dict[str, Any]) -> str:
    wall = m["wall_s"]
    out = []
    tp = m["throughput"]
    width = tp["bucket_s"]
    done = [n / width for n in tp["done"]]
    failed = [n / width for n in tp["failed"]]
    top = max((d + f for d, f in zip(done, failed, strict=True)), default=0.0)
    chart = _Chart(wall, top, "cells/s")
    chart.bars(tp["t"], width, done, "#4c78a8")
    chart.bars(tp["t"], width, failed, "#e45756", base=done)
    out.append("<h2>Throughput</h2>" + _legend([("done", "#4c78a8"), ("failed", "#e45756")]) + chart.svg("throughput"))

    limit_series = (m["limits"].get("slots") or {}).get("series") or []
    in_flight = m["in_flight"]
    top = max([*in_flight["v"], *(v for _, v in limit_series)], default=0)
    chart = _Chart(wall, top * 1.05, "cells")
    chart.steps(in_flight["t"], in_flight["v"], "#4c78a8")
    if limit_series:
        chart.steps([t for t, _ in limit_series], [v for _, v in limit_series], "#e45756", dash=True)
    out.append(
        "<h2>Cells in flight and the slot limit</h2>"
        + _legend([("cells in flight", "#4c78a8"), ("slot limit", "#e45756")])
        + chart.svg("cells in flight")
    )

    queued = m["queued"]
    chart = _Chart(wall, max(queued["v"], default=0) * 1.05, "cells")
    chart.steps(queued["t"], queued["v"], "#f58518")
    out.append("<h2>Cells queued (ready, waiting for a slot or a model)</h2>" + chart.svg("cells queued"))

    for model, info in m["models"].items():
        series = info["in_flight"]
        limit = info["limit_series"] or []
        top = max([*series["v"], *(v for _, v in limit)], default=0)
        chart = _Chart(wall, top * 1.05, "requests")
        chart.steps(series["t"], series["v"], "#54a24b")
        if limit:
            chart.steps([t for t, _ in limit], [v for _, v in limit], "#e45756", dash=True)
        out.append(
            f"<h2>Model {html.escape(model)}: requests in flight and its limit</h2>"
            + _legend([("requests in flight", "#54a24b"), ("limit", "#e45756")])
            + chart.svg(f"model {model}")
        )
    return "\n".join(out)


def _html_table(title: str, headers: list[str], rows: list[list[str]], note: str | None) -> str:
    if not rows:
        return f'<h2>{html.escape(title)}</h2><p class="note">{html.escape(note or "nothing to show")}</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cls = ' class="all"' if row and row[0] == "all" else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{''.join(body)}</table>{note_html}"


def render_html(m: dict[str, Any], refresh_s: int | None = None) -> str:
    """The self-contained HTML report of metrics from `run_metrics` (reloading every `refresh_s`)."""
    tables = "\n".join(_html_table(*section) for section in _sections(m))
    title = html.escape(f"treadle report: {m.get('name') or Path(m['run_dir']).name}")
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{refresh}<title>{title}</title><style>{_CSS}</style></head>\n'
        f"<body><h1>{title}</h1><p>{html.escape(_headline(m))}</p>\n"
        f"{_charts(m) if m['has_trace'] else ''}\n{tables}\n"
        f'<p class="note">run directory: {html.escape(m["run_dir"])}</p></body></html>\n'
    )


def write_html_report(run_dir: Path, out: Path, prices: Prices | None = None, *, events: Path | None = None) -> None:
    """Write a self-contained HTML report (inline CSS and SVG charts, nothing fetched) to `out`."""
    m = run_metrics(Path(run_dir), prices, events=events)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(m), encoding="utf-8")
    tmp.replace(out)
