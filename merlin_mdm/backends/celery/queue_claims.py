"""One worker group per queue (``merlin.resources.overlap: false``), even for two `run-workers` started at once.

A `run-workers` looks for the workers that consume its queues: those that answer Celery's broadcast and those that
beat (:mod:`~merlin_mdm.backends.celery.liveness`). Its own workers do neither for the seconds they take to start,
so two commands started within those seconds both found the queues free (an outside probe saw two groups start
0.5 s apart). Each command therefore first claims its queues on the broker, atomically (``SET NX``), for
``CLAIM_SECONDS``: longer than workers take to start, after which their beats speak for them. The claim is given up
when the command ends. A claim names its command's process (:func:`~merlin_mdm.backends.celery.liveness.
process_token`): one whose command was killed (SIGKILL gives up nothing) is taken over at once on its machine,
where it refused a new `run-workers` for up to ``CLAIM_SECONDS``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from merlin_mdm.backends.celery.liveness import live_worker_entries, process_gone, process_token
from merlin_mdm.backends.celery.workers import WorkerCommand, active_queues
from merlin_mdm.config import AppConfig
from merlin_mdm.errors import UsageError

__all__ = ["CLAIM_SECONDS", "claim_queues"]

CLAIM_SECONDS = 60
_PREFIX = "mdm:claim:"
# KEYS: claim   ARGV: the claim seen, the new claim, seconds: replace the claim only if it is still the one seen
_REPLACE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""


def claim_queues(config: AppConfig, commands: Sequence[WorkerCommand], in_allocation: bool,
                 spec: str = "") -> Callable[[], None]:
    """Claim the queues of ``commands`` (worker groups of ``spec``) for their groups; returns what gives the claims
    up.

    In an allocation the same worker group of the same spec may already consume them (more of the same workers,
    another job).

    Raises:
        UsageError: another worker group consumes, or is starting on, one of the queues.
    """
    client = config.broker.client(timeout=5.0, retry=False)
    groups = {c.name for c in commands}
    mine = json.dumps({"groups": sorted(groups), "host": socket.gethostname(), "pid": os.getpid(), "t": time.time(),
                       "proc": process_token(), "spec": spec or None})
    taken: list[str] = []

    def give_up() -> None:
        for queue in taken:
            if client.get(_PREFIX + queue) in (mine, mine.encode()):
                client.delete(_PREFIX + queue)
        client.close()

    try:
        for queue in sorted({q for c in commands for q in c.queues}):
            if client.set(_PREFIX + queue, mine, nx=True, ex=CLAIM_SECONDS) or _take_over(client, queue, mine):
                taken.append(queue)
                continue
            holder = _holder(client.get(_PREFIX + queue))
            others = holder.get("groups", [])
            if not (in_allocation and groups & set(others) and holder.get("spec") in (None, spec or None)):
                raise UsageError(f"queue {queue} is being taken by worker group(s) {', '.join(others)} of "
                                 f"{_whose(holder.get('spec'))} (run-workers pid {holder.get('pid')} on "
                                 f"{holder.get('host')}, {_started(holder)}), and merlin.resources.overlap is "
                                 f"false: {_what_to_do(holder.get('spec'))}")
        _refuse_consumed(config, commands, in_allocation, spec)
    except BaseException:
        give_up()
        raise
    return give_up


def _whose(spec: Any) -> str:
    return f"spec {spec}" if spec else "a spec that did not say which (started by hand, or by an older version)"


def _what_to_do(spec: Any) -> str:
    stop = f"`merlin-mdm stop-workers --spec {spec}`" if spec else "`merlin-mdm stop-workers --queues QUEUE`"
    return (f"stop that group first ({stop}, if it is yours and its work can wait), give your steps other "
            "task_queue names, or set merlin.resources.overlap: true to share the queue (its workers then run any "
            "study's messages on it)")


def _take_over(client: Any, queue: str, mine: str) -> bool:
    """Replace the claim on ``queue`` when the command that made it has ended (known on its own machine only)."""
    raw = client.get(_PREFIX + queue)
    proc = _holder(raw).get("proc")
    if raw is None or not isinstance(proc, str) or not process_gone(proc):
        return False
    return bool(client.eval(_REPLACE, 1, _PREFIX + queue, raw, mine, CLAIM_SECONDS))


def _started(holder: Mapping[str, Any]) -> str:
    """When the claim's holder started: it may hold the queues for as long as its workers run."""
    try:
        age = max(0.0, time.time() - float(holder["t"]))
    except (KeyError, TypeError, ValueError):
        return "started before"
    return "started moments ago" if age < 10 else f"started {age:.0f} s ago"


def _holder(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _refuse_consumed(config: AppConfig, commands: Sequence[WorkerCommand], in_allocation: bool, spec: str) -> None:
    """Workers that answer or beat on one of the queues, other than more of the same groups (of the same spec) in
    allocations."""
    same = tuple(f"{c.name}." for c in commands) if in_allocation else ()
    answering = active_queues(config)
    beats = live_worker_entries(config)
    workers = {**{w: list(e.get("queues", [])) for w, e in beats.items()}, **answering}

    def ours(worker: str) -> bool:
        return bool(same) and worker.startswith(same) and beats.get(worker, {}).get("spec") in (None, spec or None)

    busy = {q: w for w, qs in workers.items() if not ours(w) for q in qs}
    taken = sorted({q for c in commands for q in c.queues if q in busy})
    if taken:
        who = busy[taken[0]]
        beat = beats.get(who, {})
        quiet = "" if who in answering else (": it answers no broadcast but beat within the last 30 s (it is "
                                             "stopping, or was killed moments ago on another machine; then try "
                                             "again in 30 s)")
        parent = f", run-workers pid {beat['parent']}" if f".{beat.get('parent')}@" in who else ""  # not srun's
        raise UsageError(f"queue(s) {', '.join(taken)} already have a consumer ({who}, worker group of "
                         f"{_whose(beat.get('spec'))}{parent}{quiet}) and merlin.resources.overlap is false: "
                         f"{_what_to_do(beat.get('spec'))}")
