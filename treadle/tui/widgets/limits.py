"""Concurrency limits: a slider for execution slots and one per model, with in-flight vs limit.

Under each model's slider (the ceiling a person sets) two lines tell what the engine does within it:
the adaptive value when it sits below the ceiling, the pace and where it comes from, the measured
rate, answers that asked to wait (429s) over the last minute, and a Retry-After hold while one is on.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Static
from textual_slider import Slider

from treadle.engine.controller import LimitView
from treadle.engine.rate_limits import RateView
from treadle.tui.model import compact
from treadle.tui.theme import COLOURS

DEBOUNCE_S = 0.15
"""A slider drag settles this long before the engine hears of it."""


def adjustable(limits: Mapping[str, LimitView]) -> list[str]:
    """The limits a person steers here: execution slots, then each model."""
    return [name for name in limits if name == "slots"] + sorted(n for n in limits if n.startswith("model:"))


def slider_max(total: int) -> int:
    return max(16, total * 4)


RATE_WIDTH = 54
"""Characters of a rate line: the wide layout's limits panel is 58 columns, less borders and indent."""
PACE_SOURCES = {"learned": "learned", "headers": "from headers", "rpm": "told", "tpm": "told"}
"""How the pace's source reads (`RateView.source`)."""


def rate_parts(view: RateView) -> list[tuple[str, str]]:
    """(text, style) pieces of a model's rate, most telling first; only the ones that say something."""
    parts: list[tuple[str, str]] = []
    if view.concurrency != view.ceiling:
        parts.append((f"adaptive {view.concurrency:,}", f"bold {COLOURS['ready']}"))
    paces = []
    if view.paced_rpm is not None:
        paces.append(f"{view.paced_rpm:,.0f}/min")
    if view.tpm is not None:
        paces.append(f"{view.tpm:,.0f} tokens/min")
    if paces:
        source = PACE_SOURCES.get(view.source or "", "")
        parts.append(("pace " + ", ".join(paces) + (f" {source}" if source else ""), ""))
    if view.held_s > 0:
        parts.append((f"held {view.held_s:.1f}s", f"bold {COLOURS['retry-wait']}"))
    parts.append((f"{view.requests_per_s:,.1f} req/s", ""))
    if view.tokens_per_min > 0:
        parts.append((f"{compact(int(view.tokens_per_min))} tokens/min", ""))
    n = view.rate_limited_last_min
    parts.append((f"429s last min {n:,}", f"bold {COLOURS['failed']}" if n else "dim"))
    return parts


