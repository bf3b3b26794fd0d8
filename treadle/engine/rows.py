"""Row values of the row groups in flight: seed fields plus the columns computed so far."""

from __future__ import annotations

from typing import Any

from treadle.engine.seed_rows import SeedRows, seed_records


class RowStore:
    """Holds row dicts only for admitted row groups, so memory follows the groups in flight."""

    def __init__(self, frame: SeedRows, group_size: int) -> None:
        self.frame = frame
        self.group_size = group_size
        self.rows: dict[int, dict[str, Any]] = {}
        self.restored: dict[int, dict[str, Any]] = {}
        """Values of cells finished before a resume, merged into their rows when the group loads."""

    def load_group(self, group: int) -> None:
        start = group * self.group_size
        if start in self.rows:
            return
        records = seed_records(self.frame, start, start + self.group_size)
        for offset, record in enumerate(records):
            restored = self.restored.pop(start + offset, None)
            if restored:
                record.update(restored)
            self.rows[start + offset] = record

    def release_group(self, group: int) -> None:
        start = group * self.group_size
        for row in range(start, min(start + self.group_size, len(self.frame))):
            self.rows.pop(row, None)

    def group(self, group: int) -> list[tuple[int, dict[str, Any]]]:
        start = group * self.group_size
        end = min(start + self.group_size, len(self.frame))
        return [(row, self.rows[row]) for row in range(start, end)]
