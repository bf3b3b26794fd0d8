"""The local Ray treadle starts for `--executor ray` (ray_pool.start_local_ray): the worker processes it
keeps ready for actors have imported treadle's worker and the model client before an actor is placed on
one, and the driver's environment is as it was. In a process of its own: one Ray per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

if not os.environ.get("CI"):  # CI installs the Ray extra (.ci/run): there a missing Ray fails, never skips
    pytest.importorskip("ray", reason="the Ray tests need Ray: pip install 'treadle[ray]'")

DRIVER = """
import json, os, sys
import ray
from treadle.engine.workers.forkserver import WORKER_IMPORTS
from treadle.engine.workers.ray_pool import start_local_ray

before = os.environ.get("PYTHONPATH")
start_local_ray(2)


@ray.remote(num_cpus=1)
def imported(names):
    return {name: name in sys.modules for name in names}  # looked at before anything imports them


seen = ray.get([imported.remote(list(WORKER_IMPORTS)) for _ in range(2)])
print(json.dumps({"seen": seen, "pythonpath_kept": os.environ.get("PYTHONPATH") == before}))
ray.shutdown()
"""


def test_a_local_rays_worker_processes_have_the_workers_imports_done(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a new local Ray, no cluster's
    done = subprocess.run(
        [sys.executable, "-c", DRIVER], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["pythonpath_kept"]
    assert said["seen"] == [{name: True for name in said["seen"][0]}] * 2
    assert set(said["seen"][0]) >= {"langchain_openai", "treadle.engine.workers.worker"}
