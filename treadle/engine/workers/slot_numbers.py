"""The run's slot numbers for its workers' execution slots: each (worker, local slot) pair is a lane of its
own in the trace, so the TUI's timeline, `lanes_used` and the Chrome trace never put two workers' attempts
on one lane.

A worker numbers its slots 0 .. share-1, and its share changes while it runs (a person raises the slot
limit; a worker dies and the others take its share). So the parent keeps a table per worker, local slot
to lane: at its start a worker's share is a block of lanes next to the previous worker's (16 slots, 2
workers: 0-7 and 8-15, as many lanes as the limit, each worker's together), and any slot it numbers later
beyond its block takes the next lane no one has, the first time one of its attempts comes back."""

from __future__ import annotations

import numpy as np

_NONE = -1
"""In a table: a local slot with no lane yet."""
_EMPTY = np.empty(0, dtype=np.int64)


class SlotNumbers:
    """Local slot numbers to the run's lanes, per worker (on the parent's loop)."""

    def __init__(self) -> None:
        self._lanes: dict[int, np.ndarray] = {}
        """worker -> the lane of each of its local slots (`_NONE`: none yet)."""
        self._next = 0
        """The lowest lane no worker has."""

    def reserve(self, worker: int, slots: int) -> None:
        """A worker starting with `slots` slots: lanes for them, together after every lane given so far."""
        self._lanes[worker] = np.arange(self._next, self._next + slots, dtype=np.int64)
        self._next += slots

    def lanes(self, worker: int, slots: np.ndarray) -> np.ndarray:
        """The lanes of a batch of `worker`'s local slot numbers; a slot it had not numbered before takes
        the next free lane (several at once: in slot order). Vectorised: this runs on every trace batch."""
        table = self._lanes.get(worker, _EMPTY)
        if len(slots) and int(slots.max()) >= len(table):
            more = np.full(int(slots.max()) + 1 - len(table), _NONE, dtype=np.int64)
            table = self._lanes[worker] = np.concatenate([table, more])
        lanes = table[slots]
        unnumbered = lanes == _NONE
        if unnumbered.any():
            new = np.unique(slots[unnumbered])
            table[new] = np.arange(self._next, self._next + len(new), dtype=np.int64)
            self._next += len(new)
            lanes = table[slots]
        return lanes
