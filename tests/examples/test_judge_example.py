"""examples/judge: a per-row llm judge, a filter on its score, a batch column per row group (simulator)."""

from __future__ import annotations

from pathlib import Path

import pytest

import treadle
from treadle.sim import SimConfig, SimulatorThread

JUDGE = Path(__file__).parents[2] / "examples" / "judge"


def test_the_judge_example_keeps_good_answers_and_scores_their_length_per_group(tmp_path, monkeypatch):
    with SimulatorThread(SimConfig(book=str(JUDGE / "book.yaml"), latency_ms=5, seed=1)) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        result = treadle.run(JUDGE / "pipeline.yaml", out=tmp_path / "run")
    assert result.status == "done" and result.exit_code == 0
    assert result.output["id"].tolist() == [1, 3, 4, 6, 7, 8], "the 'maybe' answers scored 2 and were dropped"
    assert result.summary["rows"]["filtered"] == 2
    assert {(f["row"], f["message"]) for f in result.failures} == {(1, "filtered by good"), (4, "filtered by good")}
    # Row groups of 4: the z-scores of each group's kept rows sum to zero.
    z = result.output.set_index("id")["length_z"]
    assert z.loc[[1, 3, 4]].sum() == pytest.approx(0, abs=1e-2)
    assert z.loc[[6, 7, 8]].sum() == pytest.approx(0, abs=1e-2)
    assert z.loc[3] < 0 < z.loc[1]
