"""`run-workers` inside a batch allocation: one Celery worker per node through the launcher, sized by
the allocation, stopped when the study is over or before the walltime runs out.

Walltime awareness has two halves. The supervisor (:class:`Supervisor`) asks its workers for a warm
shutdown ``margin`` seconds before the deadline. A worker that is handed a unit whose steps' walltime
would not fit before that moment (:func:`unit_fits`) gives the message back to the broker untouched
and shuts itself down; the next allocation takes it. Nothing is lost (messages are acknowledged late)
and nothing is done twice (done-markers and the status store's records).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from merlin_mdm.backends.celery.workers import COLD_STOP_SIGNAL, WorkerCommand
from merlin_mdm.backends.execution import walltime_seconds
from merlin_mdm.batch import Allocation, get_batch_system
from merlin_mdm.batch.base import deadline_from_env
from merlin_mdm.config import AppConfig
from merlin_mdm.errors import MerlinMdmError, StatusRecordLost
from merlin_mdm.launchers import DEFAULT_LAUNCHER
from merlin_mdm.launchers.per_node import per_node_prefix
from merlin_mdm.signals import kept_ignored, leave_hung_up_terminal
from merlin_mdm.spec import BatchConfig, Spec
from merlin_mdm.status.redis_store import RedisStatusStore
from merlin_mdm.status.states import TaskState
from merlin_mdm.study.plan import StudyPlan, UnitKey
from merlin_mdm.study.workspace import Workspace

__all__ = ["DEFAULT_MARGIN", "STUDY_OVER", "Supervisor", "allocation_commands", "allocation_deadline",
           "allocation_node", "broadcast_shutdown", "launcher_for", "study_is_over", "study_over_check", "unit_fits",
           "unit_misfit", "walltime_margin"]

DEFAULT_MARGIN = 60.0  # seconds kept free before the walltime: workers finish and hand back in it
STUDY_OVER = "nothing is left for them to run"  # the study is over, or (a worker group's) every step it serves


def walltime_margin(env: Mapping[str, str]) -> float:
    """The margin in force (MERLIN_MDM_WALLTIME_MARGIN seconds, else DEFAULT_MARGIN)."""
    try:
        return float(env["MERLIN_MDM_WALLTIME_MARGIN"])
    except (KeyError, ValueError):
        return DEFAULT_MARGIN


def unit_fits(plan: StudyPlan, key: UnitKey, env: Mapping[str, str], now: float) -> bool:
    """Whether unit ``key`` can finish before the allocation's deadline less the margin.

    A unit of a step without a walltime, or outside any allocation with a known deadline, always fits.
    """
    return unit_misfit(plan, key, env, now) is None


def unit_misfit(plan: StudyPlan, key: UnitKey, env: Mapping[str, str], now: float) -> str | None:
    """Why unit ``key`` cannot finish before the allocation's deadline less the margin (None when it can)."""
    deadline = deadline_from_env(env)
    per_task = walltime_seconds(plan.instances[key.instance].walltime)
    if deadline is None or per_task is None:
        return None
    need = per_task * len(plan.unit_samples(key))
    left = deadline - walltime_margin(env) - now
    if need <= left:
        return None
    return (f"unit {key.to_id()} of {plan.instances[key.instance].name} may need {need:.0f} s (walltime x "
            f"{len(plan.unit_samples(key))} task(s)), and this allocation has {max(left, 0):.0f} s left before its "
            f"walltime margin ({walltime_margin(env):.0f} s): given back for the next allocation")


def allocation_deadline(alloc: Allocation) -> float | None:
    """When ``alloc``'s walltime runs out: from our batch script's export, else from its scheduler."""
    return alloc.end if alloc.end is not None else get_batch_system(alloc.system).end_time(alloc.job_id)


def launcher_for(batch: BatchConfig, alloc: Allocation) -> str:
    """The launcher that spreads workers: the spec's, when its batch type is the allocation's scheduler.

    On LSF none (Merlin's choice): a worker under a `jsrun` holding every core and GPU would nest the steps' own
    `jsrun` under it, which jsrun refuses; the worker runs on the launch node and its steps' `jsrun` (or `srun`,
    `lsf-srun`) reach the compute nodes.
    """
    if alloc.system == "lsf":
        return "plain"
    if batch.type.partition("-")[0] == alloc.system:
        return str(batch.extra.get("launcher") or DEFAULT_LAUNCHER.get(batch.type, "plain"))
    return DEFAULT_LAUNCHER.get(alloc.system, "plain")


