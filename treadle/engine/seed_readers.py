"""Read one seed or join table (csv, jsonl/json, parquet) by its suffix, with one-line errors.

The file is streamed, never held whole: reading needs little more memory than the table it returns.
Text files are read in blocks that end at a newline, so neither a line nor a UTF-8 character spans
two blocks. A first pass checks the text (binary formats by their magic bytes, NUL bytes, bytes that
are not UTF-8, a blank file) so that the file's first such problem is the one reported, as when the
file was decoded whole; the second pass parses it. The frame is the one pandas builds from the whole
file: `pd.read_csv` of the text, `pd.DataFrame` of the list of JSON records, `pd.read_parquet`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from treadle.engine.errors import ConfigError, Problem, one_line
from treadle.engine.seed_rows import ParquetRows, SeedRows, arrow_to_pandas

__all__ = ["BLOCK_BYTES", "SUFFIXES", "load_rows", "load_table"]

SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
"""File types a seed or join table may have."""

BLOCK_BYTES = 1 << 20
"""Text files are read in blocks of about this many bytes (up to the next newline)."""

_MAGIC = {
    b"PAR1": "a parquet file",
    b"\x1f\x8b": "gzip-compressed",
    b"PK\x03\x04": "a zip archive (an .xlsx workbook?)",
    b"\x89PNG": "a PNG image",
    b"%PDF": "a PDF document",
}
_NUL_WINDOW = 8192
"""How far into a text file a NUL byte marks it as binary."""
_BOM = b"\xef\xbb\xbf"


def load_table(path: Path, *, name: str | None = None) -> pd.DataFrame:
    """Read one table by its suffix.

    Raises `ConfigError` with one problem placed at `name` (default: the file's name).
    """
    frame = load_rows(path, name=name, lazy=False)
    assert isinstance(frame, pd.DataFrame)
    return frame


def load_rows(path: Path, *, name: str | None = None, lazy: bool = True) -> SeedRows:
    """`load_table`'s rows; with `lazy`, a large parquet file whose columns pandas converts the same batch
    by batch is not read whole but as `ParquetRows`, read when its rows are asked for."""
    path = Path(path)
    shown = name or path.name
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise _error(shown, f"unknown file type '{path.suffix or '(none)'}' (expected {', '.join(SUFFIXES)})")
    if suffix == ".parquet":
        rows = ParquetRows.of(path) if lazy else None
        if rows is not None:
            return rows
        frame = _read_parquet(path, shown)
    else:
        kind = "CSV" if suffix == ".csv" else "JSON"
        for _ in _text_blocks(path, shown, kind):  # the checks alone, over the whole file
            pass
        frame = _read_csv(path, shown) if suffix == ".csv" else _read_json(path, shown, suffix)
    if len(frame) == 0:
        raise _error(shown, "has no rows" + (" (only a header line)" if suffix == ".csv" else ""))
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True)


def _error(shown: str, message: str, *, line: int | None = None, key: str = "") -> ConfigError:
    return ConfigError([Problem(shown, message, key=key, line=line)])


def _byte_blocks(path: Path, shown: str) -> Generator[bytes, None, None]:
    """The file's bytes in blocks of about `BLOCK_BYTES` that end after a newline (or at the file's end)."""
    size = max(BLOCK_BYTES, _NUL_WINDOW)  # the first block holds all of the start that is checked
    try:
        with path.open("rb") as handle:
            while block := handle.read(size):
                if not block.endswith(b"\n"):
                    block += handle.readline()
                yield block
    except FileNotFoundError:
        raise _error(shown, "file not found") from None
    except IsADirectoryError:
        raise _error(shown, "is a directory, not a file") from None
    except OSError as exc:
        raise _error(shown, f"cannot read: {exc.strerror or exc}") from None


def _text_blocks(path: Path, shown: str, kind: str) -> Iterator[str]:
    """The file's text block by block, without a leading byte order mark.

    Raises on the first problem: magic bytes of a binary format, NUL bytes near the start, bytes that
    are not UTF-8 (placed at their line), and, once read to the end, a file of only whitespace.
    """
    blank = True
    newlines = 0
    for number, block in enumerate(_byte_blocks(path, shown)):
        if number == 0:
            _check_text_start(block, shown, kind)
        blank = blank and block.isspace()
        try:
            text = block.decode("utf-8")  # a block ends after a newline: never inside a character
        except UnicodeDecodeError as exc:
            line = newlines + block.count(b"\n", 0, exc.start) + 1
            byte = block[exc.start]
            raise _error(shown, f"not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8", line=line) from None
        newlines += block.count(b"\n")
        yield text[1:] if number == 0 and block.startswith(_BOM) else text
    if blank:
        raise _error(shown, "file is empty")


def _check_text_start(head: bytes, shown: str, kind: str) -> None:
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise _error(shown, f"is {what}, not {kind} text")
    if b"\x00" in head[:_NUL_WINDOW]:
        raise _error(shown, f"looks like a binary file (it contains NUL bytes), not {kind} text")


def _open_text(path: Path) -> TextIO:
    """The file as text, decoded as `_text_blocks` decodes it: UTF-8 without a byte order mark, and line
    ends as they are (lines split at "\\n" alone, like a `StringIO` of the text)."""
    return path.open(encoding="utf-8-sig", newline="\n")


_EXPECTED_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_EOF_IN_STRING = re.compile(r"EOF inside string starting at row (\d+)")


def _read_csv(path: Path, shown: str) -> pd.DataFrame:
    with _open_text(path) as handle:
        header = next(csv.reader(handle), [])
    seen: set[str] = set()
    for field in header:
        if field in seen:
            raise _error(shown, f"duplicate column name '{field}' in the header", line=1)
        seen.add(field)
    try:
        with _open_text(path) as handle:
            return pd.read_csv(handle)
    except pd.errors.EmptyDataError:
        raise _error(shown, "has no header line and no rows") from None
    except pd.errors.ParserError as exc:
        message = str(exc)
        if m := _EXPECTED_FIELDS.search(message):
            expected, line, saw = m.groups()
            raise _error(
                shown, f"{saw} fields where the header has {expected} (an unquoted comma?)", line=int(line)
            ) from None
        if m := _EOF_IN_STRING.search(message):
            raise _error(shown, "a quoted field opened here is never closed", line=int(m.group(1)) + 1) from None
        raise _error(shown, f"cannot read as CSV: {one_line(message)}") from None
    except (ValueError, OverflowError) as exc:
        raise _error(shown, f"cannot read as CSV: {one_line(exc)}") from None


def _read_json(path: Path, shown: str, suffix: str) -> pd.DataFrame:
    """A .json file is one document (an array of objects, or one object) or JSON lines; .jsonl is JSON lines."""
    if suffix == ".json":
        text = "".join(_text_blocks(path, shown, "JSON"))
        if text.lstrip().startswith(("[", "{")):
            whole = _read_json_document(text, shown)
            if whole is not None:
                return whole
        del text  # JSON lines: read again, in blocks
    return _read_json_lines(lambda: _text_blocks(path, shown, "JSON"), shown)


def _read_json_document(text: str, shown: str) -> pd.DataFrame | None:
    """The rows of a JSON array of objects or of one object; None for text that is not one document."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("["):
            raise _error(shown, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
        return None
    if isinstance(whole, dict):
        return pd.DataFrame([whole])
    if isinstance(whole, list):
        for i, item in enumerate(whole):
            if not isinstance(item, dict):
                raise _error(shown, f"expected an object per row, got {_json_kind(item)}", key=f"item {i}")
        return pd.DataFrame(whole)
    return None


def _json_records(blocks: Iterable[str], shown: str) -> Iterator[list[dict[str, Any]]]:
    """The objects of JSON lines, a list per block; lines are numbered as `str.splitlines` splits them."""
    first = 1
    for block in blocks:
        records: list[dict[str, Any]] = []
        lines = block.splitlines()  # a block ends at a line end: its lines are lines of the whole text
        for number, line in enumerate(lines, start=first):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _error(shown, f"invalid JSON: {exc.msg} (column {exc.colno})", line=number) from None
            if not isinstance(row, dict):
                raise _error(shown, f"expected a JSON object per line, got {_json_kind(row)}", line=number)
            records.append(row)
        first += len(lines)
        yield records


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _read_json_lines(blocks: Callable[[], Iterable[str]], shown: str) -> pd.DataFrame:
    """The frame `pd.DataFrame(records)` builds from every line's object, built a block at a time.

    Each block's records become a small frame. A column whose pieces pandas typed as numbers, as text
    or as booleans is their concatenation, typed as pandas types the whole column. Any other column
    (nested values, mixed types) is read again from `blocks()` and typed by pandas as a whole.
    """
    columns = _JsonColumns()
    for records in _json_records(blocks(), shown):
        columns.add(records)
    typed = columns.concatenated()
    if mixed := [name for name, column in typed.items() if column is None]:
        rows = [
            tuple(record.get(name, np.nan) for name in mixed)  # a missing key is NaN, as pandas has it
            for records in _json_records(blocks(), shown)
            for record in records
        ]
        # rows of tuples take the path records take in pandas (the same typing of each column)
        exact = pd.DataFrame(rows, columns=mixed)
        del rows
        typed.update((name, exact[name]) for name in mixed)
    return pd.DataFrame(typed, index=pd.RangeIndex(columns.rows), copy=False)  # rows of `{}` have no columns


_INTEGER = np.dtype("int64")
_FLOAT = np.dtype("float64")
_BOOLEAN = np.dtype("bool")
_TEXT = pd.StringDtype(na_value=np.nan)
_UINT64_FLOOR = 2.0**63
"""A float piece may hold integers from here on, which pandas types differently next to negative ones."""


class _JsonColumns:
    """The columns of JSON records collected a block at a time, as pieces pandas typed.

    A piece is kept only when its type combines with others the way pandas types the whole column:
    int64, float64 (below 2**63), bool, or text; a piece of nothing but missing values acts as a gap.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.pieces: dict[str, list[tuple[int, pd.Series | None]]] = {}
        """Per column, in the order the records first name them: (first row, piece or None if untyped)."""

    def add(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        chunk = pd.DataFrame(records)
        for name in chunk.columns:
            self.pieces.setdefault(name, []).append((self.rows, _combinable(chunk[name])))
        self.rows += len(chunk)

    def concatenated(self) -> dict[str, pd.Series | None]:
        """Each column whole, or None for a column pandas would type otherwise than its pieces' concatenation."""
        columns: dict[str, pd.Series | None] = {}
        for name in list(self.pieces):
            columns[name] = _concatenate(self.pieces.pop(name), self.rows)  # frees the pieces as it goes
        return columns


def _combinable(piece: pd.Series) -> pd.Series | None:
    if piece.dtype == _FLOAT and np.nanmax(np.abs(piece.to_numpy()), initial=0.0) >= _UINT64_FLOOR:
        return None
    return piece if piece.dtype in (_INTEGER, _FLOAT, _BOOLEAN, _TEXT) else None


def _concatenate(pieces: list[tuple[int, pd.Series | None]], rows: int) -> pd.Series | None:
    parts: list[pd.Series | int] = []  # a piece, or the length of a gap
    kinds: set[Any] = set()
    end = 0
    for start, piece in pieces:
        if piece is None:
            return None
        if start > end:
            parts.append(start - end)
        if piece.isna().all():
            parts.append(len(piece))
        else:
            parts.append(piece)
            kinds.add(piece.dtype)
        end = start + len(piece)
    if end < rows:
        parts.append(rows - end)
    gaps = any(isinstance(part, int) for part in parts)
    if kinds <= {_INTEGER, _FLOAT}:
        dtype = _INTEGER if kinds == {_INTEGER} and not gaps else _FLOAT
    elif kinds == {_TEXT} or (kinds == {_BOOLEAN} and not gaps):
        dtype = kinds.pop()
    else:
        return None
    series = [
        part if isinstance(part, pd.Series) else pd.Series(np.nan, index=range(part), dtype=dtype) for part in parts
    ]
    return pd.concat(series, ignore_index=True)


def _read_parquet(path: Path, shown: str) -> pd.DataFrame:
    blocks = _byte_blocks(path, shown)
    try:
        head = next(blocks, b"")
        if not head.startswith(b"PAR1"):
            if not head or (head.isspace() and all(block.isspace() for block in blocks)):
                raise _error(shown, "file is empty")
            try:
                head[:512].decode("utf-8")
                looks = "it looks like text"
            except UnicodeDecodeError:
                looks = "it does not start with PAR1"
            raise _error(shown, f"is not a parquet file ({looks})")
    finally:
        blocks.close()
    try:
        return _parquet_frame(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others for damaged files
        message = one_line(exc).replace(str(path), shown)
        message = re.sub(r"^Could not open Parquet input source '[^']*': ", "", message)
        raise _error(shown, f"not a readable parquet file: {message}") from None


_SCANNER_BATCH_ROWS = 131_072
"""`pq.read_table` (under `pd.read_parquet`) hands over chunks of at most this many rows (pyarrow's
scanner batch size), none across row groups."""
_PARQUET_BATCH_BYTES = 4 << 20
"""Parquet is decoded in batches of about this many bytes (of the decoded table): a whole row group at
once needs up to twice its size again while decoding, for a large table a lot."""


def _parquet_frame(path: Path) -> pd.DataFrame:
    """What `pd.read_parquet` returns, read in batches: the same table, then pandas' own conversion of it."""
    parquet = pq.ParquetFile(path)
    meta = parquet.metadata
    table_bytes = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    rows_in_budget = max(1, min(65_536, _PARQUET_BATCH_BYTES * meta.num_rows // max(1, table_bytes)))
    # a power of two: measured, pyarrow's allocator keeps far less resident for such batches (a
    # 200k-row table of long texts: 98 MB beyond the frame for 4,096 rows a batch, 176 for 5,000)
    batch_rows = 1 << (rows_in_budget.bit_length() - 1)
    batches = parquet.iter_batches(batch_size=batch_rows, use_pandas_metadata=True)
    table = pa.Table.from_batches(list(batches), schema=parquet.schema_arrow)
    for i, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            # pyarrow converts lists and structs chunk by chunk (an integer field is float in a chunk
            # with a null): they get the chunks read_parquet gets
            table = table.set_column(i, field, _read_table_chunks(table.column(i), meta))
    frame = arrow_to_pandas(table)
    if attrs := (table.schema.metadata or {}).get(b"PANDAS_ATTRS"):
        frame.attrs = json.loads(attrs)
    return frame


def _read_table_chunks(column: pa.ChunkedArray, meta: pq.FileMetaData) -> pa.ChunkedArray:
    """`column` cut into the chunks `pq.read_table` makes of it."""
    whole = column.combine_chunks()
    chunks = []
    start = 0
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        for offset in range(0, rows, _SCANNER_BATCH_ROWS):
            chunks.append(whole.slice(start + offset, min(_SCANNER_BATCH_ROWS, rows - offset)))
        start += rows
    return pa.chunked_array(chunks, type=column.type)
