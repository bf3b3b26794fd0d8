"""The app's layout: every panel on wide screens, one panel at a time (tabs) on small ones."""

from __future__ import annotations

NARROW_WIDTH, NARROW_HEIGHT = 120, 34
PANELS = ("grid", "timeline", "failed", "log", "limits")

CSS = """
Screen { layout: vertical; }
#tabs { height: 2; display: none; }
#body {
    height: 1fr;
    layout: grid;
    grid-size: 2 3;
    grid-columns: 1fr 58;
    grid-rows: auto 1fr 14;
}
#grid-panel { row-span: 2; }
.panel {
    border: round $panel-lighten-2;
    border-title-color: $text-muted;
    height: 100%;
    padding: 0;
}
.panel:focus-within { border: round $accent; border-title-color: $accent; }
#limits-panel { height: auto; }
#grid-cursor, #legend { height: 1; padding: 0 1; }
#legend { color: $text-muted; }
#body.narrow { layout: vertical; }
#body.narrow > .panel { display: none; height: 1fr; }
#body.narrow > .panel.-active { display: block; }
"""
