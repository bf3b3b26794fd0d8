"""Run the simulator in a child process (`python -m treadle.sim`), so it has a core of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from types import TracebackType

from .cli import URL_LINE_PREFIX, config_to_argv
from .config import SimConfig


class SimulatorProcess:
    """`with SimulatorProcess(SimConfig(...)) as base_url:` runs `python -m treadle.sim` in a child
    process, so the server has a core of its own (benches)."""

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.argv, env_extra = config_to_argv(config or SimConfig())
        self.argv += ["--host", host, "--port", str(port)]
        self._env = {**os.environ, **env_extra}
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "treadle.sim", *self.argv],
            stdout=subprocess.PIPE,
            env=self._env,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith(URL_LINE_PREFIX):
            self._close()
            raise RuntimeError(f"simulator process did not start (exit code {self._proc.returncode})")
        return line[len(URL_LINE_PREFIX) :].strip()

    @property
    def pid(self) -> int | None:
        """The server's process id (benches read its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def _close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # the CLI turns SIGTERM into a clean shutdown
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
