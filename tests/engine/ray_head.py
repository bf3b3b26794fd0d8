"""A Ray cluster's head for the tests that connect to one by address: `ray start --head` as a person
starts it, in a process group of its own (stopped with it; no other Ray on the machine is touched)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import treadle

TREADLE_PATH = str(Path(treadle.__file__).resolve().parents[1])
"""The actors import this very treadle (a source checkout too)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def ray_head(env: dict[str, str], wrapper: list[str] | None = None) -> Iterator[str]:
    """A one-node cluster started with `env` (and under `wrapper`, a command that ends by running the rest);
    its address."""
    port = _free_port()
    # Short: Ray's socket paths under it must fit a Unix socket's 107 bytes (pytest's tmp_path does not).
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray_start = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
                 "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                 f"--temp-dir={temp_dir}"]  # fmt: skip
    head = subprocess.Popen(
        [*(wrapper or []), *ray_start],
        env={**os.environ, "PYTHONPATH": TREADLE_PATH, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert head.stdout is not None
        said = []
        for line in head.stdout:  # until it says it runs (with --block it then waits)
            said.append(line)
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail(f"ray start ended (exit code {head.wait()}):\n{''.join(said[-20:])}")
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)
