"""The distributed commands against a real redis-server: clear one-line errors, workers, queues, server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO, RedisFixture, WorkerPool, wait_until

from .helpers import merlin

pytestmark = [pytest.mark.redis]


def _one_line_error(result, needle: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert needle in lines[0], lines[0]


def test_info_reports_a_reachable_broker_without_the_password(redis_server: RedisFixture, tmp_path: Path) -> None:
    result = merlin("info", cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)})
    assert result.returncode == 0, result.stderr
    assert f"127.0.0.1:{redis_server.port}" in result.stdout and "broker reachable: redis" in result.stdout
    secret = redis_server.server.password_file.read_text().strip()
    assert secret not in result.stdout + result.stderr


def test_wrong_password_is_one_line_exit_1(redis_server: RedisFixture, tmp_path: Path) -> None:
    (tmp_path / "pass").write_text("not-the-password\n")
    app = tmp_path / "app.yaml"
    app.write_text(f"broker: {{port: {redis_server.port}, password_file: {tmp_path / 'pass'}}}\n")
    started = time.monotonic()
    result = merlin("info", cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(app)})
    assert time.monotonic() - started < 5
    _one_line_error(result, "refused the password")
    assert "not-the-password" not in result.stderr


def test_broker_down_is_one_line_exit_1_within_5_s(tmp_path: Path) -> None:
    from merlin_mdm.server import free_port

    app = tmp_path / "app.yaml"
    app.write_text(f"broker: {{port: {free_port()}}}\n")
    started = time.monotonic()
    result = merlin("info", cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(app)})
    assert time.monotonic() - started < 5
    _one_line_error(result, "connection refused")


def test_malformed_app_yaml_is_one_line_exit_1(tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    app.write_text("broker:\n  host: [unclosed\n")
    _one_line_error(merlin("info", cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(app)}), "malformed app.yaml")
    app.write_text("broker:\n  password: hunter2\n")
    result = merlin("info", cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(app)})
    _one_line_error(result, "use password_file")
    assert "hunter2" not in result.stderr


def test_run_workers_echo_lists_workers_and_a_default_one(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("""
description: {name: w, description: workers}
merlin:
  resources:
    workers:
      sim: {args: "-c 3", steps: [a]}
study:
  - name: a
    run: {cmd: "echo a", task_queue: sims}
  - name: b
    run: {cmd: "echo b", depends: [a], task_queue: post}
