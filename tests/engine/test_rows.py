"""RowStore: a batch-only pipeline's values kept column by column give the same rows as row dicts."""

import numpy as np
import pandas as pd
import pytest

from treadle.engine.rows import RowStore

SEED = pd.DataFrame({"id": range(5), "text": list("abcde")})


@pytest.mark.parametrize("row_dicts", [True, False])
def test_values_set_by_call_and_by_row_read_back_the_same_either_way(row_dicts):
    store = RowStore(SEED, group_size=3, row_dicts=row_dicts)
    store.restored[4] = {"b": "restored"}
    store.load_group(0)
    store.load_group(1)
    store.set_columns([0, 2], {"b": ["x", "z"], "b2": [1, 3]})  # a call over part of a group
    store.set_columns([3, 4], {"b": ["p", "q"]})  # a whole group
    store.set_values(1, {"b": "default"})  # a cell that took its column's default

    assert store.columns([0, 1, 2]) == {"id": [0, 1, 2], "text": ["a", "b", "c"], "b": ["x", "default", "z"]} | (
        {"b2": [1, None, 3]}
    )
    assert store.row(2) == {"id": 2, "text": "c", "b": "z", "b2": 3}
    assert store.row(4) == {"id": 4, "text": "e", "b": "q"}

    states = np.array([[4, 4], [7, 7], [4, 4]], dtype=np.uint8)
    written = store.group_values(0, states, kept=np.array([True, False, True]))
    assert written.rows.tolist() == [0, 2]
    assert np.asarray(written.states).tolist() == [[4, 4], [4, 4]]
    if written.records is not None:
        assert written.records == [store.row(0), store.row(2)]
    else:
        assert written.columns == {"id": [0, 2], "text": ["a", "c"], "b": ["x", "z"], "b2": [1, 3]}

    store.release_group(0)
    assert store.row(0) is None
