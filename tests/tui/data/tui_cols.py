"""Columns for the TUI tests.

`checked` is async (it runs on the engine loop, so cells finish in a fixed order: stable screenshots)
and fails for the rows in `failing`. `held` keeps rows from `hold_from` on running until `release()`.
"""

from __future__ import annotations

import asyncio
import threading

failing: set[int] = set()
hold_from: int | None = None
_lock = threading.Lock()
_released = False
_waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []


def reset() -> None:
    global hold_from, _released
    failing.clear()
    hold_from = None
    with _lock:
        _released = False
    release()
    with _lock:
        _released = False


def release() -> None:
    """Let every held row (now and later) finish."""
    global _released
    with _lock:
        _released = True
        waiting = list(_waiting)
        _waiting.clear()
    for loop, future in waiting:
        loop.call_soon_threadsafe(lambda f=future: f.done() or f.set_result(None))


async def checked(row):
    if row["id"] in failing:
        raise ValueError(f"row {row['id']} is not ready")
    return row["id"] + 1


async def held(row):
    if hold_from is not None and row["id"] >= hold_from:
        with _lock:
            if not _released:
                future = asyncio.get_running_loop().create_future()
                _waiting.append((asyncio.get_running_loop(), future))
            else:
                future = None
        if future is not None:
            await future
    return row["id"]
