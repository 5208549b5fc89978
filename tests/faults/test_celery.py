"""Failure paths of the distributed backend, against a real redis-server and real Celery workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from merlin_mdm.backends.celery.release import release_key
from tests.integration.celery.helpers import merlin
from tests.integration.conftest import RedisFixture, WorkerPool, redis_server, worker_pool  # noqa: F401

from .conftest import handles_sigterm, markers, spec_file, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.celery]

STUDY = """
    description: {{name: cel, description: distributed faults}}
    env: {{variables: {{OUTPUT_PATH: ./out}}}}
    global.parameters:
      I: {{values: [0, 1, 2], label: I.%%}}
    study:
      - name: work
        run: {{cmd: "echo $(I) >> runs.log; sleep {nap}", task_queue: {queue}, walltime: "00:01:00"}}
      - name: funnel
        run: {{cmd: "echo funnel >> runs.log", depends: [work_*], task_queue: {queue}, walltime: "10"}}
"""


@pytest.fixture
def study(tmp_path: Path, redis_server: RedisFixture) -> Iterator[tuple[Path, str, dict[str, str]]]:  # noqa: F811
    queue = f"q{uuid.uuid4().hex[:10]}"
    yield spec_file(tmp_path, STUDY.format(queue=queue, nap="0.1")), queue, {
        "MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}


def _queue(tmp_path: Path, spec: Path, env: dict[str, str]) -> Path:
    result = merlin("run", str(spec), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    return next((tmp_path / "out").glob("cel_*"))


def _status(ws: Path, env: dict[str, str]) -> dict[str, object]:
    result = merlin("status", str(ws), "--json", cwd=ws, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _counts_match_disk(ws: Path, env: dict[str, str]) -> dict[str, dict[str, int]]:
    """Finished counts in Redis equal the done-markers on disk; the counts per step."""
    snap = _status(ws, env)
    steps = {s["step"]: s["counts"] for s in snap["steps"]}  # type: ignore[attr-defined]
    finished = {step: c["finished"] for step, c in steps.items() if c["finished"]}
    assert finished == markers(ws), snap
    return steps


def _task_statuses(ws: Path, env: dict[str, str]) -> list[str]:
    """Each task's status, as `detailed-status` lists it."""
    result = merlin("detailed-status", str(ws), cwd=ws, env=env)
    assert result.returncode == 0, result.stderr
    return [line.split(": ", 1)[1].split()[0] for line in result.stdout.splitlines()]


