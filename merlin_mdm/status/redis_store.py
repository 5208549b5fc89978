"""The status store of the distributed backend: a few Redis hashes per study, updated by Lua scripts.

Each script is atomic, so a unit's outcome, the per-step counters and the dependency counts of its children
change together or not at all, and a redelivered message (a unit recorded twice) changes nothing. Reading a
study costs O(steps): one hash of counters plus the first failures of each step.

Keys, all under ``mdm:<sha1(workspace)[:16]>:``:
    meta      hash: name, workspace, state, message, updated, units_left, fail_total, stop, stop_kind, steps
    steps     hash: ``<step>|<counter>`` -> value (queued, running, ..., restarts, started, ended, n_failures,
              run_tasks, run_seconds, run_sq: the run times of the units that ran to their end)
    ustate    hash: unit id -> r (running) | d (done, every task finished) | x (done, not every task finished)
    attempts  hash: unit id -> deliveries seen
    partial   hash: unit id -> tasks of a unit not yet recorded counted finished (their done-markers
              exist: counted by a requeue, or reported by the running unit's worker as they end)
    fail:<step> list: the first failures (JSON)
    runs      hash: unit id -> "<tasks> <seconds>" of a recorded unit that ran to its end (a reset that queues
              units again sums the run times of those that stay recorded from it)
    beat      hash: unit id -> when the process running it last said it lives (at its start, then every
              few seconds: :mod:`merlin_mdm.backends.celery.liveness`); read for the units in flight only

Which unit may run when (dependency counting) is not stored here: see
:mod:`merlin_mdm.backends.celery.dependencies`, which keeps its own keys under the same prefix.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from merlin_mdm.errors import StatusError, StatusRecordLost, out_of_memory_hint
from merlin_mdm.status.model import StepSummary, StudySnapshot, TaskFailure, TaskState, UnitOutcome
from merlin_mdm.status.states import StopKind, StudyState, after_raise, final_state, stop_message
from merlin_mdm.status.store import StatusStore
from merlin_mdm.study.plan import StudyPlan, UnitKey

__all__ = ["RedisStatusStore", "study_prefix"]

MAX_FAILURES_SHOWN = 20
# failures kept per step, for `detailed-status` (beyond them a failed task shows as unknown there); `status`
# shows the first MAX_FAILURES_SHOWN. It kept only those, and detailed-status called the 21st failed task unknown.
MAX_FAILURES_KEPT = 100_000

# KEYS: meta steps ustate attempts partial beat
# ARGV: unit step n when running purged gone(token of a holder known gone, or '') every missed beat(interval token)
_START = """
local s = redis.call('HGET', KEYS[3], ARGV[1])
if s == 'd' or s == 'x' then return -1 end
if s == 'r' and tonumber(ARGV[9]) > 0 then
  -- a running copy whose process still beats holds the unit (a redelivery after the visibility timeout)
  local b = redis.call('HGET', KEYS[6], ARGV[1])
  if b then
    local t, every, token = string.match(b, '^(%S+)%s*(%S*)%s*(%S*)')
    every = tonumber(every) or tonumber(ARGV[8])
    if tonumber(t) and tonumber(ARGV[4]) - tonumber(t) <= every * tonumber(ARGV[9]) and token ~= ARGV[7] then
      return -2
    end
  end
end
local a = redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
if s ~= 'r' then
  local left = tonumber(ARGV[3]) - tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0')
  redis.call('HINCRBY', KEYS[2], ARGV[2] .. '|queued', 0 - left)
  redis.call('HINCRBY', KEYS[2], ARGV[2] .. '|running', left)
  redis.call('HSET', KEYS[3], ARGV[1], 'r')