def rate_text(view: RateView | None, width: int = RATE_WIDTH) -> Text:
    """A model's rate on two lines of at most `width` (pieces packed in order, joined by " · ")."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if view is None:
        return text
    lines: list[list[tuple[str, str]]] = [[]]
    used = 0
    for piece, style in rate_parts(view):
        extra = len(piece) + (3 if lines[-1] else 0)
        if lines[-1] and used + extra > width and len(lines) < 2:
            lines.append([])
            used, extra = 0, len(piece)
        lines[-1].append((piece, style))
        used += extra
    for i, line in enumerate(lines):
        text.append("\n    " if i else "    ")
        for j, (piece, style) in enumerate(line):
            text.append(" · " if j else "", style="dim")
            text.append(piece, style=style)
    return text


class LimitsPanel(Vertical):
    """One label and one slider per limit. Posts `Requested` (debounced) when a person moves a slider."""

    DEFAULT_CSS = """
    LimitsPanel { height: auto; }
    LimitsPanel .limit-label { height: 1; }
    LimitsPanel .limit-rate { height: 2; color: $text-muted; }
    LimitsPanel Slider { width: 1fr; height: 1; min-height: 1; border: none; padding: 0 1; }
    LimitsPanel Slider:focus { border: none; background: $boost; }
    LimitsPanel Slider > .slider--slider { background: $panel-lighten-1; color: $accent; }
    LimitsPanel #row-groups { height: 1; color: $text-muted; }
    """

    class Requested(Message):
        def __init__(self, name: str, total: int) -> None:
            super().__init__()
            self.name = name
            self.total = total

    def __init__(
        self, limits: Mapping[str, LimitView], rates: Mapping[str, RateView] | None = None, *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.names = adjustable(limits)
        self.views = dict(limits)
        self.rates = dict(rates or {})
        self.selected = self.names[0] if self.names else ""
        self._pending: dict[str, int] = {}
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        for i, name in enumerate(self.names):
            total = self.views[name].total
            yield Static(self._label(name), id=f"limit-label-{i}", classes="limit-label")
            yield Slider(1, slider_max(total), value=total, id=f"limit-{i}")
            if name.startswith("model:"):
                yield Static(rate_text(self.rates.get(name)), id=f"limit-rate-{i}", classes="limit-rate")
        yield Static("", id="row-groups")

    def _label(self, name: str) -> Text:
        view = self.views[name]
        pending = self._pending.get(name)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("▸ " if name == self.selected else "  ", style="bold")
        text.append(name, style="bold" if name == self.selected else "")
        text.append(f"  {view.in_use:,} in flight / ", style="")
        text.append(f"{pending if pending is not None else view.total:,}", style="bold")
        busy = view.in_use >= view.total
        text.append("  full" if busy else "", style=COLOURS["running"])
        return text

    def slider_of(self, name: str) -> Slider:
        return self.query_one(f"#limit-{self.names.index(name)}", Slider)

    def focused_limit(self) -> str | None:
        focused = self.screen.focused
        for i, name in enumerate(self.names):
            if focused is not None and focused.id == f"limit-{i}":
                return name
        return None

    def select(self, name: str) -> None:
        self.selected = name
        self._refresh_labels()

    def select_next(self) -> str:
        if self.names:
            self.select(self.names[(self.names.index(self.selected) + 1) % len(self.names)])
        return self.selected

    def update_limits(
        self,
        limits: Mapping[str, LimitView],
        row_groups: Mapping[str, int],
        rates: Mapping[str, RateView] | None = None,
    ) -> None:
        """Show what the engine holds; sliders follow unless a person is moving them."""
        self.views = dict(limits)
        if rates is not None:
            self._show_rates(rates)
        for name in self.names:
            if name in self._pending:
                continue
            self.show_total(name, limits[name].total)
        self._refresh_labels()
        rg = limits.get("row_groups")
        text = (
            f"row groups: {row_groups.get('in_flight', 0)} in flight (limit {rg.total if rg else '?'}), "
            f"{row_groups.get('finished', 0)} finished, {row_groups.get('pending', 0)} to go"
        )
        self.query_one("#row-groups", Static).update(text, layout=False)

    def _show_rates(self, rates: Mapping[str, RateView]) -> None:
        for i, name in enumerate(self.names):
            if name.startswith("model:") and rates.get(name) != self.rates.get(name):
                self.query_one(f"#limit-rate-{i}", Static).update(rate_text(rates.get(name)), layout=False)
        self.rates = dict(rates)

    def rate_line(self, name: str) -> Static:
        """The Static under a model's slider that shows its rate."""
        return self.query_one(f"#limit-rate-{self.names.index(name)}", Static)

    def show_total(self, name: str, total: int) -> None:
        slider = self.slider_of(name)
        if total > slider.max:
            slider.max = slider_max(total)
        if slider.value != total:
            with slider.prevent(Slider.Changed):
                slider.value = total

    def _refresh_labels(self) -> None:
        for i, name in enumerate(self.names):
            if name in self.views:
                self.query_one(f"#limit-label-{i}", Static).update(self._label(name), layout=False)

    def on_slider_changed(self, event: Slider.Changed) -> None:
        event.stop()
        index = int(str(event.slider.id).rsplit("-", 1)[1])
        name = self.names[index]
        if self.views[name].total == event.value and name not in self._pending:
            return
        self.selected = name
        self._pending[name] = event.value
        self._refresh_labels()
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self._flush)

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        self._timer = None
        for name, total in pending.items():
            self.post_message(self.Requested(name, total))