def allocation_commands(spec: Spec, commands: Sequence[WorkerCommand], alloc: Allocation) -> list[WorkerCommand]:
    """``commands`` rewritten to run once per node of ``alloc``, named after the job, sized by its cores."""
    workers = {w.name: w for w in spec.resources.workers}
    out = []
    for cmd in commands:
        worker = workers.get(cmd.name)
        batch = worker.batch if worker and worker.batch else spec.batch
        nodes = min(alloc.nodes, (worker.nodes if worker else None) or alloc.nodes)
        node = allocation_node(cmd, alloc.job_id)
        argv = [node if a == cmd.node else a for a in cmd.argv]
        if alloc.cores_per_node and not any(a in ("-c", "--concurrency") or a.startswith("--concurrency=")
                                            for a in argv):
            argv += ["-c", str(alloc.cores_per_node)]
        out.append(dataclasses.replace(cmd, argv=(*shlex.split(_worker_prefix(spec, batch, alloc, nodes)), *argv),
                                       node=node))
    return out


def _worker_prefix(spec: Spec, batch: BatchConfig, alloc: Allocation, nodes: int) -> str:
    """What runs a worker on each node: Merlin's ``worker_launch`` override, else the per-node line (none on LSF,
    whose ``launch_args`` are the jsrun's Merlin leaves out there too)."""
    custom = batch.extra.get("worker_launch") or spec.batch.extra.get("worker_launch")
    if custom:
        return str(custom)
    launcher = launcher_for(batch, alloc)
    if alloc.system == "lsf":
        return ""
    return per_node_prefix(launcher, nodes, batch.launch_args or spec.batch.launch_args)


MAX_RESPAWNS = 5  # times a worker group that ends by itself with an error is started again
RESPAWN_PAUSE = 2.0  # seconds before it is (a server that restarts, a port that frees)


