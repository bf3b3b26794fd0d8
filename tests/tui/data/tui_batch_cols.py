"""Batch columns for the TUI tests: `held_scores` (sync, in a thread) runs until `RELEASE` is set;
`scores` (async, on the engine loop) fails every call while `broken` holds."""

from __future__ import annotations

import threading

ENTERED = threading.Event()
RELEASE = threading.Event()
broken = {"on": False}


def reset() -> None:
    ENTERED.clear()
    RELEASE.clear()
    broken["on"] = False


def held_scores(frame):
    ENTERED.set()
    RELEASE.wait(20)
    return frame["id"] * 10


async def scores(frame):
    if broken["on"]:
        raise ValueError("scores are not ready")
    return frame["id"] * 10
