"""Fixing a column while a run on several workers goes: the parent's side (the workers': worker_edits.py).

The controller checks a change as for one process (column_edits.py); the parent records it as the next
version (run.json, summary.json, and `<column>__version` in the output, as one process does) and sends
it to every worker, whose next cells use it. A worker started later starts at the latest version (its
WorkerSpec has the versions).

Recompute goes group by group, as retry does (steering.py): a group a worker holds is recomputed by it
(only it knows the group's states now); a written group's cells are chosen here, from the states its
writer reported, and go to that writer, or, when it has ended or the group was written before this
run, to the live worker holding fewest groups, which first adopts the group's states.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from treadle.engine.column_edits import ColumnEdit, Versions
from treadle.engine.live_edits import ColumnEditor
from treadle.engine.tracker import CellState
from treadle.engine.workers.messages import Adopt, EditColumn, Recompute, ReloadFunction
from treadle.engine.workers.pool import ProcessHandle, WorkerHandle
from treadle.engine.workers.worker import filtered_in

if TYPE_CHECKING:
    from treadle.engine.workers.parent import ParentRun

_REDOABLE = (CellState.DONE, CellState.DEGRADED, CellState.FAILED)


class RoutedEditor(ColumnEditor):
    """The parent's ColumnEditor (on its loop): each change recorded once, then sent to every worker."""

    def __init__(self, run: ParentRun, versions: Versions) -> None:
        super().__init__(run, versions)
        self.parent = run
        run.versions, run.versions_in_pipeline = versions, len(versions.history)

    def apply(self, edit: ColumnEdit) -> int:
        version = super().apply(edit)
        changes = {key: new for key, (_, new) in edit.changes.items()}
        self._send_all(EditColumn(edit.column, changes, version))
        return version

    def reload(self, column: str, function: Callable[..., Any], pipeline_hash: str, source: bytes) -> int:
        version = super().reload(column, function, pipeline_hash, source)  # the parent's: the versions' text
        self._send_all(ReloadFunction(column, version, source))
        return version

    def _send_all(self, message: EditColumn | ReloadFunction) -> None:
        for handle in self.parent.workers:  # a dead one takes nothing
            handle.send(message)

    def recompute(self, column: str, rows: Sequence[int] | None, dry_run: bool) -> concurrent.futures.Future[int]:
        """Send the recompute of `column` (in `rows`, or every row) to the workers, group by group; the
        future: how many of its cells they turned back into work (with `dry_run`: would)."""
        run = self.parent
        tracker = run.tracker
        rows_of: dict[int, list[int]] = {}
        for row in sorted({r for r in rows or () if 0 <= r < tracker.n_rows}):
            rows_of.setdefault(row // tracker.group_size, []).append(row)
        pending = set(run.pending)
        held: dict[int, list[int]] = {}
        written: dict[int, list[int]] = {}
        count = 0
        for group in range(tracker.n_groups) if rows is None else sorted(rows_of):
            if group in pending:
                continue
            holder = run.commands.holder(group)
            if holder is not None:
                held.setdefault(holder.index, []).append(group)
                continue
            cells = self._written_cells(column, group, None if rows is None else rows_of[group])
            count += len(cells)
            if cells and not dry_run:
                handle = self._reopen(group)
                if handle is not None:
                    written.setdefault(handle.index, []).extend(cells)
        wanted = None if rows is None else list(rows)

        def message(request: int, index: int) -> Recompute:
            return Recompute(request, column, held.get(index, []), wanted, written.get(index, []), dry_run)

        # A recompute's answers count every cell (written groups' too); a dry run's, the held groups' only.
        return run.commands.ask({*held, *written}, message, count if dry_run else 0)

    def _written_cells(self, column: str, group: int, rows: list[int] | None) -> list[int]:
        """The column's finished cells in `rows` (None: all) of a written group, by the parent's states."""
        tracker = self.parent.tracker
        n, node = tracker.n_nodes, self.parent.node_names.index(column)
        chosen = tracker.group_rows(group) if rows is None else rows
        return [row * n + node for row in chosen if tracker.state[row * n + node] in _REDOABLE]

    def _reopen(self, group: int) -> WorkerHandle | None:
        """The worker to rerun cells of a written group: its writer, or one that adopts it; the group is
        in flight again until that worker writes it again. None: no worker is left."""
        run = self.parent
        handle = run.commands.writer.get(group)
        if handle is None or not handle.alive:
            alive = [h for h in run.workers if h.alive]
            if not alive:
                return None
            handle = min(alive, key=lambda h: len(h.outstanding))
            handle.send(self._adoption(group, shared_disk=isinstance(handle, ProcessHandle)))
            run.commands.written(handle, group)
        handle.outstanding.add(group)
        run.group_reopened()
        return handle

    def _adoption(self, group: int, shared_disk: bool) -> Adopt:
        """What a worker needs to take over a written group: its states, filtered rows, failures (and its
        file, unless the worker writes into the run directory itself)."""
        run = self.parent
        tracker, failures = run.tracker, run.scheduler.failures
        rows, n = tracker.group_rows(group), tracker.n_nodes
        cells = range(rows.start * n, rows.stop * n)
        table = None if shared_disk else run.directory.group_path(group).read_bytes()
        failed = [(cell, failures[cell]) for cell in cells if cell in failures]
        return Adopt(group, bytes(tracker.state[cells.start : cells.stop]), filtered_in(tracker, rows), failed, table)
