"""`merlin-mdm launch` with the `local` batch system (no scheduler): walltime awareness end to end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from merlin_mdm.backends.celery.in_allocation import Supervisor
from merlin_mdm.backends.celery.workers import COLD_STOP_SIGNAL
from merlin_mdm.batch import TERMINAL_STATES, JobState, get_batch_system
from tests.integration.conftest import RedisFixture, wait_until
from tests.integration.launching import merlin, samples_study


def _spec(tmp_path: Path, n: int) -> Path:
    # every task asks for 30 s of walltime
    return samples_study(tmp_path / "study.yaml", "fit", "{type: local}", "fitters: {args: -l INFO -c 2, steps: [all]}",
                         n, f'cmd: "echo $(V) >> {tmp_path}/runs.log", walltime: "00:00:30"',
                         f"echo funnel >> {tmp_path}/runs.log")


@pytest.fixture
def local_jobs() -> Iterator[list[str]]:
    """Job ids the test launched with the local batch system; whatever still runs is killed afterwards."""
    jobs: list[str] = []
    yield jobs
    for job in jobs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(job), signal.SIGKILL)


def _launched(result: subprocess.CompletedProcess[str], jobs: list[str]) -> str:
    assert result.returncode == 0, result.stderr
    jobs.append(result.stdout.split("\t")[0])
    return jobs[-1]


def _wait_done(job_id: str, workdir: Path) -> JobState:
    system = get_batch_system("local")
    seen: list[JobState] = []

    def over() -> bool:
        seen.append(system.status([job_id], workdir)[job_id])
        return seen[-1] in TERMINAL_STATES or seen[-1] is JobState.UNKNOWN

    wait_until(over, 120, f"local job {job_id} to end")
    return seen[-1]


@pytest.mark.redis
@pytest.mark.celery
def test_units_that_do_not_fit_are_handed_back_and_the_next_allocation_runs_them(
        redis_server: RedisFixture, tmp_path: Path, local_jobs: list[str]) -> None:
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml), "MERLIN_MDM_WALLTIME_MARGIN": "40"}
    spec = _spec(tmp_path, 6)
    assert merlin("run", spec.name, "--batch-size", "2", cwd=tmp_path, env=env).returncode == 0
    # 60 s of walltime less 40 s of margin leaves 20 s: no unit of 2 x 30 s fits
    job = _launched(merlin("launch", spec.name, "--walltime", "60", cwd=tmp_path, env=env), local_jobs)
    workdir = next((tmp_path / "out").glob("fit_*")) / "merlin_info" / "batch"
    assert _wait_done(job, workdir) is JobState.COMPLETED
    log = (workdir / f"fit.fitters.{job}.out").read_text()
    assert "given back for the next allocation" in log and "Traceback" not in log, log[-3000:]
    assert "the walltime runs out" not in log  # the worker left by itself, before the supervisor's deadline
    assert not (tmp_path / "runs.log").exists()  # nothing ran, nothing was lost: all handed back
    status = merlin("status", spec.name, cwd=tmp_path, env=env)
    assert f"{job}" in status.stdout and "completed" in status.stdout, status.stdout
    # the next allocation has time for everything
    second = _launched(merlin("launch", spec.name, "--walltime", "10:00", cwd=tmp_path, env=env), local_jobs)
    assert _wait_done(second, workdir) is JobState.COMPLETED
    runs = Counter((tmp_path / "runs.log").read_text().split())
    assert runs == Counter({**{str(i): 1 for i in range(6)}, "funnel": 1})


def test_the_supervisor_stops_workers_before_the_deadline_and_on_sigterm() -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    messages: list[str] = []
    code = Supervisor([sleeper], deadline=time.time() + 30, margin=30, poll=0.05, log=messages.append).run()
    assert code == 0 and sleeper.returncode == -signal.SIGTERM
    assert messages == ["run-workers: stopping the workers: the walltime runs out"]


def test_the_supervisors_sigkill_ends_the_workers_whole_group(tmp_path: Path) -> None:
    """Flux workers are a chain (a signal relay, `flux exec`, the remote relay): a SIGKILL of the relay alone
    left the rest running past run-workers' end, owned by nobody."""
    chain = subprocess.Popen(["sh", "-c", f"sleep 300 & echo $! > {tmp_path}/pid; wait"], start_new_session=True)
    deadline = time.monotonic() + 10
    while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    inner = int((tmp_path / "pid").read_text())
    Supervisor([chain], poll=0.05, log=lambda m: None)._send(signal.SIGKILL)
    assert chain.wait(timeout=10) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _alive(inner):
        assert time.monotonic() < deadline, "the worker's child outlived the SIGKILL"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_supervisor_stops_workers_when_the_study_is_over() -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    checks: list[bool] = []

    def over() -> bool:
        checks.append(len(checks) >= 2)
        return checks[-1]

    assert Supervisor([sleeper], is_over=over, poll=0.05, log=lambda m: None).run() == 0
    assert checks == [False, False, True] and sleeper.returncode == -signal.SIGTERM


