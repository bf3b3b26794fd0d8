"""TaskTrace: one record per attempt of a cell, kept in a ring buffer for UIs and in trace.jsonl.

The hot path packs each attempt's numbers into one bytearray (`trace_writer.HEAD`); TaskTrace records
and JSON lines are made only when read or flushed (on a thread of the run, or for large runs in a
helper process: `OFFLOAD_AFTER`). `NullTracer` records nothing, so the rare paths need no `if tracing:`;
on the path of every finished cell the scheduler checks once (cheaper than calling a no-op) and packs a
plain success's record itself (`record_plain`, cheaper than calling `done`)."""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from treadle.engine.trace_reader import HEAD_DTYPE, TraceColumns, joined, read_trace
from treadle.engine.trace_writer import HEAD, Batch, Record, Rest, TraceWriterProcess, write_lines

TraceStatus = Literal["done", "retry", "failed", "timeout", "cancelled", "cached"]
RING_SIZE = 20_000


class TaskTrace(NamedTuple):
    seq: int
    row: int
    column: str
    attempt: int
    slot: int
    """The worker lane (0 .. slots-1) that ran it."""
    model: str | None
    t_ready: float
    """Seconds since the run started: when the cell became ready (queued)."""
    t_start: float
    t_end: float
    status: TraceStatus
    error_class: str | None = None
    message: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    parent: str | None = None
    """For a call made from inside a cell (ctx.llm), the column of that cell; `column` is `<parent>:llm`."""
    retry_after_s: float | None = None
    """On an attempt that will be retried: the wait the endpoint asked for (Retry-After), honoured."""

    @property
    def queue_wait_s(self) -> float:
        return self.t_start - self.t_ready

    @property
    def run_s(self) -> float:
        return self.t_end - self.t_start


OFFLOAD_AFTER = 20_000
"""Past this many attempts in a run (or from the start, in a run that has more cells to run),
trace.jsonl lines are formatted by a helper process (see trace_writer.py) instead of on a thread of
the engine, where formatting (~1.5 us a line) would hold the GIL the engine loop needs: small runs
never start a process."""


def _tokens(usage: object) -> tuple[int | None, int | None]:
    if not usage or not isinstance(usage, dict):
        return None, None
    tokens_in, tokens_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        None if tokens_in is None else int(tokens_in),
        None if tokens_out is None else int(tokens_out),
    )


