"""Worker names, args and task queues written with $(VAR), as in Merlin's null_spec and feature_demo examples.

Merlin 1.13 fills the spec's variables (and --vars) into them; `run` must send tasks to the queue that
`run-workers`, `queue-info` and `purge` name, or the study is never drained.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.conftest import RedisFixture

from .helpers import merlin

SPEC = """
description: {{name: $(NAME), description: workers and queues from variables}}
env:
  variables:
    OUTPUT_PATH: ./out
    RUN_ID: 0
    NAME: {name}
    QUEUE: {name}_q$(RUN_ID)
    WORKER: {name}_w$(RUN_ID)
    CONC: 2
global.parameters:
  N: {{values: [1, 2, 3], label: N.%%}}
study:
  - name: sim
    run: {{cmd: "echo $(N)", task_queue: $(QUEUE)}}
  - name: post
    run: {{cmd: "echo post", depends: [sim_*], task_queue: $(QUEUE)_post}}
merlin:
  resources:
    workers:
      $(WORKER):
        args: -l INFO --concurrency $(CONC)
        steps: [sim, post]
"""


def _spec(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(name=name), encoding="utf-8")
    return path


def test_run_workers_echo_fills_in_worker_name_queues_and_args(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "vw")
    result = merlin("run-workers", str(spec), "--echo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    assert re.search(r"-n vw_w0\.\d+@%h -Q vw_q0,vw_q0_post ", line) and line.endswith("-l INFO --concurrency 2")
    assert "$(" not in line
    # Merlin's `--vars A=1 B=2`: the same values `run --vars` gives the study
    result = merlin("run-workers", str(spec), "--echo", "--vars", "RUN_ID=7", "CONC=5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"-n vw_w7\.\d+@%h -Q vw_q7,vw_q7_post ", result.stdout) and "--concurrency 5" in result.stdout


def test_validate_names_an_unknown_variable_in_a_worker_at_its_line(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "vw")
    spec.write_text(spec.read_text().replace("$(CONC)", "$(CONCURRENCY)"))
    result = merlin("validate", str(spec), cwd=tmp_path)
    assert result.returncode == 2
    assert (f"{spec}:22:15: merlin.resources.workers.$(WORKER).args: undefined token $(CONCURRENCY)"
            in result.stderr), result.stderr


@pytest.mark.redis
@pytest.mark.celery
def test_a_study_on_a_variable_queue_is_drained_by_run_workers(redis_server: RedisFixture, tmp_path: Path) -> None:
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec = _spec(tmp_path, "varq")
    queued = merlin("run", str(spec), "--vars", "RUN_ID=3", cwd=tmp_path, env=env)
    assert queued.returncode == 0, queued.stderr
    ws = next(Path(line.split(": ", 1)[1]) for line in queued.stderr.splitlines() if line.startswith("workspace: "))
    plan = json.loads((ws / "merlin_info" / "plan.json").read_text())
    assert {i["task_queue"] for i in plan["instances"]} == {"varq_q3", "varq_q3_post"}
    info = merlin("queue-info", str(spec), "--vars", "RUN_ID=3", "--json", cwd=tmp_path, env=env)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["varq_q3"]["messages"] > 0
    ended = merlin("run-workers", str(spec), "--vars", "RUN_ID=3", "--until-done", str(ws), "--grace", "5",
                   cwd=tmp_path, env=env, timeout=120)
    assert ended.returncode == 0, ended.stderr
    assert ended.stderr.strip().splitlines()[-1] == "run-workers: study varq finished: 4 of 4 task(s) finished"
