"""A small pool of forked worker processes, one unit at a time each, with explicit liveness and shutdown.

Why not multiprocessing.Pool: a job whose worker dies stays in Pool's cache forever (close()+join() hang),
and terminate() waits without a timeout. Here every worker has its own pipe, its sentinel tells the scheduler
when it dies, and shutdown escalates from a request to SIGTERM to SIGKILL.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from merlin_mdm.backends.execution import kill_current_group, run_unit, unit_failure, watch_tasks
from merlin_mdm.backends.progress import TICK_SECONDS, TaskTicker
from merlin_mdm.backends.slots import SLOTS_VARIABLE
from merlin_mdm.backends.task_guard import task_guard
from merlin_mdm.backends.task_process import TERM_WINDOW, kill_group
from merlin_mdm.signals import parent_death_signal
from merlin_mdm.status.model import UnitOutcome
from merlin_mdm.study.plan import StudyPlan, UnitKey

__all__ = ["TICK_SECONDS", "Finished", "Lost", "TaskEnded", "WorkerPool"]


@dataclass(frozen=True)
class Finished:
    """A worker returned the outcome of ``key``."""

    key: UnitKey
    outcome: UnitOutcome


@dataclass(frozen=True)
class TaskEnded:
    """``n`` tasks of ``key`` ended; its worker goes on with the unit's next one (progress per sample)."""

    key: UnitKey
    n: int = 1


_TASK_ENDED = "task"  # what a worker sends, with a count, as tasks end (before the unit's outcome)


@dataclass(frozen=True)
class Lost:
    """The worker running ``key`` died (its process is gone; it has been replaced)."""

    key: UnitKey
    pid: int


def _worker_main(plan: StudyPlan, stop: Any, conn: Connection, slot: Any, parent: int) -> None:
    # Its own process group: a Ctrl-C or hangup meant for the runner does not reach the worker or its tasks;
    # the runner decides. The worker dies with its runner, and takes its running task with it.
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def on_term(signum: int, frame: object) -> None:
        kill_current_group()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    parent_death_signal(signal.SIGTERM, parent)
    # A worker SIGKILLed outright (with its runner, by the OOM killer) runs no handler: its guard kills the task
    # then, which kept running beside the copy a `restart` started (a probe's lines came out twice).
    guard = task_guard()
    guard.start()

    def watch(pgid: int) -> None:
        slot.value = pgid
        guard(pgid)

    watch_tasks(watch)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        instance, unit, slots = message
        key = UnitKey(instance, unit)
        os.environ[SLOTS_VARIABLE] = ",".join(map(str, slots))  # this process runs one unit at a time
        ticker = TaskTicker(lambda n: _send_quietly(conn, (_TASK_ENDED, n)))
        try:
            outcome = run_unit(plan, key, should_stop=stop.is_set, on_task=ticker)
        except Exception as exc:  # a bug, not bad input: record it as the unit's failure, keep the traceback
            traceback.print_exc()
            outcome = unit_failure(plan, key, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            ticker.close()  # its timer sends nothing after the outcome
        try:
            conn.send((key.instance, key.unit, outcome))
        except OSError:
            return


def _send_quietly(conn: Connection, message: object) -> None:
    """Progress is best effort: a runner gone is noticed at the worker's next receive."""
    with contextlib.suppress(OSError):
        conn.send(message)


@dataclass
class _Worker:
    process: Any  # multiprocessing Process
    conn: Connection
    slot: Any  # shared int: the process group of the task the worker runs now (0 when none)
    current: UnitKey | None = None


class WorkerPool:
    """``size`` forked workers that run units of ``plan``."""

    def __init__(self, plan: StudyPlan, size: int):
        self.ctx = mp.get_context("fork")
        self.plan = plan
        self.stop = self.ctx.Event()
        self.workers: list[_Worker] = [self._spawn() for _ in range(size)]

    def _spawn(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        slot = self.ctx.RawValue("i", 0)
        process = self.ctx.Process(target=_worker_main, args=(self.plan, self.stop, child, slot, os.getpid()),
                                   daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent, slot)

    def idle(self) -> int:
        """Workers with nothing to do."""
        return sum(1 for w in self.workers if w.current is None)

    def busy(self) -> int:
        """Workers running a unit."""
        return len(self.workers) - self.idle()

    def submit(self, key: UnitKey, slots: tuple[int, ...] = (0,)) -> None:
        """Give ``key`` to an idle worker (call only when idle() > 0); its tasks hold ``slots``."""
        index = next(i for i, w in enumerate(self.workers) if w.current is None)
        if not self.workers[index].process.is_alive():  # died while idle: replace it first
            self.workers[index].conn.close()
            self.workers[index] = self._spawn()
        worker = self.workers[index]
        worker.current = key
        worker.conn.send((key.instance, key.unit, slots))

    def next_event(self, timeout: float | None = None) -> list[Finished | TaskEnded | Lost]:
        """Wait for results or deaths; a dead worker is replaced at once."""
        busy = [w for w in self.workers if w.current is not None]
        handles: dict[Any, _Worker] = {w.conn: w for w in busy} | {w.process.sentinel: w for w in busy}
        ready = {id(handles[h]): handles[h] for h in wait(list(handles), timeout)}  # a worker can show twice
        return [self._read(worker) for worker in ready.values()]

    def _read(self, worker: _Worker) -> Finished | TaskEnded | Lost:
        key = worker.current
        assert key is not None
        try:
            if worker.conn.poll():
                message = worker.conn.recv()
                if message[0] == _TASK_ENDED:
                    return TaskEnded(key, message[1])
                instance, unit, outcome = message
                worker.current = None
                return Finished(UnitKey(instance, unit), outcome)
        except (EOFError, OSError):
            pass
        worker.process.join(timeout=5)
        if worker.slot.value:  # the task the dead worker was running must not outlive it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.slot.value, signal.SIGKILL)
        pid = worker.process.pid or 0
        worker.conn.close()
        worker.current = None
        self.workers[self.workers.index(worker)] = self._spawn()
        return Lost(key, pid)

    def shutdown(self, interrupt: bool = False, grace: float = 3.0) -> None:
        """Stop every worker: ask (or, when interrupted, SIGTERM so running tasks are stopped), then SIGKILL.

        An interrupted worker gives its task up to ``TERM_WINDOW`` s between SIGTERM and SIGKILL; it is waited
        for that long on top of ``grace``.
        """
        if interrupt:
            self.stop.set()
        for worker in self.workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
            if interrupt and worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + grace + (TERM_WINDOW if interrupt else 0.0)
        for worker in self.workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=grace)
                if worker.slot.value:
                    kill_group(worker.slot.value)
            worker.conn.close()

    def request_stop(self) -> None:
        """Tell running units to report their remaining tasks as not run."""
        self.stop.set()


