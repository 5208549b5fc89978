"""On a real single-node Slurm: the batch system, `merlin-mdm launch` draining a study, scancel and
launching again, and an MPI step with 2 ranks through srun."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from merlin_mdm.batch import TERMINAL_STATES, AllocationRequest, JobState, get_batch_system
from tests.integration.conftest import RedisFixture, wait_until
from tests.integration.launching import merlin, samples_study
from tests.integration.slurm.cluster import SingleNodeSlurm

pytestmark = [pytest.mark.slurm]


def wait_state(job_id: str, wanted: set[JobState], timeout: float, workdir: Path | None = None) -> JobState:
    system = get_batch_system("slurm")
    seen: list[JobState] = []

    def reached() -> bool:
        seen.append(system.status([job_id], workdir)[job_id])
        return seen[-1] in wanted

    wait_until(reached, timeout, f"job {job_id} to reach {sorted(s.value for s in wanted)} (seen {seen[-3:]})")
    return seen[-1]


def test_submit_status_cancel(slurm: SingleNodeSlurm, tmp_path: Path) -> None:
    system = get_batch_system("slurm")
    done = system.submit(AllocationRequest("quick", "echo inside $SLURM_JOB_ID", tmp_path, walltime=60))
    assert wait_state(done, TERMINAL_STATES, 60, tmp_path) is JobState.COMPLETED
    assert (tmp_path / f"{done}.ec").read_text().strip() == "0"
    assert f"inside {done}" in (tmp_path / f"quick.{done}.out").read_text()
    slow = system.submit(AllocationRequest("slow", "sleep 300", tmp_path, walltime=600))
    wait_state(slow, {JobState.RUNNING}, 60)
    system.cancel([slow])
    assert wait_state(slow, TERMINAL_STATES, 60) is JobState.CANCELLED
    failed = system.submit(AllocationRequest("bad", "exit 3", tmp_path))
    assert wait_state(failed, TERMINAL_STATES, 60, tmp_path) is JobState.FAILED


def test_a_hand_written_sbatch_script_gets_its_deadline_from_slurm(slurm: SingleNodeSlurm, tmp_path: Path) -> None:
    """run-workers in someone else's batch script (no MERLIN_MDM_ALLOC_END) still knows the walltime."""
    script = tmp_path / "mine.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH --time=7:00\n#SBATCH -o {tmp_path}/mine.out\n"
                      f"{sys.executable} -c 'import os, time; from merlin_mdm.batch import detect_allocation; "
                      "from merlin_mdm.backends.celery.in_allocation import allocation_deadline; "
                      "a = detect_allocation(os.environ); "
                      "print(a.system, a.end, round(allocation_deadline(a) - time.time()))'\n")
    job = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True)
    job_id = job.stdout.strip().split(";")[0]
    assert wait_state(job_id, TERMINAL_STATES, 60) is JobState.COMPLETED
    system, end, left = (tmp_path / "mine.out").read_text().split()
    assert (system, end) == ("slurm", "None")  # not exported by this script: asked of squeue
    assert 0 < int(left) <= 420  # 7 minutes from the job's start, read some time later


def _study(tmp_path: Path, n: int, sleep: float, cmd: str | None = None) -> Path:
    # MERLIN_FINISHED is the framework's done-marker in the task's directory (its working directory)
    work = cmd or (f"[ -e MERLIN_FINISHED ] && echo $(V) >> {tmp_path}/violations.log; "
                   f"echo $(V) >> {tmp_path}/starts.log; sleep {sleep}; echo $(V) >> {tmp_path}/runs.log")
    return samples_study(tmp_path / "study.yaml", "drain", '{type: slurm, walltime: "00:10:00"}',
                         "drainers: {args: -l INFO, steps: [all]}", n, f'cmd: "{work}", procs: 2',
                         f"echo funnel >> {tmp_path}/runs.log")


def _queue(spec: Path, env: dict[str, str], batch_size: int) -> None:
    queued = merlin("run", spec.name, "--batch-size", str(batch_size), cwd=spec.parent, env=env)
    assert queued.returncode == 0, queued.stderr


