"""What a Celery task does, as plain functions over a status store, dependency counts and a ``send`` callable.

No Celery import here: the task bodies in :mod:`merlin_mdm.backends.celery.app` only call these, and tests can too.

Dependencies are counted, not synchronised: once a unit's outcome is recorded in the status store, it is
counted at each child (:class:`RedisDependencies`), and the unit whose count completes a child's releases it.
Large releases (the first units of a sample step, every unit of a step after a non-sample parent) travel as
``expand`` messages over unit ranges that workers split further, so no message and no loop grows with the
number of samples.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from merlin_mdm.backends.celery.dependencies import RedisDependencies, Released
from merlin_mdm.backends.celery.liveness import (
    BEAT_SECONDS,
    MISSED,
    beat_seconds,
    is_stopping,
    process_gone,
    process_token,
    unit_heartbeat,
)
from merlin_mdm.backends.celery.publish import Message, publish
from merlin_mdm.backends.execution import count_done, run_unit, unit_failure, watch_tasks, worker_deaths_outcome
from merlin_mdm.backends.progress import TaskTicker
from merlin_mdm.backends.task_guard import task_guard
from merlin_mdm.errors import StatusError
from merlin_mdm.status.model import UnitOutcome
from merlin_mdm.status.redis_store import RedisStatusStore
from merlin_mdm.status.states import StudyState
from merlin_mdm.study.plan import StudyPlan, UnitKey

__all__ = ["EXPAND_FANOUT", "EXPAND_TASK", "HELD", "UNITS_PER_EXPAND", "UNIT_TASK", "Dispatch", "Sender",
           "StillRunning", "execute_unit", "expand_range", "fail_study", "fail_unit", "plan_dispatch", "record",
           "release", "send_dispatch", "unit_ranges"]

log = logging.getLogger(__name__)

UNIT_TASK = "merlin_mdm.unit"  # unit(workspace, unit_id)
EXPAND_TASK = "merlin_mdm.expand"  # expand(workspace, instance, lo, hi)
UNITS_PER_EXPAND = 200  # an expand message over at most this many units sends them one by one
EXPAND_FANOUT = 10  # a larger range is split into this many expand messages


@dataclass(frozen=True)
class Dispatch:
    """Messages to send: single units, and unit ranges (instance, lo, hi) to expand on a worker."""

    units: tuple[UnitKey, ...] = ()
    ranges: tuple[tuple[int, int, int], ...] = ()


Sender = Callable[[Dispatch], None]


def unit_ranges(keys: Iterable[UnitKey]) -> list[tuple[int, int, int]]:
    """Group unit keys into contiguous (instance, lo, hi) ranges, hi exclusive."""
    out: list[tuple[int, int, int]] = []
    for key in sorted(keys):
        if out and out[-1][0] == key.instance and out[-1][2] == key.unit:
            inst, lo, _ = out[-1]
            out[-1] = (inst, lo, key.unit + 1)
        else:
            out.append((key.instance, key.unit, key.unit + 1))
    return out


def send_dispatch(broker: Any, workspace: str, plan: StudyPlan, dispatch: Dispatch) -> None:
    """Publish ``dispatch`` in one round trip to ``broker`` (a redis client), each message to its step's queue."""
    units: list[Message] = [(plan.instances[k.instance].task_queue, UNIT_TASK, [workspace, k.to_id()])
                            for k in dispatch.units]
    ranges: list[Message] = [(plan.instances[inst].task_queue, EXPAND_TASK, [workspace, inst, lo, hi])
                             for inst, lo, hi in dispatch.ranges]
    publish(broker, units + ranges)


def plan_dispatch(keys: Iterable[UnitKey]) -> Dispatch:
    """Small ranges as single units, large ones as expand messages."""
    units: list[UnitKey] = []
    ranges: list[tuple[int, int, int]] = []
    for inst, lo, hi in unit_ranges(keys):
        if hi - lo <= UNITS_PER_EXPAND:
            units.extend(UnitKey(inst, u) for u in range(lo, hi))
        else:
            ranges.append((inst, lo, hi))
    return Dispatch(tuple(units), tuple(ranges))


