"""A worker as a Ray actor (`--executor ray`): the same engine and messages as a worker process.

The actor's disk need not be the driver's: it journals and writes its group files in a directory of
its own and sends each written group's file to the driver in its GroupWritten (`ship_groups`). Its
run goes on a thread of its own; the driver calls `send` with each command and `take` for what the
worker says (a long poll), since Ray actors are called, not connected to. Ray itself is not imported
here: ray_pool.py makes this class an actor.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import tempfile
import threading
from pathlib import Path

from treadle.engine.workers.messages import Finished, ParentMessage, WorkerMessage
from treadle.engine.workers.worker import WorkerLoop, WorkerSpec, open_run

TAKE_WAIT_S = 1.0
"""How long `take` waits for a first message before it returns none (the driver then asks again)."""


class EngineActor:
    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue[ParentMessage | None] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[WorkerMessage | None] = queue.SimpleQueue()

    def start(self, spec: WorkerSpec) -> None:
        """The worker's run, on a thread: this call returns at once."""
        threading.Thread(target=self._run, args=(spec,), name="treadle-actor-run", daemon=True).start()

    def _run(self, spec: WorkerSpec) -> None:
        run_dir = Path(tempfile.mkdtemp(prefix=f"treadle-w{spec.index}-"))
        try:
            run = open_run(spec, run_dir, self._outbox.put)
            asyncio.run(WorkerLoop(run, self._inbox.get).execute())
        except Exception as exc:  # the driver hears why rather than of a worker that died
            self._outbox.put(Finished(0.0, f"Ray worker {spec.index} failed: {type(exc).__name__}: {exc}", {}))
        finally:
            self._outbox.put(None)  # the end: the driver stops asking
            shutil.rmtree(run_dir, ignore_errors=True)

    def send(self, message: ParentMessage) -> None:
        self._inbox.put(message)

    def take(self) -> list[WorkerMessage | None]:
        """What the worker said since the last call, in order, waiting up to TAKE_WAIT_S for the first;
        None last once its run has ended."""
        try:
            messages = [self._outbox.get(timeout=TAKE_WAIT_S)]
        except queue.Empty:
            return []
        while messages[-1] is not None:
            try:
                messages.append(self._outbox.get_nowait())
            except queue.Empty:
                break
        return messages