""")
    result = merlin("run-workers", str(spec), "--echo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert re.search(r"-n sim\.\d+@%h -Q sims", lines[0]) and lines[0].endswith("-c 3")  # sim.PID: unique
    assert "-Q post" in lines[1] and "default_worker" in lines[1]
    assert "claims step(s) b" in result.stderr


@pytest.mark.celery
def test_queue_info_query_and_stop_workers(redis_server: RedisFixture, worker_pool: WorkerPool,
                                           tmp_path: Path) -> None:
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    worker_pool.start("cli_a", queues="cli_q1", concurrency=1, log_dir=tmp_path)
    worker_pool.start("cli_b", queues="cli_q2", concurrency=1, log_dir=tmp_path)
    result = merlin("queue-info", "--queues", "cli_q1", "--queues", "nobody", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert '"consumers": 1' in result.stdout and '"consumers": 0' in result.stdout
    result = merlin("queue-info", "--queues", "cli_q1", "--dump", str(tmp_path / "q.csv"), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "q.csv").read_text() == "queue,messages,consumers\ncli_q1,0,1\n"  # Merlin's --dump
    result = merlin("query-workers", cwd=tmp_path, env=env)
    assert "cli_a@" in result.stdout and "cli_b@" in result.stdout
    result = merlin("stop-workers", "--queues", "cli_q1", cwd=tmp_path, env=env)
    assert result.returncode == 0 and "cli_a@" in result.stdout and "cli_b@" not in result.stdout
    wait_until(lambda: worker_pool.procs[0].poll() is not None, 20, "worker cli_a to exit")
    assert worker_pool.procs[1].poll() is None


def test_server_start_status_stop_writes_private_config(tmp_path: Path) -> None:
    from merlin_mdm.server import find_redis_server, free_port

    if find_redis_server() is None:
        pytest.skip("no redis-server binary")
    env = {"HOME": str(tmp_path), "MERLIN_MDM_CONFIG": ""}
    port = str(free_port())
    result = merlin("server", "start", "--port", port, cwd=tmp_path, env=env)
    try:
        assert result.returncode == 0, result.stderr
        pass_file = tmp_path / ".merlin-mdm" / "server" / "redis.pass"
        assert stat.S_IMODE(pass_file.stat().st_mode) == 0o600
        secret = pass_file.read_text().strip()
        app = (tmp_path / ".merlin-mdm" / "app.yaml").read_text()
        assert f"port: {port}" in app and secret not in app and secret not in result.stdout
        out = os.popen("ps -eo args").read()
        assert secret not in out  # the password is never on a command line
        result = merlin("info", cwd=tmp_path, env=env)
        assert result.returncode == 0 and "broker reachable" in result.stdout, result.stderr
        assert merlin("server", "status", cwd=tmp_path, env=env).returncode == 0
    finally:
        stopped = merlin("server", "stop", cwd=tmp_path, env=env)
    assert "stopped" in stopped.stdout
    assert merlin("server", "status", cwd=tmp_path, env=env).returncode == 1


@pytest.mark.celery
def test_run_run_workers_monitor_status_stop_end_to_end(redis_server: RedisFixture, tmp_path: Path) -> None:
    import subprocess
    import sys

    from .helpers import _ENTRY

    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    assert merlin("example", "hello_samples", cwd=tmp_path).returncode == 0
    spec = "hello_samples/hello_samples.yaml"
    (tmp_path / spec).write_text((tmp_path / spec).read_text().replace("greeters:", "e2e_greeters:"))
    queued = merlin("run", spec, cwd=tmp_path, env=env)
    assert queued.returncode == 0, queued.stderr
    assert "queued" in queued.stderr
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    workers = subprocess.Popen([sys.executable, "-c", _ENTRY, "run-workers", spec], cwd=tmp_path, env=full_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        done = merlin("monitor", spec, "--sleep", "0.5", cwd=tmp_path, env=env, timeout=120)
        assert done.returncode == 0 and "finished" in done.stdout, done.stderr
        status = merlin("status", spec, "--json", cwd=tmp_path, env=env)
        assert status.returncode == 0, status.stderr
        assert '"state": "finished"' in status.stdout
        steps = json.loads(status.stdout)["steps"]  # every task ran to its end: each step has a run time
        assert steps and all(s["run_tasks"] == s["total"] and s["avg_run"] > 0 for s in steps), steps
        stop = merlin("stop-workers", "--spec", spec, cwd=tmp_path, env=env)
        assert "e2e_greeters." in stop.stdout, stop.stdout
        assert workers.wait(timeout=30) == 0
    finally:
        if workers.poll() is None:
            os.killpg(workers.pid, 9)


def test_tls_mismatch_is_one_line_exit_1_within_5_s(redis_server: RedisFixture, tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    app.write_text(f"broker: {{scheme: rediss, port: {redis_server.port}, cert_reqs: none, "
                   f"password_file: {redis_server.server.password_file}}}\n")
    started = time.monotonic()
    result = merlin("info", cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(app)})
    assert time.monotonic() - started < 5
    _one_line_error(result, "TLS mismatch")


@pytest.mark.celery
def test_run_workers_refuses_a_second_consumer_without_overlap(redis_server: RedisFixture, worker_pool: WorkerPool,
                                                               tmp_path: Path) -> None:
    worker_pool.start("first_consumer", queues="busy_q", concurrency=1, log_dir=tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text("""
