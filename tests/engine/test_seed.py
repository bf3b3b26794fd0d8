"""Reading seed tables and joining them: real files in tests/data/pipelines/seed_files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from treadle.engine.errors import ConfigError
from treadle.engine.pipeline import JoinConfig, SeedConfig
from treadle.engine.seed import load_seed, load_table
from treadle.engine.seed_readers import BLOCK_BYTES

FILES = Path(__file__).parents[1] / "data" / "pipelines" / "seed_files"
CASES = FILES.parent


def table_error(path: Path, name: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_table(path, name=name)
    assert len(info.value.problems) == 1
    return str(info.value.problems[0])


def seed_errors(seed: SeedConfig, base: Path = FILES) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_seed(seed, base, "pipeline.yaml")
    return [str(p) for p in info.value.problems]


# --- reading one table


def test_csv():
    frame = load_table(FILES / "ok.csv")
    assert list(frame.columns) == ["id", "question", "score"]
    assert frame["id"].tolist() == [1, 2, 3]
    assert frame["score"].tolist() == [0.5, 0.75, 1.0]


def test_jsonl_keeps_nested_values_and_skips_blank_lines():
    frame = load_table(FILES / "ok.jsonl")
    assert frame["id"].tolist() == [1, 2]
    assert frame["meta"].iloc[0] == {"k": [1, 2]}


def test_json_array_and_json_lines():
    assert load_table(FILES / "array.json")["question"].tolist() == ["What?", "Why?"]
    assert load_table(FILES / "lines.json")["question"].tolist() == ["What?", "Why?"]


def test_parquet():
    frame = load_table(FILES / "ok.parquet")
    assert frame["question"].tolist() == ["What?", "Why?", "Who?"]
    assert list(frame.index) == [0, 1, 2]


def test_missing_file():
    assert table_error(FILES / "absent.csv") == "absent.csv: file not found"


def test_unknown_extension():
    assert table_error(FILES / "notes.txt") == (
        "notes.txt: unknown file type '.txt' (expected .csv, .jsonl, .json, .parquet)"
    )


def test_empty_and_rowless_files():
    assert table_error(CASES / "empty_seed" / "empty.jsonl") == "empty.jsonl: file is empty"
    assert table_error(FILES / "blank_lines.jsonl") == "blank_lines.jsonl: file is empty"
    assert table_error(FILES / "no_rows.parquet") == "no_rows.parquet: has no rows"


def test_malformed_json_line():
    assert table_error(FILES / "bad_line.jsonl") == (
        "bad_line.jsonl: line 3: invalid JSON: Expecting ',' delimiter (column 10)"
    )


def test_json_line_that_is_not_an_object():
    assert table_error(FILES / "not_object.jsonl") == (
        "not_object.jsonl: line 2: expected a JSON object per line, got an array"
    )


def test_ragged_csv_row():
    assert table_error(CASES / "ragged_csv" / "rows.csv", name="data/rows.csv") == (
        "data/rows.csv: line 4: 3 fields where the header has 2 (an unquoted comma?)"
    )


def test_unclosed_quote_in_csv():
    assert table_error(FILES / "unclosed_quote.csv") == (
        "unclosed_quote.csv: line 3: a quoted field opened here is never closed"
    )


def test_duplicate_csv_header():
    assert table_error(FILES / "dup_header.csv") == "dup_header.csv: line 1: duplicate column name 'id' in the header"


def test_non_utf8_and_binary():
    assert table_error(CASES / "non_utf8" / "latin1.csv") == (
        "latin1.csv: line 3: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    )
    assert table_error(FILES / "nul.csv") == "nul.csv: looks like a binary file (it contains NUL bytes), not CSV text"
    assert table_error(CASES / "binary_seed" / "image.jsonl") == "image.jsonl: is a PNG image, not JSON text"


def test_damaged_parquet(tmp_path):
    assert table_error(CASES / "unreadable_seed" / "table.parquet") == (
        "table.parquet: is not a parquet file (it looks like text)"
    )
    (tmp_path / "cut.parquet").write_bytes((FILES / "ok.parquet").read_bytes()[:64])
    line = table_error(tmp_path / "cut.parquet")
    assert line.startswith("cut.parquet: not a readable parquet file: ") and str(tmp_path) not in line


def test_bom_and_non_utf8_places_the_bad_byte(tmp_path):
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfid,name\n1,ok\n2,caf\xe9\n")
    assert table_error(tmp_path / "bom.csv") == "bom.csv: line 3: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_blank_parquet_file_is_empty(tmp_path):
    (tmp_path / "blank.parquet").write_bytes(b"  \n\t\n")
    assert table_error(tmp_path / "blank.parquet") == "blank.parquet: file is empty"


# --- large files, read in blocks: the frame pandas builds from the whole file


def assert_same_frame(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal frames, and in object columns the same values as written (1 is not 1.0, None is not NaN)."""
    pd.testing.assert_frame_equal(actual, expected, check_exact=True)
    for name in expected.columns:
        if pd.api.types.is_object_dtype(expected[name]):
            assert list(map(as_written, actual[name])) == list(map(as_written, expected[name])), name