@dataclass
class Supervisor:
    """Waits on worker processes; stops them when the study is over or the walltime nears."""

    procs: list[subprocess.Popen[bytes]]
    is_over: Callable[[], bool] | None = None  # the study has nothing left to run
    deadline: float | None = None  # seconds since the epoch
    margin: float = DEFAULT_MARGIN
    poll: float = 2.0
    log: Callable[[str], None] = print
    shutdown: Callable[[], None] | None = None  # asks the workers to stop through the broker
    grace: float = 30.0  # seconds a stopping worker's running tasks get before it is stopped cold
    early_signal: int | None = None  # a signal that also stops the workers (Slurm's --signal)
    stopping: str | None = None  # why the workers were asked to stop
    asked_at: float | None = None  # when they were asked through the broker
    signalled: int = 0  # the stop signal received, 0 when none
    escalation: list[tuple[float, int]] = dataclasses.field(default_factory=list)  # (when, signal) still to send
    respawn: Callable[[int], subprocess.Popen[bytes]] | None = None  # starts worker group i again
    respawns: dict[int, int] = dataclasses.field(default_factory=dict)  # worker group -> times started again
    names: Sequence[str] = ()  # the worker groups, for the log

    def run(self) -> int:
        """Block until every worker has exited; the exit code (0 after a stop we asked for, 128+signal)."""
        signums = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
        if self.early_signal and self.early_signal not in signums:
            signums.append(signal.Signals(self.early_signal))
        previous = {n: signal.signal(n, self._on_signal) for n in signums if not kept_ignored(n)}
        try:
            while self._respawn_crashed() or any(p.poll() is None for p in self.procs):
                if self.stopping is None:
                    self._check()
                elif self.asked_at is not None and time.time() > self.asked_at + self._grace():
                    self._cold()
                self._escalate()
                time.sleep(min(self.poll, 0.2) if self.stopping else self.poll)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self.signalled and not self._early_warning():
            return 128 + self.signalled
        codes = [abs(p.returncode or 0) for p in self.procs]
        return 0 if self.stopping else max(codes, default=0)

    def _respawn_crashed(self) -> bool:
        """Start again a worker group that ended by itself with an error (Celery's "Unrecoverable error" when its
        Redis restarts under it: the study then waited with no worker) while nothing asked it to stop and work is
        left, at most ``MAX_RESPAWNS`` times each; True when one was started. A worker that exits 0 was stopped
        (`stop-workers`), one that keeps failing is left ended, and its log says why."""
        if self.respawn is None or self.stopping is not None:
            return False
        started = False
        for i, proc in enumerate(self.procs):
            if proc.poll() is None or proc.returncode == 0 or self.respawns.get(i, 0) >= MAX_RESPAWNS:
                continue
            if self.is_over is not None and self.is_over():
                return started
            name = self.names[i] if i < len(self.names) else f"#{i}"
            self.respawns[i] = self.respawns.get(i, 0) + 1
            self.log(f"run-workers: worker {name} ended by itself (exit code {proc.returncode}; see its log) "
                     f"while nothing asked it to stop: starting it again ({self.respawns[i]} of {MAX_RESPAWNS})")
            time.sleep(RESPAWN_PAUSE)
            self.procs[i] = self.respawn(i)
            started = True
        return started

    def _early_warning(self) -> bool:
        """Whether the signal received is the allocation's early warning (Slurm's --signal=B:USR1@T): a planned
        wind-down like the walltime margin's, which ends 0 (it ended 138, and `status` showed the job failed)."""
        defaults = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        return bool(self.early_signal) and self.signalled == self.early_signal and self.signalled not in defaults

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            leave_hung_up_terminal()  # the log lines below must not fail on a closed terminal
        if self.signalled:  # a second signal: no more grace
            self.escalation = [(0.0, sig) for _, sig in self.escalation]
            return
        self.signalled = signum
        # through the broker, as at the walltime margin, for the early warning (Slurm's --signal) and a stop
        # signal alike: passed on to a launcher (srun), SIGTERM would SIGKILL the whole step at once
        early = " (the early warning: the walltime nears)" if self._early_warning() else ""
        self.stop(f"signal {signal.Signals(signum).name}{early}")

    def _check(self) -> None:
        if self.deadline is not None and time.time() >= self.deadline - self.margin:
            self.stop("the walltime runs out")
        elif self.is_over is not None and self.is_over():
            self.stop(STUDY_OVER)

    def stop(self, why: str) -> None:
        """Ask every worker for a warm shutdown (finish the task in hand, give the rest back).

        Workers are asked through the broker when a ``shutdown`` is given: a launcher (srun) that gets SIGTERM
        (or SIGQUIT) ends its whole step at once with SIGKILL, killing the tasks in hand (Slurm 22.05, measured).
        """
        first = self.stopping is None
        self.stopping = self.stopping or why
        if first:
            self.log(f"run-workers: stopping the workers: {why}")
        if self.shutdown is not None and first:
            self.asked_at = time.time()
            from kombu.exceptions import KombuError
            from redis import RedisError

            try:
                self.shutdown()
                return
            except (KombuError, RedisError, OSError, MerlinMdmError) as exc:  # the broker is gone: signal them
                self.log(f"run-workers: cannot reach the workers through the broker ({exc}); signalling them")
        self._terminate()

    def _grace(self) -> float:
        """The grace period, shortened so that it ends halfway to the walltime: the cold shutdown that gives
        the running units back must come before the batch system kills everything (a unit killed with its worker
        stays held by the broker until the visibility timeout)."""
        if self.deadline is None:
            return self.grace
        return max(0.0, min(self.grace, (self.deadline - time.time()) / 2))

    def _terminate(self) -> None:
        """SIGTERM (Celery's warm shutdown); after the grace period the cold shutdown (running units are given
        back, recorded queued: ``COLD_STOP_SIGNAL``, which a launcher passes on), and SIGKILL 10 s later."""
        self.asked_at = None
        self._send(signal.SIGTERM)
        now = time.time()
        grace = self._grace()
        self.escalation = [(now + grace, COLD_STOP_SIGNAL), (now + grace + 10, signal.SIGKILL)]

    def _cold(self) -> None:
        """After a warm shutdown asked through the broker: the cold one (``COLD_STOP_SIGNAL``: the units in hand
        are given back, recorded queued), SIGKILL 10 s later. Neither SIGTERM nor SIGQUIT: srun passes neither
        on to the workers; it SIGKILLs its whole step, and the broker would hold the units in hand."""
        self.asked_at = None
        self._send(COLD_STOP_SIGNAL)
        self.escalation = [(time.time() + 10, signal.SIGKILL)]

    def _escalate(self) -> None:
        while self.escalation and time.time() >= self.escalation[0][0]:
            self._send(self.escalation.pop(0)[1])

    def _send(self, signum: int) -> None:
        """Signal every worker still running. SIGKILL goes to the worker's whole process group (it leads one: a
        session of its own), so that a chain such as Flux's signal relay around `flux exec` dies with it; other
        signals go to the leader, which passes them on (a USR2 straight to `flux exec` would kill it)."""
        for proc in self.procs:
            if proc.poll() is not None:
                continue
            if signum == signal.SIGKILL:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(signum)