description: {name: busy, description: overlap}
study:
  - name: a
    run: {cmd: "echo a", task_queue: busy_q}
""")
    result = merlin("run-workers", str(spec), cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)})
    assert result.returncode == 2
    assert "busy_q already have a consumer (first_consumer@" in result.stderr


def _queue_one_step(tmp_path: Path, env: dict[str, str], name: str, cmd: str, n: int) -> tuple[Path, Path]:
    """Queue a study of one step `sim` over N = 1..n on queue NAME_q (worker group NAME_workers, one process)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
description: {{name: {name}, description: one step over N}}
env: {{variables: {{OUTPUT_PATH: ./out}}}}
global.parameters:
  N: {{values: {list(range(1, n + 1))}, label: N.%%}}
study:
  - name: sim
    run: {{cmd: "{cmd}", task_queue: {name}_q}}
merlin:
  resources:
    workers: {{{name}_workers: {{args: -c 1, steps: [sim]}}}}
""")
    queued = merlin("run", str(spec), cwd=tmp_path, env=env)
    assert queued.returncode == 0, queued.stderr
    ws = next(Path(line.split(": ", 1)[1]) for line in queued.stderr.splitlines() if line.startswith("workspace: "))
    return spec, ws


def _run_workers_behind(tmp_path: Path, spec: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    """`merlin-mdm run-workers SPEC` in the background, in a session of its own."""
    import subprocess
    import sys

    from .helpers import _ENTRY

    return subprocess.Popen([sys.executable, "-c", _ENTRY, "run-workers", str(spec)], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _until_done_behind(tmp_path: Path, spec: Path, ws: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    """`merlin-mdm run-workers SPEC --until-done WS` in the background, in a session of its own, stderr piped."""
    import subprocess
    import sys

    from .helpers import _ENTRY

    return subprocess.Popen([sys.executable, "-c", _ENTRY, "run-workers", str(spec), "--until-done", str(ws)],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _workers_signalled_mid_study(tmp_path: Path, spec: Path, ws: Path, env: dict[str, str], name: str,
                                 before: Any = None) -> tuple[int, str]:
    """Run `run-workers --until-done` until a first task finished, then SIGTERM every process of worker group
    NAME's workers, as slurmstepd signals a job step; (its exit code, its stderr). ``before(pid)`` runs first."""
    import signal
    import subprocess

    runner = _until_done_behind(tmp_path, spec, ws, env)
    try:
        wait_until(lambda: len(list(ws.glob("sim/*/MERLIN_FINISHED"))) >= 1, 60, "a first task to finish")
        if before is not None:
            before(runner.pid)
        worker = subprocess.run(["pgrep", "-f", rf"{name}_workers\.[0-9]+@"], capture_output=True, text=True,
                                check=False).stdout.split()
        assert worker, "no worker process"
        for pid in worker:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
        _, err = runner.communicate(timeout=90)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, 9)
    return runner.returncode, err


@pytest.mark.celery
def test_run_workers_until_done_ends_with_the_study_and_says_how_it_went(redis_server: RedisFixture,
                                                                         tmp_path: Path) -> None:
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, ws = _queue_one_step(tmp_path, env, "outcome", "test $(N) -ne 2", 3)
    ended = merlin("run-workers", str(spec), "--until-done", str(ws), "--grace", "5", cwd=tmp_path, env=env,
                   timeout=120)
    # the allocation did its job: exit 0, so an `afterok` job still starts; the last line says one sample failed
    assert ended.returncode == 0, ended.stderr
    assert ended.stderr.strip().splitlines()[-1] == (
        f"run-workers: study outcome failed: 2 of 3 task(s) finished, 1 failed: `merlin-mdm status {ws}` lists them")
    # an allocation that starts once the study is over starts no worker (a probe's booted one only to stop it)
    late = merlin("run-workers", str(spec), "--until-done", str(ws), cwd=tmp_path, env=env, timeout=60)
    assert late.returncode == 0 and late.stderr.strip().splitlines()[-1].startswith(
        "run-workers: nothing is left for the workers to run, none started: study outcome failed"), late.stderr
    assert "celery@" not in late.stderr and "ready." not in late.stderr, late.stderr


