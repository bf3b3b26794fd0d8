"""Python columns and filters whose function's file changed on disk: the app reloads them (as F5 does)."""

from __future__ import annotations

import os
from typing import Any


class FunctionWatch:
    """The files of a run's python columns' and filters' functions (batch or not), and when each last changed."""

    def __init__(self, controller: Any) -> None:
        self._files: dict[str, str] = {}
        for column in controller.loaded.graph.order:
            settings = controller.column_settings(column)
            if settings.source:
                self._files[column] = settings.source
        self._seen = {column: self._stamp(path) for column, path in self._files.items()}

    @staticmethod
    def _stamp(path: str) -> tuple[int, int] | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def seen(self, column: str) -> None:
        """The column's function was just reloaded (F5): its file as it is now is not a change to reload again."""
        if column in self._files:
            self._seen[column] = self._stamp(self._files[column])

    def changed(self) -> list[str]:
        """Columns whose file changed since the last look (a file being written may show up twice)."""
        columns = []
        for column, path in self._files.items():
            stamp = self._stamp(path)
            if stamp is not None and stamp != self._seen[column]:
                self._seen[column] = stamp
                columns.append(column)
        return columns