def _launch(spec: Path, env: dict[str, str], *extra: str) -> str:
    out = merlin("launch", spec.name, *extra, cwd=spec.parent, env=env)
    assert out.returncode == 0, out.stderr
    job_id, name, system, _ = out.stdout.strip().split("\t")
    assert (name, system) == ("drain.drainers", "slurm")
    return job_id


def _app(redis_server: RedisFixture, tmp_path: Path, extra: str = "") -> dict[str, str]:
    app = tmp_path / "app.yaml"
    app.write_text(redis_server.app_yaml.read_text() + extra, encoding="utf-8")
    return {"MERLIN_MDM_CONFIG": str(app)}


def _allocation_line(status: str, job_id: str) -> list[str]:
    """The columns after the job id in `status`'s allocations table."""
    table = status.split("allocations:\n", 1)[1]
    return next(line.split()[1:] for line in table.splitlines() if line.split()[:1] == [job_id])


def _exactly_once(tmp_path: Path, n: int, env: dict[str, str], interrupted: int = 0) -> None:
    """Every sample and the funnel completed once by the framework's count, none started after its done-marker;
    only the ``interrupted`` tasks in flight when an allocation was killed may have run a second time."""
    status = json.loads(merlin("status", "study.yaml", "--json", cwd=tmp_path, env=env).stdout)
    assert status["state"] == "finished"
    counts = {s["step"]: {k: v for k, v in s["counts"].items() if v} for s in status["steps"]}
    assert counts == {"work": {"finished": n}, "funnel": {"finished": 1}}
    runs = Counter((tmp_path / "runs.log").read_text().split())
    assert runs.pop("funnel") == 1
    assert set(runs) == {str(i) for i in range(n)}
    assert sum(runs.values()) - n <= interrupted, [v for v, c in runs.items() if c > 1]
    assert not (tmp_path / "violations.log").exists()


@pytest.mark.redis
@pytest.mark.celery
def test_launch_drains_2000_samples_and_a_funnel_and_the_allocation_ends(
        slurm: SingleNodeSlurm, redis_server: RedisFixture, tmp_path: Path) -> None:
    env = _app(redis_server, tmp_path)
    spec = _study(tmp_path, 2000, 0)
    _queue(spec, env, 100)
    job_id = _launch(spec, env)
    assert wait_state(job_id, TERMINAL_STATES, 240) is JobState.COMPLETED  # nobody cancelled it
    status = merlin("status", spec.name, cwd=tmp_path, env=env)
    assert "state: finished" in status.stdout, status.stdout
    assert _allocation_line(status.stdout, job_id) == ["slurm", "completed", "drain.drainers", "-"]
    _exactly_once(tmp_path, 2000, env)


@pytest.mark.redis
@pytest.mark.celery
def test_scancel_mid_study_then_launch_again_completes_it_once(
        slurm: SingleNodeSlurm, redis_server: RedisFixture, tmp_path: Path) -> None:
    env = _app(redis_server, tmp_path, "visibility_timeout: 8\n")
    spec = _study(tmp_path, 400, 0.05)
    _queue(spec, env, 10)
    first = _launch(spec, env)
    runs = tmp_path / "runs.log"
    wait_until(lambda: runs.exists() and len(runs.read_text().split()) >= 60, 120, "60 samples to finish")
    running = merlin("status", spec.name, cwd=tmp_path, env=env)
    assert _allocation_line(running.stdout, first)[:3] == ["slurm", "running", "drain.drainers"], running.stdout
    assert _allocation_line(running.stdout, first)[3].startswith(f"drainers.{first}."), running.stdout
    subprocess.run(["scancel", first], check=True)
    assert wait_state(first, TERMINAL_STATES, 60) is JobState.CANCELLED
    assert len(runs.read_text().split()) < 400, "the study finished before scancel: make it longer"
    second = _launch(spec, env)
    assert wait_state(second, TERMINAL_STATES, 240) is JobState.COMPLETED
    _exactly_once(tmp_path, 400, env, interrupted=os.cpu_count() or 1)  # one per worker process
    status = merlin("status", spec.name, cwd=tmp_path, env=env)
    assert _allocation_line(status.stdout, first)[:2] == ["slurm", "cancelled"], status.stdout
    assert _allocation_line(status.stdout, second)[:2] == ["slurm", "completed"], status.stdout


