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


def _log_frame(column: str, frame) -> None:
    with open(os.environ["TREADLE_TEST_CALLS"], "a", encoding="utf-8") as handle:
        handle.write("".join(f"{column},{i}\n" for i in frame["id"]))


async def slow_batch_double(frame):
    _log_frame("double", frame)
    await asyncio.sleep(0.05)  # sync-ok: stands in for a slow batch endpoint
    return frame["id"] * 2


def batch_keep_even(frame):
    _log_frame("even", frame)
    return frame["double"] % 4 == 0
