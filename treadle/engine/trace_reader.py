"""Reading a run's trace: as recorded (`TraceParts`, `read_table`), record by record as dicts (`TraceReader`),
or as arrays per field (`TraceColumns`): a chunk at a time (`TraceChunks`: memory for a chunk, not the trace)
or all at once (`read_trace`). It is trace.parquet once the run has ended; while it goes (or after it was
killed), the stream its session appends to (trace.arrows; a torn last batch is left out) after the
trace.parquet of earlier sessions. Sessions of a resumed run (`seq` starts again at 1, times at 0) are laid
end to end, each offset by the previous sessions' span, so series stay monotonic."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from treadle.engine.trace_schema import SCHEMA

PARQUET, STREAM = "trace.parquet", "trace.arrows"
SEGMENT_KEY = b"treadle.segment"
"""In a stream's schema metadata: its id."""
SEGMENTS_KEY = b"treadle.segments"
"""In trace.parquet's key-value metadata: the ids of the streams folded into it (a JSON list)."""
STRING_FIELDS = ("column", "model", "parent", "status", "error_class")
_TIMES = ("t_ready", "t_start", "t_end")
_NUMBERS = ("t_ready", "t_start", "t_end", "slot", "tokens_in", "tokens_out", "retry_after_s", "rows")
_CHUNK_FIELDS = (*STRING_FIELDS, *_NUMBERS)
"""What `TraceColumns` holds."""
_LAID_OUT = SCHEMA.append(pa.field("session", pa.int64()))  # records with times laid end to end, and their session


def trace_path(run_dir: Path) -> Path:
    """The file of a run's trace (trace.parquet once the run has ended, the stream while it goes), or
    trace.parquet if there is none. The readers here take it or the run directory, and read every part."""
    stream = Path(run_dir) / STREAM
    return stream if stream.is_file() and not (Path(run_dir) / PARQUET).is_file() else Path(run_dir) / PARQUET


@dataclass
class TraceParts:
    """A run's trace as record batches in the trace's schema (fields not in `columns`, if given, are
    null), read as they are iterated: trace.parquet's, then the stream's unless trace.parquet holds it
    already. `segments`: the ids of the streams (known once the first batch is read); after iteration,
    `skipped`: 1 if the stream's last batch was torn."""

    run_dir: Path
    columns: list[str] | None = None
    batch_rows: int = 65_536
    segments: list[str] = field(default_factory=list)
    skipped: int = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        wanted = SCHEMA.names if self.columns is None else self.columns
        parquet = pq.ParquetFile(self.run_dir / PARQUET) if (self.run_dir / PARQUET).is_file() else None
        self.segments = json.loads((parquet.metadata.metadata or {}).get(SEGMENTS_KEY, b"[]")) if parquet else []
        try:
            # Read, not memory-mapped: the pages of a mapped stream stay resident, the whole trace's by the end.
            stream = pa.ipc.open_stream(pa.OSFile(str(self.run_dir / STREAM)))
            segment = (stream.schema.metadata or {}).get(SEGMENT_KEY, b"").decode()
        except (pa.ArrowInvalid, OSError):  # none, empty, or cut off before its first batch
            stream, segment = None, ""
        stream = None if segment in self.segments else stream  # trace.parquet holds it already
        self.segments += [segment] if stream is not None and segment else []
        if parquet is not None:
            stored = [name for name in SCHEMA.names if name in wanted and name in parquet.schema_arrow.names]
            yield from (_conformed(batch, wanted) for batch in parquet.iter_batches(self.batch_rows, columns=stored))
        try:
            yield from (_conformed(batch, wanted) for batch in stream or ())
        except (pa.ArrowInvalid, OSError):  # the batches before a torn one were read
            self.skipped = 1


def _conformed(batch: pa.RecordBatch, wanted: list[str]) -> pa.RecordBatch:
    """`batch` in the trace's schema: a field not `wanted`, or that a trace written before it existed lacks
    (`rows`), is null."""
    read = set(wanted) & set(batch.schema.names)
    arrays = [batch[f.name].cast(f.type) if f.name in read else pa.nulls(len(batch), f.type) for f in SCHEMA]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def read_table(path: Path) -> tuple[pa.Table, int, list[str]]:
    """A run's trace as recorded, in one table (`path`: the run directory or its `trace_path`), as TraceParts."""
    parts = TraceParts(_run_dir(path))
    return pa.Table.from_batches(parts, SCHEMA), parts.skipped, parts.segments


def _run_dir(path: Path) -> Path:
    return Path(path) if Path(path).is_dir() else Path(path).parent


