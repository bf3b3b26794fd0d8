"""--executor ray without Ray installed: one line saying how to get it, exit 2 (no Ray needed)."""

from __future__ import annotations

import json
import sys

from treadle.cli import main


def test_executor_ray_without_ray_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when not installed
    (tmp_path / "s.csv").write_text("q\nhello\n")
    pipeline = tmp_path / "pipeline.yaml"
    config = {
        "seed": {"path": "s.csv"},
        "columns": [{"name": "t", "kind": "template", "template": "{{ q }}!"}],
    }
    pipeline.write_text(json.dumps(config))
    code = main(["run", str(pipeline), "--no-ui", "--executor", "ray", "--out", str(tmp_path / "r")])
    assert code == 2
    assert capsys.readouterr().err.strip() == "treadle: error: --executor ray needs Ray: pip install 'treadle[ray]'"
    assert not (tmp_path / "r").exists()  # nothing started