class Tracer:
    """Records attempts as packed numbers (the hot path); TaskTraces and JSON are made when read.

    Records wait in `_heads` (and `_more`) until the writer takes them as a `Batch` (every quarter
    second); the newest batches stay, at least RING_SIZE records, for UIs. While tracing, the run times
    of successful cells (`latencies`) come from the batches taken: one record per cell, not two."""

    def __init__(
        self, columns: Sequence[str], models: Sequence[str | None], t0: float, expected_attempts: int = 0
    ) -> None:
        self.columns = list(columns)
        self._helper_from_start = expected_attempts > OFFLOAD_AFTER
        """A run that will make more attempts than OFFLOAD_AFTER hands its first batch to the helper:
        its lines need not be read back at the end (only an earlier session's are)."""
        self.models = list(models)
        self.usage_keys = [f"{c}__usage" for c in columns]
        """Per node, the key of the token usage an LLM cell's values carry."""
        self.t0 = t0
        self.latencies = [array("d") for _ in columns]
        """Per node, the run time of each successful attempt of a cell, from the batches taken so far."""
        self._taken = 0
        """Records handed to the writer so far: the newest kept has this seq."""
        self._kept: deque[Batch] = deque()
        self._kept_count = 0
        self._heads = bytearray()
        self._more: list[tuple[int, Rest]] = []
        """The rest of the records not taken yet that are not plain successes, by index in `_heads`."""
        self.record_plain = self._heads.extend
        self.pack = HEAD.pack
        """`done`'s common case for callers on the hot path: `record_plain(pack(row, node, attempt,
        slot, t_ready, t_start, t_end))` records an attempt whose values carry no usage."""
        self._written = 0
        self._offload: TraceWriterProcess | None = None
        self._offload_from = 0
        """trace.jsonl's size when the helper took over: the lines before it are this process's."""
        self._wrote_before_offload = False
        """Whether this run's first lines are among them (else they are earlier runs', if any)."""

    @property
    def seq(self) -> int:
        """The seq of the newest record (how many there are)."""
        return self._taken + len(self._heads) // HEAD.size

    def done(
        self, row: int, node: int, attempt: int, slot: int, t_ready: float, t_start: float, t_end: float, values: dict
    ) -> None:
        """A cell's attempt that succeeded."""
        if self.usage_keys[node] in values:
            self.record(row, node, attempt, slot, t_ready, t_start, t_end, "done", values=values)
        else:
            self.record_plain(HEAD.pack(row, node, attempt, slot, t_ready, t_start, t_end))

    def record(
        self,
        row: int,
        node: int,
        attempt: int,
        slot: int,
        t_ready: float,
        t_start: float,
        t_end: float,
        status: TraceStatus,
        error: BaseException | None = None,
        message: str | None = None,
        values: dict | None = None,
        child: tuple[str, dict | None] | None = None,
        retry_after: float | None = None,
    ) -> None:
        if child is not None:
            model, usage = child
        else:
            model, usage = None, None if values is None else values.get(self.usage_keys[node])
        error_class = None if error is None else type(error).__name__
        tokens_in, tokens_out = _tokens(usage)
        rest = (status, error_class, message, tokens_in, tokens_out, model, retry_after)
        self._more.append((len(self._heads) // HEAD.size, rest))
        self._heads.extend(HEAD.pack(row, node, attempt, slot, t_ready, t_start, t_end))

    def trace(self, seq: int, raw: Record) -> TaskTrace:
        row, node, attempt, slot, t_ready, t_start, t_end = raw[:7]
        status, error_class, message, t_in, t_out, child, retry_after = raw[7:]
        t0 = self.t0
        column = self.columns[node]
        return TaskTrace(
            seq,
            row,
            column if child is None else f"{column}:llm",
            attempt,
            slot,
            self.models[node] if child is None else child,
            t_ready - t0,
            t_start - t0,
            t_end - t0,
            status,
            error_class,
            message,
            t_in,
            t_out,
            None if child is None else column,
            retry_after,
        )

    def held(self, newest: int | None = None) -> list[Batch]:
        """The `newest` records still held, as batches, oldest first; by default the ring: the newest
        RING_SIZE taken and all not taken yet. Cheap (what is not taken yet is copied): call it on the
        engine loop, then make TaskTraces of them anywhere with `traces_of`."""
        pending = len(self._heads) // HEAD.size
        if newest is None:
            newest = min(self._kept_count, RING_SIZE) + pending
        newest_first: list[Batch] = []
        if newest > 0 and pending:
            start = max(pending - newest, 0)
            rest = [(index - start, r) for index, r in self._more if index >= start]
            newest_first.append(Batch(self._taken + 1 + start, bytes(self._heads[start * HEAD.size :]), rest))
            newest -= pending - start
        for batch in reversed(self._kept):
            if newest <= 0:
                break
            newest_first.append(batch.tail(newest))
            newest -= batch.count
        return newest_first[::-1]

    def traces_of(self, batches: Sequence[Batch]) -> list[TaskTrace]:
        """TaskTraces of the records in batches from `held` (reads nothing that changes: any thread)."""
        return [self.trace(seq, raw) for batch in batches for seq, raw in batch.records()]

    def since(self, seq: int) -> list[TaskTrace]:
        """Traces still held that are newer than `seq`, oldest first (makes only those: UIs poll this)."""
        return self.traces_of(self.held(self.seq - seq))

    def recent_for(self, row: int, node: int) -> list[TaskTrace]:
        """The attempts of one cell still held, oldest first."""
        found: list[TaskTrace] = []
        for batch in self.held():
            heads = np.frombuffer(batch.heads, dtype=HEAD_DTYPE)
            for index in np.flatnonzero((heads["row"] == row) & (heads["node"] == node)).tolist():
                found.extend(self.traces_of([batch.slice(index, index + 1)]))
        return found

    def take_unwritten(self) -> Batch:
        """The records not handed to the writer yet."""
        batch = Batch(self._taken + 1, bytes(self._heads), self._more)
        self._heads.clear()  # the same bytearray: record_plain is its bound extend
        self._more = []
        self._taken += batch.count
        if batch.count:
            self._keep(batch)
            self._add_latencies(batch)
        return batch

    def _keep(self, batch: Batch) -> None:
        self._kept.append(batch)
        self._kept_count += batch.count
        while self._kept_count - self._kept[0].count >= RING_SIZE:
            self._kept_count -= self._kept.popleft().count

    def _add_latencies(self, batch: Batch) -> None:
        heads = np.frombuffer(batch.heads, dtype=HEAD_DTYPE)
        ran = heads["t_end"] - heads["t_start"]
        cell_done = np.ones(len(heads), dtype=bool)
        for index, (status, *_, child, _) in batch.more:
            cell_done[index] = status == "done" and child is None
        nodes = heads["node"]
        for node, latencies in enumerate(self.latencies):
            latencies.frombytes(ran[cell_done & (nodes == node)].tobytes())

    def write(self, path: Path, batch: Batch) -> None:
        """Append a batch from take_unwritten to trace.jsonl (blocking: call from the writer thread)."""
        if not batch.count:
            return
        self._written += batch.count
        if self._offload is None and (self._written > OFFLOAD_AFTER or self._helper_from_start):
            self._offload_from = path.stat().st_size if path.exists() else 0
            self._wrote_before_offload = self._written > batch.count
            self._offload = TraceWriterProcess(path, self.t0, self.columns, self.models)
        if self._offload is not None:
            self._offload.send(batch)
            return
        with open(path, "a", encoding="utf-8") as handle:
            write_lines(handle, batch, self.t0, self.columns, self.models)

    def finish(self, path: Path) -> None:
        """Hand over what is left (writer thread, end of a run); `wait_written` then waits for the file."""
        self.write(path, self.take_unwritten())
        if self._offload is not None:
            self._offload.end_input()

    def final_columns(self, path: Path) -> TraceColumns:
        """trace.jsonl as columns, all of this run's records included (call after `finish`). For a large
        run, the lines from before the helper took over are read back and the rest comes from the helper
        (while it writes them: no need to parse them back); a small run's file is read whole."""
        if self._offload is None:
            return read_trace(path)
        columns = read_trace(path, end=self._offload_from)
        held = TraceColumns.from_records(self._offload.record_numbers(), self.t0, self.columns, self.models)
        return joined(columns, held, same_session=self._wrote_before_offload)

    def wait_written(self) -> None:
        """Wait until trace.jsonl is complete (OSError if the helper process could not write it)."""
        offload, self._offload = self._offload, None
        if offload is not None:
            offload.wait()


class NullTracer(Tracer):
    """Tracing off: records nothing."""

    def done(self, *args) -> None:
        return None

    def record(self, *args, **kwargs) -> None:
        return None
