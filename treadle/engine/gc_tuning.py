"""The one owner of the garbage collector's settings while a run, or a UI watching it, is live.

gc settings are process-wide and `gc.freeze`/`gc.unfreeze` do not nest: a UI that unfroze on exit undid
the freeze of a run still going. So every holder goes through `GC_TUNING.held()`: a depth count under a
lock (the engine thread and a UI's thread hold it at the same time). The first holder saves the
thresholds and raises them, every holder freezes what exists when it comes in, and only the last one to
leave restores the thresholds and unfreezes.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The run used (20,000, 50, 100) and the TUI (its gen0 and gen1 left as they were, 100): the run's are
# kept for both, since they include the TUI's and a run's many short-lived objects are there while a
# TUI watches it just the same.
MIN_THRESHOLDS = (20_000, 50, 100)
"""Each generation's threshold is raised to at least this. Young collections run less often: a run
makes many short-lived objects and few cycles. Full collections (stalls of the engine loop or a UI
frame, 20-50 ms) become 10x rarer than Python's default."""


class GcTuning:
    """Depth-counted gc settings: the first `enter` tunes, the last `exit` restores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: tuple[int, int, int] | None = None

    @property
    def depth(self) -> int:
        """How many holders are in."""
        return self._depth

    def enter(self) -> None:
        with self._lock:
            if self._depth == 0:
                saved = gc.get_threshold()
                self._saved = saved
                gc.set_threshold(*(max(now, least) for now, least in zip(saved, MIN_THRESHOLDS, strict=True)))
            self._depth += 1
            # What exists now (pandas, pyarrow, the seed, a UI's widgets) lives as long as the holder: out
            # of the collector's sight, a full collection no longer walks it (that stalled the loop ~100 ms).
            # A later holder freezes what was made since; freezing again only adds to the frozen set.
            gc.freeze()

    def exit(self) -> None:
        with self._lock:
            if self._depth == 0:
                raise RuntimeError("gc tuning exited more often than entered")
            self._depth -= 1
            if self._depth == 0:
                gc.unfreeze()
                assert self._saved is not None
                gc.set_threshold(*self._saved)
                self._saved = None

    @contextmanager
    def held(self) -> Iterator[None]:
        """Tuned gc while the `with` block runs (or between an ExitStack's enter and close)."""
        self.enter()
        try:
            yield
        finally:
            self.exit()


GC_TUNING = GcTuning()
"""The process's one instance: runs hold it while their cells run, the TUI (through the controller)
while it is mounted."""