def expand_range(instance: int, lo: int, hi: int) -> Dispatch:
    """What an expand message over [lo, hi) sends: the units, or up to EXPAND_FANOUT smaller ranges."""
    if hi - lo <= UNITS_PER_EXPAND:
        return Dispatch(tuple(UnitKey(instance, u) for u in range(lo, hi)))
    step = max(UNITS_PER_EXPAND, -(-(hi - lo) // EXPAND_FANOUT))
    return Dispatch(ranges=tuple((instance, a, min(hi, a + step)) for a in range(lo, hi, step)))


def record(store: RedisStatusStore, deps: RedisDependencies, key: UnitKey, outcome: UnitOutcome) -> Released:
    """Record ``key``'s outcome, then count it at its children; returns the children released now.

    Both steps are idempotent, so a delivery that died between them is completed by the next one.
    """
    store.record(key, outcome)
    return deps.count(key, outcome.releases_children, outcome.raised)


def release(store: RedisStatusStore, deps: RedisDependencies, released: Sequence[tuple[UnitKey, str]],
            send: Sender) -> None:
    """Send the released children that may run; record the blocked ones as not run (and follow their children).

    Idempotent: a blocked child recorded by an earlier call that failed before the end follows its own unsent
    children again, and nothing is marked sent before the messages are, so no grandchild is left behind."""
    pending = list(released)
    runnable: list[UnitKey] = []
    blocked_keys: list[UnitKey] = []
    seen: set[UnitKey] = set()
    while pending:
        key, blocked = pending.pop()
        if key in seen:
            continue
        seen.add(key)
        if not blocked:
            reason = store.stop_reason()
            if reason is None:
                runnable.append(key)
                continue
            blocked = reason
        outcome = store.not_run_outcome(key, blocked)
        again = store.record(key, outcome) < 0  # recorded by an earlier call: its count may be done as well
        pending.extend(deps.count(key, outcome.releases_children, outcome.raised))
        if again:
            pending.extend(deps.unsent_children(key))
        blocked_keys.append(key)
    sent = bool(runnable) and store.state() is not StudyState.PURGED  # purged: `restart` sends them, once
    if sent:
        send(plan_dispatch(runnable))
    deps.mark_sent(blocked_keys + (runnable if sent else []))


class GivenBack(Exception):
    """The unit stopped before its next task because its worker is stopping; it is queued again (the message must
    go back to the broker: the task raises Celery's ``Reject(requeue=True)``)."""


def _stop_checker(store: RedisStatusStore, hostname: str, every: float = 1.0) -> Callable[[], bool]:
    """Whether the unit should stop before its next task: the study was stopped, or this worker is stopping
    (asked at most once per ``every`` seconds)."""
    last = [0.0, False]

    def should_stop() -> bool:
        now = time.monotonic()
        if not last[1] and now - float(last[0]) >= every:
            last[0], last[1] = now, store.stop_reason() is not None or is_stopping(store.r, hostname)
        return bool(last[1])

    return should_stop


def execute_unit(store: RedisStatusStore, deps: RedisDependencies, plan: StudyPlan, key: UnitKey, send: Sender,
                 max_deliveries: int = 3, hostname: str = "",
                 retry_on: tuple[type[BaseException], ...] = (StatusError,)) -> UnitOutcome | None:
    """The whole body of a unit message. Returns the outcome recorded, None when it was recorded before.

    A unit already recorded (a redelivered message) runs nothing; it only completes what the previous
    delivery may not have done: count the unit at its children, send the children released but never
    handed to the broker, and set the study's final state when it was the last unit. A unit that ran beats
    until it is recorded, tried again in place for about 30 s while the status store or broker fails (``retry_on``).

    Raises:
        GivenBack: the worker ``hostname`` is stopping: the unit stopped before its next task, queued again.
    """
    attempts = store.start(key, socket.gethostname(), time.time(), _holder_window(store, key),
                           f"{beat_seconds()} {process_token()}")
    if attempts == HELD:
        raise StillRunning(f"unit {key.to_id()} of {plan.workspace} runs in another process that still beats "
                           "(its message came again after the broker's visibility timeout): not run twice")
    if attempts < 0:
        # UnitOutcome.releases_children: only a stopped study (hard fail, stop) leaves a unit's children blocked,
        # and a unit that raised blocks its own (UnitOutcome.raised, recorded with it).
        deps.count(key, store.stop_reason() is None, store.unit_raised(key))
        release(store, deps, deps.unsent_children(key), send)
        store.finish_if_over()
        return None
    stop = store.stop_reason()
    if attempts > max_deliveries:
        outcome = worker_deaths_outcome(plan, key, attempts - 1, max_deliveries)
    elif stop is not None:
        outcome = store.not_run_outcome(key, stop)
    else:
        # The unit beats until its outcome is recorded and its children sent, however long that takes: `status`
        # and `restart` tell a unit that ran from one whose worker died by its beats alone.
        beating = unit_heartbeat(store, key)
        try:
            outcome = _run(store, plan, key, hostname)
            if outcome.not_run and store.stop_reason() is None and is_stopping(store.r, hostname):
                store.unit_given_back(key, count_done(plan, key))  # its done-markers stay counted
                raise GivenBack(f"unit {key.to_id()} stopped before its next task: worker {hostname} is stopping")
            _settle(store, deps, plan, key, outcome, send, retry_on)
        finally:
            beating.close()
        return outcome
    release(store, deps, record(store, deps, key, outcome), send)
    return outcome


RECORD_RETRY_SECONDS = (1.0, 16.0)  # the first and the longest pause between two tries at recording a unit that ran
RECORD_TRIES = 6  # tries in place after the first (about 30 s: a status server restarting), then Celery's retry


def _settle(store: RedisStatusStore, deps: RedisDependencies, plan: StudyPlan, key: UnitKey, outcome: UnitOutcome,
            send: Sender, retry_on: tuple[type[BaseException], ...]) -> None:
    """Record the outcome of a unit that ran and send its released children, while the unit still beats. Celery's
    own retry ends the beats for its countdown: a unit with its outcome in hand looked like one whose worker died,
    and a `restart` of a record the server lost queued it again beside its retry. So a passing error (``retry_on``:
    the status store or broker restarting) is tried again in place for about 30 s, then left to Celery's retry.

    A try after a failed one completes as a redelivery does (each step idempotent): the first may have recorded the
    unit, or counted it at its children, before it failed, and recording or counting it again returns nothing."""
    first, longest = RECORD_RETRY_SECONDS
    try:
        try:
            release(store, deps, record(store, deps, key, outcome), send)
            return
        except retry_on as exc:
            log.warning("unit %s of %s ran; recording it failed (%s: %s), tried again in place", key.to_id(),
                        store.workspace, type(exc).__name__, exc)
        for tries in range(1, RECORD_TRIES + 1):
            time.sleep(min(longest, first * 2 ** (tries - 1)))
            try:
                _complete(store, deps, key, outcome, send)
                return
            except retry_on as exc:
                if tries == RECORD_TRIES:
                    log.error("unit %s of %s ran; recording it failed %d times in a row (%s: %s): left to the "
                              "task's retry, nothing is lost", key.to_id(), store.workspace, tries + 1,
                              type(exc).__name__, exc)
                    raise
    except SystemExit:  # the pool process is stopped meanwhile: its message goes back, its markers stay counted
        with contextlib.suppress(*retry_on):
            store.unit_given_back(key, count_done(plan, key))
        raise


def _complete(store: RedisStatusStore, deps: RedisDependencies, key: UnitKey, outcome: UnitOutcome,
              send: Sender) -> None:
    """Record ``outcome`` unless it is recorded, count it at the children unless it is counted, send what is
    released and not sent, and set the study's final state when it was the last unit."""
    store.record(key, outcome)
    deps.count(key, outcome.releases_children, outcome.raised)
    release(store, deps, deps.unsent_children(key), send)
    store.finish_if_over()


HELD = -2  # RedisStatusStore.start: another copy of the unit runs in a process that still beats


class StillRunning(Exception):
    """A redelivered unit whose first copy still runs (the broker's visibility timeout is shorter than the unit):
    it must not run twice at once. The message is put off, not dropped: should that copy's process die, it runs."""


def _holder_window(store: RedisStatusStore, key: UnitKey) -> tuple[float, int, str]:
    """What :meth:`RedisStatusStore.start` needs to tell a live holder of ``key``: the default beat interval, the
    beats missed before a process counts as gone, and the token of the holder when its process is known gone
    (on this machine)."""
    token = [*store.unit_beat(key).split(), "", "", ""][2]
    return BEAT_SECONDS, MISSED, token if token and process_gone(token) else ""


def fail_unit(store: RedisStatusStore, deps: RedisDependencies, plan: StudyPlan, key: UnitKey, exc: Exception,
              send: Sender) -> None:
    """Record an unexpected exception as the unit's failure (its traceback goes to the worker's log)."""
    log.error("unit %s of %s failed", key.to_id(), plan.workspace, exc_info=exc)
    outcome = unit_failure(plan, key, f"internal error: {type(exc).__name__}: {exc}")
    release(store, deps, record(store, deps, key, outcome), send)


def fail_study(store: RedisStatusStore, unit_id: str, exc: Exception) -> None:
    """A unit whose study's plan cannot be loaded: no unit can run, so the study is recorded failed, saying why
    (its units stay counted queued; `restart` queues them again once the plan is repaired)."""
    log.error("unit %s of %s: the study's plan cannot be loaded", unit_id, store.workspace, exc_info=exc)
    store.set_state(StudyState.FAILED, f"unit {unit_id}: a worker cannot load the study's plan "
                                       f"({type(exc).__name__}: {exc}); repair merlin_info/plan.json, then "
                                       "`merlin-mdm restart`")


def _progress(store: RedisStatusStore, plan: StudyPlan, key: UnitKey) -> TaskTicker:
    """Report the unit's done-markers to the store as its tasks end (a count, so never twice: see
    :meth:`RedisStatusStore.unit_progress`). Progress is best effort: the unit's outcome is the record."""

    def report(_: int) -> None:
        with contextlib.suppress(StatusError):
            store.unit_progress(key, count_done(plan, key))

    return TaskTicker(report)


def _run(store: RedisStatusStore, plan: StudyPlan, key: UnitKey, hostname: str) -> UnitOutcome:
    """Run the unit; any exception but a status-store one (retried by Celery) is the unit's recorded failure."""
    try:
        # A redelivered unit must not race the first copy's task: the task dies with this worker process.
        guard = task_guard()
        guard.start()
        watch_tasks(guard)
        ticker = _progress(store, plan, key)
        try:
            return run_unit(plan, key, should_stop=_stop_checker(store, hostname), on_task=ticker)
        finally:
            ticker.close()  # its timer writes nothing after the unit's outcome
    except StatusError:
        raise
    except SystemExit:  # the pool process is stopped (billiard turns SIGTERM into SystemExit): give it back
        with contextlib.suppress(StatusError):
            store.unit_given_back(key, count_done(plan, key))  # its done-markers stay counted
        raise
    except Exception as exc:
        log.exception("unit %s of %s failed", key.to_id(), plan.workspace)
        return unit_failure(plan, key, f"internal error: {type(exc).__name__}: {exc}")