def test_a_worker_that_fails_by_itself_gives_its_exit_code() -> None:
    failing = subprocess.Popen(["sh", "-c", "exit 3"])
    assert Supervisor([failing], poll=0.05, log=lambda m: None).run() == 3


def test_the_supervisor_asks_through_the_broker_first_and_signals_after_the_grace() -> None:
    stubborn = subprocess.Popen(["sleep", "300"])
    asked: list[bool] = []
    supervisor = Supervisor([stubborn], is_over=lambda: True, poll=0.05, grace=0.3, log=lambda m: None,
                            shutdown=lambda: asked.append(True))
    assert supervisor.run() == 0
    # it ignored the broker: the cold shutdown (units given back) came after, as the signal a launcher passes on
    # (SIGUSR2); not SIGTERM or SIGQUIT, which srun takes to SIGKILL its whole step
    assert asked == [True] and stubborn.returncode == -COLD_STOP_SIGNAL


def test_the_grace_ends_halfway_to_the_walltime() -> None:
    stubborn = subprocess.Popen(["sleep", "300"])
    asked: list[float] = []
    start = time.time()
    supervisor = Supervisor([stubborn], deadline=start + 4, margin=4, poll=0.05, grace=30, log=lambda m: None,
                            shutdown=lambda: asked.append(time.time()))
    assert supervisor.run() == 0 and stubborn.returncode == -COLD_STOP_SIGNAL
    assert len(asked) == 1 and time.time() < start + 4  # cold before the walltime, not 30 s after the warm ask


def test_the_early_warning_signal_asks_through_the_broker_first_and_ends_as_planned() -> None:
    """The early warning is a planned wind-down, like the walltime margin: exit 0 (it was 138, and `status`
    showed the job failed)."""
    stubborn = subprocess.Popen(["sleep", "300"])
    asked: list[bool] = []
    said: list[str] = []
    supervisor = Supervisor([stubborn], poll=0.05, grace=0.3, log=said.append, early_signal=signal.SIGUSR1,
                            shutdown=lambda: asked.append(True))
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        assert supervisor.run() == 0
    finally:
        timer.cancel()
    assert asked == [True] and stubborn.returncode == -COLD_STOP_SIGNAL
    assert "stopping the workers: signal SIGUSR1 (the early warning: the walltime nears)" in said[0]


def test_a_stop_signal_in_an_allocation_asks_through_the_broker_not_the_launcher() -> None:
    # scancel's SIGTERM passed on to srun would SIGKILL the whole step (Slurm 22.05, measured): warm shutdown
    # through the broker, then the cold one as the signal srun passes on
    stubborn = subprocess.Popen(["sleep", "300"])
    asked: list[bool] = []
    supervisor = Supervisor([stubborn], poll=0.05, grace=0.3, log=lambda m: None, shutdown=lambda: asked.append(True))
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert supervisor.run() == 128 + signal.SIGTERM
    finally:
        timer.cancel()
    assert asked == [True] and stubborn.returncode == -COLD_STOP_SIGNAL


@pytest.mark.redis
@pytest.mark.celery
def test_launch_serves_the_queued_study_not_a_newer_dry_run(redis_server: RedisFixture, tmp_path: Path,
                                                            local_jobs: list[str]) -> None:
    """A `run --dry` after `run` made a newer workspace that no worker serves: launch took it, its allocation
    failed, and the queued study got no workers."""
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec = samples_study(tmp_path / "study.yaml", "dry", "{type: local}", "dries: {args: -l INFO -c 1, steps: [all]}",
                         3, f'cmd: "echo $(V) >> {tmp_path}/runs.log"', f"echo funnel >> {tmp_path}/runs.log")
    assert merlin("run", spec.name, cwd=tmp_path, env=env).returncode == 0
    time.sleep(1.1)  # a workspace of another second
    assert merlin("run", spec.name, "--dry", cwd=tmp_path, env=env).returncode == 0
    # a walltime inside the margin would start workers only to stop them (it was submitted, and ran nothing)
    short = merlin("launch", spec.name, "--walltime", "60", cwd=tmp_path, env=env)
    assert short.returncode == 2 and "leaves no time after the 60 s margin" in short.stderr, short.stderr
    assert not list((tmp_path / "out").glob("dry_*/merlin_info/batch/jobs.jsonl"))
    job = _launched(merlin("launch", spec.name, cwd=tmp_path, env=env), local_jobs)
    queued = min((tmp_path / "out").glob("dry_*"))  # the older one
    assert _wait_done(job, queued / "merlin_info" / "batch") is JobState.COMPLETED
    assert Counter((tmp_path / "runs.log").read_text().split()) == Counter({"0": 1, "1": 1, "2": 1, "funnel": 1})
    over = merlin("launch", spec.name, cwd=tmp_path, env=env)  # the queued study is finished now
    assert over.returncode == 2 and "is finished" in over.stderr and "no allocation is needed" in over.stderr, over


