"""seed_rows: a large parquet seed is read as its rows are asked for, and gives the rows the whole
frame gives; a seed whose columns pandas would type differently batch by batch is read whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import treadle
from treadle.engine import seed_rows
from treadle.engine.pipeline import SeedConfig
from treadle.engine.seed import load_seed
from treadle.engine.seed_readers import load_table
from treadle.engine.seed_rows import ParquetRows, seed_columns, seed_records


def write_seed(path: Path, rows: int, **extra: list) -> None:
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "name": pa.array([None if i % 7 == 3 else f"name {i} é" for i in range(rows)], pa.string()),
            "score": pa.array([None if i % 5 == 0 else i / 4 for i in range(rows)], pa.float64()),
            "flag": pa.array([i % 3 == 0 for i in range(rows)], pa.bool_()),
            **extra,
        }
    )
    pq.write_table(table, path, row_group_size=64)


@pytest.fixture
def small_is_large(monkeypatch):
    monkeypatch.setattr(seed_rows, "LAZY_PARQUET_ROWS", 100)


def same(found: list[dict], expected: list[dict]) -> bool:
    """Equal, NaN included, and of the same Python types."""
    return len(found) == len(expected) and all(
        a.keys() == b.keys()
        and all(type(a[k]) is type(b[k]) and (a[k] == b[k] or (a[k] != a[k] and b[k] != b[k])) for k in a)
        for a, b in zip(found, expected, strict=True)
    )


def test_rows_read_as_asked_for_are_the_frames_rows(tmp_path, small_is_large):
    write_seed(tmp_path / "seed.parquet", 300)
    table = load_seed(SeedConfig(path="seed.parquet"), tmp_path, "pipeline.yaml")
    frame = load_table(tmp_path / "seed.parquet")
    assert isinstance(table.frame, ParquetRows) and len(table) == 300
    assert table.fields == list(frame.columns) == ["id", "name", "score", "flag"]
    table.frame.batch_rows = 16
    # forward in groups, then back (a retried group), across row groups and batches, past the end
    for start, stop in ((0, 10), (10, 20), (20, 130), (130, 300), (60, 70), (5, 6), (250, 400), (0, 300)):
        assert same(seed_records(table.frame, start, stop), seed_records(frame, start, stop)), (start, stop)
    head = table.frame.head(50)
    assert len(head) == 50 and same(seed_records(head, 40, 100), seed_records(frame, 40, 50))


def test_columns_read_as_asked_for_are_the_frames_columns(tmp_path, small_is_large):
    """A batch-only pipeline's groups, field by field: the same values and Python types as the whole
    frame's, so a batch call's DataFrame has the same dtypes either way."""
    write_seed(tmp_path / "seed.parquet", 300)
    table = load_seed(SeedConfig(path="seed.parquet"), tmp_path, "pipeline.yaml")
    frame = load_table(tmp_path / "seed.parquet")
    table.frame.batch_rows = 16
    for start, stop in ((0, 10), (10, 130), (130, 300), (5, 6), (250, 400)):
        (found, arrays), (expected, expected_arrays) = (
            seed_columns(table.frame, start, stop),
            seed_columns(frame, start, stop),
        )
        assert list(found) == list(expected) == ["id", "name", "score", "flag"]
        as_rows = [dict(zip(found, values, strict=True)) for values in zip(*found.values(), strict=True)]
        assert same(as_rows, seed_records(frame, start, stop)), (start, stop)
        dtypes = pd.DataFrame(found).dtypes
        assert dtypes.equals(pd.DataFrame(expected).dtypes) and dtypes["id"] == np.int64, (start, stop)
        # the numeric fields as arrays too: the frame made of them is the one made of the lists
        assert list(arrays) == list(expected_arrays) == ["id", "score", "flag"]
        from_arrays = pd.DataFrame({key: arrays.get(key, values) for key, values in found.items()})
        pd.testing.assert_frame_equal(from_arrays, pd.DataFrame(found))


def test_columns_typed_differently_batch_by_batch_are_read_whole(tmp_path, small_is_large):
    """An integer column with a null is float in pandas only where a batch holds the null: read whole."""
    write_seed(tmp_path / "nulls.parquet", 300, count=pa.array([None if i == 250 else i for i in range(300)]))
    assert ParquetRows.of(tmp_path / "nulls.parquet") is None
    indexed = pd.DataFrame({"id": range(300)}, index=[f"r{i}" for i in range(300)])
    indexed.to_parquet(tmp_path / "indexed.parquet")  # a stored index: load_table drops it
    assert ParquetRows.of(tmp_path / "indexed.parquet") is None
    write_seed(tmp_path / "small.parquet", 99)
    assert ParquetRows.of(tmp_path / "small.parquet") is None
    table = load_seed(SeedConfig(path="nulls.parquet"), tmp_path, "pipeline.yaml")
    assert isinstance(table.frame, pd.DataFrame)


def test_a_run_over_a_seed_read_as_asked_for_writes_the_same_output(tmp_path, small_is_large, monkeypatch):
    write_seed(tmp_path / "seed.parquet", 250)
    config = {
        "seed": {"path": str(tmp_path / "seed.parquet")},
        "columns": [{"name": "line", "kind": "template", "template": "{{ id }} {{ name }} {{ score }} {{ flag }}"}],
        "run": {"row_group_size": 30},
    }
    lazy = treadle.run(config, base_dir=tmp_path, out=tmp_path / "lazy")
    monkeypatch.setattr(seed_rows, "LAZY_PARQUET_ROWS", 10**9)
    whole = treadle.run(config, base_dir=tmp_path, out=tmp_path / "whole")
    assert lazy.status == whole.status == "done"
    lazy_out, whole_out = (pd.read_parquet(tmp_path / d / "output.parquet") for d in ("lazy", "whole"))
    assert lazy_out["line"].tolist() == whole_out["line"].tolist() and len(lazy_out) == 250
    assert np.array_equal(lazy_out["id"].to_numpy(), np.arange(250))
