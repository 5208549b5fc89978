"""Real failures: a worker killed with SIGKILL mid-task, a Redis restart mid-study."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from merlin_mdm.backends import RunOptions, get_backend
from merlin_mdm.spec import load_spec
from merlin_mdm.status.model import StudySnapshot
from merlin_mdm.study.workspace import create_workspace
from tests.integration.conftest import RedisFixture, WorkerPool, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.celery]


def _launch(tmp_path: Path, app_yaml: Path, n: int, sleep: float) -> tuple[object, object]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        description: {{name: rel, description: reliability}}
        env: {{variables: {{OUTPUT_PATH: ./out, N: {n}}}}}
        merlin:
          samples:
            generate: {{cmd: "python3 -c \\"import numpy as np; np.save('s.npy', np.arange($(N)).reshape(-1, 1))\\""}}
            file: $(MERLIN_INFO)/s.npy
            column_labels: [V]
        study:
          - name: work
            run: {{cmd: "echo $(V) >> {tmp_path}/starts.log; sleep {sleep}; echo $(V) >> {tmp_path}/runs.log"}}
          - name: funnel
            run: {{cmd: "echo funnel >> {tmp_path}/runs.log", depends: [work]}}
    """), encoding="utf-8")
    os.environ["MERLIN_MDM_CONFIG"] = str(app_yaml)
    ws, plan = create_workspace(load_spec(spec, {}), batch_size=1)
    backend = get_backend("celery")
    assert backend.launch(ws, plan, RunOptions()).state == "queued"
    return backend, ws


def _wait_finished(backend, ws, timeout: float) -> StudySnapshot:  # type: ignore[no-untyped-def]
    store = backend.status_store(ws)
    snaps: list[StudySnapshot] = []

    def done() -> bool:
        snaps.append(store.snapshot())
        return snaps[-1].state in ("finished", "failed", "stopped")

    try:
        wait_until(done, timeout, "the study to finish")
    finally:
        store.close()
    return snaps[-1]


def _exactly_once(tmp_path: Path, n: int, killed: bool = False) -> Counter[str]:
    runs = Counter((tmp_path / "runs.log").read_text().split())
    assert runs == Counter([str(i) for i in range(n)] + ["funnel"]), runs
    return Counter((tmp_path / "starts.log").read_text().split())


@pytest.fixture
def env_guard():  # type: ignore[no-untyped-def]
    saved = os.environ.get("MERLIN_MDM_CONFIG")
    yield
    if saved is None:
        os.environ.pop("MERLIN_MDM_CONFIG", None)
    else:
        os.environ["MERLIN_MDM_CONFIG"] = saved


def test_sigkill_of_a_worker_process_mid_task_reruns_it_elsewhere(
        redis_server: RedisFixture, worker_pool: WorkerPool, tmp_path: Path, env_guard: None) -> None:
    backend, ws = _launch(tmp_path, redis_server.app_yaml, n=6, sleep=1.5)
    victim = worker_pool.start("victim", concurrency=1, log_dir=tmp_path)
    starts = tmp_path / "starts.log"
    wait_until(lambda: starts.exists() and starts.read_text().strip() != "", 20, "a task to start")
    worker_pool.start("rescuer", concurrency=1, log_dir=tmp_path)
    (child,) = worker_pool.children(victim)
    os.kill(child, signal.SIGKILL)  # the pool process running the task dies; Celery requeues its message
    snap = _wait_finished(backend, ws, 60)
    assert snap.state == "finished", (snap, worker_pool.log_tail())
    assert {s.step: s.counts["finished"] for s in snap.steps} == {"work": 6, "funnel": 1}
    started = _exactly_once(tmp_path, 6, killed=True)
    assert max(started.values()) == 2  # the killed task started twice and finished once
    log = (tmp_path / "worker-victim.log").read_text()  # the lost process is one line, not billiard's traceback
    assert "a pool process was lost (Worker exited prematurely: signal 9 (SIGKILL)" in log, log
    assert "billiard" not in log and "Traceback" not in log, log


