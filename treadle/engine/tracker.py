"""What is done: the state of every cell, dependency counters, and counts by state.

A cell is (row, node); its id is `row * n_nodes + node_index`. Each mutation returns the cells it
made ready (or blocked), so the scheduler reacts to deltas and never rescans all cells.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from enum import IntEnum

import numpy as np


class CellState(IntEnum):
    WAITING = 0
    READY = 1
    RUNNING = 2
    RETRY_WAIT = 3
    DONE = 4
    FAILED = 5
    BLOCKED = 6
    DROPPED = 7
    DEGRADED = 8
    """Failed, but took its column's `on_failure: {default: ...}` value; dependents run on it."""

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


N_STATES = len(CellState)
TERMINAL = frozenset({CellState.DONE, CellState.FAILED, CellState.BLOCKED, CellState.DROPPED, CellState.DEGRADED})
_WAITING, _READY, _RUNNING, _RETRY_WAIT, _DONE, _FAILED, _BLOCKED, _DROPPED, _DEGRADED = range(N_STATES)
_SETTLED = (_DONE, _DEGRADED)  # states a dependent can use
_IS_TERMINAL = bytes(1 if s in TERMINAL else 0 for s in range(N_STATES))
_UNFINISHED_NP = np.array([1 - t for t in _IS_TERMINAL], dtype=np.int64)


