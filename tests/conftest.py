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


@pytest.fixture
def probe():
    """The probe module's recorder, reset for each test (its columns live in tests/data/probe)."""
    if str(PROBE_DIR) not in sys.path:
        sys.path.insert(0, str(PROBE_DIR))
    import probe_cols

    probe_cols.probe.reset()
    yield probe_cols.probe
    probe_cols.probe.open_gate()


@pytest.fixture(autouse=True)
def _private_response_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own response cache directory (XDG_CACHE_HOME, inherited by subprocesses):
    no test writes to the user's ~/.cache, and no test reuses another's answers."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