@pytest.mark.celery
def test_status_says_when_queued_work_has_no_worker(redis_server: RedisFixture, tmp_path: Path) -> None:
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, ws = _queue_one_step(tmp_path, env, "unserved", "sleep 1; echo $(N)", 6)
    workers = _run_workers_behind(tmp_path, spec, env)
    try:
        wait_until(lambda: len(list(ws.glob("sim/*/MERLIN_FINISHED"))) >= 1, 60, "a first task to finish")
        assert "unserved_workers." in merlin("stop-workers", "--spec", str(spec), cwd=tmp_path, env=env).stdout
        assert workers.wait(timeout=60) == 0
    finally:
        if workers.poll() is None:
            os.killpg(workers.pid, 9)
    snap = json.loads(merlin("status", str(ws), "--json", cwd=tmp_path, env=env).stdout)
    left = sum(s["counts"]["queued"] for s in snap["steps"])
    assert snap["state"] == "running" and 0 < left < 6, snap
    assert snap["message"] == (f"nothing runs: {left} task(s) wait in queue(s) unserved_q, which no worker takes; "
                               "start workers with `merlin-mdm run-workers SPEC`"), snap


@pytest.mark.celery
def test_run_workers_checks_until_done_before_starting_any_worker(redis_server: RedisFixture,
                                                                   tmp_path: Path) -> None:
    import subprocess

    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, _ = _queue_one_step(tmp_path, env, "baddir", "true", 1)
    (tmp_path / "notaws").mkdir()
    result = merlin("run-workers", str(spec), "--until-done", str(tmp_path / "notaws"), cwd=tmp_path, env=env)
    assert result.returncode == 2 and "not inside a merlin-mdm workspace" in result.stderr, result.stderr
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", r"baddir_workers\.[0-9]+@"], capture_output=True, text=True, check=False)
    assert left.stdout == "", left.stdout  # no worker was started to be left behind


@pytest.mark.celery
def test_the_workers_end_when_run_workers_is_killed(redis_server: RedisFixture, tmp_path: Path) -> None:
    import signal
    import subprocess

    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, _ = _queue_one_step(tmp_path, env, "orphan", "true", 1)
    runner = _run_workers_behind(tmp_path, spec, env)

    def workers() -> str:
        return subprocess.run(["pgrep", "-f", r"orphan_workers\.[0-9]+@"], capture_output=True, text=True,
                              check=False).stdout

    try:
        wait_until(lambda: workers() != "", 30, "the worker to start")
        runner.send_signal(signal.SIGKILL)  # no handler runs: only the kernel can tell the workers
        runner.wait(timeout=10)
        wait_until(lambda: workers() == "", 60, "the orphaned worker to end")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGKILL)


@pytest.mark.celery
def test_run_workers_until_done_stopped_early_says_the_study_is_not_over(redis_server: RedisFixture,
                                                                          tmp_path: Path) -> None:
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, ws = _queue_one_step(tmp_path, env, "early", "sleep 1; echo $(N)", 6)
    workers = _until_done_behind(tmp_path, spec, ws, env)
    try:
        wait_until(lambda: len(list(ws.glob("sim/*/MERLIN_FINISHED"))) >= 1, 60, "a first task to finish")
        assert "early_workers." in merlin("stop-workers", "--spec", str(spec), cwd=tmp_path, env=env).stdout
        _, err = workers.communicate(timeout=60)
    finally:
        if workers.poll() is None:
            os.killpg(workers.pid, 9)
    lines = err.strip().splitlines()
    assert workers.returncode == 0, err
    assert lines[-2].startswith("run-workers: the workers ended before the study was over: they stopped by "
                                "themselves: a unit that did not fit"), err
    assert lines[-1].startswith("run-workers: study early running: ") and "of 6 task(s) finished" in lines[-1], err


