"""The grid of cells: one line per row, one glyph per column, for any number of rows.

A line-API widget (`ScrollView` + `render_line`): only the lines in view are drawn, and the app asks
the engine only for the states of the rows around the view (`snapshot(rows=grid.wanted_rows())`).
Row strips are cached by everything that changes how they look (states, cursor, column width), so a
tick that changes three rows redraws three lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from treadle.tui.keymap import bindings
from treadle.tui.model import compact, first_unfinished, row_finished
from treadle.tui.theme import CURSOR_STYLE, GLYPHS, STATE_STYLES, UNKNOWN_STYLE

HEADER_LINES = 3
"""Column names, done percentage, running and failed counts."""
MIN_CELL, MAX_CELL = 4, 14
LOOKAHEAD_PAGES = 1
_NAME_STYLE = Style(bold=True)
_DIM = Style(color="#7a8594")
_GUTTER = Style(color="#7a8594")
_GUTTER_CURSOR = Style(color="#ffffff", bold=True)


class CellGrid(ScrollView, can_focus=True):
    """Rows x columns of cell states, with a cursor, following the first unfinished row."""

    BINDINGS = bindings("grid")

    DEFAULT_CSS = """
    CellGrid {
        height: 1fr;
        scrollbar-size-vertical: 1;
        scrollbar-size-horizontal: 1;
    }
    """

    class CursorMoved(Message):
        def __init__(self, row: int, column: str) -> None:
            super().__init__()
            self.row = row
            self.column = column

    class DetailRequested(Message):
        def __init__(self, row: int, column: str) -> None:
            super().__init__()
            self.row = row
            self.column = column

    class ViewMoved(Message):
        """The rows in view changed by a person's hand (or the grid's size): the app fetches their states now."""

    def __init__(self, columns: Sequence[str], n_rows: int, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = tuple(columns)
        self.n_rows = n_rows
        self.window: dict[int, tuple[str, ...]] = {}
        self.by_column: dict[str, dict[str, int]] = {}
        self.cursor_row = 0
        self.cursor_col = 0
        self.follow = True
        self.selected: set[int] = set()
        """Rows marked with `v`: R, c and C act on them (treadle.tui.app_actions) while there are any."""
        self._gutter = max(3, len(str(max(n_rows - 1, 0)))) + 2
        self._cell = MAX_CELL
        self._rows_cache: LRUCache[tuple, list[Segment]] = LRUCache(96)
        self._header_cache: LRUCache[tuple, Strip] = LRUCache(16)
        self._lines_cache: LRUCache[tuple, Strip] = LRUCache(96)
        self._scrolling = False
        self._resize_layout(80)

    # ---- geometry ----------------------------------------------------------------------------------

    def _resize_layout(self, width: int) -> None:
        n = max(len(self.columns), 1)
        self._cell = max(MIN_CELL, min(MAX_CELL, (width - self._gutter) // n))
        self._rows_cache.clear()
        self._header_cache.clear()
        self._lines_cache.clear()
        self.virtual_size = Size(self._gutter + n * self._cell, self.n_rows + HEADER_LINES)

    def on_resize(self, event: events.Resize) -> None:
        self._resize_layout(self.scrollable_content_region.width)
        self.refresh()
        self.post_message(self.ViewMoved())  # more rows may be in view than the last snapshot carried

    @property
    def top_row(self) -> int:
        return int(self.scroll_y)

    @property
    def page_rows(self) -> int:
        return max(1, self.size.height - HEADER_LINES)

    def visible_rows(self) -> range:
        top = self.top_row
        return range(top, min(self.n_rows, top + self.page_rows))

    def wanted_rows(self) -> range:
        """The rows whose states the next snapshot should carry: the view, a page below when following
        (where the frontier goes next), and the cursor's neighbourhood."""
        view = self.visible_rows()
        extra = self.page_rows * LOOKAHEAD_PAGES if self.follow else self.page_rows // 2
        start = max(0, view.start - (0 if self.follow else extra))
        return range(start, min(self.n_rows, view.stop + extra))

    def _set_scroll_row(self, row: int) -> None:
        self._scrolling = True
        try:
            self.scroll_to(y=max(0, row), animate=False)
        finally:
            self._scrolling = False

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if not self._scrolling and round(old_value) != round(new_value):
            self.follow = False
            self.post_message(self.ViewMoved())

    # ---- data --------------------------------------------------------------------------------------

    def update_states(
        self, window: Mapping[int, tuple[str, ...]], by_column: Mapping[str, dict[str, int]], finished_hint: int
    ) -> None:
        """Take the latest states; redraw only the lines whose row changed.

        `finished_hint` is where the frontier is at least (finished row groups x group size): the
        grid jumps there when every row it knows of has finished.
        """
        old = self.window
        self.window = dict(window)
        if by_column != self.by_column:
            self.by_column = {name: dict(counts) for name, counts in by_column.items()}
            self.refresh(Region(0, 0, self.size.width, HEADER_LINES))
        if self.follow and self._follow_frontier(finished_hint):
            return  # scrolled: the whole view is redrawn
        top = self.top_row
        for row in self.visible_rows():
            if old.get(row) != self.window.get(row):
                self.refresh(Region(0, HEADER_LINES + row - top, self.size.width, 1))

    def _follow_frontier(self, finished_hint: int) -> bool:
        rows = range(self.top_row, min(self.n_rows, self.top_row + self.page_rows * (1 + LOOKAHEAD_PAGES)))
        if not rows:
            return False
        frontier = first_unfinished(self.window, rows)
        if frontier is None:
            known = [row for row in rows if row in self.window]
            if len(known) < len(rows) or not all(row_finished(self.window[r]) for r in known):
                return False
            frontier = max(rows.stop, finished_hint)
            if frontier >= self.n_rows:
                return False
        target = max(0, min(frontier - 1, self.n_rows - self.page_rows))
        if target == self.top_row:
            return False
        self._set_scroll_row(target)
        return True

    def row_states(self, row: int) -> tuple[str, ...] | None:
        return self.window.get(row)

    @property
    def cursor_column(self) -> str:
        return self.columns[self.cursor_col] if self.columns else ""

    # ---- the cursor --------------------------------------------------------------------------------

    def move_cursor(self, row: int, col: int | None = None, *, follow: bool = False) -> None:
        old_row = self.cursor_row
        self.cursor_row = max(0, min(self.n_rows - 1, row))
        if col is not None:
            self.cursor_col = max(0, min(len(self.columns) - 1, col))
        self._refresh_row(old_row)
        self._refresh_row(self.cursor_row)
        self.follow = follow
        view = self.visible_rows()
        if self.cursor_row not in view:
            if self.cursor_row < view.start:
                self._set_scroll_row(self.cursor_row)
            else:
                self._set_scroll_row(self.cursor_row - self.page_rows + 1)
            self.post_message(self.ViewMoved())
        self._show_cursor_column()
        self.post_message(self.CursorMoved(self.cursor_row, self.cursor_column))

    def _show_cursor_column(self) -> None:
        visible = self.scrollable_content_region.width - self._gutter
        left = self.cursor_col * self._cell
        if left < self.scroll_x:
            self.scroll_to(x=left, animate=False)
        elif left + self._cell > self.scroll_x + visible:
            self.scroll_to(x=left + self._cell - visible, animate=False)

    def _refresh_row(self, row: int) -> None:
        y = row - self.top_row
        if 0 <= y < self.page_rows:
            self.refresh(Region(0, HEADER_LINES + y, self.size.width, 1))

    def _cursor_on_screen(self) -> bool:
        return self.cursor_row in self.visible_rows()

    def action_cursor(self, dx: int, dy: int) -> None:
        if not self._cursor_on_screen():
            self.move_cursor(self.top_row, self.cursor_col + dx)
            return
        self.move_cursor(self.cursor_row + dy, self.cursor_col + dx)

    def action_page(self, pages: int) -> None:
        self.move_cursor(self.cursor_row + pages * self.page_rows)

    def action_jump(self, where: str) -> None:
        self.move_cursor(0 if where == "top" else self.n_rows - 1)

    def action_detail(self) -> None:
        if self.n_rows and self.columns:
            self.post_message(self.DetailRequested(self.cursor_row, self.cursor_column))

    def action_select(self) -> None:
        """Mark the cursor row, or unmark it."""
        if self.n_rows:
            self.selected ^= {self.cursor_row}
            self._refresh_row(self.cursor_row)

    def clear_selection(self) -> None:
        rows, self.selected = self.selected, set()
        for row in rows:
            self._refresh_row(row)

    def action_follow(self) -> None:
        self.follow = True
        self.post_message(self.ViewMoved())

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self.follow = False

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.follow = False

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < HEADER_LINES or offset.x < self._gutter:
            return
        row = self.top_row + offset.y - HEADER_LINES
        col = (offset.x - self._gutter + int(self.scroll_x)) // self._cell
        if row < self.n_rows and col < len(self.columns):
            if (row, col) == (self.cursor_row, self.cursor_col) and event.chain >= 2:
                self.action_detail()
            self.move_cursor(row, col)

    # ---- drawing -----------------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y < HEADER_LINES:
            gutter = [Segment(("row" if y == 0 else "").ljust(self._gutter), base + _DIM)]
            return self._line(gutter, list(self._header_strip(y)), width, base, styled=False)
        row = self.top_row + y - HEADER_LINES
        if row >= self.n_rows:
            return Strip.blank(width, base)
        states = self.window.get(row)
        cursor = self.cursor_col if row == self.cursor_row else -1
        # Whole lines are cached by row: when the view follows the frontier, rows that stay in view
        # (at another y) cost a lookup.
        marked = row in self.selected
        key = (row, states, cursor, marked, int(self.scroll_x), width, self._cell, base)
        line = self._lines_cache.get(key)
        if line is None:
            label = str(row).rjust(self._gutter - 2) + (" ✓" if marked else "  ")
            gutter = [Segment(label, base + (_GUTTER_CURSOR if cursor >= 0 or marked else _GUTTER))]
            line = self._line(gutter, self._row_segments(states, cursor, base), width, base, styled=True)
            self._lines_cache.set(key, line)
        return line

    def _line(self, gutter: list[Segment], cells: list[Segment], width: int, base: Style, styled: bool) -> Strip:
        """One Strip per line: the usual case (no horizontal scroll, columns fit) builds no others."""
        sx = int(self.scroll_x)
        used = self._gutter + self._cell * len(self.columns)
        if sx == 0 and used <= width:
            if not styled:
                cells = [Segment(text, base + style if style else base) for text, style, _ in cells]
            return Strip([*gutter, *cells, Segment(" " * (width - used), base)], width)
        strip = Strip(cells, used - self._gutter).crop_extend(sx, sx + max(0, width - self._gutter), None)
        if not styled:
            strip = strip.apply_style(base)
        return Strip.join([Strip(gutter, self._gutter), strip])

    def _row_segments(self, states: tuple[str, ...] | None, cursor: int, base: Style) -> list[Segment]:
        key = (states, cursor, self._cell, base)
        segments = self._rows_cache.get(key)
        if segments is None:
            segments = self._cells(states, cursor, base)
            self._rows_cache.set(key, segments)
        return segments

    def _cells(self, states: tuple[str, ...] | None, cursor: int, base: Style) -> list[Segment]:
        width = self._cell
        pad_left = (width - 1) // 2
        segments = []
        for col in range(len(self.columns)):
            if states is None or col >= len(states):
                glyph, style = "·", UNKNOWN_STYLE
            else:
                glyph, style = GLYPHS[states[col]], STATE_STYLES[states[col]]
            text = " " * pad_left + glyph + " " * (width - pad_left - 1)
            if col == cursor:
                segments.append(Segment(text[:-1], base + style + CURSOR_STYLE))
                segments.append(Segment(" ", base))
            else:
                segments.append(Segment(text, base + style))
        return segments

    def _header_strip(self, line: int) -> Strip:
        key = (line, self._cell, tuple(tuple(c.values()) for c in self.by_column.values()), self.cursor_col)
        strip = self._header_cache.get(key)
        if strip is not None:
            return strip
        width = self._cell
        segments = []
        for col, name in enumerate(self.columns):
            counts = self.by_column.get(name, {})
            total = sum(counts.values())
            if line == 0:
                text = name if len(name) < width else name[: width - 2] + "…"
                style = _NAME_STYLE + (Style(underline=True) if col == self.cursor_col else Style())
                segments.append(Segment(text, style))
                segments.append(Segment(" " * (width - len(text))))
            elif line == 1:  # done of the cells still in the run: a dropped row (a filter's) has nothing to do
                done, kept = counts.get("done", 0), total - counts.get("dropped", 0)
                text = f"{100 * done // kept}%" if kept else ""
                segments.append(Segment(text.ljust(width), STATE_STYLES["done"] if kept and done == kept else _DIM))
            else:
                running, failed = counts.get("running", 0), counts.get("failed", 0)
                parts: list[Segment] = []
                if running:
                    parts.append(Segment(f"▶{compact(running)} ", STATE_STYLES["running"]))
                if failed:
                    parts.append(Segment(f"✗{compact(failed)}", STATE_STYLES["failed"]))
                segments.extend(Strip(parts).crop_extend(0, width - 1, None))
                segments.append(Segment(" "))
        strip = Strip(segments, width * len(self.columns))
        self._header_cache.set(key, strip)
        return strip
