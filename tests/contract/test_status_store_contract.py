"""The contract every status store satisfies: one test class, run against the SQLite store (local backend)
and the Redis store (celery backend, a real password-protected redis-server)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from merlin_mdm.status.model import StudyState, TaskFailure, TaskState, UnitOutcome
from merlin_mdm.status.sqlite_store import SqliteStatusStore
from merlin_mdm.status.store import StatusStore
from merlin_mdm.study.plan import Edge, StepInstance, StudyPlan, UnitKey
from merlin_mdm.study.samples import SampleSet
from tests.integration.conftest import RedisFixture, redis_server  # noqa: F401 - fixture


def _plan(workspace: str, n_samples: int = 10, batch: int = 4) -> StudyPlan:
    """Step a over 10 samples in units of 4 (units 0, 1: 4 tasks, unit 2: 2 tasks), then a funnel b."""
    a = StepInstance(0, "a", "a", "", "a", "echo", None, "/bin/bash", True, ())
    b = StepInstance(1, "b", "b", "", "b", "echo", None, "/bin/bash", False, (Edge(0, False),))
    return StudyPlan("s", workspace, (a, b), SampleSet(f"{workspace}/s.npy", n_samples, ("X",)), batch)


StoreFactory = Callable[[], tuple[StatusStore, StudyPlan]]


@pytest.fixture(params=["sqlite", "redis"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """new_store() -> (an empty store of this parametrisation, the plan it is for)."""
    stores: list[StatusStore] = []
    plan = _plan(str(tmp_path / "ws"))

    def make() -> tuple[StatusStore, StudyPlan]:
        if request.param == "sqlite":
            store: StatusStore = SqliteStatusStore(tmp_path / "status.db")
        else:
            from merlin_mdm.status.redis_store import RedisStatusStore

            request.applymarker(pytest.mark.redis)
            server: RedisFixture = request.getfixturevalue("redis_server")
            store = RedisStatusStore(server.client(), plan.workspace)
        stores.append(store)
        return store, plan

    yield make
    for store in stores:
        store.close()


def _counts(store: StatusStore) -> dict[str, dict[str, int]]:
    return {s.step: {k: v for k, v in s.counts.items() if v} for s in store.snapshot().steps}


class TestStatusStoreContract:
    def test_register_counts_every_task_queued_once(self, new_store: StoreFactory) -> None:
        store, plan = new_store()
        store.register(plan)
        store.register(plan)  # idempotent
        snap = store.snapshot()
        assert [(s.step, s.instances, s.total) for s in snap.steps] == [("a", 1, 10), ("b", 1, 1)]
        assert _counts(store) == {"a": {"queued": 10}, "b": {"queued": 1}}
        assert (snap.name, snap.state, snap.total) == ("s", StudyState.CREATED, 11)

    def test_an_outcome_counts_once_with_its_failures(self, new_store: StoreFactory) -> None:
        store, plan = new_store()
        store.register(plan)
        key = UnitKey(0, 1)
        store.unit_started(key, "host", 1.0)
        assert _counts(store)["a"] == {"queued": 6, "running": 4}
        failure = TaskFailure(5, TaskState.FAILED, 1, "exit code 1", "/ws/a/05/a.err")
        outcome = UnitOutcome(3, 1, 0, 2, 1.0, 3.0, "host", (failure,))
        assert store.unit_finished(key, outcome) is True
        assert store.unit_finished(key, outcome) is False  # a redelivery changes nothing
        step = store.snapshot().steps[0]
        assert _counts(store)["a"] == {"queued": 6, "finished": 3, "failed": 1}
        assert (step.restarts, step.n_failures, step.failures) == (2, 1, (("a", failure),))
        assert (step.started, step.ended) == (1.0, 3.0)
        assert not step.done

    def test_units_not_run_carry_their_reason(self, new_store: StoreFactory) -> None:
        store, plan = new_store()
        store.register(plan)
        store.units_not_run([UnitKey(1, 0)], "parent a did not finish every task")
        store.units_not_run([UnitKey(1, 0)], "again")  # already recorded: no change
        step = store.snapshot().steps[1]
        assert _counts(store)["b"] == {"not_run": 1} and step.done
        assert [(n, f.sample, f.state, f.reason) for n, f in step.failures] == [
            ("b", -1, TaskState.NOT_RUN, "parent a did not finish every task")]
        assert store.unit_finished(UnitKey(1, 0), UnitOutcome(1, 0, 0)) is False

    @pytest.mark.parametrize("state", [s for s in StudyState if s is not StudyState.UNKNOWN])
    def test_the_study_state_round_trips(self, new_store: StoreFactory, state: StudyState) -> None:
        store, plan = new_store()
        store.register(plan)
        store.set_state(state, f"why {state}")
        snap = store.snapshot()
        assert (snap.state, snap.message) == (state, f"why {state}")
        assert isinstance(snap.state, StudyState)

    def test_reset_requeues_only_what_did_not_finish(self, new_store: StoreFactory) -> None:
        store, plan = new_store()
        store.register(plan)
        store.unit_finished(UnitKey(0, 0), UnitOutcome(4, 0, 0))
        failure = TaskFailure(4, TaskState.FAILED, 1, "exit code 1", "")
        store.unit_finished(UnitKey(0, 1), UnitOutcome(3, 1, 0, failures=(failure,)))
        store.unit_finished(UnitKey(0, 2), UnitOutcome(2, 0, 0))
        store.units_not_run([UnitKey(1, 0)], "parent a did not finish every task")
        assert store.finished_units() == {UnitKey(0, 0), UnitKey(0, 2)}
        assert sorted(store.reset_unfinished()) == [UnitKey(0, 1), UnitKey(1, 0)]
        assert _counts(store) == {"a": {"queued": 4, "finished": 6}, "b": {"queued": 1}}
        assert [s.n_failures for s in store.snapshot().steps] == [0, 0]
        assert store.finished_units() == {UnitKey(0, 0), UnitKey(0, 2)}
        # the units queued again are recorded anew; the finished ones are never counted twice
        assert store.unit_finished(UnitKey(0, 0), UnitOutcome(4, 0, 0)) is False
        assert store.unit_finished(UnitKey(0, 1), UnitOutcome(4, 0, 0)) is True
        assert _counts(store) == {"a": {"finished": 10}, "b": {"queued": 1}}

    def test_reset_keeps_the_retries_so_far_and_when_each_step_started(self, new_store: StoreFactory) -> None:
        store, plan = new_store()
        store.register(plan)
        store.unit_finished(UnitKey(0, 0), UnitOutcome(4, 0, 0, restarts=2, started=10.0, ended=20.0))
        store.unit_finished(UnitKey(0, 1), UnitOutcome(3, 1, 0, restarts=5, started=12.0, ended=30.0))
        store.reset_unfinished()  # unit 0:1 runs again; the retries so far stay counted (a purge and restart lost them)
        step = store.snapshot().steps[0]
        assert (step.restarts, step.started) == (7, 10.0), step
        assert step.ended is not None and step.ended >= 20.0, step

    def test_run_times_count_units_that_ran_to_their_end_once(self, new_store: StoreFactory) -> None:
        store, plan = new_store()
        store.register(plan)
        failure = TaskFailure(4, TaskState.FAILED, 1, "exit code 1", "")
        store.unit_finished(UnitKey(0, 0), UnitOutcome(4, 0, 0, 0, 10.0, 18.0))  # 4 tasks in 8 s: 2 s each
        assert store.unit_finished(UnitKey(0, 1), UnitOutcome(3, 1, 0, 0, 10.0, 22.0, failures=(failure,)))
        store.unit_finished(UnitKey(0, 1), UnitOutcome(3, 1, 0, 0, 10.0, 22.0, failures=(failure,)))  # again
        store.unit_finished(UnitKey(0, 2), UnitOutcome(0, 2, 0, 0, 30.0, 30.0))  # could not run: not timed
        store.units_not_run([UnitKey(1, 0)], "parent a did not finish every task")
        a, b = store.snapshot().steps
        assert (a.run_tasks, a.avg_run, a.run_std) == (8, 2.5, pytest.approx(0.5))  # 2 s x 4 and 3 s x 4
        assert (b.run_tasks, b.avg_run, b.run_std) == (0, None, None)
        store.reset_unfinished()  # units 1 and 2 are queued again: their runs drop out, unit 0's stays
        assert (store.snapshot().steps[0].avg_run, store.snapshot().steps[0].run_std) == (2.0, 0.0)
        store.unit_started(UnitKey(0, 1), "host", 40.0)
        store.unit_finished(UnitKey(0, 1), UnitOutcome(4, 0, 0, 0, 40.0, 44.0))  # 1 s each
        step = store.snapshot().steps[0]
        assert (step.run_tasks, step.avg_run, step.run_std) == (8, 1.5, pytest.approx(0.5))

    def test_requeue_counts_the_done_markers_of_a_unit_until_it_runs_again(self, new_store: StoreFactory) -> None:
        store, plan = new_store()
        store.register(plan)
        store.unit_started(UnitKey(0, 0), "host", 1.0)
        store.unit_started(UnitKey(0, 1), "host", 1.0)
        store.requeue({UnitKey(0, 0): 3, UnitKey(0, 1): 0})  # a worker stopped with 3 of 4 tasks done
        assert _counts(store) == {"a": {"queued": 7, "finished": 3}, "b": {"queued": 1}}
        store.requeue({UnitKey(0, 0): 2})  # a done-marker went missing meanwhile: the disk is the truth
        assert _counts(store) == {"a": {"queued": 8, "finished": 2}, "b": {"queued": 1}}
        store.unit_started(UnitKey(0, 0), "host", 2.0)  # its two finished tasks stay counted while it runs
        assert _counts(store) == {"a": {"queued": 6, "running": 2, "finished": 2}, "b": {"queued": 1}}
        assert store.unit_finished(UnitKey(0, 0), UnitOutcome(4, 0, 0)) is True
        assert _counts(store) == {"a": {"queued": 6, "finished": 4}, "b": {"queued": 1}}

    def test_progress_counts_the_done_markers_of_a_running_unit_once(self, new_store: StoreFactory) -> None:
        store, plan = new_store()
        store.register(plan)
        unit = UnitKey(0, 0)
        store.unit_started(unit, "host", 1.0)
        store.unit_progress(unit, 2)
        assert _counts(store)["a"] == {"queued": 6, "running": 2, "finished": 2}
        store.unit_progress(unit, 2)  # told again: a redelivered unit, a late report
        store.unit_progress(unit, 1)  # an older count
        store.unit_started(unit, "host", 2.0)  # redelivered
        assert _counts(store)["a"] == {"queued": 6, "running": 2, "finished": 2}
        store.unit_progress(unit, 3)
        assert _counts(store)["a"] == {"queued": 6, "running": 1, "finished": 3}
        store.requeue({unit: 3})  # its worker stopped: queued with its three done-markers
        store.unit_progress(unit, 3)
        assert _counts(store)["a"] == {"queued": 7, "finished": 3}
        store.unit_started(unit, "host", 3.0)
        assert store.unit_finished(unit, UnitOutcome(3, 1, 0, failures=(
            TaskFailure(3, TaskState.FAILED, 1, "exit code 1", ""),))) is True
        store.unit_progress(unit, 4)  # after its record: nothing changes
        assert _counts(store)["a"] == {"queued": 6, "finished": 3, "failed": 1}

    def test_units_in_flight_are_those_taken_and_not_recorded(self, new_store: StoreFactory) -> None:
        store, plan = new_store()
        store.register(plan)
        assert store.units_in_flight() == []
        for unit in (UnitKey(0, 2), UnitKey(0, 0), UnitKey(0, 1)):
            store.unit_started(unit, "host", 1.0)
        assert store.unit_finished(UnitKey(0, 1), UnitOutcome(4, 0, 0)) is True
        assert store.units_in_flight() == [UnitKey(0, 0), UnitKey(0, 2)]
        store.requeue({UnitKey(0, 2): 0})  # given back: queued, no longer in flight
        assert store.units_in_flight() == [UnitKey(0, 0)]

    def test_a_reader_opened_later_sees_the_same_study(self, new_store: StoreFactory) -> None:
        writer, plan = new_store()
        writer.register(plan)
        writer.unit_finished(UnitKey(0, 2), UnitOutcome(2, 0, 0))
        writer.set_state(StudyState.RUNNING)
        reader, _ = new_store()
        assert reader.snapshot() == writer.snapshot()
        assert reader.finished_units() == {UnitKey(0, 2)}