def _finish(ws: Path, env: dict[str, str]) -> None:
    done = merlin("monitor", str(ws), "--sleep", "0.3", cwd=ws, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_unit_that_raises_is_recorded_as_its_failure(tmp_path: Path, study, worker_pool: WorkerPool) -> None:  # noqa: F811
    spec, queue, env = study
    ws = _queue(tmp_path, spec, env)
    plan = ws / "merlin_info" / "plan.json"  # a corrupt plan: a shell name with a NUL byte makes Popen raise
    plan.write_text(plan.read_text().replace('"/bin/bash"', '"/bin/ba\\u0000sh"'))
    worker_pool.start("raiser", queues=queue, log_dir=tmp_path)
    _finish(ws, env)
    snap = _status(ws, env)
    assert snap["state"] == "failed"
    work = next(s for s in snap["steps"] if s["step"] == "work")
    assert work["counts"]["failed"] == 3 and not work["counts"]["running"]
    assert "internal error: ValueError" in work["failures"][0]["reason"]
    _counts_match_disk(ws, env)


def test_purge_shows_in_status_and_restart_requeues_the_purged_work(tmp_path: Path, study,
                                                                    worker_pool: WorkerPool) -> None:  # noqa: F811
    spec, queue, env = study
    ws = _queue(tmp_path, spec, env)
    refused = merlin("restart", str(ws), cwd=tmp_path, env=env)
    assert refused.returncode == 1 and "the broker still holds 3 message(s) of this study" in refused.stderr, \
        refused.stderr
    unanswered = merlin("purge", str(spec), cwd=tmp_path, env=env, stdin="")  # a batch script: nobody answers
    assert unanswered.returncode == 2 and "pass -f/--force" in unanswered.stderr, unanswered
    declined = merlin("purge", str(spec), cwd=tmp_path, env=env, stdin="n\n")
    assert declined.returncode == 0 and declined.stdout.endswith("nothing purged\n"), declined
    assert _status(ws, env)["state"] != "purged"
    purged = merlin("purge", str(spec), "-f", cwd=tmp_path, env=env)
    assert purged.returncode == 0 and "purged 3 message(s)" in purged.stdout, purged.stderr
    snap = _status(ws, env)
    assert snap["state"] == "purged" and "merlin-mdm restart" in str(snap["message"])
    empty = merlin("purge", str(spec), cwd=tmp_path, env=env, stdin="")  # nothing waits: nothing to ask
    assert empty.returncode == 0 and empty.stdout == f"nothing to purge: queue(s) {queue} hold no waiting message\n", \
        empty
    again = merlin("restart", str(ws), cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    worker_pool.start("after_purge", queues=queue, log_dir=tmp_path)
    _finish(ws, env)
    snap = _status(ws, env)
    assert snap["state"] == "finished"
    assert (ws / "funnel" / "runs.log").read_text() == "funnel\n"
    assert _counts_match_disk(ws, env)["work"]["finished"] == 3
    assert all(p.read_text().count("\n") == 1 for p in (ws / "work").glob("*/runs.log"))


def test_run_workers_on_sigterm_gives_running_units_back_and_exits_143(tmp_path: Path, redis_server: RedisFixture,  # noqa: F811
                                                                        start) -> None:
    queue = f"q{uuid.uuid4().hex[:10]}"
    spec = spec_file(tmp_path, STUDY.format(queue=queue, nap="60"))
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    ws = _queue(tmp_path, spec, env)
    workers = start("run-workers", str(spec), "--grace", "0.5", "--worker-args", "-c 2", env=env)
    wait_for(lambda: len(list((ws / "work").glob("*/runs.log"))) == 2, 60, "two tasks to start")
    assert next(s for s in _status(ws, env)["steps"] if s["step"] == "work")["counts"]["running"] == 2
    workers.signal(signal.SIGTERM)
    rc, err = workers.finish(timeout=60)
    assert rc == 128 + signal.SIGTERM, err
    assert "visibility_timeout: 375 s (derived from the study's walltimes)" in err
    work = _counts_match_disk(ws, env)["work"]
    assert work["running"] == 0 and work["queued"] == 3, work


CHAINED = """
    description: {{name: cel, description: each instance's work then its own next step}}
    env: {{variables: {{OUTPUT_PATH: ./out}}}}
    global.parameters:
      I: {{values: [0, 1, 2], label: I.%%}}
    study:
      - name: work
        run: {{cmd: "echo $(I) >> runs.log; sleep 3", task_queue: {queue}, walltime: "00:01:00"}}
      - name: then
        run: {{cmd: "echo $(I) >> runs.log", depends: [work], task_queue: {queue}, walltime: "10"}}
"""


def test_a_purge_while_a_unit_runs_stays_purged_and_one_restart_finishes_the_study(
        tmp_path: Path, redis_server: RedisFixture, worker_pool: WorkerPool) -> None:  # noqa: F811
    """The unit in hand (and the one its worker had reserved) run on; what they release is not sent, and the study
    stays purged, so `restart` is not refused for messages sent after the purge."""
    from merlin_mdm.backends.celery.broker import held_messages
    from merlin_mdm.config import load_config

    queue = f"q{uuid.uuid4().hex[:10]}"
    spec = spec_file(tmp_path, CHAINED.format(queue=queue))
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    ws = _queue(tmp_path, spec, env)
    worker_pool.start("purged", queues=queue, concurrency=1, log_dir=tmp_path)
    wait_for(lambda: any((ws / "work").glob("*/runs.log")), 60, "a unit to start")
    purged = merlin("purge", str(spec), "-f", cwd=tmp_path, env=env)
    assert purged.returncode == 0 and "purged" in purged.stdout, purged
    config = load_config(None, redis_server.app_yaml)
    workspace = json.loads((ws / "merlin_info" / "plan.json").read_text())["workspace"]
    wait_for(lambda: held_messages(config, [queue], workspace).total == 0, 60, "the units in hand to end")
    snap = _status(ws, env)
    assert snap["state"] == "purged" and not snap["steps"][0]["counts"]["running"], snap
    again = merlin("restart", str(ws), cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    left = 6 - sum(c["finished"] for c in _counts_match_disk(ws, env).values())
    assert f"queued again: {left} of 6 task(s) left to run" in again.stdout + again.stderr, again
    _finish(ws, env)
    counts = _counts_match_disk(ws, env)
    assert _status(ws, env)["state"] == "finished" and counts["work"]["finished"] == counts["then"]["finished"] == 3
    assert all(p.read_text().count("\n") == 1 for p in ws.glob("*/*/runs.log"))


@pytest.mark.parametrize(("signum", "extra"), [(signal.SIGTERM, ()), (signal.SIGUSR1, ("--signal", "USR1"))])
def test_monitor_ends_on_a_stop_signal_with_128_plus_it(tmp_path: Path, study, start, signum: int,
                                                        extra: tuple[str, ...]) -> None:
    spec, _, env = study
    ws = _queue(tmp_path, spec, env)
    watcher = start("monitor", str(ws), "--sleep", "0.2", *extra, env=env)
    wait_for(lambda: handles_sigterm(watcher.proc.pid, signum), 30, "monitor to handle the signal")
    watcher.signal(signum)
    rc, err = watcher.finish(timeout=30)
    assert rc == 128 + signum and "Traceback" not in err, err


def test_a_port_that_speaks_another_protocol_is_a_one_line_error(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    app = tmp_path / "app.yaml"
    app.write_text(f"broker: {{host: 127.0.0.1, port: {port}}}\n")
    try:
        for args in (("info",), ("run", str(spec_file(tmp_path, STUDY.format(queue="q", nap="0"))))):
            result = merlin(*args, cwd=tmp_path, env={"MERLIN_MDM_CONFIG": str(app)})
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1 and len(lines) == 1, result.stderr
            assert lines[0].startswith("Error: ") and "does not answer like a Redis server" in lines[0], lines
    finally:
        server.close()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


SAMPLED = """
    description: {{name: cel, description: one unit of four samples}}
    env: {{variables: {{OUTPUT_PATH: ./out}}}}
    merlin:
      samples:
        generate: {{cmd: "seq 0 3 > $(MERLIN_INFO)/samples.csv"}}
        file: $(MERLIN_INFO)/samples.csv
        column_labels: [X]
    study:
      - name: work
        run:
          cmd: "echo $(X) >> runs.log; if [ $(X) = 3 ] && [ -f {hold} ]; then sleep 60; fi"
          task_queue: {queue}
          walltime: "00:01:00"
"""


def test_a_unit_given_back_keeps_its_done_markers_counted(tmp_path: Path, redis_server: RedisFixture,  # noqa: F811
                                                          start, worker_pool: WorkerPool) -> None:  # noqa: F811
    queue = f"q{uuid.uuid4().hex[:10]}"
    hold = tmp_path / "hold"
    hold.touch()
    spec = spec_file(tmp_path, SAMPLED.format(queue=queue, hold=hold))
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    ws = _queue(tmp_path, spec, env)
    workers = start("run-workers", str(spec), "--grace", "0.5", env=env)
    wait_for(lambda: markers(ws).get("work") == 3 and len(list((ws / "work").rglob("runs.log"))) == 4, 60,
             "three of the unit's four tasks to finish and the fourth to start")
    workers.signal(signal.SIGTERM)
    rc, err = workers.finish(timeout=60)
    assert rc == 128 + signal.SIGTERM, err
    work = _counts_match_disk(ws, env)["work"]
    assert (work["finished"], work["queued"], work["running"]) == (3, 1, 0), work
    hold.unlink()
    worker_pool.start("again", queues=queue, log_dir=tmp_path)
    _finish(ws, env)
    work = _counts_match_disk(ws, env)["work"]
    assert (work["finished"], work["queued"], work["running"]) == (4, 0, 0), work
    runs = sorted((p.parent.name, p.read_text()) for p in (ws / "work").rglob("runs.log"))
    assert [text for _, text in runs] == ["0\n", "1\n", "2\n", "3\n3\n"], runs


PACED = """
    description: {{name: cel, description: one unit of six samples of two seconds}}
    env: {{variables: {{OUTPUT_PATH: ./out}}}}
    merlin:
      samples:
        generate: {{cmd: "seq 0 5 > $(MERLIN_INFO)/samples.csv"}}
        file: $(MERLIN_INFO)/samples.csv
        column_labels: [X]
    study:
      - name: work
        run: {{cmd: "echo $(X) >> runs.log; sleep 2", task_queue: {queue}, walltime: "00:01:00"}}
"""


@pytest.mark.parametrize("how", ["stop-workers", "SIGTERM"])
def test_a_warm_stop_ends_the_unit_after_its_current_task_and_gives_the_rest_back(
        tmp_path: Path, redis_server: RedisFixture, worker_pool: WorkerPool, how: str) -> None:  # noqa: F811
    """Celery's warm shutdown waits for the unit, and a unit of 100 samples would run all of them (a probe saw 9
    tasks start after `stop-workers`): the unit stops before its next task and goes back to the queue."""
    queue = f"q{uuid.uuid4().hex[:10]}"
    spec = spec_file(tmp_path, PACED.format(queue=queue))
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    queued = merlin("run", str(spec), "--batch-size", "6", "--workers", "1", cwd=tmp_path, env=env)  # one unit
    assert queued.returncode == 0, queued.stderr
    ws = next((tmp_path / "out").glob("cel_*"))
    worker = worker_pool.start("paced", queues=queue, concurrency=1, log_dir=tmp_path)
    wait_for(lambda: len(list((ws / "work").rglob("runs.log"))) == 2, 60, "the unit's second task to start")
    if how == "SIGTERM":
        os.kill(worker.pid, signal.SIGTERM)  # the worker's main process: Celery's warm shutdown
    else:
        assert merlin("stop-workers", "--queues", queue, cwd=tmp_path, env=env).returncode == 0
    worker.wait(timeout=30)
    started = len(list((ws / "work").rglob("runs.log")))
    assert started <= 3, started  # the task in hand ended; at most one more had begun as the stop came
    work = _counts_match_disk(ws, env)["work"]
    assert (work["queued"], work["running"]) == (6 - work["finished"], 0), work  # given back, not recorded
    worker_pool.start("rest", queues=queue, log_dir=tmp_path)
    _finish(ws, env)
    assert _counts_match_disk(ws, env)["work"]["finished"] == 6
    runs = sorted(p.read_text() for p in (ws / "work").rglob("runs.log"))
    assert runs == [f"{i}\n" for i in range(6)], runs  # each sample ran once


def test_a_plan_that_cannot_be_loaded_fails_the_study_saying_why(tmp_path: Path, study, redis_server: RedisFixture,  # noqa: F811
                                                                  worker_pool: WorkerPool) -> None:  # noqa: F811
    from merlin_mdm.backends.celery.broker import held_messages
    from merlin_mdm.config import load_config
    from merlin_mdm.status.redis_store import study_prefix

    spec, queue, env = study
    ws = _queue(tmp_path, spec, env)
    plan = ws / "merlin_info" / "plan.json"
    good = plan.read_text()
    plan.write_text(good[: len(good) // 2])  # truncated: not JSON, so no worker can load the study
    client = redis_server.client()
    workspace = json.loads(good)["workspace"]
    meta = study_prefix(workspace) + "meta"
    config = load_config(None, redis_server.app_yaml)
    worker_pool.start("unloadable", queues=queue, log_dir=tmp_path)
    wait_for(lambda: client.hget(meta, "state") == "failed", 60, "the study to be recorded failed")
    assert "cannot load the study's plan" in client.hget(meta, "message")
    wait_for(lambda: held_messages(config, [queue], workspace).total == 0, 60, "every message to be taken")
    plan.write_text(good)
    snap = _status(ws, env)
    assert snap["state"] == "failed" and "merlin-mdm restart" in str(snap["message"]), snap
    assert _counts_match_disk(ws, env)["work"]["queued"] == 3
    again = merlin("restart", str(ws), cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    _finish(ws, env)
    assert _status(ws, env)["state"] == "finished"
    assert _counts_match_disk(ws, env)["work"]["finished"] == 3


def test_restart_local_is_refused_while_the_broker_or_a_worker_has_the_study(
        tmp_path: Path, study, worker_pool: WorkerPool) -> None:  # noqa: F811
    spec, queue, env = study
    ws = _queue(tmp_path, spec, env)
    held = merlin("restart", str(ws), "--local", cwd=tmp_path, env=env)  # its units wait at the broker
    assert held.returncode == 1 and "the broker still holds" in held.stderr, held.stderr
    worker_pool.start("handover", queues=queue, log_dir=tmp_path)
    _finish(ws, env)
    (ws / "work" / "I.1" / "MERLIN_FINISHED").unlink()
    served = merlin("restart", str(ws), "--local", cwd=tmp_path, env=env)  # a live worker serves its queue
    assert served.returncode == 1 and "serve this study's queues" in served.stderr, served.stderr
    assert (ws / "merlin_info" / "backend").read_text().strip() == "celery"  # not switched


def test_a_worker_finishing_its_units_after_stop_workers_is_alive_for_status_and_release(
        tmp_path: Path, redis_server: RedisFixture, worker_pool: WorkerPool,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In its warm shutdown a worker answers no broadcast, yet runs the unit in hand: `status` must not call it
    gone, and `restart --release` must not give its unit back (a probe saw that unit run twice)."""
    monkeypatch.setenv("MERLIN_MDM_HEARTBEAT", "0.5")
    queue = f"q{uuid.uuid4().hex[:10]}"
    spec = spec_file(tmp_path, STUDY.format(queue=queue, nap="12"))
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    ws = _queue(tmp_path, spec, env)
    worker = worker_pool.start("stopping", queues=queue, concurrency=1, log_dir=tmp_path)
    wait_for(lambda: any((ws / "work").glob("*/runs.log")), 60, "a unit to start")
    stopped = merlin("stop-workers", "--queues", queue, cwd=tmp_path, env=env)
    assert stopped.returncode == 0, stopped.stderr
    time.sleep(5)  # more than six beats of 0.5 s: a worker that stopped beating would count as gone by now
    assert worker.poll() is None  # still finishing its unit
    snap = _status(ws, env)
    assert snap["steps"][0]["counts"]["running"] == 1 and "--release" not in snap["message"], snap
    refused = merlin("restart", str(ws), "--release", cwd=tmp_path, env=env)
    assert refused.returncode == 1 and ("serve this study's queues" in refused.stderr or "run now" in refused.stderr), \
        refused.stderr
    worker.wait(timeout=60)
    runs = [p.read_text() for p in (ws / "work").glob("*/runs.log")]
    assert runs == ["0\n"] or len(runs) == 1, runs  # the unit in hand ran once, to its end


def test_restart_release_gives_back_what_a_killed_worker_held(tmp_path: Path, redis_server: RedisFixture,  # noqa: F811
                                                               worker_pool: WorkerPool,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """On the machine that ran it, a killed worker's beats are silent at once (its processes have ended), not
    after six beats (30 s by default, the interval these workers beat at)."""
    monkeypatch.delenv("MERLIN_MDM_HEARTBEAT", raising=False)
    queue = f"q{uuid.uuid4().hex[:10]}"
    spec = spec_file(tmp_path, STUDY.format(queue=queue, nap="20"))
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    ws = _queue(tmp_path, spec, env)
    victim = worker_pool.start("victim", queues=queue, concurrency=1, log_dir=tmp_path)
    wait_for(lambda: any((ws / "work").glob("*/runs.log")), 60, "a unit to start")
    live = _status(ws, env)
    assert live["steps"][0]["counts"]["running"] == 1 and "no live worker" not in live["message"], live
    assert _task_statuses(ws, env).count("running") == 1  # detailed-status agrees with status
    os.killpg(victim.pid, signal.SIGKILL)  # the whole worker, as a node that dies: its message stays held
    victim.wait(timeout=10)
    killed = time.monotonic()
    wait_for(lambda: "stopped beating" in str(_status(ws, env)["message"]), 60, "the killed unit to fall silent")
    assert time.monotonic() - killed < 20, "silent only once six beats aged, though its process had ended"
    orphaned = _status(ws, env)  # still recorded running: status says whose it was and what to do
    assert orphaned["state"] == "running" and orphaned["steps"][0]["counts"]["running"] == 1, orphaned
    assert "1 task(s) recorded running (1 unit(s)) have stopped beating" in orphaned["message"], orphaned
    assert f"restart {ws} --release" in orphaned["message"], orphaned["message"]
    refused = merlin("restart", str(ws), cwd=tmp_path, env=env)
    assert refused.returncode == 1 and "taken by workers" in refused.stderr and "--release" in refused.stderr, \
        refused.stderr
    admin = redis_server.client()  # another release holds the study's key: this one may not read the same messages
    admin.set(release_key(str(ws)), f"otherhost:4242:{time.time()}", ex=60)
    racing = merlin("restart", str(ws), "--release", cwd=tmp_path, env=env)
    assert racing.returncode == 1 and "another `restart --release` of this study runs now (process 4242 on " \
        "otherhost)" in racing.stderr, racing
    admin.delete(release_key(str(ws)))
    released = merlin("restart", str(ws), "--release", cwd=tmp_path, env=env)
    assert released.returncode == 0 and released.stdout.startswith("gave back 1 message(s)"), released
    assert not admin.exists(release_key(str(ws))), "the release let its key go"
    assert time.monotonic() - killed < 25, "given back only once six beats aged"
    assert _status(ws, env)["steps"][0]["counts"]["running"] == 0  # recorded queued again
    worker_pool.start("after", queues=queue, log_dir=tmp_path)
    _finish(ws, env)
    assert _status(ws, env)["state"] == "finished" and _counts_match_disk(ws, env)["work"]["finished"] == 3
    assert (ws / "funnel" / "runs.log").read_text() == "funnel\n"


def test_restart_after_the_server_lost_the_study_waits_for_the_units_that_run_now(
        tmp_path: Path, redis_server: RedisFixture, worker_pool: WorkerPool,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis came back empty while a unit ran: `status` says `restart` rebuilds the study, and restart queued the
    running unit again, which a live worker ran a second time beside the first (an outside probe saw it). The
    workers beat slower than the restart's own setting: it waits by theirs."""
    monkeypatch.setenv("MERLIN_MDM_HEARTBEAT", "2")  # the workers' interval; the restart's own is 0.2 s
    queue = f"q{uuid.uuid4().hex[:10]}"
    spec = spec_file(tmp_path, STUDY.format(queue=queue, nap="12"))
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    ws = _queue(tmp_path, spec, env)
    worker_pool.start("lost", queues=queue, concurrency=1, log_dir=tmp_path)
    wait_for(lambda: any((ws / "work").glob("*/runs.log")), 60, "a unit to start")
    redis_server.client().flushall()  # the server came back empty: the study's record and its messages are gone
    refused = merlin("restart", str(ws), cwd=tmp_path, env={**env, "MERLIN_MDM_HEARTBEAT": "0.2"})
    assert refused.returncode == 1, refused
    assert "1 unit(s) of this study run now in live workers" in refused.stderr and "twice" in refused.stderr, \
        refused.stderr
    wait_for(lambda: len(list(ws.glob("work/*/MERLIN_FINISHED"))) == 1, 60, "the running unit to end")
    again = merlin("restart", str(ws), cwd=tmp_path, env=env)  # its beats are fresh, but its tasks are done
    assert again.returncode == 0, again.stderr
    _finish(ws, env)
    assert _status(ws, env)["state"] == "finished"
    assert sorted(p.read_text() for p in ws.glob("work/*/runs.log")) == ["0\n", "1\n", "2\n"]  # each ran once


def test_status_names_what_live_workers_lost_and_the_safe_way_to_get_it_back(
        tmp_path: Path, redis_server: RedisFixture, worker_pool: WorkerPool) -> None:  # noqa: F811
    """A persistent Redis restarted under a worker: the messages it had taken stay in kombu's unacked set, while
    the worker, on a new connection, has none of them, and they come back after the visibility timeout, a day.
    `status` said nothing (an outside probe saw the study stall). While a worker serves the queues `--release`
    stays refused (a message it holds may be one it runs, or holds for a retry's countdown)."""
    queue = f"q{uuid.uuid4().hex[:10]}"
    spec = spec_file(tmp_path, STUDY.format(queue=queue, nap="0.1"))
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    ws = _queue(tmp_path, spec, env)
    broker = redis_server.client()
    raw = broker.rpop(queue)  # taken as kombu takes a message, two minutes ago, by a connection that broke since
    envelope = json.loads(raw)
    broker.hset("unacked", "lost-tag", json.dumps([envelope, "", queue]))
    broker.zadd("unacked_index", {"lost-tag": time.time() - 120})
    broker.hset("unacked", "fresh-tag", json.dumps([envelope, "", queue]))  # as if taken just now: not named
    broker.zadd("unacked_index", {"fresh-tag": time.time() + 3600})
    worker_pool.start("survivor", queues=queue, concurrency=1, log_dir=tmp_path)
    wait_for(lambda: len(list(ws.glob("work/*/MERLIN_FINISHED"))) == 2, 60, "the other two units to run")
    wait_for(lambda: not _status(ws, env)["steps"][0]["counts"]["running"], 30, "the worker to idle")
    said = str(_status(ws, env)["message"])
    assert "nothing runs, yet 1 message(s) of this study are out with workers that took them long ago" in said, said
    assert f"`merlin-mdm stop-workers --spec SPEC`, `merlin-mdm restart {ws} --release`" in said, said
    refused = merlin("restart", str(ws), "--release", cwd=tmp_path, env=env)
    assert refused.returncode == 1 and "serve this study's queues" in refused.stderr, refused.stderr
    broker.hdel("unacked", "fresh-tag")
    broker.zrem("unacked_index", "fresh-tag")
    assert merlin("stop-workers", "--queues", queue, cwd=tmp_path, env=env).returncode == 0
    wait_for(lambda: not merlin("restart", str(ws), "--release", cwd=tmp_path, env=env).returncode, 60,
             "the release once the worker stopped")
    worker_pool.start("after", queues=queue, concurrency=1, log_dir=tmp_path)
    _finish(ws, env)
    assert _status(ws, env)["state"] == "finished"
    assert sorted(p.read_text() for p in ws.glob("work/*/runs.log")) == ["0\n", "1\n", "2\n"]
    assert (ws / "funnel" / "runs.log").read_text() == "funnel\n"
    assert not broker.hexists("unacked", "lost-tag")


@pytest.mark.parametrize("how", ["moved", "plan deleted"])
def test_run_workers_until_done_ends_when_the_workspace_moves_or_loses_its_plan(
        tmp_path: Path, redis_server: RedisFixture, start, how: str) -> None:  # noqa: F811
    """An outside probe: after `mv WS`, `rm -rf WS` or `rm WS/merlin_info/plan.json` the workers went on recording
    the study's units (not run, or finished), but `run-workers --until-done` read its status through plan.json,
    could not, and served until SIGTERM: a batch allocation would have spent its walltime."""
    queue = f"q{uuid.uuid4().hex[:10]}"
    spec = spec_file(tmp_path, STUDY.format(queue=queue, nap="2"))
    env = {"MERLIN_MDM_CONFIG": str(redis_server.app_yaml)}
    ws = _queue(tmp_path, spec, env)
    workers = start("run-workers", str(spec), "--until-done", str(ws), "--worker-args", "-c 2", env=env)
    wait_for(lambda: len(list((ws / "work").glob("*/runs.log"))) >= 1, 60, "a task to start")
    if how == "moved":
        ws.rename(ws.with_name(ws.name + "_moved"))
    else:
        (ws / "merlin_info" / "plan.json").unlink()
    rc, err = workers.finish(timeout=90)
    assert rc == 0, err
    assert "ended before the study was over" not in err, err
    last = err.strip().splitlines()[-1]
    if how == "moved":
        assert last == (f"run-workers: the workspace {ws} was moved or deleted while the workers served it (they "
                        f"recorded what was left as not run): move it back and `merlin-mdm restart {ws}`"), err
    else:
        assert last.startswith(f"run-workers: {ws}/merlin_info/plan.json was deleted while the workers served"), err