class _LaidOut:
    """A run's trace with its sessions laid end to end: `lines`, `skipped`, `sessions`, `session_starts` and
    `span_s` are the whole trace's (or its first `limit` records'), from a first pass over `seq` and `t_end`.
    Iterations read it again, `batch_rows` records at a time, no further than that pass (a live stream grows)."""

    def __init__(self, path: Path, batch_rows: int = 65_536, limit: int | None = None) -> None:
        self.run_dir, self.batch_rows, self.lines, self.skipped = _run_dir(path), batch_rows, 0, 0
        ends = np.zeros(0)  # per session, its latest end (0 at least)
        for batch, session in self._sessions(["t_end"], limit):
            ends = np.append(ends, np.zeros(session[-1] + 1 - len(ends)))
            np.maximum.at(ends, session, batch["t_end"].to_numpy())
            self.lines += len(batch)
        bounds = np.cumsum(np.append(0.0, ends))
        self.session_starts, self.span_s = bounds[:-1].tolist(), float(bounds[-1])
        self.sessions = len(self.session_starts)

    def _sessions(self, fields: Sequence[str], limit: int | None) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        """The first `limit` records (all if None; only `fields` read), a batch at a time, with their sessions
        (a resume starts again at seq 1); read to the end, `skipped` is set."""
        parts = TraceParts(self.run_dir, ["seq", *fields], self.batch_rows)
        last_seq, sessions, left = np.inf, 0, np.inf if limit is None else limit
        for batch in parts:
            if left <= 0:
                return
            batch = batch.slice(0, int(min(left, len(batch))))
            if len(batch):
                seq = batch["seq"].to_numpy()
                session = sessions - 1 + np.cumsum(np.append(seq[0] <= last_seq, seq[1:] <= seq[:-1]))
                last_seq, sessions, left = seq[-1], int(session[-1]) + 1, left - len(batch)
                yield batch, session
        self.skipped = parts.skipped

    def laid_out(self, fields: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """The records (only `fields` read), a batch at a time, times laid end to end, with their `session`."""
        starts = np.array(self.session_starts)
        for batch, session in self._sessions(fields, self.lines):
            shift = pa.array(starts[session])
            arrays = [pc.add(batch[n], shift) if n in _TIMES else batch[n] for n in SCHEMA.names]
            yield pa.RecordBatch.from_arrays([*arrays, pa.array(session)], schema=_LAID_OUT)


class TraceReader(_LaidOut):
    """A run's trace record by record as dicts (its fields and `session`), its first `limit` if given."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.laid_out(SCHEMA.names):
            yield from batch.to_pylist()


class TraceChunks(_LaidOut):
    """A run's trace as `TraceColumns` of at most `batch_rows` records (string codes their own): memory for one."""

    def reading(self, fields: Sequence[str] = _CHUNK_FIELDS) -> Iterator[TraceColumns]:
        """The chunks with only `fields` read: the others are null (codes of None, numbers 0, no slot)."""
        for batch in self.laid_out(fields):
            yield _columns(pa.Table.from_batches([batch]), self.skipped, self.session_starts, self.span_s)

    __iter__ = reading  # every field


@dataclass
class TraceColumns:
    """A run's trace as one array per field, sessions laid end to end (times offset as TraceReader does).
    String fields are codes into `names[field]` (values in order of first appearance, None included);
    numbers a record lacks are -1 in `slot` (see `has_slot`), 0 in the others."""

    names: dict[str, list[Any]]
    codes: dict[str, np.ndarray]
    t_ready: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    slot: np.ndarray
    has_slot: np.ndarray
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    retry_after: np.ndarray
    rows: np.ndarray
    """A batch call's rows (0 for a cell's own attempt)."""
    lines: int = 0
    skipped: int = 0
    session_starts: list[float] = field(default_factory=list)
    span_s: float = 0.0

    @property
    def sessions(self) -> int:
        return len(self.session_starts)


def _columns(table: pa.Table, skipped: int, session_starts: list[float], span: float) -> TraceColumns:
    encoded = {name: table[name].combine_chunks().dictionary_encode(null_encoding="encode") for name in STRING_FIELDS}
    numbers = {n.removesuffix("_s"): pc.fill_null(table[n], -1 if n == "slot" else 0).to_numpy() for n in _NUMBERS}
    return TraceColumns(
        {name: strings.dictionary.to_pylist() for name, strings in encoded.items()},
        {name: strings.indices.to_numpy(zero_copy_only=False) for name, strings in encoded.items()},
        has_slot=pc.is_valid(table["slot"]).to_numpy(zero_copy_only=False),
        lines=table.num_rows,
        skipped=skipped,
        session_starts=session_starts,
        span_s=span,
        **numbers,
    )


def read_trace(path: Path) -> TraceColumns:
    """A run's trace as columns (`path`: the run directory or its `trace_path`); none if it has none."""
    chunks = TraceChunks(path)
    table = pa.Table.from_batches(chunks.laid_out(_CHUNK_FIELDS), _LAID_OUT)
    return _columns(table, chunks.skipped, chunks.session_starts, chunks.span_s)


def trace_columns(records: Iterable[Mapping[str, Any]]) -> TraceColumns:
    """Columns of trace records given as dicts (TraceReader's, or TaskTrace._asdict()) whose times are laid
    end to end already: one session, spanning to the last end."""
    table = pa.Table.from_pylist(list(records), schema=SCHEMA)
    return _columns(table, 0, [0.0] if table.num_rows else [], max(pc.max(table["t_end"]).as_py() or 0.0, 0.0))
