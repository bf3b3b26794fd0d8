"""`treadle run` with the app, in a real terminal (a pseudo-terminal): a person quits mid-run, stops it,
and the terminal then says how the run ended, where its files are, and how to go on with it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time
from pathlib import Path

DATA = Path(__file__).parent / "data"
ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


class Terminal:
    """A command in a pseudo-terminal of 160 x 48: what it shows is read as it comes, keys are typed."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the command, with the terminal as its stdin, stdout and stderr
            os.execvpe(command[0], command, env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
        self.shown = b""

    def read_until(self, text: bytes, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in ANSI.sub(b"", self.shown):
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not shown in {timeout} s; last: {ANSI.sub(b'', self.shown)[-500:]!r}"
            if not self._read(left):
                raise AssertionError(f"the command ended before showing {text!r}")

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def ended(self, timeout: float = 60.0) -> tuple[int, str]:
        """Its exit code and everything it showed, once it has ended."""
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, deadline - time.monotonic())):
            assert time.monotonic() < deadline, "the command did not end"
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status), ANSI.sub(b"", self.shown).decode(errors="replace")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the command has ended and closed the terminal
            return False
        self.shown += chunk
        return bool(chunk)


def test_quitting_mid_run_says_where_the_run_is_and_how_to_resume_it(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "treadle.cli", "run", str(DATA / "cli" / "slow" / "pipeline.yaml"),
               "--out", str(run_dir)]  # fmt: skip
    terminal = Terminal(command, {**os.environ, "TERM": "xterm-256color", "XDG_CACHE_HOME": str(tmp_path)})
    terminal.read_until(b"running")  # the app's header, with cells under way
    terminal.type(b"q")
    terminal.read_until(b"Stop now")  # it asks first
    terminal.type(b"!")
    code, shown = terminal.ended()
    assert code == 130, shown[-2000:]
    after = shown[shown.rindex("interrupted after") :]  # what the terminal keeps once the app has gone
    assert f"output:   {run_dir / 'output.parquet'}" in after
    assert f"resume:   treadle resume {run_dir}" in after
    assert "Traceback" not in shown


def test_the_demo_stopped_mid_run_says_where_it_is_and_not_to_resume_it(tmp_path):
    run_dir = tmp_path / "demo"
    command = [sys.executable, "-m", "treadle.cli", "demo", "--out", str(run_dir)]
    terminal = Terminal(command, {**os.environ, "TERM": "xterm-256color", "XDG_CACHE_HOME": str(tmp_path)})
    terminal.read_until(b"running")
    terminal.type(b"q")
    terminal.read_until(b"Stop now")
    terminal.type(b"!")
    code, shown = terminal.ended()
    assert code == 130, shown[-2000:]
    after = shown[shown.rindex("interrupted after") :]
    assert f"summary:  {run_dir / 'summary.json'}" in after and "accuracy: " in after
    assert "resume:" not in after  # its simulator, and the port its pipeline names, are gone