def test_sigkill_of_a_whole_worker_is_recovered_after_the_visibility_timeout(
        redis_server: RedisFixture, worker_pool: WorkerPool, tmp_path: Path, env_guard: None) -> None:
    app = tmp_path / "app.yaml"
    app.write_text(redis_server.app_yaml.read_text() + "visibility_timeout: 3\n")
    worker_pool.app_yaml = app
    backend, ws = _launch(tmp_path, app, n=4, sleep=1.0)
    victim = worker_pool.start("victim", concurrency=1, log_dir=tmp_path)
    starts = tmp_path / "starts.log"
    wait_until(lambda: starts.exists() and starts.read_text().strip() != "", 20, "a task to start")
    os.killpg(victim.pid, signal.SIGKILL)  # main process and pool: nobody acknowledges or requeues
    victim.wait()
    worker_pool.start("rescuer", concurrency=1, log_dir=tmp_path)
    snap = _wait_finished(backend, ws, 60)
    assert snap.state == "finished", (snap, worker_pool.log_tail())
    _exactly_once(tmp_path, 4, killed=True)


def test_a_unit_longer_than_the_visibility_timeout_runs_once(
        redis_server: RedisFixture, worker_pool: WorkerPool, tmp_path: Path, env_guard: None) -> None:
    """An outside probe on Slurm (visibility_timeout 20 s, units of 60 s): the broker gave the message again while
    its first copy ran, and a second worker ran the same samples at the same time. The copy now waits while the
    first one's process beats."""
    app = tmp_path / "app.yaml"
    app.write_text(redis_server.app_yaml.read_text() + "visibility_timeout: 2\n")
    worker_pool.app_yaml = app
    backend, ws = _launch(tmp_path, app, n=2, sleep=7.0)
    worker_pool.start("first", concurrency=1, log_dir=tmp_path)
    worker_pool.start("second", concurrency=1, log_dir=tmp_path)
    snap = _wait_finished(backend, ws, 90)
    assert snap.state == "finished", (snap, worker_pool.log_tail())
    starts = _exactly_once(tmp_path, 2)
    assert starts == Counter(["0", "1"]), (starts, worker_pool.log_tail())  # each sample started once


def test_redis_restart_mid_study_workers_reconnect_and_finish(
        persistent_redis: RedisFixture, tmp_path: Path, env_guard: None) -> None:
    pool = WorkerPool(persistent_redis.app_yaml)
    try:
        backend, ws = _launch(tmp_path, persistent_redis.app_yaml, n=12, sleep=0.3)
        pool.start("survivor", concurrency=2, log_dir=tmp_path)
        runs = tmp_path / "runs.log"
        wait_until(lambda: runs.exists() and len(runs.read_text().split()) >= 3, 30, "three tasks to finish")
        persistent_redis.stop()
        time.sleep(1.0)
        persistent_redis.start()
        snap = _wait_finished(backend, ws, 90)
        assert snap.state == "finished", (snap, pool.log_tail())
        _exactly_once(tmp_path, 12)
        assert all(p.poll() is None for p in pool.procs)
    finally:
        pool.stop_all()


def test_a_task_that_kills_its_worker_each_time_fails_alone(tmp_path: Path, redis_server: RedisFixture,
                                                            worker_pool: WorkerPool, env_guard) -> None:
    """One unit of 4 samples; sample 2 kills its worker's process at every delivery: after max_deliveries the
    unit is recorded with samples 0 and 1 finished (their done-markers), 2 failed and named, 3 not run."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        description: {{name: deaths, description: a task that kills its worker}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        merlin:
          samples:
            generate: {{cmd: "python3 -c \\"import numpy as np; np.save('s.npy', np.arange(4).reshape(-1, 1))\\""}}
            file: $(MERLIN_INFO)/s.npy
            column_labels: [V]
        study:
          - name: work
            run: {{cmd: "if [ $(V) = 2 ]; then kill -9 $PPID; sleep 5; fi; echo $(V) >> {tmp_path}/runs.log",
                   task_queue: deaths_q}}
    """), encoding="utf-8")
    os.environ["MERLIN_MDM_CONFIG"] = str(redis_server.app_yaml)
    ws, plan = create_workspace(load_spec(spec, {}), batch_size=4)
    backend = get_backend("celery")
    assert backend.launch(ws, plan, RunOptions()).state == "queued"
    worker_pool.start("deaths", queues="deaths_q", concurrency=1, log_dir=tmp_path)
    snap = _wait_finished(backend, ws, 180)
    (work,) = snap.steps
    markers = sorted(p.parent.name for p in (ws.root / "work").glob("**/MERLIN_FINISHED"))
    assert len(markers) == work.counts["finished"] == 2, (markers, work.counts)
    assert (work.counts["failed"], work.counts["not_run"]) == (1, 1), work.counts
    (_, failed), (_, skipped) = work.failures
    assert failed.sample == 2 and "its worker died 3 times while it ran" in failed.reason, work.failures
    assert skipped.sample == 3 and skipped.state == "not_run", work.failures