end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[6], ARGV[1], ARGV[4] .. ' ' .. ARGV[10])
else redis.call('HSET', KEYS[6], ARGV[1], ARGV[4]) end
local t0 = redis.call('HGET', KEYS[2], ARGV[2] .. '|started')
if not t0 or tonumber(t0) > tonumber(ARGV[4]) then redis.call('HSET', KEYS[2], ARGV[2] .. '|started', ARGV[4]) end
local st = redis.call('HGET', KEYS[1], 'state')
-- a purged study stays so until `restart`, even while the units its workers held run to their end
if st ~= ARGV[5] and st ~= ARGV[6] then redis.call('HSET', KEYS[1], 'state', ARGV[5], 'message', '') end
return a
"""

# KEYS: meta steps ustate faillist partial runs raised
# ARGV: unit step n finished failed not_run restarts started ended stop_kind stop_reason nfail
#       failure_json*nfail max_failures_shown run_tasks run_seconds run_sq (these three '' when not timed)
#       raised(1|0: a task exited with $(MERLIN_RAISE_ERROR))
_FINISH = """
local unit, step, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local s = redis.call('HGET', KEYS[3], unit)
if s == 'd' or s == 'x' then return -1 end
local old = 'queued'
if s == 'r' then old = 'running' end
local fin, failed, notrun = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local p = tonumber(redis.call('HGET', KEYS[5], unit) or '0')
redis.call('HDEL', KEYS[5], unit)
redis.call('HINCRBY', KEYS[2], step .. '|' .. old, p - n)
redis.call('HINCRBY', KEYS[2], step .. '|finished', fin - p)
redis.call('HINCRBY', KEYS[2], step .. '|failed', failed)
redis.call('HINCRBY', KEYS[2], step .. '|not_run', notrun)
redis.call('HINCRBY', KEYS[2], step .. '|restarts', tonumber(ARGV[7]))
local ok = (failed == 0 and notrun == 0)
if ok then redis.call('HSET', KEYS[3], unit, 'd') else redis.call('HSET', KEYS[3], unit, 'x') end
if tonumber(ARGV[8]) > 0 then
  local t0 = redis.call('HGET', KEYS[2], step .. '|started')
  if not t0 or tonumber(t0) > tonumber(ARGV[8]) then redis.call('HSET', KEYS[2], step .. '|started', ARGV[8]) end
end
if tonumber(ARGV[9]) > 0 then
  local t1 = redis.call('HGET', KEYS[2], step .. '|ended')
  if not t1 or tonumber(t1) < tonumber(ARGV[9]) then redis.call('HSET', KEYS[2], step .. '|ended', ARGV[9]) end
end
if ARGV[10] ~= '' then
  redis.call('HSETNX', KEYS[1], 'stop_kind', ARGV[10])
  redis.call('HSETNX', KEYS[1], 'stop', ARGV[11])
end
local nfail = tonumber(ARGV[12])
for i = 1, nfail do
  if redis.call('LLEN', KEYS[4]) < tonumber(ARGV[13 + nfail]) then redis.call('RPUSH', KEYS[4], ARGV[12 + i]) end
end
redis.call('HINCRBY', KEYS[2], step .. '|n_failures', nfail)
if ARGV[14 + nfail] ~= '' then
  redis.call('HINCRBY', KEYS[2], step .. '|run_tasks', tonumber(ARGV[14 + nfail]))
  redis.call('HINCRBYFLOAT', KEYS[2], step .. '|run_seconds', ARGV[15 + nfail])
  redis.call('HINCRBYFLOAT', KEYS[2], step .. '|run_sq', ARGV[16 + nfail])
  redis.call('HSET', KEYS[6], unit, ARGV[14 + nfail] .. ' ' .. ARGV[15 + nfail])
