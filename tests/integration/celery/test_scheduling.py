"""Hierarchical expansion and dependency release at a scale where both kick in (more than 200 units)."""

from __future__ import annotations

import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from merlin_mdm.backends import RunOptions, get_backend
from merlin_mdm.backends.celery.scheduling import UNITS_PER_EXPAND, expand_range, plan_dispatch, unit_ranges
from merlin_mdm.spec import load_spec
from merlin_mdm.study.plan import UnitKey
from merlin_mdm.study.workspace import create_workspace
from tests.integration.conftest import MIXED_STEPS, RedisFixture, WorkerPool, check_mixed_order, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.celery]


def test_expand_range_splits_until_units_and_covers_every_unit_once() -> None:
    pending = [(3, 0, 10_000)]
    units: list[UnitKey] = []
    messages = 0
    while pending:
        messages += 1
        d = expand_range(*pending.pop())
        assert len(d.ranges) <= 10 and len(d.units) <= UNITS_PER_EXPAND
        pending.extend(d.ranges)
        units.extend(d.units)
    assert sorted(units) == [UnitKey(3, u) for u in range(10_000)]
    assert messages < 100


def test_plan_dispatch_keeps_small_groups_as_units() -> None:
    keys = [UnitKey(0, u) for u in range(5)] + [UnitKey(1, u) for u in range(500)]
    d = plan_dispatch(keys)
    assert d.units == tuple(keys[:5]) and d.ranges == ((1, 0, 500),)
    assert unit_ranges([UnitKey(0, 2), UnitKey(0, 0), UnitKey(0, 1), UnitKey(0, 4)]) == [(0, 0, 3), (0, 4, 5)]


@pytest.fixture
def workers(redis_server: RedisFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerPool]:
    monkeypatch.setenv("MERLIN_MDM_CONFIG", str(redis_server.app_yaml))
    pool = WorkerPool(redis_server.app_yaml)
    pool.start("sched", queues="sched", concurrency=2, log_dir=tmp_path)
    yield pool
    pool.stop_all()


def test_many_units_through_expand_messages_and_a_wide_release(workers: WorkerPool, tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.arange(450).reshape(-1, 1))
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        description: {{name: wide, description: wide}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        merlin:
          samples: {{file: s.npy, column_labels: [V]}}
        study:
          - name: first
            run: {{cmd: "echo first $(V) >> {tmp_path}/runs.log", task_queue: sched}}
          - name: gate
            run: {{cmd: "echo gate >> {tmp_path}/runs.log", depends: [first], task_queue: sched}}
          - name: after_gate
            run: {{cmd: "echo after $(V) >> {tmp_path}/runs.log", depends: [gate], task_queue: sched}}
    """))
    ws, plan = create_workspace(load_spec(spec, {}), batch_size=1)
    backend = get_backend("celery")
    started = time.perf_counter()
    assert backend.launch(ws, plan, RunOptions()).state == "queued"
    assert time.perf_counter() - started < 2
    store = backend.status_store(ws)
    try:
        wait_until(lambda: store.snapshot().state == "finished", 120, "the study to finish")
        counts = {s.step: s.counts["finished"] for s in store.snapshot().steps}
    finally:
        store.close()
    assert counts == {"first": 450, "gate": 1, "after_gate": 450}
    lines = (tmp_path / "runs.log").read_text().splitlines()
    assert len(lines) == len(set(lines)) == 901
    gate = lines.index("gate")
    assert all(line.startswith("first") for line in lines[:gate])
    assert all(line.startswith("after") for line in lines[gate + 1:])


def _registered_study(redis_server: RedisFixture, tmp_path: Path, samples: int, more_steps: str):  # type: ignore[no-untyped-def]
    """A study of ``samples`` samples in units of 2 (step `a`) and a funnel (plus ``more_steps``), registered in
    a Redis status store: (plan, store, dependencies)."""
    from merlin_mdm.backends.celery.dependencies import RedisDependencies
    from merlin_mdm.status.redis_store import RedisStatusStore

    np.save(tmp_path / "s.npy", np.arange(samples).reshape(-1, 1))
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        description: {name: units, description: units}
        env: {variables: {OUTPUT_PATH: ./out}}
        merlin:
          samples: {file: s.npy, column_labels: [V]}
        study:
          - name: a
            run: {cmd: "echo $(V)"}
          - name: funnel
            run: {cmd: "true", depends: [a]}""" + more_steps + "\n"))
    _, plan = create_workspace(load_spec(spec, {}), batch_size=2)
    store = RedisStatusStore(redis_server.client(), plan.workspace, plan)
    store.register(plan)
    return plan, store, RedisDependencies(store.r, plan)