def test_status_of_a_frozen_or_stopped_status_server_is_an_error_within_seconds(
        persistent_redis: RedisFixture, tmp_path: Path, env_guard: None) -> None:
    """`status` waited as long as a SIGSTOPped Redis stayed frozen (killed by a 60 s timeout) and 46 s for a
    refused connection (an outside probe): a person asking is told within seconds; `monitor` still waits."""
    from .helpers import merlin

    spec = tmp_path / "spec.yaml"
    spec.write_text("description: {name: frozen, description: x}\nenv: {variables: {OUTPUT_PATH: ./out}}\n"
                    "study: [{name: a, run: {cmd: echo}}]\n", encoding="utf-8")
    env = {"MERLIN_MDM_CONFIG": str(persistent_redis.app_yaml)}
    queued = merlin("run", str(spec), cwd=tmp_path, env=env)
    assert queued.returncode == 0, queued.stderr
    ws = next((tmp_path / "out").glob("frozen_*"))
    pid = persistent_redis.server.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        for command in ("status", "detailed-status"):
            started = time.monotonic()
            frozen = merlin(command, str(ws), cwd=tmp_path, env=env, timeout=120)
            took = time.monotonic() - started
            # named as every other command names a server that does not answer: its URL, and why
            assert frozen.returncode == 1 and f"status store {persistent_redis.config.safe_url()} did not answer " \
                "within 10 s (a server that is stopped, frozen or overloaded?)" in frozen.stderr, frozen.stderr
            assert "Traceback" not in frozen.stderr and took < 40, (command, took)
    finally:
        os.kill(pid, signal.SIGCONT)
    persistent_redis.stop()
    started = time.monotonic()
    down = merlin("status", str(ws), cwd=tmp_path, env=env, timeout=120)
    assert down.returncode == 1 and "connection refused (is the server running?" in down.stderr, down.stderr
    assert time.monotonic() - started < 30


