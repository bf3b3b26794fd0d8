"""Ready cells the response cache answered: their values until they run, and which cells they were."""

from __future__ import annotations

from collections.abc import Sequence

from treadle.engine.generators.base import Generator
from treadle.engine.rows import RowStore
from treadle.engine.tracing import Tracer


class CacheHits:
    def __init__(self, n_cells: int, n_nodes: int, generators: Sequence[Generator], store: RowStore) -> None:
        self._n_nodes = n_nodes
        self._generators = generators
        self._store = store
        self.enabled = any(getattr(g, "cache", None) is not None for g in generators)
        self.values: dict[int, dict] = {}
        """Values of ready cells answered by the cache, until they run."""
        self.marks = bytearray(n_cells if self.enabled else 0)
        """Per cell: 1 if its value came from the cache (empty when no column uses it)."""
        self._bypassed: set[int] = set()
        """Cells a person reruns: their next lookup misses, so the model answers again."""

    def bypass(self, cell: int) -> None:
        """The cell's next lookup misses (a retried or recomputed cell asks its model again)."""
        if self.enabled and getattr(self._generators[cell % self._n_nodes], "cache", None) is not None:
            self._bypassed.add(cell)
            self.marks[cell] = 0

    def probe(self, cell: int) -> bool:
        """Look a ready cell up; a hit keeps its values for when it runs."""
        if self._bypassed and cell in self._bypassed:
            self._bypassed.discard(cell)
            return False
        row_index, node = divmod(cell, self._n_nodes)
        values = self._generators[node].cached(self._store.rows[row_index])  # type: ignore[attr-defined]
        if values is None:
            return False
        self.values[cell] = values
        return True

    def record(self, tracer: Tracer, cell: int, slot: int, t_ready: float, started: float, ended: float) -> None:
        """A cell answered by the cache: marked, and traced without usage (no tokens spent)."""
        self.marks[cell] = 1
        tracer.record(*divmod(cell, self._n_nodes), 1, slot, t_ready, started, ended, "cached")
