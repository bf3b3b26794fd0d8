"""Counts merged from what the workers of `--workers N` report: cells by column and state for the UIs and
progress (a worker's for the groups it holds, the parent's for the rest), and for summary.json each model's
requests and rate-limited answers and the response cache's lookups."""

from __future__ import annotations

import numpy as np

from treadle.engine.limits import model_limit
from treadle.engine.response_cache import ResponseCache
from treadle.engine.summary_record import RunSummary
from treadle.engine.tracker import CellTracker
from treadle.engine.workers.messages import Finished, Tick
from treadle.engine.workers.pool import WorkerHandle
from treadle.engine.workers.worker import group_counts


class MergedCounts:
    def __init__(self, tracker: CellTracker, workers: list[WorkerHandle]) -> None:
        self._tracker = tracker
        self._workers = workers
        self._requests: dict[int, dict[str, tuple[int, int]]] = {}
        """worker -> model limit -> (requests, rate-limited answers), as its last tick or its end told."""
        self._cache_stats: dict[int, tuple[int, int, int]] = {}
        """worker -> its response cache's (hits, misses, stored)."""

    def ticked(self, index: int, tick: Tick) -> None:
        self._cache_stats[index] = tick.cache
        self._requests[index] = tick.requests

    def ended(self, index: int, finished: Finished) -> None:
        self._requests[index] = finished.requests

    def cells(self) -> np.ndarray:
        """Cell counts by node and state: the parent's for groups no worker holds, the workers' for theirs."""
        counts = np.array(self._tracker.counts, dtype=np.int64)
        for handle in self._workers:
            if handle.alive and handle.tick is not None and handle.tick.groups:
                counts += np.array(handle.tick.counts) - group_counts(self._tracker, handle.tick.groups)
        return counts

    def count_cache(self, cache: ResponseCache | None) -> None:
        """The workers' cache lookups into the parent's cache stats (it looks nothing up itself)."""
        if cache is not None and self._cache_stats:
            cache.stats.hits, cache.stats.misses, cache.stats.stored = (
                int(x) for x in np.sum(list(self._cache_stats.values()), axis=0)
            )

    def with_requests(self, summary: RunSummary) -> RunSummary:
        """`summary` with each model's requests and rate-limited answers over every worker."""
        rate_limits = {
            model: record.model_copy(
                update={
                    "requests": sum(r.get(model_limit(model), (0, 0))[0] for r in self._requests.values()),
                    "rate_limited": sum(r.get(model_limit(model), (0, 0))[1] for r in self._requests.values()),
                }
            )
            for model, record in summary.rate_limits.items()
        }
        return summary.model_copy(update={"rate_limits": rate_limits})