@pytest.mark.celery
def test_two_run_workers_started_at_once_start_one_worker_group(redis_server: RedisFixture, tmp_path: Path) -> None:
    """Without overlap, the second is refused even when neither's workers could answer yet (a probe started two
    0.5 s apart and both ran, as two workers of one name)."""
    import subprocess
    import sys

    from .helpers import _ENTRY

    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, ws = _queue_one_step(tmp_path, env, "twice", "sleep 1; echo $(N)", 4)
    both = [subprocess.Popen([sys.executable, "-c", _ENTRY, "run-workers", str(spec), "--until-done", str(ws)],
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), **env}, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            for _ in range(2)]
    try:
        ends = [p.communicate(timeout=120) for p in both]
    finally:
        for p in both:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    codes = sorted(p.returncode for p in both)
    refused = next(err for p, (_, err) in zip(both, ends, strict=True) if p.returncode == 2)
    assert codes == [0, 2], ends
    assert "merlin.resources.overlap is false" in refused and "twice_q" in refused, refused
    assert "started moments ago" in refused, refused
    assert len(list(ws.glob("sim/*/MERLIN_FINISHED"))) == 4


@pytest.mark.celery
def test_run_workers_takes_the_queues_of_a_group_killed_at_once(redis_server: RedisFixture, tmp_path: Path) -> None:
    """A SIGKILLed run-workers gives up nothing: its claim on the queues named its process, so the next
    run-workers on the same machine takes them over at once (it was refused for up to 60 s)."""
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, ws = _queue_one_step(tmp_path, env, "killed", "sleep 2; echo $(N)", 3)
    first = _run_workers_behind(tmp_path, spec, env)

    def workers() -> str:
        return subprocess.run(["pgrep", "-f", r"killed_workers\.[0-9]+@"], capture_output=True, text=True,
                              check=False).stdout

    try:
        wait_until(lambda: workers() != "", 30, "the first worker group to start")
        os.killpg(first.pid, signal.SIGKILL)  # the command and its workers, as `kill -9` of the whole group
        first.wait(timeout=10)
        wait_until(lambda: workers() == "", 30, "the killed workers to be gone")
        again = merlin("run-workers", str(spec), "--until-done", str(ws), cwd=tmp_path, env=env, timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
    assert again.returncode == 0, again.stderr
    assert "being taken" not in again.stderr
    assert len(list(ws.glob("sim/*/MERLIN_FINISHED"))) == 3


@pytest.mark.celery
def test_workers_for_a_study_run_with_other_vars_are_refused_naming_its_queues(redis_server: RedisFixture,
                                                                              tmp_path: Path) -> None:
    """A study run with `--vars Q=alt` sends its tasks to queue alt: workers started without the same --vars
    would wait on the spec's default queue until their walltime (a probe's allocation did)."""
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec = tmp_path / "spec.yaml"
    spec.write_text("""
description: {name: vq, description: a queue from a variable}
env: {variables: {OUTPUT_PATH: ./out, Q: defq}}
study:
  - name: sim
    run: {cmd: "echo hi", task_queue: $(Q)}
""")
    queued = merlin("run", str(spec), "--vars", "Q=alt", cwd=tmp_path, env=env)
    assert queued.returncode == 0, queued.stderr
    ws = next((tmp_path / "out").glob("vq_*"))
    for command in (("run-workers", str(spec), "--until-done", str(ws)), ("launch", str(spec), "--dry")):
        refused = merlin(*command, cwd=tmp_path, env=env)
        assert refused.returncode == 2, (command, refused)
        assert "sends its tasks to queue(s) alt, which no step" in refused.stderr, refused.stderr
        assert "Give the same --vars here" in refused.stderr, refused.stderr
    drained = merlin("run-workers", str(spec), "--vars", "Q=alt", "--until-done", str(ws), cwd=tmp_path, env=env)
    assert drained.returncode == 0 and "study vq finished" in drained.stderr, drained.stderr


@pytest.mark.celery
def test_a_worker_beats_while_it_lives_and_takes_its_entry_away_when_it_ends(redis_server: RedisFixture,
                                                                             worker_pool: WorkerPool,
                                                                             tmp_path: Path) -> None:
    from merlin_mdm.backends.celery.liveness import live_workers
    from merlin_mdm.config import load_config

    config = load_config(None, redis_server.app_yaml)
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    worker = worker_pool.start("beater", queues="beat_q", log_dir=tmp_path)
    wait_until(lambda: any(w.startswith("beater@") for w in live_workers(config)), 30, "the worker's first beat")
    assert next(qs for w, qs in live_workers(config).items() if w.startswith("beater@")) == ["beat_q"]
    assert merlin("stop-workers", "--queues", "beat_q", cwd=tmp_path, env=env).returncode == 0
    worker.wait(timeout=60)
    # gone at once, not after six missed beats: the next worker group may take the queue now
    assert not any(w.startswith("beater@") for w in live_workers(config))


@pytest.mark.celery
def test_a_hangup_of_run_workers_process_group_stops_its_workers_warmly(redis_server: RedisFixture,
                                                                        tmp_path: Path) -> None:
    """A closed terminal signals the whole foreground group: the Celery worker took SIGHUP as "re-execute
    yourself" (an ImportError traceback) and its pool processes died with their tasks half run (exit code 70).
    The workers now sit in a session of their own: only run-workers hears the group's signal, and stops them
    warmly, the unit in hand run to its end."""
    import sys

    from .helpers import _ENTRY

    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, ws = _queue_one_step(tmp_path, env, "grouphup", "echo start $(N) >> log; sleep 4; echo end >> log",
                               3)
    with (tmp_path / "err.txt").open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", _ENTRY, "run-workers", str(spec)], cwd=tmp_path,
                                env={**os.environ, "PYTHONPATH": str(REPO), **env}, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
        try:
            wait_until(lambda: any(ws.glob("sim/*/log")), 60, "a unit to start")
            os.killpg(proc.pid, signal.SIGHUP)
            assert proc.wait(timeout=90) == 128 + signal.SIGHUP
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    text = (tmp_path / "err.txt").read_text()
    assert "Traceback" not in text and "exitcode 70" not in text, text
    logs = [p.read_text() for p in ws.glob("sim/*/log")]
    assert logs and all(log.startswith("start ") and log.endswith("\nend\n") for log in logs), logs  # to its end


@pytest.mark.celery
def test_run_workers_until_done_says_when_the_studys_record_is_lost(redis_server: RedisFixture,
                                                                    tmp_path: Path) -> None:
    """Redis restarted empty: the end of the study cannot be seen, and `run-workers --until-done` served on in
    silence until it was killed (an outside probe waited 40 s for a word)."""
    import sys

    from .helpers import _ENTRY

    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, ws = _queue_one_step(tmp_path, env, "lost", "echo $(N)", 2)
    redis_server.client().flushall()
    log = tmp_path / "run-workers.err"
    with log.open("w") as err:
        workers = subprocess.Popen([sys.executable, "-c", _ENTRY, "run-workers", str(spec), "--until-done", str(ws)],
                                   cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), **env},
                                   stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        wait_until(lambda: "the study's status cannot be read" in log.read_text(), 60, "a word on the lost record")
        text = log.read_text()
        assert f"Redis holds no status for {ws}" in text and f"`merlin-mdm restart {ws}` rebuilds it" in text, text
        assert workers.poll() is None  # it serves on: the record may come back with a restart
        workers.send_signal(signal.SIGTERM)
        workers.wait(timeout=60)
    finally:
        if workers.poll() is None:
            os.killpg(workers.pid, 9)


