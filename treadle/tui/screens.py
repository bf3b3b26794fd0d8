"""Modal screens: help, quit confirmation, one cell's detail, and the run summary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from rich.console import Group, RenderableType
from rich.pretty import Pretty
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from treadle.engine.analysis.records import (
    ColumnSummary,
    ConcurrencySummary,
    MetricsNote,
    SummaryMetrics,
    ThroughputSummary,
)
from treadle.engine.summary_record import RunSummary
from treadle.report import adaptive_change_rows, cache_line, first_row_text, rate_limit_rows, sparkline
from treadle.tui.actions import ACTIONS
from treadle.tui.keymap import DEFAULT_KEYS, bindings, key_text
from treadle.tui.model import duration_text
from treadle.tui.theme import CACHED, COLOURS, FINISHED_STATES, GLYPHS, MARKS, STATES

_MODAL_CSS = """
{name} {{
    align: center middle;
    background: $background 60%;
}}
{name} > Vertical {{
    width: 96;
    max-width: 100%;
    height: auto;
    max-height: 100%;
    border: round $accent;
    background: $surface;
    padding: 0 1;
}}
{name} VerticalScroll {{
    height: auto;
    max-height: 100%;
}}
{name} .title {{
    text-style: bold;
    color: $accent;
}}
{name} .keys {{
    color: $text-muted;
    margin-top: 1;
}}
"""


def modal_css(name: str) -> str:
    return _MODAL_CSS.format(name=name)


class HelpScreen(ModalScreen[None]):
    """Every key, from the action table and the keymap in force."""

    BINDINGS = bindings("help")
    DEFAULT_CSS = modal_css("HelpScreen")

    def __init__(self, keymap: Mapping[str, str]) -> None:
        super().__init__()
        self.keymap = keymap

    def compose(self) -> ComposeResult:
        table = Table(box=None, pad_edge=False, show_header=False, expand=True)
        table.add_column("keys", style="bold", no_wrap=True, width=16)
        table.add_column("what")
        for spec in ACTIONS:
            if spec.scope not in ("app", "grid"):
                continue
            keys = self.keymap.get(spec.id, DEFAULT_KEYS[spec.id])
            table.add_row(key_text(keys), spec.help)
        table.add_row("ctrl+p", "Command palette: every action by name.")
        legend = Text("cells: ")
        for state in MARKS:
            legend.append(f"{GLYPHS[state]} {state}  ", style=COLOURS[state])
        with Vertical():
            yield Static("treadle: keys", classes="title")
            with VerticalScroll():
                yield Static(Group(table, Text(""), legend), classes="help-body")
            yield Static("esc or ? closes", classes="keys")


QuitChoice = Literal["stop", "abort"]


class ConfirmQuitScreen(ModalScreen[QuitChoice | None]):
    """Asked when quitting while cells are still to run."""

    BINDINGS = bindings("confirm")
    DEFAULT_CSS = (
        modal_css("ConfirmQuitScreen")
        + """
    ConfirmQuitScreen > Vertical { width: 72; }
    ConfirmQuitScreen Horizontal { height: auto; margin-top: 1; }
    ConfirmQuitScreen Button { margin-right: 2; }
    """
    )

    def __init__(self, running: int, unfinished: int, grace_s: float, run_dir: str) -> None:
        super().__init__()
        self.running = running
        self.unfinished = unfinished
        self.grace_s = grace_s
        self.run_dir = run_dir

    def compose(self) -> ComposeResult:
        text = (
            f"{self.unfinished:,} cells have not finished ({self.running:,} running).\n\n"
            f"Stop the run? Running cells get up to {self.grace_s:g} s to finish; everything done is kept "
            f"in {self.run_dir}, and `treadle resume {self.run_dir}` carries on from there."
        )
        with Vertical():
            yield Static("Quit while the run goes on?", classes="title")
            yield Static(text)
            with Horizontal():
                yield Button("Stop (y)", id="stop", variant="warning")
                yield Button("Stop now (!)", id="abort", variant="error")
                yield Button("Keep running (n)", id="cancel", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_choose("" if event.button.id == "cancel" else str(event.button.id))

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice or None)  # type: ignore[arg-type]


def _value(value: Any) -> RenderableType:
    if isinstance(value, str):
        return Text(value if len(value) <= 4000 else value[:4000] + "…")
    return Pretty(value, max_length=50, max_string=2000, expand_all=isinstance(value, dict) and len(value) > 3)


class CellDetailScreen(ModalScreen[None]):
    """One cell: its state, value or error, attempts with timings, and the inputs it reads."""

    BINDINGS = bindings("detail")
    DEFAULT_CSS = (
        modal_css("CellDetailScreen")
        + """
    CellDetailScreen > Vertical { width: 110; height: 90%; }
    CellDetailScreen VerticalScroll { height: 1fr; }
    """
    )

    def __init__(self, controller: Any, row: int, column: str) -> None:
        super().__init__()
        self.controller = controller
        self.row = row
        self.column = column
        self._state = ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"row {self.row} · {self.column}", classes="title", id="detail-title")
            with VerticalScroll():
                yield Static("loading…", id="detail-body")
            yield Static(
                "r retry cell · R retry row · d drop row · e edit column · F5 reload function · esc close",
                classes="keys",
            )

    def on_mount(self) -> None:
        self.load()
        self.set_interval(1.0, self._poll)

    def _poll(self) -> None:
        if self._state not in FINISHED_STATES:  # a settled cell changes only by a command (load() then)
            self.load()

    def load(self) -> None:
        self.query_one("#detail-body", Static).update(self.render_detail())

    def render_detail(self) -> RenderableType:
        detail_of = getattr(self.controller, "cell_detail", None)
        if detail_of is None:  # an engine without cell_detail: what failures() knows
            failure = next(
                (f for f in self.controller.failures() if (f["row"], f["column"]) == (self.row, self.column)), None
            )
            return Pretty(failure) if failure else Text("no detail available for this cell")
        detail = detail_of(self.row, self.column)
        self._state = detail.state
        parts: list[RenderableType] = []
        state = Text("state: ")
        state.append(detail.state, style=COLOURS.get(detail.state, ""))
        self.query_one("#detail-title", Static).update(
            Text.assemble((f"row {detail.row} · {detail.column} · ", ""), (detail.state, COLOURS.get(detail.state, "")))
        )
        if detail.error:
            error = detail.error
            parts.append(Text("error", style="bold " + COLOURS["failed"]))
            parts.append(
                Text(f"{error.get('error_class')}: {error.get('message')} (after {error.get('attempts')} attempts)")
            )
        if detail.state == "done" or detail.value is not None:
            parts.append(Text("value", style="bold"))
            parts.append(_value(detail.value))
        parts.append(Text(""))
        parts.append(Text(f"attempts ({len(detail.attempts)} in the recent trace buffer)", style="bold"))
        if detail.attempts:
            table = Table(box=None, pad_edge=False, expand=False)
            for header in ("#", "status", "slot", "model", "queued", "ran", "started at", "error"):
                table.add_column(header, no_wrap=header != "error")
            for trace in detail.attempts:
                error = f"{trace.error_class}: {trace.message}" if trace.error_class else ""
                if trace.retry_after_s is not None:  # the endpoint asked to wait; the next attempt did
                    error += f" (waited its Retry-After: {duration_text(trace.retry_after_s)})"
                table.add_row(
                    str(trace.attempt),
                    Text(trace.status, style=COLOURS["failed"] if trace.status != "done" else COLOURS["done"]),
                    str(trace.slot),
                    trace.model or "",
                    duration_text(trace.t_start - trace.t_ready),
                    duration_text(trace.t_end - trace.t_start),
                    f"{trace.t_start:.3f} s",
                    error,
                )
            parts.append(table)
        parts.append(Text(""))
        parts.append(Text("inputs", style="bold"))
        if not detail.inputs:
            parts.append(Text("(none, or not loaded: the row's group was written and released)", style="dim"))
        for name, value in detail.inputs.items():
            parts.append(Text(name, style="italic"))
            parts.append(_value(value))
        return Group(*parts)


def summary_table(summary: Mapping[str, Any], show_latency: bool = True) -> RenderableType:
    """Rows, cells by state, per-column counts and latency, then the run's metrics: what summary.json
    holds. `show_latency=False` leaves out every measured time (stable screenshots)."""
    record = RunSummary.from_json(summary)
    rows, cells = record.rows, record.cells
    head = Text()
    head.append("rows ", style="bold")
    head.append(
        "not recorded"  # a summary.json by hand or from an older tool; a run always records them
        if rows is None
        else f"{rows.total:,} total · {rows.done:,} done · {rows.failed:,} failed · {rows.dropped:,} dropped"
        + (f" · {rows.filtered:,} filtered" if rows.filtered else "")
        + (f" · {rows.unfinished:,} unfinished" if rows.unfinished else "")
    )
    cell_line = Text()
    cell_line.append("cells ", style="bold")
    for state in STATES:
        if cells.get(state):
            cell_line.append(f"{state} {cells[state]:,}  ", style=COLOURS[state])
    table = Table(box=None, pad_edge=False)
    headers = ["column", "done", "failed", "blocked", "dropped"] + (["p50", "p95"] if show_latency else [])
    for header in headers:
        table.add_column(header, justify="left" if header == "column" else "right")
    for name, column in record.columns.items():
        row = [name] + [f"{column.cells.get(s, 0):,}" for s in ("done", "failed", "blocked", "dropped")]
        if show_latency:
            row += [duration_text(column.latency_s.p50), duration_text(column.latency_s.p95)]
        table.add_row(*row)
    parts: list[RenderableType] = [head, cell_line, Text(""), table]
    if line := cache_line(record.cache):
        parts[2:2] = [Text(line, style=COLOURS[CACHED])]
    if record.metrics is not None:
        parts += metrics_parts(record.metrics, show_latency)
    if record.limit_history:
        parts += [Text(""), limits_text(record.limit_history, show_latency)]
    parts += rate_limit_parts(record, show_latency)
    return Group(*parts)


SHOWN_CHANGES = 10
"""Adaptive changes per model the summary lists (the last ones); `treadle report` lists them all."""


def rate_limit_parts(summary: RunSummary, show_times: bool = True) -> list[RenderableType]:
    """Per model: requests, answers that asked to wait (429s), the final pace and its source, then its
    last adaptive changes and why; and when the first row was complete. Nothing for older runs."""
    parts: list[RenderableType] = []
    first = first_row_text(summary)
    if first and show_times:
        parts += [Text(""), Text(first)]
    rows = rate_limit_rows(summary)
    if not rows:
        return parts
    table = Table(box=None, pad_edge=False, title="rate limits", title_justify="left")
    for header in ("model", "requests", "asked to wait (429)", "final pace", "adaptive"):
        table.add_column(header, justify="left" if header in ("model", "final pace") else "right")
    for row in rows:
        table.add_row(*row, style=COLOURS["failed"] if row[2] not in ("0", "-") else None)
    parts += [Text(""), table]
    changes = adaptive_change_rows(summary, last=SHOWN_CHANGES)
    if changes:
        listed = Table(box=None, pad_edge=False, title=f"adaptive changes (last {SHOWN_CHANGES} per model)")
        listed.title_justify = "left"
        headers = ["model"] + (["at"] if show_times else []) + ["adaptive", "pace", "why"]
        for header in headers:
            listed.add_column(header, justify="right" if header in ("at", "adaptive") else "left")
        for model, at, adaptive, pace, why in changes:
            listed.add_row(model, *([at] if show_times else []), adaptive, pace, why)
        parts.append(listed)
    return parts


def _bold(label: str, text: str = "") -> Text:
    line = Text()
    line.append(label, style="bold")
    line.append(text)
    return line


def _cost(value: float | None) -> str:
    return "—" if value is None else f"{value:,.4f}"


def metrics_parts(parsed: SummaryMetrics | MetricsNote, show_latency: bool = True) -> list[RenderableType]:
    """summary.json's `metrics` (or a live summary's): throughput, concurrency, queue wait vs run time
    per column, tokens and cost, errors by class."""
    if isinstance(parsed, MetricsNote):
        return [Text(""), Text(parsed.note, style="dim")]
    parts: list[RenderableType] = [Text("")]
    window = parsed.window
    if window:
        source = f"from the last {window.attempts:,} of {window.of:,} attempts"
        parts.append(Text(f"metrics so far ({source if window.attempts < window.of else 'live'})", style="dim"))
    errors = parsed.errors
    line = _bold("attempts ", f"{parsed.attempts.total:,}")
    line.append(f" · {errors.retries:,} retries · {errors.timeouts:,} timeouts")
    line.append(f" · {errors.failed_attempts:,} failed")
    if errors.retry_after.waits:
        waited = errors.retry_after
        line.append(f" · waited out Retry-After {waited.waits:,}x ({duration_text(waited.total_s)})")
    parts.append(line)
    if show_latency:
        parts += [_throughput_line(parsed.throughput), _concurrency_line(parsed.concurrency)]
        parts += [Text(""), _time_table(parsed.columns)]
    tokens = _tokens_table(parsed)
    if tokens is not None:
        parts += [Text(""), tokens]
    if errors.by_class:
        line = _bold("errors by class ")
        for i, (error_class, counts) in enumerate(errors.by_class.items()):
            shown = ", ".join(f"{n:,} {status}" for status, n in counts.model_dump().items() if n)
            line.append(("" if i == 0 else " · ") + f"{error_class} {shown}", style=COLOURS["failed"])
        parts.append(line)
    return parts


def _throughput_line(throughput: ThroughputSummary) -> Text:
    line = _bold("throughput ", f"{throughput.mean_per_s:,.1f} cells/s")
    line.append(f" · peak {throughput.peak_per_s:,.1f}/s  ")
    line.append(sparkline(throughput.done, width=40), style="green")
    return line


def _concurrency_line(conc: ConcurrencySummary) -> Text:
    limit = conc.slot_limit
    line = _bold("concurrency ", f"peak {conc.peak_in_flight}" + (f" of {limit}" if limit else ""))
    line.append(f" in flight · mean {conc.mean_in_flight:,.2f}")
    if conc.slot_utilisation is not None:
        line.append(f" · slots {conc.slot_utilisation:.0%} busy")
    line.append(f" · parallel efficiency {conc.parallel_efficiency:,.2f}")
    if conc.efficiency_share_of_limit is not None:
        line.append(f" ({conc.efficiency_share_of_limit:.0%} of the limit)")
    return line


def _time_table(columns: Mapping[str, ColumnSummary]) -> Table:
    """Queue wait (ready, but a limit was full) vs run time, per column."""
    table = Table(box=None, pad_edge=False, title="queue wait vs run time", title_justify="left")
    for header in ("column", "attempts", "wait mean", "wait p50", "wait p95", "run mean", "run p50", "run p95"):
        table.add_column(header, justify="left" if header == "column" else "right")
    for name, column in columns.items():
        wait, run = column.queue_wait_s, column.run_s
        table.add_row(
            name,
            f"{column.attempts:,}",
            *((duration_text(wait.mean), duration_text(wait.p50), duration_text(wait.p95)) if wait else ["—"] * 3),
            duration_text(run.mean),
            duration_text(run.p50),
            duration_text(run.p95),
        )
    return table


def _tokens_table(metrics: SummaryMetrics) -> RenderableType | None:
    columns = {n: c for n, c in metrics.columns.items() if c.tokens_in or c.tokens_out}
    if not columns:
        return None
    table = Table(box=None, pad_edge=False, title="tokens and cost", title_justify="left")
    for header in ("column", "model", "tokens in", "tokens out", "cost"):
        table.add_column(header, justify="left" if header in ("column", "model") else "right")
    for name, c in columns.items():
        shown_cost = f"(in {c.tokens_counted_in})" if c.tokens_counted_in else _cost(c.cost)
        table.add_row(name, c.model or "", f"{c.tokens_in:,}", f"{c.tokens_out:,}", shown_cost)
    tokens, cost = metrics.tokens, metrics.cost
    total = "—" if cost is None else _cost(cost.total)
    table.add_row("all", "", f"{tokens.tokens_in:,}", f"{tokens.tokens_out:,}", total, style="bold")
    if cost is None:
        note = "no prices: give a model `prices:` in the pipeline to see the cost"
    elif cost.unpriced_models:
        note = f"no price for {', '.join(cost.unpriced_models)}: not in the cost"
    else:
        return table
    return Group(table, Text(note, style="dim"))


def limits_text(history: Mapping[str, Any], show_times: bool = True) -> Text:
    """Each limit's totals over the run, as a short list: `slots 64 → 128 at 3.20 s`."""
    line = _bold("limits ")
    for i, (name, points) in enumerate(history.items()):
        line.append(("" if i == 0 else " · ") + f"{name} {points[0][1]}")
        for t, total in points[1:]:
            line.append(f" → {total}" + (f" at {duration_text(t)}" if show_times else ""))
    return line


class SummaryScreen(ModalScreen[str | None]):
    """The run's numbers (as summary.json has them) and where its files go."""

    BINDINGS = bindings("summary")
    DEFAULT_CSS = modal_css("SummaryScreen")

    def __init__(self, summary: Mapping[str, Any], headline: str, show_latency: bool = True) -> None:
        super().__init__()
        self.summary = summary
        self.headline = headline
        self.show_latency = show_latency

    def compose(self) -> ComposeResult:
        outputs = RunSummary.from_json(self.summary).outputs.to_json()
        paths = Text()
        paths.append("files (written when the run closes)\n", style="bold")
        for label, path in outputs.items():
            paths.append(f"  {label + ':':<10}{path}\n")
        with Vertical():
            yield Static(self.headline, classes="title")
            with VerticalScroll():
                yield Static(summary_table(self.summary, self.show_latency))
                yield Static(paths)
            keys = "q close the run and quit · A retry all failed · esc back to the run"
            yield Static(keys, classes="keys")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
