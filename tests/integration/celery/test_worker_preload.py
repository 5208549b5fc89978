"""A pool process imports nothing on its first unit: the worker module imported it before the pool forked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from merlin_mdm.backends import RunOptions, get_backend
from merlin_mdm.spec import load_spec
from merlin_mdm.study.workspace import create_workspace
from tests.integration.conftest import REPO

pytestmark = [pytest.mark.redis, pytest.mark.celery]

# Runs the real `unit` task body in a fresh interpreter that holds what a worker holds when its pool forks.
_FIRST_UNIT = """
import json, sys
import celery.apps.worker, celery.concurrency.prefork  # what `celery worker` has loaded when it forks its pool
from merlin_mdm.backends.celery.app import UNIT_TASK
from merlin_mdm.backends.celery.worker import app
unit = app.tasks[UNIT_TASK]  # the worker finalizes its app before it forks, too
before = set(sys.modules)
unit.run(sys.argv[1], "0:0")  # the body, as a pool process calls it
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_a_first_unit_imports_no_module_the_worker_did_not_preload(celery_config: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.arange(1).reshape(-1, 1))
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        description: {{name: preload, description: preload}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        merlin:
          samples: {{file: s.npy, column_labels: [V]}}
        study:
          - name: sim
            run: {{cmd: "echo ran $(V) > {tmp_path}/ran.txt", task_queue: preload_probe}}
    """))
    ws, plan = create_workspace(load_spec(spec, {}), batch_size=1)
    backend = get_backend("celery")
    assert backend.launch(ws, plan, RunOptions()).state == "queued"
    out = subprocess.run([sys.executable, "-c", _FIRST_UNIT, str(ws.root)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "ran.txt").read_text() == "ran 0\n"  # the unit really ran its task
    imported = json.loads(out.stdout.splitlines()[-1])
    assert imported == [], imported
