"""Reading trace.jsonl: line by line as dicts (`TraceReader`), or as one array per field
(`read_trace` -> `TraceColumns`) for metrics and exports.

`read_trace` parses the file with pyarrow's JSON reader into columns (only the fields used) and turns
them into numpy arrays (~0.3 s per 200,000 attempts; at the end of a run, summary.json's `metrics`
read back only the lines the engine wrote itself: a large run's others come from the trace helper,
see `Tracer.final_columns`). A file pyarrow cannot read (an unparsable line in the middle, a field of
an odd type) is read again line by line, with the same result. Memory: about 90 bytes per attempt
(1M ~ 90 MB) plus one block of the file; files over STREAM_ABOVE_BYTES are read block by block.

Times are seconds since the run started. A resumed run appends its attempts to the same trace.jsonl
with times starting again at 0 (and `seq` starting again at 1): each such session is laid after the
previous one (its times are offset by the previous sessions' spans), so series stay monotonic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

STREAM_ABOVE_BYTES = 256 * 2**20
"""A trace.jsonl larger than this is parsed block by block (memory), smaller ones in parallel blocks."""
_BLOCK_BYTES = 2**20


def trace_path(run_dir: Path) -> Path:
    return Path(run_dir) / "trace.jsonl"


class TraceReader:
    """Iterates trace.jsonl line by line as dicts, sessions (resumes) laid end to end.

    After iteration: `lines` read, `skipped` unparsable lines (a torn last line after a crash),
    `sessions` and `span_s` (the end of the last attempt, offsets included).
    """

    def __init__(self, path: Path, limit: int | None = None, end: int | None = None) -> None:
        self.path = Path(path)
        self.limit = limit
        """Stop after this many lines (a second pass over a file a live run is still appending to)."""
        self.end = end
        """Read only the lines within the file's first `end` bytes."""
        self.lines = 0
        self.skipped = 0
        self.sessions = 0
        self.session_starts: list[float] = []
        """Offset of each session on the common time axis."""
        self.span_s = 0.0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        offset = 0.0
        last_seq = None
        session_end = 0.0
        loads = json.loads
        limit = self.limit
        left = self.end
        with open(self.path, "rb") as handle:
            for raw_line in handle:
                if limit is not None and self.lines >= limit:
                    break
                if left is not None:
                    left -= len(raw_line)
                    if left < 0:
                        break
                line = raw_line.decode("utf-8", "replace")
                if not line.strip():
                    continue
                try:
                    trace = loads(line)
                    seq = trace["seq"]
                    t_ready = float(trace["t_ready"])
                    t_start = float(trace["t_start"])
                    t_end = float(trace["t_end"])
                except (ValueError, KeyError, TypeError):
                    self.skipped += 1
                    continue
                if last_seq is None or seq <= last_seq:
                    # The first line, or a resumed run starting again at seq 1 and time 0.
                    if last_seq is not None:
                        offset += session_end
                    session_end = 0.0
                    self.sessions += 1
                    self.session_starts.append(offset)
                last_seq = seq
                if t_end > session_end:
                    session_end = t_end
                if offset:
                    t_ready += offset
                    t_start += offset
                    t_end += offset
                trace["t_ready"], trace["t_start"], trace["t_end"] = t_ready, t_start, t_end
                trace["session"] = self.sessions - 1
                self.lines += 1
                yield trace
        self.span_s = offset + session_end


# ---- trace.jsonl as columns ----------------------------------------------------------------------


