"""The generator seam: what makes a column's value for one row."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any


class RunMode(Enum):
    """Where the scheduler runs a generator: awaited on the loop, in a worker thread, or inline."""

    ASYNC = "async"
    THREAD = "thread"
    INLINE = "inline"  # cheap and CPU-only (template rendering): a thread hop would cost more than the work
    BATCH = "batch"  # one call for the ready rows of a row group (treadle.engine.batches)


class Generator:
    """Makes the values of one node's output columns for one row.

    Subclasses implement `agenerate` (mode ASYNC) or `generate` (modes THREAD and INLINE). Both take the
    row (seed fields plus the columns computed so far) and return `{column: value}` for the node's
    outputs, optionally with side-effect columns `<column>__<name>`.
    """

    mode: RunMode
    limit_key: str | None = None
    """The per-model limit this generator's cells count against, if any."""
    wants_context: bool = False
    """Whether `generate`/`agenerate` take a second argument, the cell's ColumnContext."""

    def __init__(self, name: str, outputs: tuple[str, ...]) -> None:
        self.name = name
        self.outputs = outputs

    def generate(self, row: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def agenerate(self, row: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def astart(self) -> None:
        """Build clients on the engine loop before the first cell, so no cell pays for it."""

    async def aclose(self) -> None:
        """Release clients and connections at the end of a run."""
