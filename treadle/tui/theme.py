"""How each cell state and trace status looks: one glyph and one colour, shared by every widget."""

from __future__ import annotations

from rich.style import Style

from treadle.engine.tracker import TERMINAL, CellState

STATES: tuple[str, ...] = tuple(s.label for s in CellState)
CACHED = "cached"
"""A done cell whose answer came from the response cache (snapshot windows mark it so)."""
FILTERED = "filtered"
"""A dropped cell of a row a filter column turned away, which is not a failure (snapshot windows mark it so)."""
MARKS: tuple[str, ...] = (*STATES, CACHED, FILTERED)
"""What a grid cell can show: the states, done-from-the-cache and filtered (the legends list these)."""
FINISHED_STATES = frozenset([*(s.label for s in TERMINAL), CACHED, FILTERED])
"""States a cell does not leave by itself (done, failed, blocked, dropped, degraded...)."""

GLYPHS: dict[str, str] = {
    "waiting": "·",
    "ready": "○",
    "running": "▶",
    "retry-wait": "↻",
    "done": "●",
    "failed": "✗",
    "blocked": "⊘",
    "dropped": "─",
    "degraded": "◐",
    CACHED: "◆",
    FILTERED: "▽",
}

COLOURS: dict[str, str] = {
    "waiting": "#5f6b7a",
    "ready": "#5fafd7",
    "running": "#ffd75f",
    "retry-wait": "#ff8f40",
    "done": "#5fd75f",
    "failed": "#ff5f5f",
    "blocked": "#af5f87",
    "dropped": "#4e4e4e",
    "degraded": "#d7d75f",
    CACHED: "#5fd7d7",
    FILTERED: "#5f87af",
}
UNKNOWN_COLOUR = "#8a8a8a"
for _state in STATES:  # a state added to the engine later still gets drawn
    GLYPHS.setdefault(_state, "?")
    COLOURS.setdefault(_state, UNKNOWN_COLOUR)

STATE_STYLES: dict[str, Style] = {
    state: Style(color=colour, bold=state in ("running", "failed")) for state, colour in COLOURS.items()
}
UNKNOWN_STYLE = Style(color="#303844")
"""A row whose states have not arrived yet (just scrolled into view)."""
CURSOR_STYLE = Style(reverse=True)

TRACE_COLOURS: dict[str, str] = {
    "queued": "#3a4452",
    "done": COLOURS["done"],
    "retry": COLOURS["retry-wait"],
    "timeout": "#d75fd7",
    "failed": COLOURS["failed"],
    "cancelled": "#8a8a8a",
    CACHED: COLOURS[CACHED],
}
TRACE_STATUSES: tuple[str, ...] = ("queued", CACHED, "done", "cancelled", "retry", "timeout", "failed")
"""Least to most important: when several attempts share one character, the most important shows."""

STATUS_COLOURS: dict[str, str] = {
    "starting": "#8a8a8a",
    "running": COLOURS["done"],
    "paused": COLOURS["running"],
    "stopping": COLOURS["retry-wait"],
    "idle": COLOURS["ready"],
    "closing": COLOURS["ready"],
    "done": COLOURS["done"],
    "failed": COLOURS["failed"],
    "interrupted": COLOURS["retry-wait"],
}
