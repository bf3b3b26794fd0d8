"""The ready heaps: cells ready to run, best first, and which of them may start now.

One heap per distinct per-model limit, plus one (index 0) for cells under no model limit. A heap
entry is (row, -critical path, cell, time it became ready): the oldest row first, so rows (and row
groups) finish early instead of every row waiting for the group's first column, then the longest
critical path. Entries of dropped cells stay until they reach the top (their state is checked then).
A cell whose model may not start a request yet (its limit, pace or Retry-After) waits in its heap;
a timer asks for a worker when the soonest of them may start.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence

from treadle.engine.generators.base import Generator
from treadle.engine.limits import SLOTS, Limit
from treadle.engine.rate_limits import ModelRate
from treadle.engine.tracker import CellState, CellTracker

_READY = CellState.READY
_LOOKUPS_PER_TAKE = 32
_LOOKUP_WAIT_S = 0.002

Entry = tuple[int, int, int, float]
"""(row, -critical path, cell, time it became ready)."""


class ReadyHeaps:
    def __init__(
        self,
        tracker: CellTracker,
        generators: Sequence[Generator],
        critical_path: Sequence[int],
        limits: dict[str, Limit],
        rates: dict[str, ModelRate],
        clock: Callable[[], float],
        start_due: Callable[[], None],
    ) -> None:
        self._tracker = tracker
        self._slots = limits[SLOTS]
        self._clock = clock
        self._start_due = start_due
        """Asks for a worker: a waiting cell's model may start a request now."""
        limited = sorted({g.limit_key for g in generators if g.limit_key is not None})
        self._rates: list[ModelRate | None] = [None] + [rates[key] for key in limited]
        self._heap_of_node = [0 if g.limit_key is None else 1 + limited.index(g.limit_key) for g in generators]
        self.node_limit = [None if heap == 0 else limits[limited[heap - 1]] for heap in self._heap_of_node]
        """Per node: the per-model limit its cells count against, if any."""
        self._heaps: list[list[Entry]] = [[] for _ in self._rates]
        self._model_heaps = self._heaps[1:]
        self._neg_cp = [-cp for cp in critical_path]
        self.model_starts = 0
        """Requests to models started by taking cells since the scheduler last set this to 0 (when a
        time slice of its workers began)."""
        self._rate_timer: asyncio.TimerHandle | None = None
        self._rate_timer_at = math.inf
        self._probed = [getattr(g, "cache", None) is not None for g in generators]
        self.probe: Callable[[list[int]], list[bool]] | None = None
        """Answers ready cells from the response cache (True: a hit, it goes to heap 0, under no model limit)."""
        self._unprobed: deque[tuple[int, float]] = deque()
        """Ready cells of cached columns not looked up yet, with when they became ready: looked up a
        few at a time by `take`, so a row group made ready at once does not hold the loop."""
        self.collect_batches: Callable[[list[int]], list[int]] | None = None
        """Takes the cells of batch columns (treadle.engine.batches) and returns the others."""

    def push(self, cells: list[int], now: float) -> None:
        if self.collect_batches is not None:
            cells = self.collect_batches(cells)
        n_nodes = self._tracker.n_nodes
        probing = self.probe is not None
        for cell in cells:
            node = cell % n_nodes
            if probing and self._probed[node]:
                self._unprobed.append((cell, now))
                continue
            heapq.heappush(self._heaps[self._heap_of_node[node]], (cell // n_nodes, self._neg_cp[node], cell, now))

    def _look_up(self) -> None:
        """Look up to _LOOKUPS_PER_TAKE waiting cells in the response cache (one query): a hit goes to
        heap 0 (it waits for no model slot, pace or budget), a miss to its model's heap."""
        unprobed, probe, state = self._unprobed, self.probe, self._tracker.state
        assert probe is not None
        n_nodes = self._tracker.n_nodes
        ready = [unprobed.popleft() for _ in range(min(len(unprobed), _LOOKUPS_PER_TAKE))]
        ready = [(cell, at) for cell, at in ready if state[cell] == _READY]
        for (cell, at), hit in zip(ready, probe([cell for cell, _ in ready]), strict=True):
            node = cell % n_nodes
            heap = 0 if hit else self._heap_of_node[node]
            heapq.heappush(self._heaps[heap], (cell // n_nodes, self._neg_cp[node], cell, at))

    def push_call(self, cell: int, now: float) -> None:
        """Queue a batch call under its first cell (which stands for it; it has no per-model limit)."""
        n_nodes = self._tracker.n_nodes
        heapq.heappush(self._heaps[0], (cell // n_nodes, self._neg_cp[cell % n_nodes], cell, now))

    def count(self) -> int:
        """Ready entries (an upper bound: entries of dropped cells leave lazily)."""
        return sum(len(heap) for heap in self._heaps) + len(self._unprobed)

    def take(self) -> Entry | None:
        """The best entry whose model may start a request, with its slots taken; or None."""
        if unprobed := self._unprobed:
            # Looked up 32 at a time (one query) while no cell waits for a model and other work is there
            # to take (cache hits, mostly): a cell made ready alone by the cell before it waits for
            # others, for at most _LOOKUP_WAIT_S. Cells that may need a model slot are looked up at once,
            # so the oldest rows keep getting the slots first.
            few = len(unprobed) < _LOOKUPS_PER_TAKE and not any(self._model_heaps)
            if few and self._clock() - unprobed[0][1] < _LOOKUP_WAIT_S and (entry := self._take()) is not None:
                return entry
            self._look_up()
            entry = self._take()
            if entry is None and self._unprobed:  # the rest in the next loop iteration, by a worker asked then
                asyncio.get_running_loop().call_soon(self._start_due)
            return entry
        return self._take()

    def _take(self) -> Entry | None:
        state = self._tracker.state
        if len(self._heaps) == 1:  # no per-model limits (python/template columns): one heap, no slot check
            heap = self._heaps[0]
            while heap:
                entry = heapq.heappop(heap)
                if state[entry[2]] == _READY:  # else dropped while it waited
                    self._slots.acquire()
                    self._tracker.start(entry[2])
                    return entry
            return None
        return self._take_paced(self._clock())

    def _take_paced(self, now: float) -> Entry | None:
        state = self._tracker.state
        best: Entry | None = None
        best_heap = -1
        soonest = math.inf
        for index, heap in enumerate(self._heaps):
            while heap and state[heap[0][2]] != _READY:
                heapq.heappop(heap)  # dropped while it waited
            if not heap or (best is not None and heap[0] >= best):
                continue
            rate = self._rates[index]
            if rate is not None and (delay := rate.start_delay(now)) > 0:
                soonest = min(soonest, delay)
                continue
            best = heap[0]
            best_heap = index
        if best is None:
            self._arm_rate_timer(now, soonest)
            return None
        heap = self._heaps[best_heap]
        heapq.heappop(heap)
        rate = self._rates[best_heap]
        if rate is not None:
            rate.started(now)
            self.model_starts += 1
            if heap:  # the next start of this model: another worker now, or be woken when the pace allows
                delay = rate.start_delay(now)
                if delay == 0:
                    self._start_due()
                else:
                    self._arm_rate_timer(now, delay)
        self._slots.acquire()
        self._tracker.start(best[2])
        return best

    def _arm_rate_timer(self, now: float, delay: float) -> None:
        """Ask for a worker when a model's pace or Retry-After lets a waiting request start."""
        if delay == math.inf or delay <= 0:
            return
        at = now + delay
        if at >= self._rate_timer_at:
            return
        if self._rate_timer is not None:
            self._rate_timer.cancel()
        self._rate_timer_at = at
        self._rate_timer = asyncio.get_running_loop().call_later(delay, self._rate_timer_fired)

    def _rate_timer_fired(self) -> None:
        self._rate_timer = None
        self._rate_timer_at = math.inf
        self._start_due()

    def cancel_timer(self) -> None:
        if self._rate_timer is not None:
            self._rate_timer.cancel()