@pytest.mark.redis
@pytest.mark.celery
@pytest.mark.mpi
def test_an_mpi_step_runs_two_ranks_through_srun(slurm: SingleNodeSlurm, redis_server: RedisFixture,
                                                  tmp_path: Path) -> None:
    hello = tmp_path / "mpi_hello.py"
    hello.write_text("from mpi4py import MPI\nr, n = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()\n"
                     f"open(f'{tmp_path}/rank{{r}}.txt', 'w').write(f'rank {{r}} of {{n}}')\n")
    env = _app(redis_server, tmp_path)
    spec = _study(tmp_path, 1, 0, cmd=f"$(LAUNCHER) --mpi=pmi2 {sys.executable} {hello}; "
                                         f"echo $(V) >> {tmp_path}/runs.log")
    _queue(spec, env, 1)
    job_id = _launch(spec, env)
    assert wait_state(job_id, TERMINAL_STATES, 120) is JobState.COMPLETED
    assert sorted(p.read_text() for p in tmp_path.glob("rank*.txt")) == ["rank 0 of 2", "rank 1 of 2"]
    [err] = tmp_path.glob("out/*/work/work.slurm.err")  # the worker's own one task a node is not the step's
    assert "can't honor --ntasks-per-node" not in err.read_text(), err.read_text()



@pytest.mark.redis
@pytest.mark.celery
def test_at_the_walltime_a_unit_in_hand_is_given_back_through_srun(
        slurm: SingleNodeSlurm, redis_server: RedisFixture, tmp_path: Path) -> None:
    """The unit ignores the warm stop; the cold one reaches the worker through srun (which SIGKILLs its step on
    SIGQUIT or SIGTERM), so the unit goes back to the queue instead of being held until the visibility timeout."""
    from merlin_mdm.backends.celery.broker import held_messages
    from merlin_mdm.config import load_config

    # the supervisor stops the workers 100 s before the 2-minute walltime, so 20 s in; its grace is 30 s
    env = {**_app(redis_server, tmp_path), "MERLIN_MDM_WALLTIME_MARGIN": "100"}
    spec = samples_study(tmp_path / "study.yaml", "drain", '{type: slurm, walltime: "00:02:00"}',
                         "drainers: {args: -l INFO, steps: [all]}", 1,
                         f'cmd: "echo $(V) >> {tmp_path}/starts.log; sleep 300"', "echo funnel")
    _queue(spec, env, 1)
    job_id = _launch(spec, env)
    assert wait_state(job_id, TERMINAL_STATES, 150) is JobState.COMPLETED  # ended by run-workers, not Slurm
    log = (tmp_path / "out").glob(f"drain_*/merlin_info/batch/*{job_id}*")
    assert (tmp_path / "starts.log").read_text() == "0\n", list(log)
    status = json.loads(merlin("status", "study.yaml", "--json", cwd=tmp_path, env=env).stdout)
    work = next(s for s in status["steps"] if s["step"] == "work")["counts"]
    assert (work["queued"], work["running"]) == (1, 0), status  # given back, recorded queued
    workspace = json.loads(next((tmp_path / "out").glob("drain_*/merlin_info/plan.json")).read_text())["workspace"]
    held = held_messages(load_config(None, Path(env["MERLIN_MDM_CONFIG"])), ["merlin"], workspace)
    assert (held.waiting, held.unacked) == (1, 0), held  # back in the queue, not held by the dead worker


