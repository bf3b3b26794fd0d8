from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
PROBE_DIR = DATA / "probe"


def pytest_configure(config: pytest.Config) -> None:
    # Tests stop child processes with SIGINT, as Ctrl-C does. A shell that starts the suite in the
    # background ignores SIGINT, and children would inherit that; a handler here is reset in them.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _probe_recorder():
    if str(PROBE_DIR) not in sys.path:
        sys.path.insert(0, str(PROBE_DIR))
    import probe_cols

    probe_cols.probe.reset()
    return probe_cols.probe


@pytest.fixture
def probe():
    """The probe module's recorder, reset for each test (its columns live in tests/data/probe)."""
    recorder = _probe_recorder()
    yield recorder
    recorder.open_gate()


@pytest.fixture(scope="module")
def module_probe():
    """The probe module's recorder for one test module's shared runs, reset before and after."""
    recorder = _probe_recorder()
    yield recorder
    recorder.reset()


@pytest.fixture(autouse=True)
def _private_response_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own response cache directory (XDG_CACHE_HOME, inherited by subprocesses):
    no test writes to the user's ~/.cache, and no test reuses another's answers."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
