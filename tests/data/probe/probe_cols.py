"""Python columns that let tests watch and hold cells: each start and end is recorded, and a gate
can keep cells running until the test releases them (thread-safe; no sleeps)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter


class Probe:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.reset()

    def reset(self) -> None:
        with self.cond:
            self.running = 0
            self.finished = 0
            self.levels: list[int] = []  # running count seen by each start, in start order
            self.starts: Counter[tuple[str, int]] = Counter()
            self.threads: set[str] = set()
            self.gate_open = True
            self.waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
            self.sync_release = threading.Semaphore(0)
            self.sync_waiting = 0
            self.failing_rows: set[int] = set()
            self.flaky_once_rows: set[int] = set()

    def _enter(self, column: str, row) -> None:
        with self.cond:
            self.running += 1
            self.levels.append(self.running)
            self.starts[(column, row["id"])] += 1
            self.threads.add(threading.current_thread().name)
            self.cond.notify_all()

    def _exit(self) -> None:
        with self.cond:
            self.running -= 1
            self.finished += 1
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 20.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"probe condition not met: running={self.running} finished={self.finished}")

    def close_gate(self) -> None:
        with self.cond:
            self.gate_open = False

    def release_waiting(self) -> int:
        """Let every cell now held at the gate finish; the gate stays as it is."""
        with self.cond:
            waiting, self.waiting = self.waiting, []
            held_sync, self.sync_waiting = self.sync_waiting, 0
        for loop, future in waiting:
            loop.call_soon_threadsafe(lambda f=future: f.done() or f.set_result(None))
        for _ in range(held_sync):
            self.sync_release.release()
        return len(waiting) + held_sync

    def open_gate(self) -> None:
        with self.cond:
            self.gate_open = True
        self.release_waiting()

    async def hold(self) -> None:
        with self.cond:
            if self.gate_open:
                return
            future = asyncio.get_running_loop().create_future()
            self.waiting.append((asyncio.get_running_loop(), future))
        await future

    def hold_sync(self) -> None:
        with self.cond:
            if self.gate_open:
                return
            self.sync_waiting += 1
        self.sync_release.acquire()


probe = Probe()


async def gated(row):
    probe._enter("gated", row)
    try:
        await probe.hold()
        return row["id"] * 10
    finally:
        probe._exit()


def gated_sync(row):
    probe._enter("gated_sync", row)
    try:
        probe.hold_sync()
        return row["id"] * 100
    finally:
        probe._exit()


def flaky(row):
    probe._enter("flaky", row)
    try:
        if row["id"] in probe.failing_rows:
            raise ValueError(f"row {row['id']} is not ready")
        return row["id"] + 1
    finally:
        probe._exit()


async def noop(row):
    probe._enter("noop", row)
    probe._exit()
    return row["id"]


async def forever(row):
    await asyncio.Event().wait()


def flaky_once(row):
    """Fails with a retryable error on the first attempt of each row in probe.flaky_once_rows."""
    from treadle.engine.errors import RetryableCellError

    probe._enter("flaky_once", row)
    try:
        if row["id"] in probe.flaky_once_rows:
            probe.flaky_once_rows.discard(row["id"])
            raise RetryableCellError("endpoint busy, try again", retry_after=0.01)
        return row["id"] * 3
    finally:
        probe._exit()
