"""The parent's side of its worker processes: starting them, hearing from each on a thread of its own,
and folding what they send into the parent's tracker and tracer.

A worker is forked from the fork server (forkserver.py: one warm process that has imported what a
worker needs) and talks to the parent over a socket pair (a multiprocessing Connection: pickled
messages)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

import numpy as np

from treadle.engine.policy import CellFailure
from treadle.engine.tracing import HEAD, HEAD_DTYPE, Batch, Tracer
from treadle.engine.tracker import CellTracker
from treadle.engine.workers import worker
from treadle.engine.workers.forkserver import FORK_SERVER, ForkServerGone
from treadle.engine.workers.messages import Finished, GroupWritten, ParentMessage, Tick, WorkerMessage
from treadle.engine.workers.slot_numbers import SlotNumbers


@dataclass
class WorkerHandle:
    """The parent's view of one worker, whatever runs it (a process here, a Ray actor: ray_pool.py)."""

    index: int
    pid: int | None = None
    """Its process's id on its machine, once started (None for a Ray actor)."""
    outstanding: set[int] = field(default_factory=set)
    """Groups given to it whose file it has not reported written."""
    tick: Tick | None = None
    finished: Finished | None = None
    alive: bool = True
    outbox: queue.SimpleQueue[ParentMessage | None] = field(default_factory=queue.SimpleQueue)
    """Messages for its sender thread: the loop never waits on the transport (a large seed, a slow child)."""

    def send(self, message: ParentMessage) -> None:
        if self.alive:
            self.outbox.put(message)

    @property
    def label(self) -> str:
        """How the log names it."""
        raise NotImplementedError

    def join(self) -> None:
        """After its run has ended (or it died): wait for it to go, and let it go."""
        raise NotImplementedError


@dataclass(kw_only=True)
class ProcessHandle(WorkerHandle):
    conn: Connection
    start_error: str | None = None
    """Why it could not be forked."""
    ended: threading.Event = field(default_factory=threading.Event)
    """Its end of the pipe has closed: it has sent all it will send (it ended, or died)."""

    @property
    def label(self) -> str:
        return f"pid {self.pid}" if self.start_error is None else f"not started: {self.start_error}"

    def join(self) -> None:
        self.outbox.put(None)
        self.ended.wait()
        self.conn.close()


class Transport(Protocol):
    """How the parent starts its workers and talks to them."""

    ship_groups: bool
    """The workers send each group's file in their messages (their disk is not the run directory's)."""
    shared_clock: bool
    """The workers read this machine's monotonic clock: their times need no offset (worker_clocks.py)."""

    def start_worker(
        self,
        spec: worker.WorkerSpec,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[WorkerHandle, WorkerMessage | None], None],
    ) -> WorkerHandle:
        """Start a worker and pass its messages to `on_message` on `loop` (None when it has ended, or died)."""
        ...

    def close(self) -> None:
        """Every worker has been joined."""
        ...


def open_transport(executor: str, ray_address: str | None, workers: int, base_dir: Path) -> Transport:
    """Processes on this machine, or Ray actors (Ray is imported only then: an optional extra)."""
    if executor == "ray":
        from treadle.engine.workers.ray_pool import RayActors

        return RayActors(ray_address, workers, base_dir)
    return Processes()


class Processes:
    """Worker processes on this machine, writing into the run directory themselves."""

    ship_groups = False
    shared_clock = True

    def start_worker(
        self,
        spec: worker.WorkerSpec,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[WorkerHandle, WorkerMessage | None], None],
    ) -> WorkerHandle:
        return start_worker(spec, loop, on_message)

    def close(self) -> None:
        pass