end
if ARGV[17 + nfail] == '1' then redis.call('SADD', KEYS[7], unit) end
redis.call('HINCRBY', KEYS[1], 'fail_total', failed + notrun)
return redis.call('HINCRBY', KEYS[1], 'units_left', -1)
"""


# Queue a running (or queued) unit with ``done`` of its tasks counted finished; a given-back delivery does not
# count as a death. KEYS: steps ustate attempts partial   ARGV: unit step n done given_back(0|1)
_REQUEUE = """
local unit, step, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local s = redis.call('HGET', KEYS[2], unit)
if s == 'd' or s == 'x' then return 0 end
local done = math.min(n, tonumber(ARGV[4]))
local p = tonumber(redis.call('HGET', KEYS[4], unit) or '0')
if s == 'r' then
  redis.call('HDEL', KEYS[2], unit)
  redis.call('HINCRBY', KEYS[1], step .. '|running', p - n)
  redis.call('HINCRBY', KEYS[1], step .. '|queued', n - p)
  if ARGV[5] == '1' and redis.call('HINCRBY', KEYS[3], unit, -1) < 0 then redis.call('HSET', KEYS[3], unit, 0) end
elseif ARGV[5] == '1' then
  return 0
end
redis.call('HINCRBY', KEYS[1], step .. '|queued', p - done)
redis.call('HINCRBY', KEYS[1], step .. '|finished', done - p)
if done > 0 then redis.call('HSET', KEYS[4], unit, done) else redis.call('HDEL', KEYS[4], unit) end
return 1
"""


# A unit's worker reports how many of its tasks have a done-marker now; counted once however often it is told
# (a redelivery, a late report): only a count above the one held moves tasks to finished.
# KEYS: steps ustate partial   ARGV: unit step n done
_PROGRESS = """
local unit, step = ARGV[1], ARGV[2]
local s = redis.call('HGET', KEYS[2], unit)
if s == 'd' or s == 'x' then return 0 end
local p = tonumber(redis.call('HGET', KEYS[3], unit) or '0')
local done = math.min(tonumber(ARGV[3]), tonumber(ARGV[4]))
if done <= p then return 0 end
local old = 'queued'
if s == 'r' then old = 'running' end
redis.call('HINCRBY', KEYS[1], step .. '|' .. old, p - done)
redis.call('HINCRBY', KEYS[1], step .. '|finished', done - p)
redis.call('HSET', KEYS[3], unit, done)
return done - p
"""


def study_prefix(workspace: str) -> str:
    """The key prefix of a study: one per workspace path."""
    return "mdm:" + hashlib.sha1(workspace.encode("utf-8")).hexdigest()[:16] + ":"


def _run_args(outcome: UnitOutcome) -> list[str]:
    """The _FINISH arguments for the unit's run time: tasks, seconds, seconds squared over tasks ('' untimed)."""
    if outcome.run_time is None:
        return ["", "", ""]
    tasks, seconds = outcome.run_time
    return [str(tasks), repr(seconds), repr(seconds * seconds / tasks)]


def _run_sums(plan: StudyPlan, runs: Mapping[UnitKey, str]) -> dict[str, Any]:
    """The steps hash's run-time fields for the recorded runs ``runs`` (unit -> "<tasks> <seconds>")."""
    sums: dict[str, list[float]] = {}
    for key, value in runs.items():
        tasks, seconds = (float(x) for x in value.split())
        entry = sums.setdefault(plan.instances[key.instance].step, [0.0, 0.0, 0.0])
        entry[0] += tasks
        entry[1] += seconds
        entry[2] += seconds * seconds / tasks
    fields: dict[str, Any] = {}
    for step, (tasks, seconds, sq) in sums.items():
        fields.update({f"{step}|run_tasks": int(tasks), f"{step}|run_seconds": repr(seconds),
                       f"{step}|run_sq": repr(sq)})
    return fields


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError,)