@pytest.mark.celery
def test_forget_deletes_an_ended_studys_record_and_restart_records_it_again(redis_server: RedisFixture,
                                                                            tmp_path: Path) -> None:
    """Nothing deleted a study's Redis keys: a shared status server kept every study queued on it."""
    from merlin_mdm.status.redis_store import study_prefix
    from merlin_mdm.study.layout import Workspace

    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, ws = _queue_one_step(tmp_path, env, "forgotten", "echo $(N)", 2)
    early = merlin("forget", str(ws), "-f", cwd=tmp_path, env=env)
    assert early.returncode == 1 and "is queued with work left: forget a study once it is over" in early.stderr
    ended = merlin("run-workers", str(spec), "--until-done", str(ws), "--grace", "5", cwd=tmp_path, env=env,
                   timeout=120)
    assert ended.returncode == 0, ended.stderr
    client = redis_server.client()
    prefix = study_prefix(Workspace(ws).load_plan().workspace)
    assert list(client.scan_iter(match=prefix + "*"))
    unasked = merlin("forget", str(ws), cwd=tmp_path, env=env, stdin="")  # a batch script: nobody answers
    assert unasked.returncode == 2 and "forget asks before deleting and stdin gave no answer" in unasked.stderr
    kept = merlin("forget", str(ws), cwd=tmp_path, env=env, stdin="n\n")
    assert kept.returncode == 0 and "nothing forgotten" in kept.stdout and list(client.scan_iter(match=prefix + "*"))
    forgot = merlin("forget", str(ws), "-f", cwd=tmp_path, env=env)
    assert forgot.returncode == 0 and forgot.stdout.startswith("forgot forgotten: "), forgot.stdout
    assert list(client.scan_iter(match=prefix + "*")) == []
    assert "holds no status" in merlin("status", str(ws), cwd=tmp_path, env=env).stderr
    assert "nothing to forget" in merlin("forget", str(ws), "-f", cwd=tmp_path, env=env).stdout
    again = merlin("restart", str(ws), cwd=tmp_path, env=env)  # recorded finished at once: it was queued again
    assert again.returncode == 0 and "nothing to run: every task of the study finished" in again.stderr, again.stderr
    snap = json.loads(merlin("status", str(ws), "--json", cwd=tmp_path, env=env).stdout)
    assert snap["state"] == "finished" and snap["steps"][0]["counts"]["finished"] == 2, snap  # from the done-markers
    assert merlin("forget", str(ws), "-f", cwd=tmp_path, env=env).returncode == 0
    (ws / "sim" / "N.2" / "MERLIN_FINISHED").unlink()  # the disk is the truth: that task runs again, alone
    partly = merlin("restart", str(ws), cwd=tmp_path, env=env)
    assert partly.returncode == 0 and "queued again: 1 of 2 task(s) left to run" in partly.stderr, partly.stderr
    done = merlin("run-workers", str(spec), "--until-done", str(ws), "--grace", "5", cwd=tmp_path, env=env,
                  timeout=120)
    assert done.returncode == 0 and "2 of 2 task(s) finished" in done.stderr, done.stderr
    assert (ws / "sim" / "N.2" / "MERLIN_FINISHED").is_file()
    local = merlin("forget", str(tmp_path), cwd=tmp_path, env=env)
    assert local.returncode == 2 and "not inside a merlin-mdm workspace" in local.stderr


