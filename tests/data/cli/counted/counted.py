"""Columns that record every call in calls.log beside the run (one line per call), to count requests."""

import asyncio
import os


def _log(column: str, row) -> None:
    with open(os.environ["TREADLE_TEST_CALLS"], "a", encoding="utf-8") as handle:
        handle.write(f"{column},{row['id']}\n")


async def slow_double(row):
    _log("double", row)
    await asyncio.sleep(0.05)  # sync-ok: stands in for a slow endpoint
    return row["id"] * 2


def square(row):
    _log("square", row)
    return row["double"] ** 2
