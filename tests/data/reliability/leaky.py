"""A column whose error message carries the API key, as careless user code might."""

import os


def leak(row):
    if row["id"] % 3 == 0:
        raise RuntimeError(f"could not call with key {os.environ['TREADLE_TEST_KEY']} (Authorization: Bearer x)")
    return row["id"]