@pytest.mark.celery
def test_workers_stopped_by_a_signal_from_outside_are_said_and_the_exit_code_says_so(redis_server: RedisFixture,
                                                                                     tmp_path: Path) -> None:
    """`scancel --signal=TERM JOB` signals a job's steps (the workers), not run-workers: it said "they stopped by
    themselves: a unit that did not fit ...", exit 0, and the job was listed completed (a probe on Slurm)."""
    import signal

    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, ws = _queue_one_step(tmp_path, env, "outside", "sleep 1; echo $(N)", 6)
    rc, err = _workers_signalled_mid_study(tmp_path, spec, ws, env, "outside")
    assert rc == 128 + signal.SIGTERM, err
    assert "the workers ended before the study was over: SIGTERM from outside this command stopped them" in err, err


@pytest.mark.celery
def test_forget_refuses_a_purged_study_whose_held_units_still_run(redis_server: RedisFixture, tmp_path: Path) -> None:
    """A purged study counts as over, but the units its workers held run to their end and record: forgetting it
    then left a partial record nothing could forget again (a review)."""
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, ws = _queue_one_step(tmp_path, env, "purgedrun", "sleep 20; echo $(N)", 4)
    workers = _run_workers_behind(tmp_path, spec, env)
    try:
        wait_until(lambda: json.loads(merlin("status", str(ws), "--json", cwd=tmp_path, env=env).stdout)
                   ["steps"][0]["counts"]["running"] > 0, 60, "a unit to run")
        assert merlin("purge", str(spec), "-f", cwd=tmp_path, env=env).returncode == 0
        refused = merlin("forget", str(ws), "-f", cwd=tmp_path, env=env)
        assert refused.returncode == 1 and "task(s) still running" in refused.stderr, refused.stderr
    finally:
        merlin("stop-workers", "--spec", str(spec), cwd=tmp_path, env=env)
        try:
            workers.wait(timeout=60)
        finally:
            if workers.poll() is None:
                os.killpg(workers.pid, 9)