def test_a_failing_launch_pre_is_a_failed_job_whose_output_status_names(redis_server: RedisFixture, tmp_path: Path,
                                                                         local_jobs: list[str]) -> None:
    """A launch_pre that ended the script left no .ec (the job showed `unknown` once the scheduler forgot it) and
    `status` did not say where to look."""
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec = samples_study(tmp_path / "study.yaml", "pre", "{type: local, launch_pre: 'echo no module; exit 3'}",
                         "pres: {args: -l INFO -c 1, steps: [all]}", 2, f'cmd: "echo $(V) >> {tmp_path}/runs.log"',
                         f"echo funnel >> {tmp_path}/runs.log")
    assert merlin("run", spec.name, cwd=tmp_path, env=env).returncode == 0
    job = _launched(merlin("launch", spec.name, cwd=tmp_path, env=env), local_jobs)
    batch = next((tmp_path / "out").glob("pre_*")) / "merlin_info" / "batch"
    assert _wait_done(job, batch) is JobState.FAILED
    assert (batch / f"{job}.ec").read_text() == "3\n"
    status = merlin("status", spec.name, cwd=tmp_path, env=env).stdout
    assert f"job {job} failed: its output is {batch}/pre.pres.{job}.out" in status, status
    assert (batch / f"pre.pres.{job}.out").read_text() == "no module\n"
    assert not (tmp_path / "runs.log").exists()


def test_two_allocations_of_one_worker_group_share_the_study(redis_server: RedisFixture, tmp_path: Path,
                                                             local_jobs: list[str]) -> None:
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec = samples_study(tmp_path / "study.yaml", "pair", "{type: local}", "pairs: {args: -l INFO -c 1, steps: [all]}",
                         16, f'cmd: "echo $(V) >> {tmp_path}/runs.log; sleep 1"', f"echo funnel >> {tmp_path}/runs.log")
    assert merlin("run", spec.name, "--batch-size", "1", cwd=tmp_path, env=env).returncode == 0
    runs = tmp_path / "runs.log"
    jobs = [_launched(merlin("launch", spec.name, cwd=tmp_path, env=env), local_jobs)]
    wait_until(lambda: runs.exists(), 60, "the first allocation's worker to take a sample")
    jobs.append(_launched(merlin("launch", spec.name, cwd=tmp_path, env=env), local_jobs))
    rows: dict[str, list[str]] = {}

    def both_have_workers() -> bool:  # no "queue already has a consumer" refusal for the second
        status = merlin("status", spec.name, cwd=tmp_path, env=env).stdout
        table = status.split("allocations:\n", 1)[1].splitlines()[1:]
        rows.update({line.split()[0]: line.split()[1:] for line in table})
        return all(rows[job][:2] == ["local", "running"] and rows[job][3].startswith(f"pairs.{job}.") for job in jobs)

    wait_until(both_have_workers, 60, "a worker in each allocation")
    workdir = next((tmp_path / "out").glob("pair_*")) / "merlin_info" / "batch"
    assert [_wait_done(job, workdir) for job in jobs] == [JobState.COMPLETED] * 2
    assert Counter(runs.read_text().split()) == Counter({**{str(i): 1 for i in range(16)}, "funnel": 1})