def write_group_file(path: Path, table: bytes) -> None:
    """A group file a worker sent: written whole and durable before the outputs are made from it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(table)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def start_worker(
    spec: worker.WorkerSpec,
    loop: asyncio.AbstractEventLoop,
    on_message: Callable[[WorkerHandle, WorkerMessage | None], None],
) -> WorkerHandle:
    """Start a worker process and a thread passing its messages to `on_message` on `loop` (None when
    its pipe closes: it ended, or died)."""
    ours, theirs = multiprocessing.Pipe()
    handle = ProcessHandle(index=spec.index, conn=ours)

    def write() -> None:
        try:  # on this thread: the fork server's first start waits for its imports
            handle.pid = FORK_SERVER.fork(theirs)
        except ForkServerGone as exc:
            handle.start_error = str(exc)
            return
        finally:
            theirs.close()  # the worker has its own copy: the reader hears EOF when it goes
        message: worker.WorkerSpec | ParentMessage | None = spec
        while message is not None:
            try:
                ours.send(message)
            except (OSError, ValueError):  # it died: the reader hears so
                return
            message = handle.outbox.get()

    def read() -> None:
        while True:
            try:
                message: WorkerMessage | None = ours.recv()
            except (EOFError, OSError):
                message = None
                handle.ended.set()
            try:
                loop.call_soon_threadsafe(on_message, handle, message)
            except RuntimeError:  # the parent's loop has closed
                return
            if message is None:
                return

    threading.Thread(target=write, name=f"treadle-worker-{spec.index}-writer", daemon=True).start()
    threading.Thread(target=read, name=f"treadle-worker-{spec.index}-reader", daemon=True).start()
    return handle


def apply_written_group(tracker: CellTracker, failures: dict[int, CellFailure], message: GroupWritten) -> None:
    """A worker wrote a group: its cells' states into the parent's tracker (counts follow), with the rows a
    filter took, and its failures in place of those the parent held for the group."""
    group = message.group
    tracker.set_group_states(group, message.states)
    if message.filtered:
        taken = np.array(message.filtered, dtype=np.int64)
        tracker.mark_filtered(taken[:, 0], taken[:, 1].astype(np.int16))
    rows = tracker.group_rows(group)
    n = tracker.n_nodes
    for cell in range(rows.start * n, rows.stop * n):
        failures.pop(cell, None)
    failures.update(message.failures)


def merge_traces(tracer: Tracer, batch: Batch, slot_numbers: SlotNumbers, worker: int, offset: float = 0.0) -> None:
    """A worker's attempts into the parent's tracer, in order, through its public recording calls:
    plain successes as packed heads, the others field by field; each marked as `worker`'s, on the run's
    lane of its slot (slot_numbers.py), its times on the parent's clock (`offset` added)."""
    heads = np.frombuffer(batch.heads, dtype=HEAD_DTYPE).copy()
    if offset:
        for name in ("t_ready", "t_start", "t_end"):
            heads[name] += offset
    heads["slot"] = slot_numbers.lanes(worker, heads["slot"])
    heads["worker"] = worker
    packed = heads.tobytes()
    done = 0
    for index, rest in batch.more:
        if index > done:
            tracer.record_plain(packed[done * HEAD.size : index * HEAD.size])
        # struct, not numpy, per record: every llm attempt is one of these (its token counts), and
        # seven numpy scalars cost the parent's loop ~30 us a record
        row, node, attempt, slot, t_ready, t_start, t_end = HEAD.unpack_from(packed, index * HEAD.size)
        usage = {"prompt_tokens": rest.get("tokens_in"), "completion_tokens": rest.get("tokens_out")}
        child = (rest["model"], usage) if rest.get("parent") is not None else None
        tracer.record(
            row,
            node,
            attempt,
            slot,
            t_ready,
            t_start,
            t_end,
            rest["status"],
            error=_named_error(rest["error_class"]) if rest.get("error_class") else None,
            message=rest.get("message"),
            values=None if child is not None else {tracer.usage_keys[node]: usage},
            child=child,
            retry_after=rest.get("retry_after_s"),
            rows=rest.get("call_rows"),
            worker=worker,
        )
        done = index + 1
    tracer.record_plain(packed[done * HEAD.size :])


def _named_error(name: str) -> Exception:
    """An exception whose class has `name`: the trace keeps only the class name of a worker's error."""
    return type(name, (Exception,), {})()