def test_a_copy_delivered_before_the_first_heartbeat_is_held_back(redis_server: RedisFixture, tmp_path: Path) -> None:
    """The unit's first beat, written when it starts, named no process: a second copy delivered before the first
    copy's heartbeat thread had beaten ran beside it (a read-only review saw it on a real Redis)."""
    import time

    from merlin_mdm.backends.celery.scheduling import HELD

    _, store, _ = _registered_study(redis_server, tmp_path, samples=4, more_steps="")
    now, first = time.time(), "host/123/456"
    assert store.start(UnitKey(0, 0), "h", now, (5.0, 6, ""), f"5.0 {first}") == 1
    assert store.start(UnitKey(0, 0), "h", now + 0.01, (5.0, 6, ""), "5.0 host/789/1") == HELD
    # the first copy's process is known gone (on its machine): the copy runs
    assert store.start(UnitKey(0, 0), "h", now + 0.02, (5.0, 6, first), "5.0 host/789/1") == 2


def test_a_unit_that_ran_beats_until_it_is_recorded(redis_server: RedisFixture, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit's beats ended when its tasks did: while recording it failed (a status server restarting), Celery's
    retry waited out its countdown in silence, and `status` and `restart` took the unit for one whose worker died.
    Now it is recorded in place and beats until it is."""
    import threading

    from merlin_mdm.backends.celery import scheduling
    from merlin_mdm.backends.celery.liveness import silent_units
    from merlin_mdm.errors import StatusError

    plan, store, deps = _registered_study(redis_server, tmp_path, samples=2, more_steps="")
    monkeypatch.setenv("MERLIN_MDM_HEARTBEAT", "0.05")  # silent after 0.3 s without a beat
    monkeypatch.setattr(scheduling, "RECORD_RETRY_SECONDS", (0.4, 0.4))
    fails, real_record = [3], store.record

    def failing_record(key: UnitKey, outcome):  # type: ignore[no-untyped-def]
        if fails[0]:
            fails[0] -= 1
            raise StatusError("status store at Redis: Connection refused")
        return real_record(key, outcome)

    monkeypatch.setattr(store, "record", failing_record)
    seen_silent: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            if silent_units(store.unit_beats(), time.time()):
                seen_silent.append(time.time())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        outcome = scheduling.execute_unit(store, deps, plan, UnitKey(0, 0), lambda d: None)
    finally:
        done.set()
        watcher.join()
    assert fails == [0] and outcome is not None and outcome.finished == 2
    assert store.unit_ok(UnitKey(0, 0)) is True
    assert seen_silent == []  # 1.2 s of failed recording, each beat 0.05 s apart
    store.close()


def test_a_try_after_a_half_done_recording_sends_the_children_and_ends_the_study(
        redis_server: RedisFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tries in place repeated the whole first step: a unit counted at its children before the broker failed
    was counted as nothing again, and its funnel never sent; a last unit recorded before the final state could be
    set left the study running for ever (found by a review)."""
    import redis

    from merlin_mdm.backends.celery import scheduling
    from merlin_mdm.backends.celery.scheduling import Dispatch
    from merlin_mdm.errors import StatusError

    plan, store, deps = _registered_study(redis_server, tmp_path, samples=2, more_steps="")
    monkeypatch.setattr(scheduling, "RECORD_RETRY_SECONDS", (0.01, 0.01))
    sent: list[Dispatch] = []
    failing_sends = [1]

    def send(dispatch: Dispatch) -> None:
        if failing_sends[0]:
            failing_sends[0] -= 1
            raise redis.ConnectionError("broker restarting")
        sent.append(dispatch)

    failing_ends, real_end = [1], store.finish_if_over

    def finish_if_over() -> None:
        if failing_ends[0] and store.r.hget(store.k_meta, "units_left") == "0":
            failing_ends[0] -= 1
            raise StatusError("status store at Redis: Connection reset by peer")
        real_end()

    monkeypatch.setattr(store, "finish_if_over", finish_if_over)
    retry_on = (StatusError, redis.ConnectionError)
    assert scheduling.execute_unit(store, deps, plan, UnitKey(0, 0), send, retry_on=retry_on) is not None
    funnel = next(i.index for i in plan.instances if i.step == "funnel")
    assert sent == [Dispatch(units=(UnitKey(funnel, 0),))] and failing_sends == [0]
    assert scheduling.execute_unit(store, deps, plan, UnitKey(funnel, 0), send, retry_on=retry_on) is not None
    assert failing_ends == [0] and store.snapshot().state == "finished"
    store.close()


def test_recording_that_keeps_failing_is_left_to_the_task_s_retry(
        redis_server: RedisFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that keeps refusing (out of memory, a key of the wrong type) must not hold the pool process for
    ever: after the tries in place, the error reaches Celery's retry, as it did before they existed."""
    from merlin_mdm.backends.celery import scheduling
    from merlin_mdm.errors import StatusError

    plan, store, deps = _registered_study(redis_server, tmp_path, samples=2, more_steps="")
    monkeypatch.setattr(scheduling, "RECORD_RETRY_SECONDS", (0.01, 0.01))
    calls = [0]

    def refusing(key: UnitKey, outcome):  # type: ignore[no-untyped-def]
        calls[0] += 1
        raise StatusError("status store at Redis: OOM command not allowed")

    monkeypatch.setattr(store, "record", refusing)
    with pytest.raises(StatusError, match="OOM"):
        scheduling.execute_unit(store, deps, plan, UnitKey(0, 0), lambda d: None)
    assert calls[0] == 1 + scheduling.RECORD_TRIES
    store.close()


def test_a_pool_process_stopped_while_recording_gives_its_unit_back(redis_server: RedisFixture, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Billiard turns SIGTERM into SystemExit: stopped while recording, the unit stayed `running` and its
    redelivery counted a worker death."""
    from merlin_mdm.backends.celery import scheduling

    plan, store, deps = _registered_study(redis_server, tmp_path, samples=2, more_steps="")

    def stopped(key: UnitKey, outcome):  # type: ignore[no-untyped-def]
        raise SystemExit(1)

    monkeypatch.setattr(store, "record", stopped)
    with pytest.raises(SystemExit):
        scheduling.execute_unit(store, deps, plan, UnitKey(0, 0), lambda d: None)
    assert store.units_in_flight() == []
    (step,) = [s for s in store.snapshot().steps if s.step == "a"]
    assert {k: v for k, v in step.counts.items() if v} == {"finished": 2}  # queued again, its markers counted
    store.close()


def test_a_redelivered_unit_is_counted_once(redis_server: RedisFixture, tmp_path: Path) -> None:
    from merlin_mdm.status.model import UnitOutcome

    _, store, deps = _registered_study(redis_server, tmp_path, samples=4, more_steps="")
    ok = UnitOutcome(2, 0, 0)
    assert store.start(UnitKey(0, 0), "h", 1.0) == 1
    assert store.start(UnitKey(0, 0), "h", 2.0) == 2  # redelivered while running: a second delivery
    assert store.record(UnitKey(0, 0), ok) == 2
    assert store.record(UnitKey(0, 0), ok) == -1  # the redelivered message changes nothing
    assert store.unit_ok(UnitKey(0, 0)) is True and store.unit_ok(UnitKey(0, 1)) is None
    assert deps.count(UnitKey(0, 0), True) == []
    assert deps.count(UnitKey(0, 0), True) == []  # counted once: the funnel still waits for unit 1
    assert store.start(UnitKey(0, 0), "h", 3.0) == -1
    assert store.record(UnitKey(0, 1), ok) == 1
    assert deps.count(UnitKey(0, 1), True) == [(UnitKey(1, 0), "")]
    assert deps.count(UnitKey(0, 1), True) == []
    assert deps.unsent_children(UnitKey(0, 1)) == [(UnitKey(1, 0), "")]  # released, not yet sent
    deps.mark_sent([UnitKey(1, 0)])
    assert deps.unsent_children(UnitKey(0, 1)) == []
    counts = {s.step: {k: v for k, v in s.counts.items() if v} for s in store.snapshot().steps}
    assert counts == {"a": {"finished": 4}, "funnel": {"queued": 1}}
    store.close()


def test_the_redis_store_keeps_every_failure_for_detailed_status(redis_server: RedisFixture, tmp_path: Path) -> None:
    """`status` shows the first 20 failures of a step; the store kept only those, and detailed-status called the
    21st failed task unknown."""
    from merlin_mdm.status.model import TaskFailure, TaskState, UnitOutcome

    plan, store, _ = _registered_study(redis_server, tmp_path, samples=50, more_steps="")
    for unit in range(25):
        key = UnitKey(0, unit)
        failures = tuple(TaskFailure(s, TaskState.FAILED, 1, "exit code 1", "") for s in plan.unit_samples(key))
        store.record(key, UnitOutcome(0, len(failures), 0, failures=failures))
    (shown,) = [s for s in store.snapshot().steps if s.step == "a"]
    (every,) = [s for s in store.snapshot(every_failure=True).steps if s.step == "a"]
    store.close()
    assert (len(shown.failures), shown.n_failures) == (20, 50)
    assert sorted(f.sample for _, f in every.failures) == list(range(50))


def test_a_delivery_that_died_before_counting_is_completed_by_the_next(redis_server: RedisFixture,
                                                                      tmp_path: Path) -> None:
    from merlin_mdm.backends.celery.scheduling import Dispatch, execute_unit
    from merlin_mdm.status.model import TaskFailure, TaskState, UnitOutcome

    plan, store, deps = _registered_study(redis_server, tmp_path, samples=2, more_steps="""
          - name: last
            run: {cmd: "true", depends: [funnel]}""")
    failed = UnitOutcome(1, 1, 0, failures=(TaskFailure(1, TaskState.FAILED, 1, "exit 1", ""),))
    store.start(UnitKey(0, 0), "h", 1.0)
    store.record(UnitKey(0, 0), failed)  # ... and the worker dies before counting it at the funnel
    sent: list[Dispatch] = []
    assert execute_unit(store, deps, plan, UnitKey(0, 0), sent.append) is None  # the redelivery
    # A failed task does not block its dependants (Merlin): the redelivery counts the unit and sends the funnel.
    funnel = next(i.index for i in plan.instances if i.step == "funnel")
    assert sent == [Dispatch(units=(UnitKey(funnel, 0),))]
    counts = {s.step: {k: v for k, v in s.counts.items() if v} for s in store.snapshot().steps}
    assert counts == {"a": {"finished": 1, "failed": 1}, "funnel": {"queued": 1}, "last": {"queued": 1}}
    assert execute_unit(store, deps, plan, UnitKey(0, 0), sent.append) is None  # counted once only
    assert len(sent) == 1
    store.close()


def test_a_task_that_raises_stops_its_own_chain_on_the_workers(workers: WorkerPool, tmp_path: Path) -> None:
    """$(MERLIN_RAISE_ERROR) on the Celery backend, as Merlin 1.13 runs it: after_bad/P.2 is left out, the
    funnel over after_bad runs, and the reason reaches the status."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        description: {name: raise, description: a task raises an error}
        env: {variables: {OUTPUT_PATH: ./out}}
        global.parameters: {P: {values: [1, 2, 3], label: P.%%}}
        study:
          - name: bad
            run: {cmd: "[ $(P) -ne 2 ] || exit $(MERLIN_RAISE_ERROR)", task_queue: sched}
          - name: after_bad
            run: {cmd: "echo after > out.txt", depends: [bad], task_queue: sched}
          - name: last
            run: {cmd: "echo last > out.txt", depends: [after_bad], task_queue: sched}
          - name: final
            run: {cmd: "echo final > out.txt", depends: [last_*], task_queue: sched}
    """))
    ws, plan = create_workspace(load_spec(spec, {}))
    backend = get_backend("celery")
    store = backend.status_store(ws)
    try:
        backend.launch(ws, plan, RunOptions())
        wait_until(lambda: store.snapshot().state == "failed", 60, "the study to end")
        snap = store.snapshot()
    finally:
        store.close()
    counts = {s.step: {k: v for k, v in s.counts.items() if v} for s in snap.steps}
    assert counts == {"bad": {"finished": 2, "failed": 1}, "after_bad": {"finished": 2, "not_run": 1},
                      "last": {"finished": 2, "not_run": 1}, "final": {"finished": 1}}
    assert not (ws.root / "after_bad" / "P.2" / "out.txt").exists()
    assert (ws.root / "final" / "out.txt").read_text() == "final\n"
    reasons = [f.reason for step in snap.steps if step.step == "last" for _, f in step.failures]
    assert reasons == ["parent after_bad_P.2 raised an error ($(MERLIN_RAISE_ERROR))"]


def test_a_delivery_that_died_before_counting_a_raise_blocks_its_chain(redis_server: RedisFixture,
                                                                       tmp_path: Path) -> None:
    from merlin_mdm.backends.celery.scheduling import Dispatch, execute_unit
    from merlin_mdm.status.model import TaskFailure, TaskState, UnitOutcome

    plan, store, deps = _registered_study(redis_server, tmp_path, samples=1, more_steps="""
          - name: gather
            run: {cmd: "true", depends: [a_*]}""")
    raised = UnitOutcome(0, 1, 0, failures=(TaskFailure(0, TaskState.FAILED, 106, "raised", ""),))
    store.start(UnitKey(0, 0), "h", 1.0)
    store.record(UnitKey(0, 0), raised)  # ... and the worker dies before counting it at its children
    sent: list[Dispatch] = []
    assert execute_unit(store, deps, plan, UnitKey(0, 0), sent.append) is None  # the redelivery
    funnel, gather = (next(i.index for i in plan.instances if i.step == s) for s in ("funnel", "gather"))
    assert sent == [Dispatch(units=(UnitKey(gather, 0),))]  # the funnel over a_* runs, a's own child does not
    counts = {s.step: {k: v for k, v in s.counts.items() if v} for s in store.snapshot().steps}
    assert counts == {"a": {"failed": 1}, "funnel": {"not_run": 1}, "gather": {"queued": 1}}
    assert plan.instances[funnel].parents[0].funnel is False
    store.close()


def test_a_chain_blocked_by_a_raise_is_followed_again_after_a_lost_reply(redis_server: RedisFixture,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocked child counted at its own children before the reply was lost: the next delivery found it recorded
    and counted, so its child was never recorded and the study never ended (found by a review)."""
    import redis

    from merlin_mdm.backends.celery.scheduling import Dispatch, execute_unit
    from merlin_mdm.status.model import TaskFailure, TaskState, UnitOutcome

    plan, store, deps = _registered_study(redis_server, tmp_path, samples=1, more_steps="""
          - name: after
            run: {cmd: "true", depends: [funnel]}
          - name: gather
            run: {cmd: "true", depends: [a_*]}""")
    funnel, gather = (next(i.index for i in plan.instances if i.step == s) for s in ("funnel", "gather"))
    raised = UnitOutcome(0, 1, 0, failures=(TaskFailure(0, TaskState.FAILED, 106, "raised", ""),))
    store.start(UnitKey(0, 0), "h", 1.0)
    store.record(UnitKey(0, 0), raised)
    real_count, lost = deps.count, [UnitKey(funnel, 0)]

    def count(key: UnitKey, ok: bool, was_raised: bool = False):  # type: ignore[no-untyped-def]
        out = real_count(key, ok, was_raised)
        if key in lost:  # counted, and the reply lost on the way back
            lost.remove(key)
            raise redis.ConnectionError("Connection reset by peer")
        return out

    monkeypatch.setattr(deps, "count", count)
    sent: list[Dispatch] = []
    with pytest.raises(redis.ConnectionError):
        execute_unit(store, deps, plan, UnitKey(0, 0), sent.append)
    assert execute_unit(store, deps, plan, UnitKey(0, 0), sent.append) is None  # the redelivery
    assert sent == [Dispatch(units=(UnitKey(gather, 0),))]
    counts = {s.step: {k: v for k, v in s.counts.items() if v} for s in store.snapshot().steps}
    assert counts == {"a": {"failed": 1}, "funnel": {"not_run": 1}, "after": {"not_run": 1}, "gather": {"queued": 1}}
    store.close()


def test_config_env_overrides_and_refuses_inline_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from merlin_mdm.config import ConfigError, load_config

    app = tmp_path / "app.yaml"
    app.write_text("broker: {url: 'rediss://h.example:6380/2', ca_certs: /ca.pem}\nvisibility_timeout: 7200\n")
    monkeypatch.setenv("MERLIN_MDM_CONFIG", str(app))
    monkeypatch.setenv("MERLIN_MDM_BROKER_PORT", "7000")
    cfg = load_config()
    assert (cfg.broker.scheme, cfg.broker.host, cfg.broker.port, cfg.broker.db) == ("rediss", "h.example", 7000, 2)
    assert cfg.broker.ssl_options() == {"ssl_cert_reqs": __import__("ssl").CERT_REQUIRED, "ssl_ca_certs": "/ca.pem"}
    assert cfg.visibility_timeout == 7200 and cfg.status is cfg.broker
    app.write_text("broker: {url: 'redis://:secret@h:1/0'}\n")
    with pytest.raises(ConfigError, match="password_file") as err:
        load_config()
    assert "secret" not in str(err.value)
    app.write_text("broker: {hostt: h}\n")  # the known keys include url, which the doc teaches
    with pytest.raises(ConfigError, match=r"unknown key\(s\) hostt \(known: .*, url, username\)"):
        load_config()
    app.write_text("broker: {host: h}\n")
    monkeypatch.setenv("MERLIN_MDM_BROKER_PORT", "abc")  # named, and not blamed on app.yaml
    with pytest.raises(ConfigError) as err:
        load_config()
    assert str(err.value) == "the environment's MERLIN_MDM_BROKER_PORT='abc' is not a whole number; fix or unset it"


def test_restart_requeues_only_what_did_not_finish(workers: WorkerPool, tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.arange(6).reshape(-1, 1))
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        description: {{name: again, description: restart}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        merlin:
          samples: {{file: s.npy, column_labels: [V]}}
        study:
          - name: work
            run:
              cmd: "echo $(V) >> {tmp_path}/runs.log; [ $(V) -ne 4 ] || [ -f {tmp_path}/fixed ]"
              task_queue: sched
          - name: funnel
            run: {{cmd: "echo funnel >> {tmp_path}/runs.log", depends: [work], task_queue: sched}}
    """))
    ws, plan = create_workspace(load_spec(spec, {}), batch_size=2, slots=3)  # units of 2, 2, 1, 1 samples
    assert [len(plan.unit_samples(k)) for k in plan.units()][:4] == [2, 2, 1, 1]
    backend = get_backend("celery")
    store = backend.status_store(ws)
    try:
        backend.launch(ws, plan, RunOptions())
        wait_until(lambda: store.snapshot().state == "failed", 60, "the first run to fail")
        (tmp_path / "fixed").touch()
        from merlin_mdm.backends.execution import DONE_MARKER, task_dir

        (task_dir(plan, plan.instances[0], 0) / DONE_MARKER).unlink()  # the disk is the truth: 0 runs again
        backend.launch(ws, plan, RunOptions(resume=True))
        wait_until(lambda: store.snapshot().state == "finished", 60, "the restarted study to finish")
        counts = {s.step: {k: v for k, v in s.counts.items() if v} for s in store.snapshot().steps}
        # a restart of a finished study queues nothing and stays finished (it said `queued again: 0 of 6`, sent
        # its root units and showed `queued` until a worker took them)
        report = backend.launch(ws, plan, RunOptions(resume=True))
        assert report.state == "finished" and report.message.startswith("nothing to run"), report
        assert store.snapshot().state == "finished"
    finally:
        store.close()
    assert counts == {"work": {"finished": 6}, "funnel": {"finished": 1}}
    runs = (tmp_path / "runs.log").read_text().split()
    assert sorted(runs) == ["0", "0", "1", "2", "3", "4", "4", "5", "funnel"]  # the failed one, and 0


def test_a_run_interrupted_while_queueing_says_so_and_restart_queues_it(redis_server: RedisFixture, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop signal while the study is sent left it `queued` with nothing queued: `monitor` and `run-workers
    --until-done` waited for ever. Now it is `interrupted`, the error says how to go on, and `restart` queues it."""
    from merlin_mdm.backends.celery.backend import CeleryBackend
    from merlin_mdm.backends.celery.in_allocation import study_is_over
    from merlin_mdm.errors import Interrupted

    monkeypatch.setenv("MERLIN_MDM_CONFIG", str(redis_server.app_yaml))
    np.save(tmp_path / "s.npy", np.arange(4).reshape(-1, 1))
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        description: {name: cut, description: interrupted while queueing}
        env: {variables: {OUTPUT_PATH: ./out}}
        merlin: {samples: {file: s.npy, column_labels: [V]}}
        study:
          - name: a
            run: {cmd: "echo $(V)", task_queue: cutq}
    """))
    ws, plan = create_workspace(load_spec(spec, {}))

    def cut(self: CeleryBackend, config: object, plan: object) -> None:
        raise Interrupted(signal.SIGINT)

    with monkeypatch.context() as patch:
        patch.setattr(CeleryBackend, "publish_initial", cut)
        with pytest.raises(Interrupted, match=r"not queued whole; `merlin-mdm restart .*` queues it") as err:
            CeleryBackend().launch(ws, plan, RunOptions())
    assert err.value.exit_code == 130
    store = CeleryBackend().status_store(ws)
    try:
        assert store.snapshot().state == "interrupted" and study_is_over(store)  # monitor ends
        report = CeleryBackend().launch(ws, plan, RunOptions(resume=True))
        assert report.state == "queued" and store.snapshot().state == "queued"
    finally:
        store.close()
    assert redis_server.client().llen("cutq") >= 1  # its units are on the broker now


def test_describe_queueing_names_units_queues_and_triggers(tmp_path: Path) -> None:
    from merlin_mdm.backends.celery.backend import describe_queueing

    np.save(tmp_path / "s.npy", np.arange(250).reshape(-1, 1))
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        description: {name: dry, description: dry}
        env: {variables: {OUTPUT_PATH: ./out}}
        merlin:
          samples: {file: s.npy, column_labels: [V]}
        study:
          - name: a
            run: {cmd: "echo $(V)", task_queue: sims}
          - name: b
            run: {cmd: "echo done", depends: [a]}
    """))
    _, plan = create_workspace(load_spec(spec, {}), batch_size=100)
    assert describe_queueing(plan) == [
        "a: 3 unit(s), 250 task(s), queue 'sims', queued by `run`",
        "b: 1 unit(s), 1 task(s), queue 'merlin', queued by the workers after a",
    ]


def test_a_two_core_step_after_a_one_core_step_is_released_by_the_units_holding_its_samples(
        worker_pool: WorkerPool, tmp_path: Path, celery_config: Path) -> None:
    """The Redis dependency counts of an aligned edge between steps sized apart (units of 2, 2, 1, 1, 1, 1 for
    sim's 1-core tasks on 4 slots, of 4, 2, 1, 1 for post's 2-core ones): each post unit is released by the sim
    units holding its samples, once all of them are recorded."""
    np.save(tmp_path / "s.npy", np.arange(8).reshape(-1, 1))
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(MIXED_STEPS.format(d=tmp_path)), encoding="utf-8")
    ws, plan = create_workspace(load_spec(spec, {}), slots=4)
    assert [[len(plan.unit_samples(UnitKey(i, u))) for u in range(plan.n_units(i))] for i in range(2)] == [
        [2, 2, 1, 1, 1, 1], [4, 2, 1, 1]]
    backend = get_backend("celery")
    store = backend.status_store(ws)
    try:
        worker_pool.start("w", tmp_path.name, concurrency=4, log_dir=tmp_path)
        backend.launch(ws, plan, RunOptions())
        wait_until(lambda: store.snapshot().state in ("finished", "failed"), 60, "the study to end")
        counts = {s.step: {k: v for k, v in s.counts.items() if v} for s in store.snapshot().steps}
    finally:
        store.close()
    assert counts == {"sim": {"finished": 8}, "post": {"finished": 8}}
    check_mixed_order(tmp_path)