@pytest.mark.redis
def test_a_request_the_scheduler_refuses_names_the_spec_block_it_came_from(
        slurm: SingleNodeSlurm, redis_server: RedisFixture, tmp_path: Path) -> None:
    env = _app(redis_server, tmp_path)
    spec = samples_study(tmp_path / "study.yaml", "drain",
                         '{type: slurm, walltime: "00:02:00", slurm_args: "--partition=nosuchpart"}',
                         "drainers: {args: -l INFO, steps: [all]}", 1, 'cmd: "echo $(V)"', "echo funnel")
    _queue(spec, env, 1)
    refused = merlin("launch", spec.name, cwd=tmp_path, env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "nosuchpart" in refused.stderr or "partition" in refused.stderr.lower(), refused.stderr
    assert f"(the request comes from {spec.name}:3: batch; `merlin-mdm launch {spec.name} --dry` prints it)" \
        in refused.stderr, \
        refused.stderr
    overridden = merlin("launch", spec.name, "--queue", "nopart", cwd=tmp_path, env=env)  # the command line's value
    assert overridden.returncode == 1 and f"(the request comes from {spec.name}:3: batch, with --queue nopart from " \
        "the command line;" in overridden.stderr, overridden.stderr


@pytest.mark.redis
def test_an_allocation_slurm_may_never_start_as_asked_is_said_by_launch_and_status(
        slurm: SingleNodeSlurm, redis_server: RedisFixture, tmp_path: Path) -> None:
    """Two nodes on a one-node cluster: Slurm queues the job (PartitionNodeLimit) and it never starts; `launch`
    said nothing and `status` showed a bare `pending` beside the study's hint to `launch` again."""
    env = _app(redis_server, tmp_path)
    spec = samples_study(tmp_path / "study.yaml", "drain", '{type: slurm, walltime: "00:02:00", nodes: 2}',
                         "drainers: {args: -l INFO, steps: [all]}", 1, 'cmd: "echo $(V)"', "echo funnel")
    _queue(spec, env, 1)
    out = merlin("launch", spec.name, cwd=tmp_path, env=env)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr  # nodes down would say the same
    job_id = out.stdout.split("\t")[0]  # submitted and recorded, and said so
    # Slurm's first word on it is PartitionConfig, its next PartitionNodeLimit
    said = rf"warning: job {job_id} \(drain.drainers\) is pending \((PartitionConfig|PartitionNodeLimit)\): Slurm " \
           rf"may never start it as asked \(more nodes.*\); unless nodes are down for a while, cancel it \(`scancel " \
           rf"-Q {job_id}`\), change the request"
    assert re.search(said, out.stderr), out.stderr
    status = merlin("status", spec.name, cwd=tmp_path, env=env).stdout
    assert _allocation_line(status, job_id)[:2] == ["slurm", "pending"], status
    assert re.search(rf"job {job_id} pending \(Partition\w+\): Slurm may never start it as asked", status), status
    assert f"queued  (waiting for workers: allocation(s) {job_id} are pending: their workers start when" in status, \
        status


@pytest.mark.redis
def test_launch_refuses_a_step_wanting_more_nodes_than_its_allocation_before_submitting(
        slurm: SingleNodeSlurm, redis_server: RedisFixture, tmp_path: Path) -> None:
    env = _app(redis_server, tmp_path)
    spec = samples_study(tmp_path / "study.yaml", "drain", '{type: slurm, walltime: "00:02:00"}',
                         "drainers: {args: -l INFO, steps: [all]}", 1, 'cmd: "$(LAUNCHER) echo $(V)", nodes: 2',
                         "echo funnel")
    _queue(spec, env, 1)
    out = merlin("launch", spec.name, cwd=tmp_path, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "study.yaml:16: step work asks for 2 nodes, allocation drain.drainers has 1" in out.stderr, out.stderr
    assert not list(tmp_path.glob("out/*/merlin_info/batch/jobs.jsonl"))  # nothing submitted
    assert slurm_jobs() == []


def slurm_jobs() -> list[str]:
    """The ids of the jobs squeue shows."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return out.stdout.split()