class CellTracker:
    """Cell states for `n_rows` rows of a graph whose nodes are numbered in topological order.

    `upstream[i]` / `downstream[i]` list node indices. Rows are grouped into row groups of
    `group_size`; a group counts its unfinished cells so the scheduler learns when it is finished.
    """

    def __init__(
        self,
        n_rows: int,
        upstream: Sequence[Sequence[int]],
        downstream: Sequence[Sequence[int]],
        group_size: int,
    ) -> None:
        self.n_rows = n_rows
        self.n_nodes = len(upstream)
        self.group_size = group_size
        self.n_groups = -(-n_rows // group_size) if n_rows else 0
        self.upstream = [tuple(u) for u in upstream]
        self.downstream = [tuple(d) for d in downstream]
        n_cells = n_rows * self.n_nodes
        self.state = bytearray(n_cells)
        self.pending = array("i", bytes(4 * n_cells))
        # counts[node * N_STATES + state]: one flat list, so a copy of it is one consistent picture.
        self.counts = [0] * (self.n_nodes * N_STATES)
        for node in range(self.n_nodes):
            self.counts[node * N_STATES + _WAITING] = n_rows
        self.group_open = [self._group_cells(g) for g in range(self.n_groups)]
        self.unfinished = n_cells
        # Views of the state and counter arrays for the bulk operations of batch calls (same memory).
        self._states = np.frombuffer(self.state, dtype=np.uint8)
        self._pending = np.frombuffer(self.pending, dtype=np.int32)
        self.filtered_by: np.ndarray | None = None
        """Per row: the node of the filter that dropped it, or -1 (None: the pipeline has no filter)."""
        self.n_filtered = 0

    def track_filters(self) -> None:
        """The pipeline has a filter column: its dropped rows are counted apart from dropped ones."""
        self.filtered_by = np.full(self.n_rows, -1, dtype=np.int16)

    def _group_cells(self, group: int) -> int:
        return len(self.group_rows(group)) * self.n_nodes

    def group_rows(self, group: int) -> range:
        start = group * self.group_size
        return range(start, min(start + self.group_size, self.n_rows))

    def group_of(self, cell: int) -> int:
        return cell // self.n_nodes // self.group_size

    def _set(self, cell: int, new: int) -> None:
        old = self.state[cell]
        base = (cell % self.n_nodes) * N_STATES
        self.counts[base + old] -= 1
        self.counts[base + new] += 1
        self.state[cell] = new
        became_terminal = _IS_TERMINAL[new] - _IS_TERMINAL[old]
        if became_terminal:
            self.unfinished -= became_terminal
            self.group_open[cell // self.n_nodes // self.group_size] -= became_terminal

    def _unfinished_upstream(self, cell: int) -> int:
        row_base = cell - cell % self.n_nodes
        return sum(1 for u in self.upstream[cell % self.n_nodes] if self.state[row_base + u] not in _SETTLED)

    def activate_group(self, group: int) -> list[int]:
        """Start tracking a row group's dependencies; returns its cells that are ready at once."""
        rows = self.group_rows(group)
        n = self.n_nodes
        start, stop = rows.start * n, rows.stop * n
        if self.state.count(_WAITING, start, stop) == stop - start:
            return self._activate_fresh(rows, start, stop)
        ready: list[int] = []
        for row in rows:
            base = row * self.n_nodes
            for node in range(self.n_nodes):
                cell = base + node
                if self.state[cell] != _WAITING:
                    continue
                waiting_on = self._unfinished_upstream(cell)
                self.pending[cell] = waiting_on
                if not waiting_on:
                    self._set(cell, _READY)
                    ready.append(cell)
        return ready

    def _activate_fresh(self, rows: range, start: int, stop: int) -> list[int]:
        """A group none of whose cells has started (the common case): set it up with slice writes."""
        n = self.n_nodes
        waits = [len(u) for u in self.upstream]
        self.pending[start:stop] = array("i", waits * len(rows))
        self.state[start:stop] = bytes(_WAITING if w else _READY for w in waits) * len(rows)
        roots = [node for node in range(n) if not waits[node]]
        for node in roots:
            self.counts[node * N_STATES + _WAITING] -= len(rows)
            self.counts[node * N_STATES + _READY] += len(rows)
        if len(roots) == 1:
            return list(range(start + roots[0], stop, n))
        return (np.arange(start, stop, n)[:, None] + np.array(roots)).ravel().tolist()  # row by row: in order

    def set_group_states(self, group: int, states: bytes) -> None:
        """A group's cell states as another process (a worker) left them, row after row; counts follow."""
        start = self.group_rows(group).start * self.n_nodes
        for i, new in enumerate(states):
            if self.state[start + i] != new:
                self._set(start + i, new)

    def restore_done(self, cell: int) -> None:
        """A cell a previous attempt at this run finished (resume), set before its group is admitted."""
        if self.state[cell] == _WAITING:
            self._set(cell, _DONE)

    def start(self, cell: int) -> None:
        # _set inlined for the hot path: a ready cell starts (neither state is terminal).
        base = (cell % self.n_nodes) * N_STATES
        self.counts[base + self.state[cell]] -= 1
        self.counts[base + _RUNNING] += 1
        self.state[cell] = _RUNNING

    def cancel(self, cell: int) -> None:
        """A running cell cut off by an abort is ready again (unfinished: a resume runs it)."""
        self._set(cell, _READY)

    def wait_retry(self, cell: int) -> None:
        self._set(cell, _RETRY_WAIT)

    def ready_again(self, cell: int) -> bool:
        """A retry-wait cell whose backoff ended becomes ready (unless it was dropped meanwhile)."""
        if self.state[cell] != _RETRY_WAIT:
            return False
        self._set(cell, _READY)
        return True

    def complete(self, cell: int, state: int = _DONE) -> list[int]:
        """Mark a running cell done (or degraded); returns the dependents in its row that became ready."""
        self._set(cell, state)
        ready: list[int] = []
        node = cell % self.n_nodes
        row_base = cell - node
        states, pending, counts = self.state, self.pending, self.counts
        for down in self.downstream[node]:
            dependent = row_base + down
            if states[dependent] == _WAITING:
                left = pending[dependent] - 1
                pending[dependent] = left
                if left == 0:
                    # _set inlined: waiting -> ready changes only the counts of the dependent's node.
                    base = down * N_STATES
                    counts[base + _WAITING] -= 1
                    counts[base + _READY] += 1
                    states[dependent] = _READY
                    ready.append(dependent)
        return ready

    def in_state(self, cells: np.ndarray, state: CellState) -> np.ndarray:
        """Which of `cells` are in `state` (a mask)."""
        return self._states[cells] == state

    def start_many(self, cells: np.ndarray) -> np.ndarray:
        """Start those of `cells` (one node's) that are ready; returns them."""
        if not len(cells):
            return cells
        states = self._states
        ready = cells[states[cells] == _READY]
        states[ready] = _RUNNING
        base = int(cells[0] % self.n_nodes) * N_STATES
        self.counts[base + _READY] -= len(ready)
        self.counts[base + _RUNNING] += len(ready)
        return ready

    def complete_many(self, cells: np.ndarray) -> list[int]:
        """Mark running cells of one node done at once (a batch call); returns the dependents that became
        ready, in cell order. The bulk form of `complete`: one operation, not one per row."""
        n = len(cells)
        if not n:
            return []
        states, pending, counts = self._states, self._pending, self.counts
        node = int(cells[0] % self.n_nodes)
        states[cells] = _DONE
        counts[node * N_STATES + _RUNNING] -= n
        counts[node * N_STATES + _DONE] += n
        self._close_cells(cells, np.ones(n, dtype=np.int64))
        ready: list[np.ndarray] = []
        for down in self.downstream[node]:
            dependents = cells + (down - node)
            waiting = dependents[states[dependents] == _WAITING]
            pending[waiting] -= 1
            now_ready = waiting[pending[waiting] == 0]
            states[now_ready] = _READY
            counts[down * N_STATES + _WAITING] -= len(now_ready)
            counts[down * N_STATES + _READY] += len(now_ready)
            ready.append(now_ready)
        if not ready:
            return []
        return np.sort(np.concatenate(ready)).tolist() if len(ready) > 1 else ready[0].tolist()

    def _close_cells(self, cells: np.ndarray, closed: np.ndarray) -> None:
        """`closed[i]` cells of the row of `cells[i]` became terminal: the unfinished counts go down."""
        total = int(closed.sum())
        self.unfinished -= total
        groups = cells // (self.n_nodes * self.group_size)
        first = int(groups.min())
        if first == int(groups.max()):  # a batch call's cells are of one group
            self.group_open[first] -= total
            return
        for offset, count in enumerate(np.bincount(groups - first, weights=closed).tolist()):
            self.group_open[first + offset] -= int(count)

    def fail(self, cell: int) -> list[int]:
        """Mark a running cell failed and block everything downstream of it in its row."""
        self._set(cell, _FAILED)
        blocked: list[int] = []
        row_base = cell - cell % self.n_nodes
        frontier = [cell % self.n_nodes]
        while frontier:
            for node in self.downstream[frontier.pop()]:
                dependent = row_base + node
                if self.state[dependent] in (_WAITING, _READY):
                    self._set(dependent, _BLOCKED)
                    blocked.append(dependent)
                    frontier.append(node)
        return blocked

    def retry(self, cell: int) -> list[int]:
        """Turn a failed cell and its blocked dependents back into work; returns cells now ready."""
        if self.state[cell] != _FAILED:
            return []
        row_base = cell - cell % self.n_nodes
        ready: list[int] = []
        # Nodes are numbered topologically, so one pass in index order settles each before its dependents.
        for node in range(cell % self.n_nodes, self.n_nodes):
            target = row_base + node
            if target != cell and self.state[target] != _BLOCKED:
                continue
            ups = [self.state[row_base + u] for u in self.upstream[node]]
            if any(s in (_FAILED, _BLOCKED, _DROPPED) for s in ups):
                continue
            waiting_on = sum(1 for s in ups if s not in _SETTLED)
            self.pending[target] = waiting_on
            self._set(target, _WAITING if waiting_on else _READY)
            if not waiting_on:
                ready.append(target)
        return ready

    def rerun(self, cell: int, redo: bool = False) -> list[int] | None:
        """A failed cell (with `redo`, a done or degraded one too) and its dependents back into work: the
        cells now ready; None for a cell in neither state."""
        state = self.state[cell]
        if state == _FAILED:
            return self.retry(cell)
        return self.redo(cell) if redo and state in _SETTLED else None

    def redo(self, cell: int) -> list[int]:
        """Turn a finished cell and every cell downstream of it in its row back into work (a recompute);
        returns cells now ready. The caller makes sure none of them is ready, running or waiting to retry."""
        n = self.n_nodes
        row_base = cell - cell % n
        redone = {cell % n}
        ready: list[int] = []
        # Nodes are numbered topologically: one pass in index order reaches each after its upstream.
        for node in range(cell % n, n):
            if node not in redone:
                continue
            redone.update(self.downstream[node])
            target = row_base + node
            ups = [self.state[row_base + u] for u in self.upstream[node]]
            if any(s in (_FAILED, _BLOCKED, _DROPPED) for s in ups):
                self._set(target, _BLOCKED)
                continue
            waiting_on = sum(1 for s in ups if s not in _SETTLED)
            self.pending[target] = waiting_on
            self._set(target, _WAITING if waiting_on else _READY)
            if not waiting_on:
                ready.append(target)
        return ready

    def drop_row(self, row: int) -> int:
        """Exclude a row from work and output; returns how many of its cells were dropped."""
        base = row * self.n_nodes
        dropped = 0
        for cell in range(base, base + self.n_nodes):
            if self.state[cell] != _DROPPED:
                self._set(cell, _DROPPED)
                dropped += 1
        return dropped

    def filter_row(self, row: int, node: int) -> None:
        """The filter `node` turned the row away: it is dropped, and counted as filtered."""
        self.drop_row(row)
        if self.filtered_by is None:
            self.track_filters()
        assert self.filtered_by is not None
        if self.filtered_by[row] < 0:
            self.n_filtered += 1
        self.filtered_by[row] = node

    def filter_rows(self, rows: np.ndarray, node: int) -> None:
        """The filter `node` turned `rows` away: every cell of them is dropped at once (whatever its
        state), and the rows are counted as filtered."""
        n_nodes = self.n_nodes
        if not len(rows) or not n_nodes:
            return
        cells = (rows[:, None] * n_nodes + np.arange(n_nodes)).ravel()
        old = self._states[cells]
        counts = self.counts
        for column in range(n_nodes):
            base = column * N_STATES
            for state, count in enumerate(np.bincount(old[column::n_nodes], minlength=N_STATES).tolist()):
                counts[base + state] -= count
            counts[base + _DROPPED] += len(rows)
        self._close_cells(rows * n_nodes, _UNFINISHED_NP[old].reshape(len(rows), n_nodes).sum(axis=1))
        self._states[cells] = _DROPPED
        if self.filtered_by is None:
            self.track_filters()
        assert self.filtered_by is not None
        self.n_filtered += int(np.count_nonzero(self.filtered_by[rows] < 0))
        self.filtered_by[rows] = node

    def mark_filtered(self, rows: np.ndarray, nodes: np.ndarray) -> None:
        """Rows that filters of another process (a worker) turned away, their cells' states set already:
        counted as filtered, by `nodes`."""
        if self.filtered_by is None:
            self.track_filters()
        assert self.filtered_by is not None
        self.n_filtered += int(np.count_nonzero(self.filtered_by[rows] < 0))
        self.filtered_by[rows] = nodes

    def filtered_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows filters dropped, in order, and the node of the filter that dropped each."""
        if self.filtered_by is None:
            return np.array([], dtype=np.int64), np.array([], dtype=np.int16)
        rows = np.flatnonzero(self.filtered_by >= 0)
        return rows, self.filtered_by[rows]

    def row_dropped(self, row: int) -> bool:
        return self.n_nodes > 0 and self.state[row * self.n_nodes] == _DROPPED

    def row_outcomes(self) -> dict[str, int]:
        """How many rows are done (every cell done, or degraded: it took its column's default), failed (a
        cell failed or blocked), dropped, or unfinished."""
        states = np.frombuffer(bytes(self.state), dtype=np.uint8).reshape(self.n_rows, self.n_nodes)
        dropped = (states == _DROPPED).any(axis=1)
        done = ~dropped & ((states == _DONE) | (states == _DEGRADED)).all(axis=1)
        failed = ~dropped & ~done & ((states == _FAILED) | (states == _BLOCKED)).any(axis=1)
        n_done, n_failed, n_dropped = int(done.sum()), int(failed.sum()), int(dropped.sum())
        outcomes = {
            "total": self.n_rows,
            "done": n_done,
            "failed": n_failed,
            "dropped": n_dropped,
            "unfinished": self.n_rows - n_done - n_failed - n_dropped,
        }
        if self.filtered_by is not None:
            outcomes["filtered"] = self.n_filtered
            outcomes["dropped"] -= self.n_filtered
        return outcomes

    def dropped_rows(self) -> set[int]:
        if not self.n_nodes:
            return set()
        first_cells = np.frombuffer(bytes(self.state[:: self.n_nodes]), dtype=np.uint8)
        return set(np.flatnonzero(np.equal(first_cells, _DROPPED)).tolist())

    def row_states(self, row: int) -> bytes:
        base = row * self.n_nodes
        return bytes(self.state[base : base + self.n_nodes])

    def group_states(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        """A group's cell states, (rows, nodes) (a copy), and which of its rows are not dropped."""
        rows = self.group_rows(group)
        n = self.n_nodes
        states = self._states[rows.start * n : rows.stop * n].reshape(len(rows), n).copy()
        return states, states[:, 0] != _DROPPED if n else np.ones(len(rows), dtype=bool)

    def row_settled(self, row: int) -> bool:
        """Every cell of `row` done (or settled by its column's default)."""
        base = row * self.n_nodes
        return all(s in _SETTLED for s in self.state[base : base + self.n_nodes])

    def cells_in(self, state: CellState) -> list[int]:
        """Every cell in a state (a scan: for commands such as 'retry all failed', not the hot path)."""
        return [i for i, s in enumerate(self.state) if s == state]

    def totals(self) -> list[int]:
        """Cell counts per state over all columns."""
        totals = [0] * N_STATES
        for node in range(self.n_nodes):
            base = node * N_STATES
            for s in range(N_STATES):
                totals[s] += self.counts[base + s]
        return totals