def _proc(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", script])


def test_a_worker_that_crashes_is_started_again_while_work_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's "Unrecoverable error" when Redis restarted under a worker left the study with none (an outside
    probe): a worker group that ends by itself with an error is started again, and the log says so."""
    from merlin_mdm.backends.celery import in_allocation

    monkeypatch.setattr(in_allocation, "RESPAWN_PAUSE", 0.0)
    messages: list[str] = []
    again: list[int] = []

    def respawn(i: int) -> subprocess.Popen[bytes]:
        again.append(i)
        return _proc("sleep 0.3; exit 0")  # this time it runs until stopped from outside (exit 0)

    supervisor = Supervisor([_proc("exit 3"), _proc("sleep 0.6")], is_over=lambda: False, poll=0.05,
                            log=messages.append, respawn=respawn, names=["crashy", "steady"])
    assert supervisor.run() == 0
    assert again == [0] and supervisor.respawns == {0: 1}
    assert any("worker crashy ended by itself (exit code 3; see its log)" in m and "(1 of 5)" in m
               for m in messages), messages


def test_a_worker_that_keeps_crashing_is_left_ended_after_five_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from merlin_mdm.backends.celery import in_allocation

    monkeypatch.setattr(in_allocation, "RESPAWN_PAUSE", 0.0)
    supervisor = Supervisor([_proc("exit 3")], is_over=lambda: False, poll=0.05, log=lambda m: None,
                            respawn=lambda i: _proc("exit 3"), names=["crashy"])
    assert supervisor.run() == 3 and supervisor.respawns == {0: 5}


@pytest.mark.parametrize("case", ["stopped from outside", "study over", "no respawn given"])
def test_a_worker_is_not_started_again_when_it_was_stopped_or_nothing_is_left(case: str) -> None:
    started: list[int] = []
    first = _proc("exit 0" if case == "stopped from outside" else "exit 3")
    supervisor = Supervisor([first], is_over=lambda: case == "study over", poll=0.05, log=lambda m: None,
                            respawn=None if case == "no respawn given" else lambda i: started.append(i) or _proc(""),
                            names=["w"])
    supervisor.run()
    assert started == [] and supervisor.respawns == {}


@pytest.mark.redis
@pytest.mark.celery
def test_launch_notes_other_studies_waiting_on_its_queues(redis_server: RedisFixture, tmp_path: Path,
                                                          local_jobs: list[str]) -> None:
    """Two studies on the default queue `merlin`: one study's allocation ran the other's tasks without a word (a
    probe on Slurm; Merlin's way, kept, but said)."""
    from merlin_mdm.backends.celery.broker import queue_keys

    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    redis_server.client().delete(*queue_keys(["merlin"]))  # what earlier tests left on the default queue
    specs = []
    for name in ("mine", "theirs"):
        (tmp_path / name).mkdir()
        specs.append(samples_study(tmp_path / name / "study.yaml", name, "{type: local}",
                                   f"{name}s: {{args: -c 1, steps: [all]}}", 2, 'cmd: "echo $(V)"', "echo funnel"))
        assert merlin("run", "study.yaml", cwd=tmp_path / name, env=env).returncode == 0
    theirs = next((tmp_path / "theirs" / "out").glob("theirs_*"))
    job = _launched(launched := merlin("launch", "study.yaml", cwd=tmp_path / "mine", env=env), local_jobs)
    assert f"note: queue(s) merlin also hold waiting tasks of other studies ({theirs}; 4 message(s) wait there in " \
           "all): these allocations' workers run them too" in launched.stderr, launched.stderr
    mine = next((tmp_path / "mine" / "out").glob("mine_*"))
    assert _wait_done(job, mine / "merlin_info" / "batch") is JobState.COMPLETED
    alone = merlin("launch", "study.yaml", cwd=tmp_path / "theirs", env=env)  # nothing of another study waits now
    assert "note: queue(s)" not in alone.stderr, alone.stderr
    if alone.returncode == 0:
        local_jobs.append(alone.stdout.split("\t")[0])


@pytest.mark.redis
def test_the_shared_queue_note_counts_messages_of_no_merlin_mdm_study(redis_server: RedisFixture, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Merlin's own tasks on the default queue (no workspace in their body) did not count: no note (review)."""
    from merlin_mdm.backends.celery.broker import queue_keys
    from merlin_mdm.cli.batch import _note_shared_queues

    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    client = redis_server.client()
    client.delete(*queue_keys(["merlin"]))  # what earlier tests left on the default queue
    spec = samples_study(tmp_path / "study.yaml", "lone", "{type: local}", "lones: {args: -c 1, steps: [all]}", 1,
                         'cmd: "echo $(V)"', "echo funnel")
    assert merlin("run", spec.name, cwd=tmp_path, env=env).returncode == 0
    ws = next((tmp_path / "out").glob("lone_*"))
    monkeypatch.setenv("MERLIN_MDM_CONFIG", str(redis_server.app_yaml))
    try:
        _note_shared_queues(ws)
        assert capsys.readouterr().err == ""  # its own messages only
        client.rpush("merlin", '{"body": "not one of ours", "properties": {}}')
        _note_shared_queues(ws)
        assert "also hold waiting tasks of other studies (messages of no merlin-mdm study; 2 message(s) wait " \
               "there in all)" in capsys.readouterr().err
    finally:
        client.delete(*queue_keys(["merlin"]))
