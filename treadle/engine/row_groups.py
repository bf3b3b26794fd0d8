"""Row groups: which are not started, in flight or finished, under the limit on those in flight.

The scheduler admits groups in order while the limit has room (their rows load and their first cells
become ready), finishes a group when its last cell settles (its file is written), and reopens a
finished group when a person retries one of its cells. Groups finished before a resume are skipped.

A finished group keeps its place under the limit until its file is written (`written`): the rows of
finished groups wait in memory for the writer, so a writer slower than the cells must slow admission
rather than let those rows pile up.
"""

from __future__ import annotations

from collections.abc import Collection

from treadle.engine.limits import Limit

_NOT_STARTED, _IN_FLIGHT, _FINISHED = range(3)


class RowGroups:
    def __init__(self, n_groups: int, limit: Limit, finished: Collection[int] = ()) -> None:
        self.limit = limit
        self._status = bytearray(n_groups)
        for group in finished:
            self._status[group] = _FINISHED
        self._next = 0
        self._unwritten: dict[int, int] = {}
        """Finished groups whose writes are not all done -> how many are pending; they hold the limit."""

    def admit_next(self) -> int | None:
        """The next group to start, now in flight, if the limit has room and any group is left; else None."""
        while self.limit.in_use < self.limit.total and self._next < len(self._status):
            group = self._next
            self._next += 1
            if self._status[group] != _FINISHED:
                self._status[group] = _IN_FLIGHT
                self.limit.acquire()
                return group
        return None

    def finish(self, group: int) -> bool:
        """Finish a group in flight (it holds the limit until `written`); False if it was not in flight."""
        if self._status[group] != _IN_FLIGHT:
            return False
        self._status[group] = _FINISHED
        self._unwritten[group] = self._unwritten.get(group, 0) + 1
        return True

    def written(self, group: int) -> bool:
        """A write of a finished group is done; True if that freed room under the limit."""
        pending = self._unwritten.pop(group) - 1
        if pending:
            self._unwritten[group] = pending
            return False
        if self._status[group] != _FINISHED:  # reopened meanwhile: in flight, still holding its place
            return False
        self.limit.release()
        return True

    def reopen(self, group: int) -> None:
        """A finished group is in flight again (a retried cell of it)."""
        if self._status[group] == _FINISHED:
            self._status[group] = _IN_FLIGHT
            if group not in self._unwritten:  # else it still holds its place
                self.limit.acquire()

    def writes_pending(self, group: int) -> int:
        """Writes of a group started and not yet `written` (a retried group may have two at once)."""
        return self._unwritten.get(group, 0)

    def is_finished(self, group: int) -> bool:
        return self._status[group] == _FINISHED

    def in_flight(self) -> list[int]:
        return [group for group, status in enumerate(self._status) if status == _IN_FLIGHT]

    def counts(self) -> tuple[int, int, int]:
        """Row groups (finished, in flight, not started)."""
        finished = self._status.count(_FINISHED)
        in_flight = self._status.count(_IN_FLIGHT)
        return finished, in_flight, len(self._status) - finished - in_flight