def allocation_node(cmd: WorkerCommand, job_id: str) -> str:
    """The Celery node name of ``cmd``'s group in job ``job_id``: ``GROUP.JOBID.PID@%h`` (the job's id names the
    job's workers; the pid of its `run-workers`, which ``cmd.node`` carries, keeps two specs' groups of one name in
    one job two nodes)."""
    unique = cmd.node.split("@", 1)[0].removeprefix(f"{cmd.name}.") if cmd.node.startswith(f"{cmd.name}.") else ""
    return f"{cmd.name}.{job_id}.{unique}@%h" if unique else f"{cmd.name}.{job_id}@%h"


def broadcast_shutdown(config: AppConfig, prefixes: Sequence[str]) -> Callable[[], None]:
    """A shutdown of the workers whose names start with one of ``prefixes``, through the broker."""
    from merlin_mdm.backends.celery.workers import active_queues, shutdown_workers

    def shutdown() -> None:
        names = [w for w in active_queues(config) if w.startswith(tuple(prefixes))]
        if names:
            shutdown_workers(config, names)

    return shutdown


def study_is_over(store: RedisStatusStore, steps: Collection[str] | None = None) -> bool:
    """Nothing of the study is left to run (it finished, failed or was stopped); with ``steps``, nothing of those
    steps: each has every task in a final state (finished, failed, not run), so no more of their work can come."""
    snap = store.snapshot()  # first: a lost or incomplete record raises (not over), and units_left would read 0
    if snap.state.over or store.units_left() <= 0:
        return True
    if steps is None:
        return False
    terminal = [state.value for state in TaskState if state.terminal]
    return all(sum(step.counts.get(state, 0) for state in terminal) >= step.total
               for step in snap.steps if step.step in steps)


LOST_RECORD_REPEAT = 600.0  # seconds between two words on a status record that stays unreadable


def study_over_check(workspace: Path, steps: Collection[str] | None = None,
                     say: Callable[[str], None] | None = None) -> Callable[[], bool]:
    """A check of the study in ``workspace`` (or of its ``steps``: those a worker group serves) against its
    status store. A store error reads as not over (a server restarting comes back); a server that answers without
    the study's record (or with part of it) is also told to ``say``, when first seen and every
    ``LOST_RECORD_REPEAT`` s after: the workers served on in silence until the allocation ended."""
    from merlin_mdm.backends.celery.backend import CeleryBackend

    ws = Workspace.find(workspace)
    config = CeleryBackend().config(ws)
    # Read once: a workspace moved or deleted while the workers serve it (they record its units not run), or a
    # plan.json deleted, blinded the check and the allocation served on until its walltime.
    keys_of = ws.load_plan().workspace
    last_said = [-LOST_RECORD_REPEAT]

    def check() -> bool:
        try:
            store = RedisStatusStore(config.status.client(), keys_of)
        except (MerlinMdmError, OSError):
            return False
        try:
            return study_is_over(store, steps)
        except StatusRecordLost as exc:
            if say is not None and time.monotonic() - last_said[0] >= LOST_RECORD_REPEAT:
                last_said[0] = time.monotonic()
                say(f"run-workers: the study's status cannot be read, so its end cannot be seen (the workers serve "
                    f"on): {exc}")
            return False
        except (MerlinMdmError, OSError):
            return False
        finally:
            store.close()

    return check
