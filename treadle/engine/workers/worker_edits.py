"""A worker's side of fixing a column while the run goes (the parent's side: edits.py).

The parent checks each change once and records its version (run.json); every worker applies it to its
own pipeline and generators under the parent's version number, so the values it makes say which
version made them (`<column>__version`), as one process's do. Reruns come two ways: cells the parent
chose from the states of groups written (it holds those states too), or a column to recompute over the
groups the worker holds (only the worker knows their states as they are now).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from treadle.engine.column_edits import Versions, prepare_edit, reloadable_function
from treadle.engine.functions import FunctionLoadError, reload_function
from treadle.engine.live_edits import ColumnEditor, edited_generator, reloaded_generator
from treadle.engine.workers.messages import Adopt, EditColumn, EditMessage, Recompute, ReloadFunction, Retried

if TYPE_CHECKING:
    from treadle.engine.workers.worker import WorkerRun

log = logging.getLogger("treadle.workers")


class WorkerEdits:
    """Column edits, function reloads and recomputes as the parent sends them (on the worker's loop)."""

    def __init__(self, run: WorkerRun, versions: Versions) -> None:
        self.run = run
        self.loaded = run.loaded
        """The pipeline at its latest version (each edit applies to the one before)."""
        self.editor = ColumnEditor(run, versions)  # a column changed before the worker started stamps its version

    def handle(self, message: EditMessage) -> Retried | None:
        """Apply a message; a recompute's answer for the parent."""
        if isinstance(message, EditColumn):
            self.edit(message)
        elif isinstance(message, ReloadFunction):
            self.reload(message)
        elif isinstance(message, Adopt):
            self.adopt(message)
        else:
            return Retried(message.request, self.recompute(message))
        return None

    def edit(self, message: EditColumn) -> None:
        edit = prepare_edit(self.loaded, message.column, message.changes)  # the parent's check: it passes
        current = self.editor.generator(message.column)
        self.editor.swap(message.column, edited_generator(current, edit), message.version)
        self.loaded = edit.loaded

    def reload(self, message: ReloadFunction) -> None:
        column = message.column
        spec = reloadable_function(self.loaded, column)
        try:
            function = reload_function(spec, self.loaded.base_dir, message.source)
        except FunctionLoadError as exc:  # the module's siblings changed since the parent loaded it
            log.warning("treadle: worker: %s: %s; the function it had stays", column, exc)
            return
        self.editor.swap(column, reloaded_generator(self.editor.generator(column), function), message.version)

    def adopt(self, message: Adopt) -> None:
        """A written group this worker did not write: its states, filtered rows and failures, as the parent
        holds them, so that its cells can run again here."""
        tracker = self.run.tracker
        if message.table is not None:  # the rows' values come back from it when the cells rerun
            self.run.directory.group_path(message.group).write_bytes(message.table)
        tracker.set_group_states(message.group, message.states)
        if message.filtered:
            taken = np.array(message.filtered, dtype=np.int64)
            tracker.mark_filtered(taken[:, 0], taken[:, 1].astype(np.int16))
        self.run.scheduler.failures.update(message.failures)

    def recompute(self, message: Recompute) -> int:
        """The column's cells in the held groups that one process would recompute (or their number, with
        `dry_run`), with the named cells of groups written, turned back into work."""
        tracker = self.run.tracker
        held = sorted(set(message.held).intersection(self.run.groups.in_flight()))  # admitted, not just given
        rows = [row for group in held for row in tracker.group_rows(group)]
        if message.rows is not None:
            wanted = set(message.rows)
            rows = [row for row in rows if row in wanted]
        cells = self.editor.recompute_cells(message.column, rows) if rows else []
        if message.dry_run:
            return len(cells)
        return self.editor.rerun(cells + message.cells, redo=True)