def as_written(value: object) -> object:
    if isinstance(value, np.ndarray):  # a list in parquet
        return value.dtype, value.tolist()
    return repr(value)


def several_blocks(rows: int, row: object) -> tuple[list[dict], str]:
    """`rows` records made by `row(i, part)`, part 0, 1 or 2 by thirds, as JSON lines of more than three blocks."""
    records = [row(i, 3 * i // rows) for i in range(rows)]
    text = "".join(json.dumps(r) + "\n" for r in records)
    assert len(text.encode()) > 3 * BLOCK_BYTES  # each third spans a whole block at least
    return records, text


def test_json_lines_in_blocks_are_typed_as_the_whole_file(tmp_path):
    def row(i: int, part: int) -> dict:
        record = {
            "id": i,
            "score": i if part == 0 else i / 4,  # ints, then floats: float64
            "text": "x" * 600 if i % 5 else None,  # text with nulls
            "flag": i % 2 == 0,
            "mixed": i if part < 2 else f"s{i}",  # numbers, then text: object, ints stay ints
            "nested": {"k": [i]} if i % 3 else None,
            "big": [2**63 + i if i % 2 else 0.5, 0.5, -1][part],  # float64, float64, int64 blocks; object whole
            "sparse_text": None if part == 1 else "t",  # a block of nulls only, text elsewhere
        }
        if part == 2:
            record["late"] = i  # absent until the last third: float64 with NaN
            del record["flag"]  # absent from the last third: object (booleans and NaN)
        return record

    records, text = several_blocks(7_000, row)
    (tmp_path / "rows.jsonl").write_text(text, encoding="utf-8")
    frame = load_table(tmp_path / "rows.jsonl")
    assert_same_frame(frame, pd.DataFrame(records))
    assert pd.api.types.is_object_dtype(frame["mixed"]) and type(frame["mixed"].iloc[0]) is int


def test_json_lines_error_comes_after_a_decoding_error_further_on(tmp_path):
    _, text = several_blocks(7_000, lambda i, part: {"id": i, "text": "y" * 600})
    lines = text.splitlines(keepends=True)
    lines[2] = '{"id": 2 "text": "z"}\n'
    data = "".join(lines).encode() + b'{"id": "caf\xe9"}\n'
    (tmp_path / "rows.jsonl").write_bytes(data)
    assert table_error(tmp_path / "rows.jsonl") == (
        f"rows.jsonl: line {len(lines) + 1}: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    )


def test_csv_is_read_as_pandas_reads_its_text(tmp_path):
    note = '"line one\nline two"'  # a quoted field over two lines
    text = "id,name,note,score\r\n" + "".join(
        f'{i},"Ada, {i}",{"" if i % 4 else note},{i / 3 if i % 2 else i}\r\n' for i in range(2_000)
    )
    (tmp_path / "rows.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    frame = load_table(tmp_path / "rows.csv")
    assert_same_frame(frame, pd.read_csv(io.StringIO(text)))
    assert list(frame.columns) == ["id", "name", "note", "score"]


def test_parquet_in_batches_is_what_read_parquet_returns(tmp_path):
    rows = 70_000  # two batches (at most 65,536 rows each), two row groups
    cities = [["Quito", "Osaka"][i % 2] if i < 50_000 else ["Lima", "Osaka"][i % 2] for i in range(rows)]
    table = pa.table(
        {
            "id": pa.array(range(rows)),
            "name": pa.array([f"n{i}" if i % 7 else None for i in range(rows)]),
            "city": pa.array(cities).dictionary_encode(),  # categories in the order read_parquet has them
            "when": pa.array(np.arange(rows).astype("datetime64[s]")).cast(pa.timestamp("s", tz="Europe/Lisbon")),
            # pandas gets ints in chunks without a null, floats in the chunk with one (the last)
            "meta": pa.array([{"k": i if i < rows - 5 else None} for i in range(rows)]),
            "tags": pa.array([[i, i + 1] for i in range(rows)]),
        }
    )
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=50_000)
    assert_same_frame(load_table(tmp_path / "rows.parquet"), pd.read_parquet(tmp_path / "rows.parquet"))


# --- the seed and its join


def test_seed_without_join():
    table = load_seed(SeedConfig(path="ok.csv"), FILES, "pipeline.yaml")
    assert table.fields == ["id", "question", "score"] and table.join is None and len(table) == 3


def test_inner_join_keeps_seed_order_and_reports_unmatched_rows():
    seed = SeedConfig(path="left.jsonl", join=JoinConfig(path="right.csv", on="id"))
    table = load_seed(seed, FILES, "pipeline.yaml")
    assert table.frame["id"].tolist() == [1, 3]
    assert table.frame["label"].tolist() == ["a", "c"]
    assert table.frame["text"].tolist() == ["L1", "L3"]  # the seed file keeps the shared name
    assert table.frame["text_right"].tolist() == ["R1", "R3"]  # the join file's copy is suffixed
    assert list(table.frame.index) == [0, 1]
    assert table.fields == ["id", "question", "text", "label", "text_right"]
    report = table.join
    assert report is not None
    assert (report.left, report.right, report.key) == ("left.jsonl", "right.csv", "id")
    assert (report.matched, report.left_only, report.right_only) == (2, 2, 1)  # id 2 and a null id; id 7
    assert report.left_only_examples == ("2", "null")
    assert report.right_only_examples == ("7",)
    assert report.renamed == (("text", "text_right"),)


def test_join_matches_numbers_with_text_keys():
    seed = SeedConfig(path="left.jsonl", join=JoinConfig(path="right_str.jsonl", on="id"))
    table = load_seed(seed, FILES, "pipeline.yaml")
    assert table.frame["label"].tolist() == ["a", "b"]


def test_join_with_no_match_is_a_problem():
    seed = SeedConfig(path="left.jsonl", join=JoinConfig(path="right_nomatch.jsonl", on="id"))
    [line] = seed_errors(seed)
    assert line.startswith("pipeline.yaml: seed.join.on: no row of left.jsonl matched a row of right_nomatch.jsonl")
    assert "'x1'" in line


def test_renamed_column_that_is_taken_is_a_problem():
    seed = SeedConfig(path="left.jsonl", join=JoinConfig(path="right_taken.csv", on="id"))
    [line] = seed_errors(seed)
    assert line == (
        "pipeline.yaml: seed.join: column 'text' is in both left.jsonl and right_taken.csv, and "
        "'text_right_taken' (the join file's renamed copy) is taken too; rename one of them"
    )


def test_duplicate_keys_name_a_few_values():
    seed = SeedConfig(path="left_dups.jsonl", join=JoinConfig(path="right.csv", on="id"))
    assert seed_errors(seed) == [
        "left_dups.jsonl: join key 'id' is not unique: 1 (2 rows), 2 (2 rows), 3 (2 rows) and 1 more"
    ]


def test_problems_in_both_files_are_reported_together():
    seed = SeedConfig(path="bad_line.jsonl", join=JoinConfig(path="missing.csv", on="id"))
    lines = seed_errors(seed)
    assert lines[0].startswith("bad_line.jsonl: line 3: invalid JSON")
    assert lines[1].startswith("pipeline.yaml: seed.join.path: file 'missing.csv' not found")


def test_unknown_seed_extension_is_placed_at_the_pipeline_key():
    assert seed_errors(SeedConfig(path="notes.txt")) == [
        "pipeline.yaml: seed.path: 'notes.txt' has unknown file type '.txt' (expected .csv, .jsonl, .json, .parquet)"
    ]
