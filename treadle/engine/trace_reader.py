"""Reading a run's trace: record by record as dicts (`TraceReader`), as one array per field
(`read_trace` -> `TraceColumns`) for exports, a chunk of such arrays at a time for metrics
(`TraceChunks`: memory for a chunk, not the trace), or as an Arrow table (`read_table`).

A run's trace is trace.parquet once the run has ended; while it goes (or after it was killed), the
stream its session appends to (trace.arrows; a torn last batch is left out), after the trace.parquet
of earlier sessions. Sessions of a resumed run (`seq` starts again at 1, times at 0) are laid end to
end here, each offset by the previous sessions' span, so series stay monotonic."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
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
"""In trace.parquet's metadata: the ids of the streams folded into it (a JSON list)."""
STRING_FIELDS = ("column", "model", "parent", "status", "error_class")


def trace_path(run_dir: Path) -> Path:
    """The file of a run's trace (trace.parquet once the run has ended, the stream while it goes), or
    trace.parquet if there is none. The readers here take it or the run directory, and read every part."""
    stream = Path(run_dir) / STREAM
    return stream if stream.is_file() and not (Path(run_dir) / PARQUET).is_file() else Path(run_dir) / PARQUET


def _stream_batches(path: Path) -> tuple[Iterator[pa.RecordBatch], list[int], str]:
    """The whole record batches of a stream, lazily; a list that gets a 1 if a torn one was left out (once
    iterated); the stream's id."""
    torn: list[int] = []
    try:
        # Read, not memory-mapped: the pages of a mapped stream stay resident, the whole trace's by the end.
        reader = pa.ipc.open_stream(pa.OSFile(str(path)))
    except (pa.ArrowInvalid, OSError):  # empty, or cut off before its first batch
        return iter(()), torn, ""

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader  # the batches read before a torn one
        except (pa.ArrowInvalid, OSError):
            torn.append(1)

    return batches(), torn, (reader.schema.metadata or {}).get(SEGMENT_KEY, b"").decode()