class ValueCodes:
    """Small integer codes for the values of a field, in the order they are first asked for (None included)."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[Any, int] = {}

    def code(self, value: Any) -> int:
        code = self._index.get(value)
        if code is None:
            code = self._index[value] = len(self.values)
            self.values.append(value)
        return code


def _encode(codes: ValueCodes, array: pa.Array) -> np.ndarray:
    """The codes of a column of strings (each distinct value looked up once)."""
    encoded = array.dictionary_encode(null_encoding="encode")
    lookup = np.array([codes.code(v) for v in encoded.dictionary.to_pylist()], dtype=np.int32)
    return lookup[encoded.indices.to_numpy(zero_copy_only=False)]


STRING_FIELDS = ("column", "model", "parent", "status", "error_class")
HEAD_DTYPE = np.dtype(
    [(name, np.int64) for name in ("row", "node", "attempt", "slot")]
    + [(name, np.float64) for name in ("t_ready", "t_start", "t_end")]
)
"""A packed record head (`trace_writer.HEAD`) as numpy reads it."""
_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("column", pa.string()),
        ("model", pa.string()),
        ("slot", pa.int64()),
        ("t_ready", pa.float64()),
        ("t_start", pa.float64()),
        ("t_end", pa.float64()),
        ("status", pa.string()),
        ("error_class", pa.string()),
        ("tokens_in", pa.int64()),
        ("tokens_out", pa.int64()),
        ("retry_after_s", pa.float64()),
        ("parent", pa.string()),
    ]
)
_REQUIRED = ("seq", "t_ready", "t_start", "t_end")
"""A line without one of these is skipped (as TraceReader skips it)."""


@dataclass
class TraceColumns:
    """trace.jsonl as one array per field, sessions laid end to end (times offset as TraceReader does).

    String fields are codes into `names[field]` (values in order of first appearance, None included).
    """

    names: dict[str, list[Any]]
    codes: dict[str, np.ndarray]
    t_ready: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    slot: np.ndarray
    """The slot, where `has_slot`; -1 elsewhere."""
    has_slot: np.ndarray
    tokens_in: np.ndarray
    """0 where the line has none."""
    tokens_out: np.ndarray
    retry_after: np.ndarray
    """The Retry-After honoured after the attempt (seconds); 0 where it has none."""
    lines: int = 0
    skipped: int = 0
    session_starts: list[float] = field(default_factory=list)
    span_s: float = 0.0

    @property
    def sessions(self) -> int:
        return len(self.session_starts)

    @classmethod
    def from_records(
        cls, held: Mapping[str, Any], t0: float, columns: Sequence[str], models: Sequence[str | None]
    ) -> TraceColumns:
        """The columns of one session's records as the trace helper sends them back
        (`trace_writer.RecordNumbers.message()`): what reading back the lines it writes would give."""
        numbers = np.frombuffer(held["heads"], dtype=HEAD_DTYPE)
        node = numbers["node"].astype(np.intp)
        codes = {name: ValueCodes() for name in STRING_FIELDS}
        per_node = {
            "column": [codes["column"].code(c) for c in columns],
            "model": [codes["model"].code(m) for m in models],
            "parent": [codes["parent"].code(None)] * len(columns),
            "status": [codes["status"].code("done")] * len(columns),
            "error_class": [codes["error_class"].code(None)] * len(columns),
        }
        coded = {name: np.array(per_node[name], dtype=np.int32)[node] for name in STRING_FIELDS}
        tokens = np.zeros((2, len(numbers)), dtype=np.int64)
        retry_after = np.zeros(len(numbers), dtype=np.float64)
        for i, (status, error_class, _, tokens_in, tokens_out, child, waited) in held["more"]:
            column = columns[node[i]]
            values = (
                column if child is None else f"{column}:llm",
                models[node[i]] if child is None else child,
                None if child is None else column,
                status,
                error_class,
            )
            for name, value in zip(STRING_FIELDS, values, strict=True):
                coded[name][i] = codes[name].code(value)
            tokens[0, i], tokens[1, i] = tokens_in or 0, tokens_out or 0
            retry_after[i] = round(waited or 0.0, 6)
        names: dict[str, list[Any]] = {}
        for name in STRING_FIELDS:
            coded[name], names[name] = _in_order_of_appearance(coded[name], codes[name].values)
        t_end = np.round(numbers["t_end"] - t0, 6)  # as written in trace.jsonl
        return cls(
            names=names,
            codes=coded,
            t_ready=np.round(numbers["t_ready"] - t0, 6),
            t_start=np.round(numbers["t_start"] - t0, 6),
            t_end=t_end,
            slot=numbers["slot"].copy(),
            has_slot=np.ones(len(numbers), dtype=bool),
            tokens_in=tokens[0],
            tokens_out=tokens[1],
            retry_after=retry_after,
            lines=len(numbers),
            session_starts=[0.0] if len(numbers) else [],
            span_s=max(float(t_end.max()), 0.0) if len(numbers) else 0.0,
        )


def _in_order_of_appearance(codes: np.ndarray, values: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """Codes renumbered so values are listed in the order the records first show them (unused ones
    dropped), as reading the lines back lists them."""
    # A field has a handful of values: one pass per value finds where it first shows (np.unique sorts).
    counts = np.bincount(codes, minlength=len(values))
    used = [code for code in range(len(values)) if counts[code]]
    order = np.array(sorted(used, key=lambda code: int(np.argmax(codes == code))), dtype=np.int32)
    if order.tolist() == list(range(len(values))):
        return codes, values
    renumber = np.zeros(len(values), dtype=np.int32)
    renumber[order] = np.arange(len(order), dtype=np.int32)
    return renumber[codes], [values[code] for code in order]


def joined(first: TraceColumns, then: TraceColumns, *, same_session: bool) -> TraceColumns:
    """`then` (one session's attempts, times from its start) after `first`: continuing the last session of
    `first` (more lines of the same run), or as a new session laid after it (a resume)."""
    if not then.lines:
        return first
    if not first.lines:
        return then
    continues = same_session and bool(first.session_starts)
    offset = first.session_starts[-1] if continues else first.span_s
    names: dict[str, list[Any]] = {}
    codes: dict[str, np.ndarray] = {}
    for name in STRING_FIELDS:
        values = ValueCodes()
        for value in first.names[name]:
            values.code(value)
        lookup = np.array([values.code(v) for v in then.names[name]], dtype=np.int32)
        names[name] = values.values
        codes[name] = np.concatenate((first.codes[name], lookup[then.codes[name]]))
    return TraceColumns(
        names=names,
        codes=codes,
        t_ready=np.concatenate((first.t_ready, then.t_ready + offset)),
        t_start=np.concatenate((first.t_start, then.t_start + offset)),
        t_end=np.concatenate((first.t_end, then.t_end + offset)),
        slot=np.concatenate((first.slot, then.slot)),
        has_slot=np.concatenate((first.has_slot, then.has_slot)),
        tokens_in=np.concatenate((first.tokens_in, then.tokens_in)),
        tokens_out=np.concatenate((first.tokens_out, then.tokens_out)),
        retry_after=np.concatenate((first.retry_after, then.retry_after)),
        lines=first.lines + then.lines,
        skipped=first.skipped + then.skipped,
        session_starts=first.session_starts if continues else [*first.session_starts, offset],
        span_s=max(first.span_s, offset + then.span_s),
    )


class _Builder:
    """Collects per-line values batch by batch, then lays the sessions end to end."""

    def __init__(self) -> None:
        self.codes = {name: ValueCodes() for name in STRING_FIELDS}
        numbers = ("seq", "t_ready", "t_start", "t_end", "slot", "has_slot", "tokens_in", "tokens_out", "retry_after")
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in (*STRING_FIELDS, *numbers)}
        self.skipped = 0

    def add(self, name: str, values: np.ndarray) -> None:
        self.parts[name].append(values)

    def finish(self) -> TraceColumns:
        joined = {
            name: np.concatenate(parts) if parts else np.zeros(0, dtype=bool if name == "has_slot" else np.float64)
            for name, parts in self.parts.items()
        }
        seq, t_ready, t_start, t_end = (joined[k] for k in ("seq", "t_ready", "t_start", "t_end"))
        n = len(seq)
        session_starts: list[float] = []
        span = 0.0
        if n:
            # A session starts at the first line and wherever seq does not grow (a resume starts at 1).
            first = np.flatnonzero(np.append(True, seq[1:] <= seq[:-1]))
            ends = np.maximum(np.maximum.reduceat(t_end, first), 0.0)
            offsets = np.concatenate(([0.0], np.cumsum(ends[:-1])))
            session_starts = offsets.tolist()
            span = session_starts[-1] + float(ends[-1])
            if len(first) > 1:
                shift = np.repeat(offsets, np.diff(np.append(first, n)))
                t_ready, t_start, t_end = t_ready + shift, t_start + shift, t_end + shift
        return TraceColumns(
            names={name: codes.values for name, codes in self.codes.items()},
            codes={name: joined[name].astype(np.int32, copy=False) for name in STRING_FIELDS},
            t_ready=t_ready,
            t_start=t_start,
            t_end=t_end,
            slot=joined["slot"].astype(np.int64, copy=False),
            has_slot=joined["has_slot"].astype(bool, copy=False),
            tokens_in=joined["tokens_in"].astype(np.int64, copy=False),
            tokens_out=joined["tokens_out"].astype(np.int64, copy=False),
            retry_after=joined["retry_after"].astype(np.float64, copy=False),
            lines=n,
            skipped=self.skipped,
            session_starts=session_starts,
            span_s=span,
        )


class _Unreadable(Exception):
    """The fast reader cannot take this file as it is; read it line by line."""


def _batches(path: Path, end: int | None) -> tuple[Iterable[pa.RecordBatch], int]:
    """pyarrow record batches of the complete lines in the file (or its first `end` bytes), and 1 if a
    torn last line was left out."""
    size = os.path.getsize(path) if end is None else min(end, os.path.getsize(path))
    if size == 0:
        raise _Unreadable
    with open(path, "rb") as handle:
        handle.seek(max(0, size - 65536))
        tail = handle.read(min(size, 65536))
    cut = tail.rfind(b"\n")
    complete = size - len(tail) + cut + 1 if cut >= 0 else 0
    torn = tail[cut + 1 :].strip()
    if torn:
        try:
            json.loads(torn)
        except ValueError:
            pass  # a line cut short by a crash: skipped, as TraceReader skips it
        else:
            raise _Unreadable  # a complete last line without its newline: rare, read it the slow way
    if complete == 0:
        raise _Unreadable
    source = pa.BufferReader(pa.memory_map(str(path)).read_buffer(complete))
    options = {
        "read_options": pj.ReadOptions(use_threads=True, block_size=_BLOCK_BYTES),
        "parse_options": pj.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="ignore"),
    }
    if complete > STREAM_ABOVE_BYTES:
        return pj.open_json(source, **options), int(bool(torn))
    return pj.read_json(source, **options).to_batches(), int(bool(torn))


def _read_fast(path: Path, end: int | None) -> TraceColumns:
    builder = _Builder()
    try:
        batches, builder.skipped = _batches(path, end)
        for batch in batches:
            if any(batch.column(name).null_count for name in _REQUIRED):
                valid = pc.is_valid(batch.column("seq"))
                for name in _REQUIRED[1:]:
                    valid = pc.and_(valid, pc.is_valid(batch.column(name)))
                builder.skipped += len(batch) - pc.sum(valid).as_py()
                batch = batch.filter(valid)
            for name in STRING_FIELDS:
                builder.add(name, _encode(builder.codes[name], batch.column(name)))
            for name in ("seq", "t_ready", "t_start", "t_end"):
                builder.add(name, batch.column(name).to_numpy(zero_copy_only=False))
            slot = batch.column("slot")
            builder.add("slot", pc.fill_null(slot, -1).to_numpy(zero_copy_only=False))
            builder.add("has_slot", pc.is_valid(slot).to_numpy(zero_copy_only=False))
            for name in ("tokens_in", "tokens_out"):
                builder.add(name, pc.fill_null(batch.column(name), 0).to_numpy(zero_copy_only=False))
            builder.add("retry_after", pc.fill_null(batch.column("retry_after_s"), 0.0).to_numpy(zero_copy_only=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise _Unreadable from exc
    return builder.finish()


def trace_columns(
    records: Iterable[Mapping[str, Any]],
    *,
    skipped: int = 0,
    session_starts: list[float] | None = None,
    span_s: float | None = None,
) -> TraceColumns:
    """Columns of trace records given as dicts (trace.jsonl lines, or TaskTrace._asdict()), whose times
    are laid end to end already; by default one session, spanning to the last end."""
    codes = {name: ValueCodes() for name in STRING_FIELDS}
    strings: dict[str, list[int]] = {name: [] for name in STRING_FIELDS}
    numbers: dict[str, list[Any]] = {
        name: [] for name in ("t_ready", "t_start", "t_end", "slot", "tokens_in", "tokens_out", "retry_after")
    }
    for t in records:
        for name in STRING_FIELDS:
            strings[name].append(codes[name].code(t.get(name)))
        for name in ("t_ready", "t_start", "t_end"):
            numbers[name].append(t[name])
        slot = t.get("slot")
        numbers["slot"].append(slot if isinstance(slot, int) else None)
        numbers["tokens_in"].append(int(t.get("tokens_in") or 0))
        numbers["tokens_out"].append(int(t.get("tokens_out") or 0))
        numbers["retry_after"].append(float(t.get("retry_after_s") or 0.0))
    t_end = np.array(numbers["t_end"], dtype=np.float64)
    slots = numbers["slot"]
    return TraceColumns(
        names={name: c.values for name, c in codes.items()},
        codes={name: np.array(values, dtype=np.int32) for name, values in strings.items()},
        t_ready=np.array(numbers["t_ready"], dtype=np.float64),
        t_start=np.array(numbers["t_start"], dtype=np.float64),
        t_end=t_end,
        slot=np.array([-1 if s is None else s for s in slots], dtype=np.int64),
        has_slot=np.array([s is not None for s in slots], dtype=bool),
        tokens_in=np.array(numbers["tokens_in"], dtype=np.int64),
        tokens_out=np.array(numbers["tokens_out"], dtype=np.int64),
        retry_after=np.array(numbers["retry_after"], dtype=np.float64),
        lines=len(t_end),
        skipped=skipped,
        session_starts=([0.0] if len(t_end) else []) if session_starts is None else session_starts,
        span_s=max(float(t_end.max()), 0.0) if span_s is None and len(t_end) else span_s or 0.0,
    )


def _read_slowly(path: Path, end: int | None) -> TraceColumns:
    """The same columns through TraceReader: any line json.loads can read."""
    reader = TraceReader(path, end=end)
    records = list(reader)
    return trace_columns(records, skipped=reader.skipped, session_starts=reader.session_starts, span_s=reader.span_s)


def read_trace(path: Path, end: int | None = None) -> TraceColumns:
    """trace.jsonl (or the lines in its first `end` bytes) as columns: fast (pyarrow) when it can be,
    line by line when it cannot; none if missing."""
    path = Path(path)
    if not path.exists() or end == 0:
        return trace_columns([])
    try:
        return _read_fast(path, end)
    except _Unreadable:
        return _read_slowly(path, end)
