"""A Gantt view of recent attempts: one lane per execution slot, a sliding window of ~30 seconds.

Each attempt (a TaskTrace from `controller.traces(since)`) marks its lane's time buckets: queue wait
(ready to start) dim, run time (start to end) coloured by status. Buckets live in a fixed ring per
lane, so taking new traces costs O(their length) and drawing costs O(width) per visible lane,
however many attempts the window holds. Attempts appear when they end (traces are recorded then).
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Iterable
from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from treadle.tui.model import compact, duration_text
from treadle.tui.theme import TRACE_COLOURS, TRACE_STATUSES

WINDOW_S = 30.0
BUCKET_S = 0.05
RING = int(WINDOW_S / BUCKET_S) + 200
HEADER_LINES = 3
LABEL = 5
_CODE = {status: i + 1 for i, status in enumerate(TRACE_STATUSES)}
_STATUS_OF = {code: status for status, code in _CODE.items()}
_STYLES = {code: Style(color=TRACE_COLOURS[status]) for status, code in _CODE.items()}
_QUEUED = _CODE["queued"]
_DIM = Style(color="#7a8594")


class _Lane:
    __slots__ = ("codes", "epochs")

    def __init__(self) -> None:
        self.codes = bytearray(RING)
        self.epochs = array("q", [-1]) * RING

    def mark(self, first: int, last: int, code: int) -> None:
        codes, epochs = self.codes, self.epochs
        for bucket in range(first, last + 1):
            i = bucket % RING
            if epochs[i] != bucket:
                epochs[i] = bucket
                codes[i] = code
            elif codes[i] < code:
                codes[i] = code

    def code(self, first: int, last: int) -> int:
        """The most important code among buckets first..last."""
        codes, epochs = self.codes, self.epochs
        best = 0
        for bucket in range(first, last + 1):
            i = bucket % RING
            if epochs[i] == bucket and codes[i] > best:
                best = codes[i]
        return best


class Timeline(ScrollView):
    """Lanes of recent attempts; call `add(traces, now)` each tick, then it redraws what is in view."""

    DEFAULT_CSS = """
    Timeline {
        height: 1fr;
        overflow-x: hidden;
        scrollbar-visibility: hidden;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.now = 0.0
        self.cursor = 0
        """The trace sequence number read so far (the `since` of the next `controller.traces`)."""
        self._lanes: list[_Lane] = []
        self._recent: deque[tuple[float, float, float, int]] = deque()
        self._sum_wait = 0.0
        self._sum_run = 0.0
        self._by_status = [0] * (len(TRACE_STATUSES) + 1)
        self.slots = 1
        self._last_end = -math.inf
        """When the latest attempt ended: once the window has slid past it, the view stays as it is."""

    def add(self, traces: Iterable[Any], now: float, slots: int | None = None) -> None:
        """Take new traces (TaskTrace-like: slot, t_ready, t_start, t_end, status) and move the window;
        redrawn unless it showed no attempt and still shows none (an idle run's costs nothing)."""
        shown = self._last_end >= self.now - WINDOW_S - BUCKET_S  # the last drawn window held an attempt
        self.now = now
        old_slots = self.slots
        if slots is not None:
            self.slots = max(1, slots)
        lanes = self._lanes
        oldest = math.floor((now - WINDOW_S) / BUCKET_S) - 1
        for trace in traces:
            slot = trace.slot
            if slot < 0:
                continue
            while len(lanes) <= slot:
                lanes.append(_Lane())
            lane = lanes[slot]
            code = _CODE.get(trace.status, _CODE["failed"])
            ready_b = math.floor(trace.t_ready / BUCKET_S)
            start_b = math.floor(trace.t_start / BUCKET_S)
            end_b = math.floor(trace.t_end / BUCKET_S)
            floor = max(oldest, end_b - RING + 1)
            if start_b > ready_b:
                lane.mark(max(ready_b, floor), start_b - 1, _QUEUED)
            lane.mark(max(start_b, floor), end_b, code)
            self._last_end = max(self._last_end, trace.t_end)
            wait, run = trace.t_start - trace.t_ready, trace.t_end - trace.t_start
            self._recent.append((trace.t_end, wait, run, code))
            self._sum_wait += wait
            self._sum_run += run
            self._by_status[code] += 1
        recent = self._recent
        horizon = now - WINDOW_S
        while recent and recent[0][0] < horizon:
            _, wait, run, code = recent.popleft()
            self._sum_wait -= wait
            self._sum_run -= run
            self._by_status[code] -= 1
        height = HEADER_LINES + max(len(lanes), self.slots)
        if self.virtual_size.height != height:
            self.virtual_size = Size(self.size.width, height)
        elif not shown and self._last_end < now - WINDOW_S - BUCKET_S and self.slots == old_slots:
            return
        self.refresh()

    # ---- drawing -----------------------------------------------------------------------------------

    def _stats_line(self) -> list[Segment]:
        n = len(self._recent)
        if not n:
            return [Segment(f"no attempts ended in the last {WINDOW_S:.0f} s", _DIM)]
        busy = self._sum_run / (max(min(WINDOW_S, self.now), 1.0) * self.slots)
        parts = [
            Segment(f"last {WINDOW_S:.0f} s: {compact(n)} attempts", Style(bold=True)),
            Segment(f"  wait avg {duration_text(self._sum_wait / n)}", _DIM),
            Segment(f"  run avg {duration_text(self._sum_run / n)}", _DIM),
            Segment(f"  slots busy {min(busy, 9.99):.0%}", _DIM),
        ]
        for code in range(2, len(self._by_status)):
            if self._by_status[code]:
                parts.append(Segment(f"  {_STATUS_OF[code]} {compact(self._by_status[code])}", _STYLES[code]))
        return parts

    def _legend_line(self) -> list[Segment]:
        lanes = max(len(self._lanes), self.slots)
        shown = max(1, self.scrollable_content_region.height - HEADER_LINES)
        top = int(self.scroll_y)
        where = f"  slots {top}-{min(lanes, top + shown) - 1} of {lanes} (scroll)" if lanes > shown else ""
        parts = [Segment("slot ", _DIM), Segment("─ queued", _STYLES[_QUEUED])]
        for status in TRACE_STATUSES[1:]:
            parts.append(Segment(f"  █ {status}", _STYLES[_CODE[status]]))
        parts.append(Segment(where, _DIM))
        return parts

    def _axis_line(self, width: int) -> list[Segment]:
        chars = [" "] * width
        for seconds in range(0, int(WINDOW_S) + 1, 10):
            x = round((WINDOW_S - seconds) / WINDOW_S * (width - 1))
            label = "now" if seconds == 0 else f"-{seconds}s"
            start = min(max(0, x - (len(label) - 1 if seconds == 0 else 0)), width - len(label))
            chars[start : start + len(label)] = label
        return [Segment(" " * LABEL), Segment("".join(chars), _DIM)]

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        span = max(width - LABEL, 1)
        if y == 0:
            return Strip(self._stats_line()).crop_extend(0, width, base).apply_style(base)
        if y == 1:
            return Strip(self._legend_line()).crop_extend(0, width, base).apply_style(base)
        if y == 2:
            return Strip(self._axis_line(span)).crop_extend(0, width, base).apply_style(base)
        slot = int(self.scroll_y) + y - HEADER_LINES
        if slot >= max(len(self._lanes), self.slots):
            return Strip.blank(width, base)
        if slot >= len(self._lanes):
            return Strip([Segment(f"{slot:>{LABEL - 1}} ", _DIM)]).crop_extend(0, width, base).apply_style(base)
        lane = self._lanes[slot]
        per_char = WINDOW_S / span
        start = self.now - WINDOW_S
        segments = [Segment(f"{slot:>{LABEL - 1}} ", base + _DIM)]
        run_code, run_len = -1, 0
        for x in range(span):
            first = math.floor((start + x * per_char) / BUCKET_S)
            last = max(first, math.floor((start + (x + 1) * per_char) / BUCKET_S) - 1)
            code = lane.code(first, last)
            if code == run_code:
                run_len += 1
                continue
            if run_len:
                segments.append(self._run(run_code, run_len, base))
            run_code, run_len = code, 1
        if run_len:
            segments.append(self._run(run_code, run_len, base))
        used = LABEL + span
        if used < width:
            segments.append(Segment(" " * (width - used), base))
        return Strip(segments, max(used, width)).crop(0, width) if used > width else Strip(segments, width)

    @staticmethod
    def _run(code: int, length: int, base: Style) -> Segment:
        if code == 0:
            return Segment(" " * length, base)
        if code == _QUEUED:
            return Segment("─" * length, base + _STYLES[code])
        return Segment("█" * length, base + _STYLES[code])
