"""Ready cells the response cache answered: their values until they run, and which cells they were."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from treadle.engine.generators.base import Generator
from treadle.engine.rows import RowStore
from treadle.engine.tracing import Tracer

if TYPE_CHECKING:
    from treadle.engine.generators.llm import LLMGenerator
    from treadle.engine.response_cache import ResponseCache


class CacheHits:
    def __init__(self, n_cells: int, n_nodes: int, generators: Sequence[Generator], store: RowStore) -> None:
        self._n_nodes = n_nodes
        self._generators = generators
        self._store = store
        caches = {id(c): c for g in generators if (c := getattr(g, "cache", None)) is not None}
        assert len(caches) <= 1, "a run has one response cache"
        self._cache: ResponseCache | None = next(iter(caches.values()), None)
        self.enabled = self._cache is not None
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

    def probe(self, cells: list[int]) -> list[bool]:
        """Look ready cells up, all in one query; a hit keeps its values for when it runs, a miss its
        messages and key for its call."""
        assert self._cache is not None
        n_nodes, generators, rows = self._n_nodes, self._generators, self._store.rows
        lookups: list[tuple[LLMGenerator, dict, tuple[list[dict[str, str]], str] | None]] = []
        bypassed = self._bypassed
        for cell in cells:
            row_index, node = divmod(cell, n_nodes)
            generator: LLMGenerator = generators[node]  # type: ignore[assignment]
            row = rows[row_index]
            if bypassed and cell in bypassed:  # not looked up: its model answers again
                bypassed.discard(cell)
                lookups.append((generator, row, None))
            else:
                lookups.append((generator, row, generator.cache_lookup(row)))
        answers = self._cache.get_many([lookup[1] for _, _, lookup in lookups if lookup is not None])
        hits: list[bool] = []
        for cell, (generator, row, lookup) in zip(cells, lookups, strict=True):
            answer = None if lookup is None else answers.get(lookup[1])
            if answer is not None:
                self.values[cell] = generator.hit_values(answer)
            elif lookup is not None:
                generator.missed(row, *lookup)
            hits.append(answer is not None)
        return hits

    def record(self, tracer: Tracer, cell: int, slot: int, t_ready: float, started: float, ended: float) -> None:
        """A cell answered by the cache: marked, and traced without usage (no tokens spent)."""
        self.marks[cell] = 1
        tracer.record(*divmod(cell, self._n_nodes), 1, slot, t_ready, started, ended, "cached")
