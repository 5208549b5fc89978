"""When an allocation's workers are done: the whole study, or (for an allocation of some worker groups) every
step on the queues they serve, against a real Redis status store."""

from __future__ import annotations

from pathlib import Path

import pytest

from merlin_mdm.backends.celery.in_allocation import study_is_over
from merlin_mdm.status.model import UnitOutcome
from merlin_mdm.status.redis_store import RedisStatusStore
from merlin_mdm.study.plan import UnitKey
from tests.contract.test_status_store_contract import _plan
from tests.integration.conftest import RedisFixture, redis_server  # noqa: F401 - fixture

pytestmark = [pytest.mark.redis]


def test_a_group_is_done_when_its_steps_are_and_the_study_when_all_are(redis_server: RedisFixture,  # noqa: F811
                                                                        tmp_path: Path) -> None:
    plan = _plan(str(tmp_path / "ws"))  # step a: 10 samples in units of 4, 4, 2; then the funnel b
    store = RedisStatusStore(redis_server.client(), plan.workspace, plan)
    try:
        store.register(plan)
        assert not study_is_over(store) and not study_is_over(store, ["a"]) and not study_is_over(store, ["b"])
        store.unit_finished(UnitKey(0, 0), UnitOutcome(4, 0, 0))
        store.unit_finished(UnitKey(0, 1), UnitOutcome(3, 1, 0))
        assert not study_is_over(store, ["a"])  # two of a's tasks are still to come
        store.unit_finished(UnitKey(0, 2), UnitOutcome(1, 0, 1))
        assert study_is_over(store, ["a"]) and not study_is_over(store, ["b"]) and not study_is_over(store)
        store.unit_finished(UnitKey(1, 0), UnitOutcome(1, 0, 0))
        assert study_is_over(store) and study_is_over(store, ["b"])
    finally:
        store.close()


def test_a_record_the_server_lost_is_never_taken_for_an_ended_study(redis_server: RedisFixture,  # noqa: F811
                                                                    tmp_path: Path) -> None:
    """Redis restarted without --persist while workers ran: they write to a record with no name or steps."""
    from merlin_mdm.errors import StatusError

    plan = _plan(str(tmp_path / "ws"))
    store = RedisStatusStore(redis_server.client(), plan.workspace, plan)
    try:
        store.register(plan)
        store.r.flushall()  # the server came back empty
        store.unit_started(UnitKey(0, 0), "host", 1.0)  # a worker records a unit it took before
        with pytest.raises(StatusError, match=r"incomplete \(was the server restarted without --persist\?\)"):
            store.snapshot()
        with pytest.raises(StatusError):
            study_is_over(store)  # the allocation's check reads a store error as "not over"
        assert store.reset_unfinished() and store.snapshot().total == 11  # what `restart` does rebuilds it
    finally:
        store.close()
