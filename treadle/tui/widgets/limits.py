"""Concurrency limits: a slider for execution slots and one per model, with in-flight vs limit."""

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
from treadle.tui.theme import COLOURS

DEBOUNCE_S = 0.15
"""A slider drag settles this long before the engine hears of it."""


def adjustable(limits: Mapping[str, LimitView]) -> list[str]:
    """The limits a person steers here: execution slots, then each model."""
    return [name for name in limits if name == "slots"] + sorted(n for n in limits if n.startswith("model:"))


def slider_max(total: int) -> int:
    return max(16, total * 4)


class LimitsPanel(Vertical):
    """One label and one slider per limit. Posts `Requested` (debounced) when a person moves a slider."""

    DEFAULT_CSS = """
    LimitsPanel { height: auto; }
    LimitsPanel .limit-label { height: 1; }
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

    def __init__(self, limits: Mapping[str, LimitView], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.names = adjustable(limits)
        self.views = dict(limits)
        self.selected = self.names[0] if self.names else ""
        self._pending: dict[str, int] = {}
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        for i, name in enumerate(self.names):
            total = self.views[name].total
            yield Static(self._label(name), id=f"limit-label-{i}", classes="limit-label")
            yield Slider(1, slider_max(total), value=total, id=f"limit-{i}")
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

    def update_limits(self, limits: Mapping[str, LimitView], row_groups: Mapping[str, int]) -> None:
        """Show what the engine holds; sliders follow unless a person is moving them."""
        self.views = dict(limits)
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
