"""The driver's side of Ray actors (`--executor ray`): the parent (parent.py) is the same as for
worker processes; only starting the workers and carrying the messages differ (ray_worker.py).

Ray is an optional extra (`pip install 'treadle[ray]'`): this module is imported only for a run with
`run.executor: ray`. Without an address it starts a local Ray (or uses the one this process started);
with one it joins that cluster, whose nodes need treadle installed.
"""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import logging
import os
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray._raylet import GcsClient  # type: ignore[attr-defined]  # _raylet.pyi lists a few of its names
from ray.exceptions import AuthenticationError, RayError

from treadle.engine.errors import FatalRunError, one_line
from treadle.engine.functions import local_modules
from treadle.engine.workers.forkserver import WORKER_IMPORTS, with_treadle_importable
from treadle.engine.workers.messages import ParentMessage, WorkerMessage
from treadle.engine.workers.pool import WorkerHandle
from treadle.engine.workers.ray_worker import EngineActor
from treadle.engine.workers.worker import WorkerSpec

ACTOR_NAME_PREFIX = "treadle-w"
"""Actors are named treadle-w<index>-<run id>: findable in the Ray dashboard (and by ray.get_actor)."""

CONNECT_TIMEOUT_S = 10.0

# Ray's own info and warnings (it is started off the main thread: no SIGTERM handler) would cut through
# the TUI and the one-line errors; its errors still show.
_QUIET: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}

log = logging.getLogger(__name__)

# A worker's calls at once: its start, a command, and the driver's long poll for its messages.
_Actor = ray.remote(num_cpus=1, max_concurrency=4)(EngineActor)


@dataclass(kw_only=True)
class ActorHandle(WorkerHandle):
    actor: Any
    name: str

    @property
    def label(self) -> str:
        return f"Ray actor {self.name}"

    def join(self) -> None:
        self.outbox.put(None)
        ray.kill(self.actor, no_restart=True)


# HTTP/2's client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, or its client server
# behind ray://) answers with a SETTINGS frame of its own (frame type 4, the 4th byte of its header).
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4