def test_a_broker_out_of_memory_at_run_says_so_and_restart_queues_the_rest(
        persistent_redis: RedisFixture, tmp_path: Path, env_guard: None) -> None:
    """With Redis at its maxmemory, `run` ended in an OutOfMemoryError traceback after 183 of 300 messages, and
    the study sat `running` with nothing queued (an outside probe): now a one-line error says what to do, and
    `restart` queues the rest once the server takes writes again; every task runs once."""
    from .helpers import merlin

    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        description: {{name: oom, description: x}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        global.parameters: {{X: {{values: {list(range(300))}, label: X.%%}}}}
        study:
          - name: work
            run: {{cmd: "echo $(X) >> {tmp_path}/runs.log"}}
    """), encoding="utf-8")
    env = {"MERLIN_MDM_CONFIG": str(persistent_redis.app_yaml)}
    admin = persistent_redis.client()
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", str(used + 160 * 1024))  # the study's records fit, its 300 messages do not
    refused = merlin("run", str(spec), cwd=tmp_path, env=env)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    assert "refused to record or queue the study" in refused.stderr, refused.stderr
    assert "out of memory" in refused.stderr, refused.stderr
    ws = next((tmp_path / "out").glob("oom_*"))
    assert f"merlin-mdm restart {ws}" in refused.stderr
    admin.config_set("maxmemory", "0")
    assert merlin("purge", str(spec), "-f", cwd=tmp_path, env=env).returncode == 0
    restarted = merlin("restart", str(ws), cwd=tmp_path, env=env)
    assert restarted.returncode == 0, restarted.stderr
    pool = WorkerPool(persistent_redis.app_yaml)
    try:
        pool.start("after", concurrency=2, log_dir=tmp_path)
        wait_until(lambda: merlin("status", str(ws), "--json", cwd=tmp_path, env=env).stdout.count(
            '"state": "finished"') > 0, 180, "the study to finish")
    finally:
        pool.stop_all()
    runs = (tmp_path / "runs.log").read_text().split()
    assert sorted(runs, key=int) == [str(i) for i in range(300)]


@pytest.mark.parametrize("command", [("queue-info", "SPEC"), ("purge", "SPEC", "-f"), ("stop-workers",),
                                     ("query-workers",)])
def test_commands_against_a_redis_out_of_memory_say_so_without_a_traceback(
        persistent_redis: RedisFixture, tmp_path: Path, env_guard: None, command: tuple[str, ...]) -> None:
    """queue-info, purge, stop-workers and query-workers printed redis-py's traceback (an outside probe)."""
    from .helpers import merlin

    spec = tmp_path / "spec.yaml"
    spec.write_text("description: {name: q, description: x}\nenv: {variables: {OUTPUT_PATH: ./out}}\n"
                    "study: [{name: a, run: {cmd: echo}}]\n", encoding="utf-8")
    env = {"MERLIN_MDM_CONFIG": str(persistent_redis.app_yaml)}
    admin = persistent_redis.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    try:
        result = merlin(*(str(spec) if a == "SPEC" else a for a in command), cwd=tmp_path, env=env, timeout=120)
    finally:
        admin.config_set("maxmemory", "0")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("Error: the Redis server refused or lost the command: command not allowed "
                                    "when used memory > 'maxmemory'"), result.stderr
    assert "(the server is out of memory: raise its maxmemory or free some)" in result.stderr


def test_status_names_units_released_but_never_sent_and_restart_queues_them(
        persistent_redis: RedisFixture, tmp_path: Path, env_guard: None) -> None:
    """A worker that crashed at Redis's maxmemory after recording its unit left the funnel released but never
    sent: the study sat `running`, nothing queued, nothing said (an outside probe). Here the lost send is made
    by deleting the study's messages while its units stand released."""
    from merlin_mdm.backends.celery.broker import queue_keys
    from merlin_mdm.backends.celery.dependencies import RedisDependencies
    from merlin_mdm.status.model import StudyState
    from merlin_mdm.status.redis_store import RedisStatusStore
    from merlin_mdm.study.workspace import Workspace

    from .helpers import merlin

    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        description: {{name: lost, description: x}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        study:
          - name: work
            run: {{cmd: "echo work >> {tmp_path}/runs.log"}}
    """), encoding="utf-8")
    env = {"MERLIN_MDM_CONFIG": str(persistent_redis.app_yaml)}
    assert merlin("run", str(spec), cwd=tmp_path, env=env).returncode == 0
    ws = next((tmp_path / "out").glob("lost_*"))
    plan = Workspace(ws).load_plan()
    client = persistent_redis.client()
    client.delete(*queue_keys(["merlin"]))  # the message is gone, not purged: nothing recorded it
    client.sadd(RedisDependencies(client, plan).k_ready, "0.0")  # as a release whose send failed
    RedisStatusStore(client, plan.workspace).set_state(StudyState.RUNNING)
    status = merlin("status", str(ws), cwd=tmp_path, env=env)
    assert "1 unit(s) were released when their parents ended, but no queue holds them" in status.stdout + \
        status.stderr, status.stdout
    assert f"`merlin-mdm restart {ws}` queues them" in status.stdout + status.stderr
    assert merlin("restart", str(ws), cwd=tmp_path, env=env).returncode == 0
    pool = WorkerPool(persistent_redis.app_yaml)
    try:
        pool.start("after", concurrency=1, log_dir=tmp_path)
        wait_until(lambda: (tmp_path / "runs.log").exists(), 60, "the unit to run")
    finally:
        pool.stop_all()
    assert (tmp_path / "runs.log").read_text() == "work\n"