class RedisStatusStore(StatusStore):
    """StatusStore in Redis, shared by every worker and by `status` on any host that reaches the server."""

    def __init__(self, client: Any, workspace: str, plan: StudyPlan | None = None):
        self.r = client
        self.workspace = workspace
        self.plan = plan
        p = study_prefix(workspace)
        self.k_meta, self.k_steps = p + "meta", p + "steps"
        self.k_ustate, self.k_attempts = p + "ustate", p + "attempts"
        self.k_partial, self.k_runs, self.k_beat = p + "partial", p + "runs", p + "beat"
        self.k_raised = p + "raised"  # set: units recorded with a task that exited with $(MERLIN_RAISE_ERROR)
        self.prefix = p
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._requeue = client.register_script(_REQUEUE)
        self._progress = client.register_script(_PROGRESS)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _redis_errors() as exc:
            hint = (" (a server that is stopped, frozen or overloaded)" if "Timeout" in type(exc).__name__ else
                    out_of_memory_hint(str(exc)))
            raise StatusError(f"status store at Redis: {exc}{hint}") from None

    def _plan(self) -> StudyPlan:
        if self.plan is None:
            from merlin_mdm.study.workspace import Workspace

            self.plan = Workspace(Path(self.workspace)).load_plan()
        return self.plan

    # -- writes -----------------------------------------------------------------------------------------------

    def register(self, plan: StudyPlan) -> None:
        self.plan = plan
        if self._call(self.r.hexists, self.k_meta, "name"):
            return
        self._register(plan, set(), {})

    def _register(self, plan: StudyPlan, done: set[UnitKey], runs: Mapping[UnitKey, str]) -> None:
        """Counters for ``plan`` with the units in ``done`` already finished, every other one queued, and the
        run times in ``runs`` (unit -> "<tasks> <seconds>", units of ``done``) summed per step."""
        steps: dict[str, list[int]] = {}
        for inst in plan.instances:
            entry = steps.setdefault(inst.step, [0, 0, 0])
            entry[0] += 1
            entry[1] += plan.n_tasks(inst.index)
        for key in done:
            steps[plan.instances[key.instance].step][2] += len(plan.unit_samples(key))
        fields: dict[str, Any] = {}
        for step, (n_inst, total, finished) in steps.items():
            fields.update({f"{step}|instances": n_inst, f"{step}|total": total, f"{step}|queued": total - finished,
                           f"{step}|finished": finished})
        fields.update(_run_sums(plan, runs))
        n_units = sum(plan.n_units(i.index) for i in plan.instances) - len(done)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.k_steps, mapping=fields)
        pipe.hset(self.k_meta, mapping={"name": plan.name, "workspace": plan.workspace,
                                        "state": StudyState.CREATED.value, "message": "", "units_left": n_units,
                                        "fail_total": 0, "steps": json.dumps(list(steps)), "updated": time.time()})
        self._call(pipe.execute)

    def start(self, key: UnitKey, host: str, when: float, held: tuple[float, int, str] | None = None,
              beat: str = "") -> int:
        """Mark ``key`` running; returns the deliveries seen so far, -1 when it is already recorded, and -2 (nothing
        written) when ``held`` = (default beat interval, beats missed before a process counts as gone, the process
        token of a holder known gone or '') says that another copy of it runs in a process that still beats.

        ``beat`` ("interval token" of the process starting it) goes into the unit's first beat, written here: a copy
        delivered before that process's own first heartbeat was not held back (a beat with no token)."""
        plan = self._plan()
        step = plan.instances[key.instance].step
        keys = [self.k_meta, self.k_steps, self.k_ustate, self.k_attempts, self.k_partial, self.k_beat]
        every, missed, gone = held if held is not None else (0.0, 0, "")
        return int(self._call(self._start, keys=keys, args=[key.to_id(), step, len(plan.unit_samples(key)), when,
                                                                StudyState.RUNNING.value, StudyState.PURGED.value,
                                                                gone, every, missed, beat]))

    def unit_beat(self, key: UnitKey) -> str:
        """The last beat of ``key`` ('' when none)."""
        return str(self._call(self.r.hget, self.k_beat, key.to_id()) or "")

    def unit_started(self, key: UnitKey, host: str, when: float) -> None:
        self.start(key, host, when)

    def unit_given_back(self, key: UnitKey, done: int = 0) -> bool:
        """A stopped worker gives ``key`` back: queued again with ``done`` tasks finished (their done-markers),
        and the delivery does not count as a death."""
        return bool(self._call(self._requeue_one, self.r, key, done, True))

    def requeue(self, finished: Mapping[UnitKey, int]) -> None:
        """Queued again, each unit with its count of tasks finished (units recorded done stay so)."""
        pipe = self.r.pipeline(transaction=False)
        for key, done in finished.items():
            self._requeue_one(pipe, key, done, False)
        self._call(pipe.execute)

    def _requeue_one(self, client: Any, key: UnitKey, done: int, given_back: bool) -> Any:
        plan = self._plan()
        keys = [self.k_steps, self.k_ustate, self.k_attempts, self.k_partial]
        args = [key.to_id(), plan.instances[key.instance].step, len(plan.unit_samples(key)), done, int(given_back)]
        return self._requeue(keys=keys, args=args, client=client)

    def unit_progress(self, key: UnitKey, done: int) -> None:
        """``done`` tasks of the unit ``key``, not yet recorded, have their done-marker (progress per sample)."""
        plan = self._plan()
        args = [key.to_id(), plan.instances[key.instance].step, len(plan.unit_samples(key)), done]
        self._call(self._progress, keys=[self.k_steps, self.k_ustate, self.k_partial], args=args)

    def unit_restarted(self, key: UnitKey, reason: str) -> None:
        """Nothing to do: a redelivered unit stays `running` and :meth:`start` counts its deliveries."""

    def record(self, key: UnitKey, outcome: UnitOutcome) -> int:
        """Record ``key``'s outcome atomically; returns the units left in the study, -1 when already recorded."""
        plan = self._plan()
        inst = plan.instances[key.instance]
        stop_reason = stop_message(outcome.stop, inst.name) if outcome.stop else ""
        failures = [json.dumps([inst.name, f.sample, f.state.value, f.rc, f.reason, f.log])
                    for f in outcome.failures]
        args: list[Any] = [key.to_id(), inst.step, len(plan.unit_samples(key)), outcome.finished, outcome.failed,
                           outcome.not_run, outcome.restarts, outcome.started, outcome.ended,
                           outcome.stop or "", stop_reason, len(failures), *failures, MAX_FAILURES_KEPT,
                           *_run_args(outcome), int(outcome.raised)]
        keys = [self.k_meta, self.k_steps, self.k_ustate, self.prefix + f"fail:{inst.step}", self.k_partial,
                self.k_runs, self.k_raised]
        left = int(self._call(self._finish, keys=keys, args=args))
        if left == 0:  # this call recorded the last unit
            self.finish_if_over()
        return left

    def finish_if_over(self) -> None:
        """Set the final state (:func:`final_state`) once every unit is recorded; idempotent."""
        fields = ("units_left", "stop_kind", "stop", "fail_total")
        left, kind, reason, failed = self._call(self.r.hmget, self.k_meta, fields)
        if left is None or int(left) > 0:
            return
        state, message = final_state(StopKind(kind) if kind else None, reason or "", int(failed or 0))
        self.set_state(state, message)

    def unit_ok(self, key: UnitKey) -> bool | None:
        """Whether ``key`` was recorded with every task finished; None when it is not recorded."""
        value = self._call(self.r.hget, self.k_ustate, key.to_id())
        return {"d": True, "x": False}.get(value) if value else None

    def unit_raised(self, key: UnitKey) -> bool:
        """Whether ``key`` was recorded with a task that exited with $(MERLIN_RAISE_ERROR)."""
        return bool(self._call(self.r.sismember, self.k_raised, key.to_id()))

    def unit_finished(self, key: UnitKey, outcome: UnitOutcome) -> bool:
        return self.record(key, outcome) >= 0

    def not_run_outcome(self, key: UnitKey, reason: str) -> UnitOutcome:
        """The outcome of a unit that will not run."""
        n = len(self._plan().unit_samples(key))
        return UnitOutcome(0, 0, n, failures=(TaskFailure(-1, TaskState.NOT_RUN, None, reason, ""),),
                           after_raise=after_raise(reason))

    def units_not_run(self, keys: Iterable[UnitKey], reason: str) -> None:
        for key in keys:
            self.record(key, self.not_run_outcome(key, reason))

    def state(self) -> StudyState:
        """The study's recorded state (one read)."""
        return StudyState.parse(self._call(self.r.hget, self.k_meta, "state"))

    def stop_reason(self) -> str | None:
        """Why the study was stopped (hard fail, stop workers), or None."""
        value = self._call(self.r.hget, self.k_meta, "stop")
        return str(value) if value else None

    def set_state(self, state: StudyState, message: str = "") -> None:
        self._call(self.r.hset, self.k_meta, mapping={"state": state, "message": message, "updated": time.time()})

    def finished_units(self) -> set[UnitKey]:
        states = self._call(self.r.hgetall, self.k_ustate)
        return {UnitKey.from_id(k) for k, v in states.items() if v == "d"}

    def beat(self, key: UnitKey, beat: str) -> None:
        """The process running ``key`` lives ("when interval"; a unit recorded meanwhile is not in flight, and its
        beat is not read)."""
        self._call(self.r.hset, self.k_beat, key.to_id(), beat)

    def unit_beats(self) -> dict[UnitKey, str]:
        """Each unit in flight, and its last beat ("when" at its start, then "when interval"; '' when none)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.k_ustate)
        pipe.hgetall(self.k_beat)
        states, beats = self._call(pipe.execute)
        return {UnitKey.from_id(k): str(beats.get(k, "")) for k, v in states.items() if v == "r"}

    def beats_not_ended(self) -> dict[UnitKey, str]:
        """The last beat of every unit not recorded ended: in flight, or not recorded at all (after the server
        lost the study's record, restarted empty, the units still running beat it back while nothing records them
        in flight). A unit recorded done keeps its last beat, which is not returned."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.k_ustate)
        pipe.hgetall(self.k_beat)
        states, beats = self._call(pipe.execute)
        return {UnitKey.from_id(k): str(v) for k, v in beats.items() if states.get(k, "r") == "r"}

    def record_lost(self) -> bool:
        """Whether the study's record is gone or incomplete (a server restarted without its data)."""
        return "steps" not in self._call(self.r.hgetall, self.k_meta)

    def units_in_flight(self) -> list[UnitKey]:
        """Units a worker took and nobody recorded yet (a dead worker's stay so until given back)."""
        states = self._call(self.r.hgetall, self.k_ustate)
        return sorted((UnitKey.from_id(k) for k, v in states.items() if v == "r"),
                      key=lambda k: (k.instance, k.unit))

    def reset_unfinished(self, lost: Iterable[UnitKey] = (), found: Iterable[UnitKey] = ()) -> list[UnitKey]:
        """Queue again every unit with a task not finished, and the ``lost`` ones (recorded finished, but a
        done-marker is gone); the other units whose every task finished stay recorded, and the ``found`` ones
        (every done-marker on disk, not recorded finished) are recorded finished.

        A message for a unit that stays recorded runs nothing: it only counts the unit at its children again.
        """
        plan = self._plan()
        done = (self.finished_units() | set(found)) - set(lost)
        keys = [k for k in plan.units() if k not in done]
        runs = {UnitKey.from_id(k): v for k, v in self._call(self.r.hgetall, self.k_runs).items()}
        runs = {k: v for k, v in runs.items() if k in done}
        kept = self._history()
        stale = [self.k_meta, self.k_steps, self.k_attempts, self.k_partial, self.k_runs, self.k_beat, self.k_raised,
                 *(self.prefix + f"fail:{s}" for s in {i.step for i in plan.instances})]
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(*stale)
        if keys:
            pipe.hdel(self.k_ustate, *(k.to_id() for k in keys))
        if found := set(found) & done:  # recorded as units recorded done are: their messages then run nothing
            pipe.hset(self.k_ustate, mapping={k.to_id(): "d" for k in found})
        if runs:
            pipe.hset(self.k_runs, mapping={k.to_id(): v for k, v in runs.items()})
        self._call(pipe.execute)
        self._register(plan, done, runs)
        if kept:
            self._call(self.r.hset, self.k_steps, mapping=kept)
        return keys

    def _history(self) -> dict[str, Any]:
        """What a reset keeps of each step, as the local store does: its retries so far, and when it first started
        and last ended (its elapsed time spans the stop)."""
        counters = self._call(self.r.hgetall, self.k_steps)
        return {name: value for name, value in counters.items() if name.endswith(("|restarts", "|started", "|ended"))}

    def units_left(self) -> int:
        """Units not yet recorded (0 when the study is over)."""
        value = self._call(self.r.hget, self.k_meta, "units_left")
        return int(value) if value is not None else 0

    # -- reads ------------------------------------------------------------------------------------------------

    def snapshot(self, every_failure: bool = False) -> StudySnapshot:
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.k_meta)
        pipe.hgetall(self.k_steps)
        meta, counters = self._call(pipe.execute)
        if not meta:
            raise StatusRecordLost(f"Redis holds no status for {self.workspace}; was it queued on this broker? If "
                                   "the server lost it (restarted without its data), `merlin-mdm restart "
                                   f"{self.workspace}` rebuilds it from the done-markers")
        if "steps" not in meta or "name" not in meta:  # workers wrote to a record the server had lost
            raise StatusRecordLost(f"the status of {self.workspace} in Redis is incomplete (was the server "
                                   f"restarted without --persist?): `merlin-mdm restart {self.workspace}` rebuilds "
                                   "it from the done-markers once no unit of the study runs (it says which still do)")
        step_names = json.loads(meta.get("steps", "[]"))
        pipe = self.r.pipeline(transaction=False)
        for step in step_names:
            pipe.lrange(self.prefix + f"fail:{step}", 0, -1 if every_failure else MAX_FAILURES_SHOWN - 1)
        fail_lists = self._call(pipe.execute)
        steps = [self._summary(step, counters, fails) for step, fails in zip(step_names, fail_lists, strict=True)]
        return StudySnapshot(meta.get("name", ""), meta.get("workspace", ""), StudyState.parse(meta.get("state")),
                             meta.get("message", ""), tuple(steps))

    @staticmethod
    def _summary(step: str, counters: dict[str, str], fails: list[str]) -> StepSummary:
        def num(name: str) -> int:
            return int(float(counters.get(f"{step}|{name}", 0)))

        def opt(name: str) -> float | None:
            value = counters.get(f"{step}|{name}")
            return float(value) if value is not None else None

        counts = {s.value: num(s.value) for s in TaskState}
        failures = []
        for text in fails:
            name, sample, state, rc, reason, log = json.loads(text)
            failures.append((name, TaskFailure(sample, TaskState(state), rc, reason, log)))
        return StepSummary(step, num("instances"), num("total"), counts, num("restarts"), opt("started"),
                           opt("ended"), tuple(failures), num("n_failures"), num("run_tasks"),
                           opt("run_seconds") or 0.0, opt("run_sq") or 0.0)

    def forget(self) -> int:
        """Delete every key of the study (its record and its dependency counts); returns how many went.

        Nothing else deletes them: a shared server keeps every study queued on it until this is asked."""
        deleted = 0
        batch: list[str] = []
        for key in self._call(self.r.scan_iter, match=self.prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(self._call(self.r.unlink, *batch))
                batch = []
        if batch:
            deleted += int(self._call(self.r.unlink, *batch))
        return deleted

    def close(self) -> None:
        self.r.close()