def _check_reachable(address: str) -> None:
    """ray.init waits without end (deaf to SIGTERM) for a cluster it cannot reach, and for anything else
    at the address (a web server, the dashboard's port): say so at once instead."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or another form Ray resolves itself
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S) as connection:
            connection.sendall(_HTTP2_HELLO)
            answer = connection.recv(9)
    except OSError as exc:
        raise FatalRunError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None
    if len(answer) < 4 or answer[3] != _SETTINGS:
        raise FatalRunError(
            f"no Ray cluster answers at {address}: something else listens there (the dashboard's port, 8265,"
            " is not the cluster's address; `ray start --head` prints it, by default port 6379)"
        )
    if not address.startswith("ray://"):
        _check_admitted(address)


_TOKEN_PLACES = "RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token"


def _check_admitted(address: str) -> None:
    """A cluster with token authentication (`ray start`'s default when a token exists) turns away a driver
    without its token, and ray.init retries for 20 s before it says only that it could not connect: ask
    the cluster's GCS once, as ray.init would, and say what to set."""
    try:
        GcsClient(address=address)
    except AuthenticationError:
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
            raise FatalRunError(
                f"the Ray cluster at {address} refused this machine's authentication token: it wants the cluster's"
                f" own, in {_TOKEN_PLACES}"
            ) from None
        raise FatalRunError(
            f"the Ray cluster at {address} uses token authentication: set RAY_AUTH_MODE=token, with the cluster's"
            f" token in {_TOKEN_PLACES}"
        ) from None
    except Exception:  # anything else is ray.init's to report
        log.debug("asking the Ray cluster's GCS failed", exc_info=True)


def _enable_faulthandler() -> None:
    """ray.init turns faulthandler on for sys.stderr unless it is on already, and fails where sys.stderr
    has no file descriptor: under the TUI (Textual captures it). On the process's own stderr instead."""
    if not faulthandler.is_enabled() and sys.__stderr__ is not None:
        faulthandler.enable(sys.__stderr__, all_threads=False)


def _init_ray(address: str | None, workers: int, base_dir: Path) -> None:
    """A local Ray, or the cluster at `address`; when Ray cannot start or connect, one line saying why.
    A cluster's nodes may not have the pipeline's folder: its modules go with the job (Ray uploads them
    once per content, and each actor imports them); a local Ray reads them where they are."""
    if address is None:
        start = functools.partial(start_local_ray, workers)
        failed = "cannot start a local Ray"
    else:
        _check_reachable(address)
        modules = local_modules(base_dir)
        runtime_env = {"py_modules": modules} if modules else None
        start = functools.partial(ray.init, address=address, runtime_env=runtime_env, **_QUIET)
        failed = f"cannot connect to the Ray cluster at {address}"
    _enable_faulthandler()
    try:
        start()
    except Exception as exc:  # Ray raises ConnectionError, ValueError, RuntimeError...: each means no Ray for the run
        raise FatalRunError(f"{failed}: {one_line(exc, 300)}") from None


def start_local_ray(workers: int) -> None:
    """A local Ray for `workers` actors, whose worker processes import this very treadle (a source checkout
    too: its folder goes on the PYTHONPATH that Ray's daemons inherit), not through a runtime_env, for which Ray
    would start a new worker process for each actor instead of one it keeps ready. The processes it keeps
    ready import what a worker needs while they wait (preload_python_modules), so an actor placed on one
    makes its first call in a few ms, not 2-3 s."""
    saved = os.environ.get("PYTHONPATH")
    pythonpath = with_treadle_importable(dict(os.environ)).get("PYTHONPATH")
    if pythonpath is not None:
        os.environ["PYTHONPATH"] = pythonpath
    preload = {"preload_python_modules": [*WORKER_IMPORTS, EngineActor.__module__]}
    try:
        ray.init(num_cpus=max(2, workers), include_dashboard=False, _system_config=preload, **_QUIET)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


class RayActors:
    """Engine workers as Ray actors; they send their group files to the driver, which writes them."""

    ship_groups = True
    shared_clock = False  # an actor may be on another machine

    def __init__(self, address: str | None, workers: int, base_dir: Path) -> None:
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            _init_ray(address, workers, base_dir)
        self._run_id = uuid.uuid4().hex[:8]

    def start_worker(
        self,
        spec: WorkerSpec,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[WorkerHandle, WorkerMessage | None], None],
    ) -> WorkerHandle:
        name = f"{ACTOR_NAME_PREFIX}{spec.index}-{self._run_id}"
        actor = _Actor.options(name=name).remote()
        handle = ActorHandle(index=spec.index, actor=actor, name=name)
        started = actor.start.remote(spec)

        def write() -> None:
            # One call at a time, each waited for: a threaded actor runs concurrent calls in any order.
            message: ParentMessage | None = None
            try:
                ray.get(started)
                while (message := handle.outbox.get()) is not None:
                    ray.get(actor.send.remote(message))
            except RayError:  # it died: the reader hears so
                return

        def read() -> None:
            while True:
                try:
                    messages: list[WorkerMessage | None] = ray.get(actor.take.remote())
                except RayError:
                    messages = [None]
                for message in messages:
                    try:
                        loop.call_soon_threadsafe(on_message, handle, message)
                    except RuntimeError:  # the parent's loop has closed
                        return
                if messages and messages[-1] is None:
                    return

        threading.Thread(target=write, name=f"treadle-actor-{spec.index}-writer", daemon=True).start()
        threading.Thread(target=read, name=f"treadle-actor-{spec.index}-reader", daemon=True).start()
        return handle

    def close(self) -> None:
        if self._started_ray:
            ray.shutdown()
