"""Dependency counting in Redis: a child unit is released the moment its last parent unit is counted.

The Redis counterpart of :class:`merlin_mdm.backends.dependencies.DependencyTracker`, shared by every worker.
It decides which unit may run when; what happened to each task is the status store's business
(:class:`merlin_mdm.status.redis_store.RedisStatusStore`). Counting a parent is idempotent (the ``counted``
set), so a worker that died between recording a unit and counting it is repaired by the redelivery.

Keys, under the study's prefix (:func:`merlin_mdm.status.redis_store.study_prefix`):
    counted   set:  parent unit ids already counted at their children
    arrived   hash: child unit id -> parent units counted so far
    blocked   hash: child unit id -> why it must not run (a parent did not finish every task)
    ready     set:  released children not yet handed to the broker (re-sent when a message is redelivered)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from merlin_mdm.errors import StatusError
from merlin_mdm.status.redis_store import study_prefix
from merlin_mdm.study.plan import StudyPlan, UnitKey

__all__ = ["ChildSpec", "RedisDependencies", "Released"]

ChildSpec = tuple[str, int, bool, bool]  # (child unit id, parent units it waits for, aligned edge, funnel edge)
Released = list[tuple[UnitKey, str]]  # children released, each with why it must not run ('' when it may run)

# KEYS: counted arrived blocked ready
# ARGV: parent ok(1|0) raised(1|0) parent_name (child_id needed aligned funnel)*
# (the blocking rule of merlin_mdm.backends.dependencies.blocked_by, with its words)
_COUNT = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return {} end
local ok = ARGV[2] == '1'
local raised = ARGV[3] == '1'
local out = {}
local i = 5
while i <= #ARGV do
  local child, needed, aligned, funnel = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  if (not ok) and aligned == '0' then
    redis.call('HSETNX', KEYS[3], child, 'parent ' .. ARGV[4] .. ' did not finish every task')
  elseif raised and funnel == '0' then
    redis.call('HSETNX', KEYS[3], child, 'parent ' .. ARGV[4] .. ' raised an error ($(MERLIN_RAISE_ERROR))')
  end
  if redis.call('HINCRBY', KEYS[2], child, 1) == needed then
    redis.call('SADD', KEYS[4], child)
    table.insert(out, child)
    table.insert(out, redis.call('HGET', KEYS[3], child) or '')
  end
  i = i + 4
end
return out
"""


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError,)


class RedisDependencies:
    """Counts recorded parent units at their children, in Redis, for every worker of a study."""

    def __init__(self, client: Any, plan: StudyPlan):
        self.r = client
        self.plan = plan
        p = study_prefix(plan.workspace)
        self.k_counted, self.k_arrived, self.k_blocked, self.k_ready = (
            p + "counted", p + "arrived", p + "blocked", p + "ready")
        self._count = client.register_script(_COUNT)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _redis_errors() as exc:
            raise StatusError(f"dependency counts at Redis: {exc}") from None

    def children_of(self, key: UnitKey) -> list[ChildSpec]:
        """The child units of ``key`` with how many parent units each waits for."""
        plan = self.plan
        out: list[ChildSpec] = []
        for edge in plan.children()[key.instance]:
            child = edge.parent
            if edge.aligned:  # a child sized like its parents waits for one unit of each aligned one
                out.extend((UnitKey(child, u).to_id(), plan.n_parent_units(UnitKey(child, u)), True, False)
                           for u in plan.aligned_units(child, key))
                continue
            units = range(plan.n_units(child))
            if any(e.aligned for e in plan.instances[child].parents):  # rare: a funnel and an aligned parent
                out.extend((UnitKey(child, u).to_id(), plan.n_parent_units(UnitKey(child, u)), False, edge.funnel)
                           for u in units)
            else:  # every unit waits for the same count: computed once, not once per child unit
                needed = plan.n_parent_units(UnitKey(child, 0))
                out.extend((UnitKey(child, u).to_id(), needed, False, edge.funnel) for u in units)
        return out

    def count(self, key: UnitKey, ok: bool, raised: bool = False) -> Released:
        """Count ``key`` (recorded; ``ok`` when its dependants may run, ``raised`` when a task exited with
        $(MERLIN_RAISE_ERROR)) at its children; returns those released now.

        Counting the same unit again releases nothing.
        """
        args: list[Any] = [key.to_id(), int(ok), int(raised), self.plan.instances[key.instance].name]
        for child, needed, aligned, funnel in self.children_of(key):
            args.extend((child, needed, int(aligned), int(funnel)))
        out = self._call(self._count, keys=[self.k_counted, self.k_arrived, self.k_blocked, self.k_ready],
                         args=args)
        return [(UnitKey.from_id(out[i]), out[i + 1]) for i in range(0, len(out), 2)]

    def mark_sent(self, keys: Sequence[UnitKey]) -> None:
        """Children handed to the broker: no need to re-send them on a redelivery."""
        if keys:
            self._call(self.r.srem, self.k_ready, *(k.to_id() for k in keys))

    def unsent_children(self, key: UnitKey) -> Released:
        """The children of ``key`` released but not yet handed to the broker, each with its blocked reason."""
        ids = [child for child, _, _, _ in self.children_of(key)]
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        pipe.smismember(self.k_ready, ids)
        pipe.hmget(self.k_blocked, ids)
        flags, reasons = self._call(pipe.execute)
        return [(UnitKey.from_id(c), r or "") for c, flag, r in zip(ids, flags, reasons, strict=True) if flag]

    def reset(self) -> None:
        """Forget every count (a restart counts again from the units that are queued anew)."""
        self._call(self.r.delete, self.k_counted, self.k_arrived, self.k_blocked, self.k_ready)
