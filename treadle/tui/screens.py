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

from treadle.tui.actions import ACTIONS
from treadle.tui.keymap import DEFAULT_KEYS, bindings, key_text
from treadle.tui.model import duration_text
from treadle.tui.theme import COLOURS, FINISHED_STATES, GLYPHS, STATES

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
        for state in STATES:
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
            yield Static("r retry cell · R retry row · d drop row · esc close", classes="keys")

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
                table.add_row(
                    str(trace.attempt),
                    Text(trace.status, style=COLOURS["failed"] if trace.status != "done" else COLOURS["done"]),
                    str(trace.slot),
                    trace.model or "",
                    duration_text(trace.t_start - trace.t_ready),
                    duration_text(trace.t_end - trace.t_start),
                    f"{trace.t_start:.3f} s",
                    f"{trace.error_class}: {trace.message}" if trace.error_class else "",
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
    """Rows, cells by state, per-column counts and latency: what summary.json holds."""
    rows = summary.get("rows", {})
    cells = summary.get("cells", {})
    head = Text()
    head.append("rows ", style="bold")
    head.append(
        f"{rows.get('total', 0):,} total · {rows.get('done', 0):,} done · {rows.get('failed', 0):,} failed · "
        f"{rows.get('dropped', 0):,} dropped"
        + (f" · {rows['unfinished']:,} unfinished" if rows.get("unfinished") else "")
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
    for name, column in summary.get("columns", {}).items():
        counts, latency = column.get("cells", {}), column.get("latency_s", {})
        row = [name] + [f"{counts.get(s, 0):,}" for s in ("done", "failed", "blocked", "dropped")]
        if show_latency:
            row += [duration_text(latency.get("p50")), duration_text(latency.get("p95"))]
        table.add_row(*row)
    return Group(head, cell_line, Text(""), table)


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
        outputs = self.summary.get("outputs", {})
        paths = Text()
        paths.append("files (written when the run closes)\n", style="bold")
        for label in ("output", "failures", "summary"):
            if label in outputs:
                paths.append(f"  {label + ':':<10}{outputs[label]}\n")
        with Vertical():
            yield Static(self.headline, classes="title")
            with VerticalScroll():
                yield Static(summary_table(self.summary, self.show_latency))
                yield Static(paths)
            keys = "q close the run and quit · A retry all failed · esc back to the run"
            yield Static(keys, classes="keys")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