@pytest.mark.celery
def test_the_jobs_own_early_warning_reaching_the_workers_is_not_taken_for_an_outside_stop(
        redis_server: RedisFixture, tmp_path: Path) -> None:
    """Slurm's `--signal=TERM@300` (no `B:`) signals a job's steps: the planned wind-down, not a `scancel` (a review
    of the outside-signal report); and a stale mark of an earlier worker of the same name counts for nothing."""
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml), "MERLIN_MDM_SIGNAL": "TERM"}
    spec, ws = _queue_one_step(tmp_path, env, "planned", "sleep 1; echo $(N)", 6)
    client = redis_server.client()  # a mark days old, of a worker of the same name on another host
    rc, err = _workers_signalled_mid_study(tmp_path, spec, ws, env, "planned", lambda pid: client.set(
        f"mdm:stopping:planned_workers.{pid}@elsewhere", "1000.0 SIGINT"))
    assert rc == 0, err
    assert "from outside" not in err, err
    assert "the job's early warning (SIGTERM) reached them: its walltime nears" in err, err


@pytest.mark.celery
def test_monitor_says_the_counts_and_when_no_worker_serves_the_study(redis_server: RedisFixture,
                                                                     tmp_path: Path) -> None:
    """`monitor` printed nothing until the study was over, also while no worker served it (a probe on Slurm)."""
    import sys

    from .helpers import _ENTRY

    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec, ws = _queue_one_step(tmp_path, env, "watched", "echo $(N)", 3)
    log = tmp_path / "monitor.err"
    with log.open("w") as err:
        watcher = subprocess.Popen([sys.executable, "-c", _ENTRY, "monitor", str(ws), "--sleep", "0.2"], cwd=tmp_path,
                                   env={**os.environ, "PYTHONPATH": str(REPO), **env}, stdout=subprocess.PIPE,
                                   stderr=err, text=True, start_new_session=True)
    workers = None
    try:
        wait_until(lambda: "no worker serves this study's queues" in log.read_text(), 60, "monitor to say so")
        assert watcher.poll() is None  # nothing is over: it waits on
        workers = _until_done_behind(tmp_path, spec, ws, env)
        out, _ = watcher.communicate(timeout=120)
        assert watcher.returncode == 0 and out.startswith("watched: finished"), out
        said = log.read_text().splitlines()
        assert said[0] == "monitor: 0 of 3 task(s) finished, 0 running", said
        assert said[1].startswith("monitor: no worker serves this study's queues, so nothing moves"), said
        assert workers.wait(timeout=120) == 0
    finally:
        for proc in (watcher, workers):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
