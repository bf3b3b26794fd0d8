from __future__ import annotations

import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
PROBE_DIR = DATA / "probe"


@pytest.fixture
def probe():
    """The probe module's recorder, reset for each test (its columns live in tests/data/probe)."""
    if str(PROBE_DIR) not in sys.path:
        sys.path.insert(0, str(PROBE_DIR))
    import probe_cols

    probe_cols.probe.reset()
    yield probe_cols.probe
    probe_cols.probe.open_gate()
