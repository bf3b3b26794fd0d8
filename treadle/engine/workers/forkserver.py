"""Worker processes forked from a warm process: the fork server.

A worker started as a new interpreter spends ~2 s of CPU importing treadle, pandas and the model client
before its first call, every worker, every run. The fork server is one process that imports them once
and then forks each worker from itself, so a worker starts in milliseconds, and the imports' memory
is shared between the workers until they write to it. It is started with the first run on workers
and lives as long as the process that started it (a notebook's next run starts its workers at once);
it ends when that process closes its end of the control pipe, or dies.

Not multiprocessing's forkserver: that runs the caller's main module again in each child, which a
script calling `treadle.run(..., workers=2)` without an `if __name__ == "__main__"` guard would not
survive. The server runs `python -m treadle.engine.workers.forkserver FD`, FD one end of a socket
pair (a multiprocessing Connection); for each worker the parent sends the environment and working
directory it has now, and the worker's own connection as a file descriptor (SCM_RIGHTS); the server
answers with the worker's pid. Each worker has a session of its own, so a Ctrl-C at the terminal
reaches the parent alone, which stops the workers in order; the server reaps them."""

from __future__ import annotations

import gc
import importlib
import os
import signal
import site
import subprocess
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass
from multiprocessing import Pipe, reduction
from multiprocessing.connection import Connection
from pathlib import Path

TREADLE_ROOT = str(Path(__file__).resolve().parents[3])
"""The folder this treadle is imported from: a checkout, or site-packages once installed."""
WORKER_IMPORTS = ("langchain_openai", "treadle.engine.generators.llm_client", "treadle.engine.workers.worker")
"""What a worker imports before its first call (~2 s of CPU): done once, before it is needed, where a
worker's process comes from (here, and in a local Ray's worker processes: ray_pool.py)."""
"""Where worker processes (the server's, Ray's local ones) import treadle from: this very treadle (a
source checkout need not be installed)."""


@dataclass(frozen=True)
class ForkRequest:
    """What a worker needs from the parent beyond its spec: the world the parent sees now."""

    environ: dict[str, str]
    cwd: str


class ForkServerGone(Exception):
    """The fork server ended (or could not start): no worker can be forked from it."""


class ForkServer:
    """The parent's side: one server, started on first use, asked for one worker at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: Connection | None = None

    def start(self) -> None:
        """Start the server now if it is not running: its imports go on while the caller does other things."""
        with self._lock:
            self._running()

    def fork(self, conn: Connection) -> int:
        """A worker process running `worker.main` on `conn` (a Connection's other end, which the caller
        then closes); its pid. Waits for the server's imports on first use: call it off the loop."""
        with self._lock:
            control, process = self._running()  # a server that has died since the last run starts again
            try:
                control.send(ForkRequest(dict(os.environ), os.getcwd()))
                reduction.send_handle(control, conn.fileno(), process.pid)
                pid: int = control.recv()
            except (EOFError, OSError):
                self._stop()
                raise ForkServerGone(f"the worker fork server ended (exit code {process.returncode})") from None
            return pid

    def _running(self) -> tuple[Connection, subprocess.Popen[bytes]]:
        if self._process is None or self._control is None or self._process.poll() is not None:
            self._stop()
            ours, theirs = Pipe()
            env = with_treadle_importable(dict(os.environ))
            self._process = subprocess.Popen(
                [sys.executable, "-m", "treadle.engine.workers.forkserver", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            theirs.close()
            self._control = ours
        return self._control, self._process

    def _stop(self) -> None:
        if self._control is not None:
            self._control.close()
        if self._process is not None:
            self._process.wait()
        self._control = self._process = None


FORK_SERVER = ForkServer()
"""The process's one fork server (its imports are what is worth sharing)."""


def _reap(_signum: int, _frame: object) -> None:
    """The server's SIGCHLD: its ended workers are waited for, or they would stay as zombies."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _run_worker(control: Connection, conn_fd: int, request: ForkRequest) -> None:
    """In the forked child: the world the parent sees, then the worker; never returns."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        control.close()
        os.chdir(request.cwd)
        os.environ.clear()
        os.environ.update(request.environ)
        from treadle.engine.workers import worker

        worker.main(Connection(conn_fd))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # not the server's interpreter shutdown: the worker has closed what it opened


def with_treadle_importable(env: dict[str, str]) -> dict[str, str]:
    """`env` for a new interpreter that imports this very treadle: a checkout's folder goes first on its
    PYTHONPATH. Not an installed one's site-packages, which the interpreter has anyway, after the standard
    library: on PYTHONPATH it would come before it, where a package there (a backport named `typing`, say)
    would hide a standard module."""
    if Path(TREADLE_ROOT) in {Path(p).resolve() for p in site.getsitepackages()}:
        return env
    return env | {"PYTHONPATH": os.pathsep.join(p for p in (TREADLE_ROOT, env.get("PYTHONPATH")) if p)}


def serve(control: Connection) -> None:
    """The server: the worker's imports once, then a fork per request until the parent goes."""
    for module in WORKER_IMPORTS:
        importlib.import_module(module)
    # Python 3.12+ warns of any thread at a fork, counting the OS's: pyarrow's jemalloc keeps a background
    # thread, and numpy's BLAS a pool; both prepare for a fork (pthread_atfork), and no Python thread runs here.
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
    gc.collect()
    gc.freeze()  # what the imports made is shared with every worker: no collection of theirs touches it
    signal.signal(signal.SIGCHLD, _reap)
    try:
        while True:
            request: ForkRequest = control.recv()
            conn_fd = reduction.recv_handle(control)
            pid = os.fork()
            if pid == 0:
                _run_worker(control, conn_fd, request)
            os.close(conn_fd)
            control.send(pid)
    except (EOFError, OSError):  # the parent closed its end, or died
        return


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