@dataclass
class TraceParts:
    """A run's trace as record batches in the trace's schema, read as they are iterated: trace.parquet's
    (`columns` only, if given), then the stream's unless trace.parquet holds it already. After iteration:
    `skipped` (1 if the stream's last batch was torn). `segments`: the ids of the streams."""

    run_dir: Path
    columns: list[str] | None = None
    batch_rows: int = 65_536
    segments: list[str] = field(default_factory=list)
    skipped: int = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        # Both files are opened before the first batch: `segments` is known from then on.
        self.segments, self.skipped = [], 0
        schema = SCHEMA if self.columns is None else pa.schema([SCHEMA.field(name) for name in self.columns])
        parquet = pq.ParquetFile(self.run_dir / PARQUET) if (self.run_dir / PARQUET).is_file() else None
        if parquet is not None:
            self.segments = json.loads((parquet.schema_arrow.metadata or {}).get(SEGMENTS_KEY, b"[]"))
        stream: Iterator[pa.RecordBatch] = iter(())
        torn: list[int] = []
        if (self.run_dir / STREAM).is_file():
            stream, torn, segment = _stream_batches(self.run_dir / STREAM)
            if segment in self.segments:  # trace.parquet holds it already
                stream = iter(())
            elif segment:
                self.segments = [*self.segments, segment]
        if parquet is not None:
            stored = [name for name in schema.names if name in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(self.batch_rows, columns=stored):
                yield _conformed(batch, schema)
        for batch in stream:
            yield _conformed(batch, schema)
        self.skipped = len(torn)


def _conformed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` in `schema`; a field a trace written before it existed lacks (`rows`) is null there."""
    stored = batch.schema.names
    arrays = [batch.column(f.name).cast(f.type) if f.name in stored else pa.nulls(len(batch), f.type) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_table(path: Path) -> tuple[pa.Table, int, list[str]]:
    """A run's trace as one table (`path`: the run directory or its `trace_path`): trace.parquet, then the
    stream unless trace.parquet holds it already; how many records were left out; the ids of the streams."""
    parts = TraceParts(Path(path) if Path(path).is_dir() else Path(path).parent)
    table = pa.Table.from_batches(list(parts), SCHEMA)
    return table, parts.skipped, parts.segments


def _sessions(table: pa.Table) -> tuple[np.ndarray, np.ndarray, list[float], float]:
    """Each record's session and time offset (sessions laid end to end), each session's start, the span."""
    seq, t_end = table["seq"].to_numpy(), table["t_end"].to_numpy()
    if not len(seq):
        return seq, t_end, [], 0.0
    session = np.cumsum(np.append(True, seq[1:] <= seq[:-1])) - 1  # a resume starts again at seq 1
    first = np.flatnonzero(np.diff(session, prepend=-1))
    ends = np.maximum(np.maximum.reduceat(t_end, first), 0.0)
    starts = np.concatenate(([0.0], np.cumsum(ends[:-1])))
    return session, starts[session], starts.tolist(), float(starts[-1] + ends[-1])


class TraceReader:
    """Iterates a run's trace record by record as dicts (its fields and `session`), sessions laid end
    to end, the first `limit` records if given (a second pass over a live run's). After iteration:
    `lines` (records) read, `skipped` (left out: a torn last batch), `sessions`, `session_starts`
    (each one's offset) and `span_s` (offsets included)."""

    def __init__(self, path: Path, limit: int | None = None) -> None:
        self.path, self.limit = Path(path), limit
        self.lines = self.skipped = self.sessions = 0
        self.session_starts: list[float] = []
        self.span_s = 0.0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        table, self.skipped, _ = read_table(self.path)
        table = table.slice(0, self.limit)
        session, shift, self.session_starts, self.span_s = _sessions(table)
        self.sessions, self.lines = len(self.session_starts), table.num_rows
        for name in ("t_ready", "t_start", "t_end"):
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(table[name].to_numpy() + shift))
        for batch in table.append_column("session", pa.array(session, pa.int64())).to_batches(50_000):
            yield from batch.to_pylist()


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


def _columns(
    table: pa.Table, skipped: int, shift: np.ndarray, session_starts: list[float], span: float
) -> TraceColumns:
    """Columns of the table's records, their times moved by `shift` (laying sessions end to end)."""

    def numbers(name: str, empty: float = 0) -> np.ndarray:
        return pc.fill_null(table[name], empty).to_numpy()

    names, codes = {}, {}
    for name in STRING_FIELDS:
        encoded = table[name].combine_chunks().dictionary_encode(null_encoding="encode")
        names[name], codes[name] = encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)
    return TraceColumns(
        names=names,
        codes=codes,
        t_ready=numbers("t_ready") + shift,
        t_start=numbers("t_start") + shift,
        t_end=numbers("t_end") + shift,
        slot=numbers("slot", -1),
        has_slot=pc.is_valid(table["slot"]).to_numpy(zero_copy_only=False),
        tokens_in=numbers("tokens_in"),
        tokens_out=numbers("tokens_out"),
        retry_after=numbers("retry_after_s", 0.0),
        rows=numbers("rows"),
        lines=table.num_rows,
        skipped=skipped,
        session_starts=session_starts,
        span_s=span,
    )


def read_trace(path: Path) -> TraceColumns:
    """A run's trace as columns (`path`: the run directory or its `trace_path`); none if it has none."""
    table, skipped, _ = read_table(path)
    _, shift, starts, span = _sessions(table)
    return _columns(table, skipped, shift, starts, span)


def _sessions_of(seq: np.ndarray, last_seq: int | None, before: int) -> np.ndarray:
    """Each record's session, `before` sessions having started before these records (the previous one
    ended at `last_seq`): a resume starts again at seq 1."""
    new = np.append(last_seq is None or (len(seq) > 0 and seq[0] <= last_seq), seq[1:] <= seq[:-1])
    return before + np.cumsum(new[: len(seq)]) - 1


_CHUNK_FIELDS = [name for name in SCHEMA.names if name not in ("row", "attempt", "message")]
"""What `TraceColumns` holds (and `seq`, for the sessions)."""
_CHUNK_SCHEMA = pa.schema([SCHEMA.field(name) for name in _CHUNK_FIELDS])


class TraceChunks:
    """A run's trace as `TraceColumns` of at most `batch_rows` records each (string codes are the chunk's
    own), read again on each iteration: one chunk in memory, not the whole trace. Sessions are laid end to
    end as `read_trace` lays them; `lines`, `skipped`, `session_starts` and `span_s` are the whole trace's,
    from a first pass over `seq` and `t_end`. Iterations read no more records than that pass (a live run's
    stream grows)."""

    def __init__(self, path: Path, batch_rows: int = 65_536) -> None:
        self.run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
        self.batch_rows = batch_rows
        self.lines = 0
        last_seq: int | None = None
        ends: list[float] = []  # per session, its latest end
        parts = TraceParts(self.run_dir, ["seq", "t_end"], batch_rows)
        for batch in parts:
            seq, t_end = batch["seq"].to_numpy(), batch["t_end"].to_numpy()
            if not len(seq):
                continue
            session = _sessions_of(seq, last_seq, len(ends))
            first = np.flatnonzero(np.diff(session, prepend=-1))
            for s, end in zip(session[first].tolist(), np.maximum.reduceat(t_end, first).tolist(), strict=True):
                ends[s:] = [max(ends[s], end)] if s < len(ends) else [end]
            last_seq, self.lines = int(seq[-1]), self.lines + len(seq)
        self.skipped = parts.skipped
        ends = [max(end, 0.0) for end in ends]
        self.session_starts = np.concatenate(([0.0], np.cumsum(ends[:-1]))).tolist() if ends else []
        self.span_s = self.session_starts[-1] + ends[-1] if ends else 0.0

    @property
    def sessions(self) -> int:
        return len(self.session_starts)

    def __iter__(self) -> Iterator[TraceColumns]:
        return self.reading(_CHUNK_FIELDS)

    def reading(self, fields: list[str]) -> Iterator[TraceColumns]:
        """The chunks with only `fields` read: the others are null (codes of None, numbers 0, no slot)."""
        starts = np.array(self.session_starts or [0.0])
        last_seq: int | None = None
        read = sessions = 0
        wanted = list(dict.fromkeys(["seq", *fields]))
        for batch in TraceParts(self.run_dir, wanted, self.batch_rows):
            if read >= self.lines:
                return
            table = pa.Table.from_batches([_conformed(batch.slice(0, self.lines - read), _CHUNK_SCHEMA)])
            if not table.num_rows:
                continue
            seq = table["seq"].to_numpy()
            session = _sessions_of(seq, last_seq, sessions)
            sessions, last_seq, read = int(session[-1]) + 1, int(seq[-1]), read + len(seq)
            yield _columns(table, self.skipped, starts[session], self.session_starts, self.span_s)


def trace_columns(
    records: Iterable[Mapping[str, Any]],
    *,
    skipped: int = 0,
    session_starts: list[float] | None = None,
    span_s: float | None = None,
) -> TraceColumns:
    """Columns of trace records given as dicts (TraceReader's, or TaskTrace._asdict()), whose times are
    laid end to end already; by default one session, spanning to the last end."""
    table = pa.Table.from_pylist(list(records), schema=SCHEMA)
    t_end = table["t_end"].to_numpy()
    starts = ([0.0] if len(t_end) else []) if session_starts is None else session_starts
    span = max(float(t_end.max()), 0.0) if span_s is None and len(t_end) else span_s or 0.0
    return _columns(table, skipped, np.zeros(len(t_end)), starts, span)
