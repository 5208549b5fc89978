"""The distributed backend: queue a study's ready units on a Redis broker for Celery workers.

``launch`` registers the study in the Redis status store and publishes only what can run now (the units of
steps without parents, as ``expand`` range messages when there are many); workers release every other unit
the moment its last parent unit is recorded. Celery itself is imported only when a method needs it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from merlin_mdm.backends.base import Backend, RunOptions, RunReport, register_backend
from merlin_mdm.backends.celery.broker import held_messages
from merlin_mdm.backends.celery.dependencies import RedisDependencies
from merlin_mdm.backends.execution import walltime_seconds
from merlin_mdm.config import AppConfig, load_config
from merlin_mdm.errors import BackendError, BrokerError, Interrupted, StatusError, WorkspaceError, out_of_memory_hint
from merlin_mdm.status.model import StudySnapshot, StudyState
from merlin_mdm.status.redis_store import RedisStatusStore
from merlin_mdm.status.states import TaskState
from merlin_mdm.status.store import StatusStore
from merlin_mdm.study.plan import StudyPlan, UnitKey
from merlin_mdm.study.workspace import Workspace

__all__ = ["CONNECTION_FILE", "CeleryBackend", "check_server", "derived_visibility", "describe_queueing",
           "explain_problem", "longest_unit_seconds", "probe_server", "record_purge", "server_down",
           "wait_for_status_server"]

CONNECTION_FILE = "celery.json"  # in merlin_info/: which app.yaml the study was queued with (no secret)


READ_TIMEOUT = 10.0
"""Seconds `status` and `detailed-status` wait for a status server that does not answer (stopped, frozen, down):
then an error says so, where a patient client waits out a restart (46 s for a refused connection, as long as a
frozen server stays frozen)."""


def check_server(config: AppConfig, timeout: float = 3.0, what: str = "broker") -> None:
    """Ping the broker (or status) server; BrokerError with a one-line reason when it does not answer."""
    problem = probe_server(config, timeout, what)
    if problem is not None:
        raise BrokerError(explain_problem(config, problem, timeout, what)) from None


def probe_server(config: AppConfig, timeout: float = 3.0, what: str = "broker") -> Exception | None:
    """Ping the broker (or ``what="status store"``) server once; the Redis error, None when it answers."""
    import redis

    target = config.broker if what == "broker" else config.status
    try:
        client = target.client(timeout=timeout, retry=False)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return exc
    return None


STATUS_PATIENCE = 600.0  # seconds `monitor` waits for a status server that is down (a restart, a failover)


def wait_for_status_server(config: AppConfig, interval: float, pause: Callable[[float], object],
                           say: Callable[[str], object]) -> None:
    """Return once the status server answers. A refused password (or any answer that is not "down") fails at
    once; a server that is down is said in one line, then tried every ``interval`` s (``pause``, which a stop
    signal ends) for ``STATUS_PATIENCE`` s: a patient client waited 46 s in silence, then failed.

    Raises:
        BrokerError: the server refuses us, or stays down past the patience.
    """
    deadline = time.monotonic() + STATUS_PATIENCE
    said = False
    while (problem := probe_server(config, 3.0, "status store")) is not None:
        why = explain_problem(config, problem, 3.0, "status store")
        if not server_down(problem) or time.monotonic() > deadline:
            raise BrokerError(why + (f" (waited {STATUS_PATIENCE:g} s)" if said else ""))
        if not said:
            say(f"waiting for Redis at {config.status.safe_url()}, retrying every {interval:g} s for up to "
                f"{STATUS_PATIENCE:g} s: {why}")
            said = True
        pause(interval)
    if said:
        say(f"Redis at {config.status.safe_url()} answers again")


def server_down(problem: Exception) -> bool:
    """Whether ``problem`` (from :func:`probe_server`) may pass by itself: the server is down, restarting or
    frozen, not refusing our credentials or speaking another protocol."""
    import redis

    return (isinstance(problem, (redis.ConnectionError, redis.TimeoutError))
            and not isinstance(problem, redis.AuthenticationError) and not _tls_trouble(str(problem)))


def explain_problem(config: AppConfig, exc: Exception, timeout: float, what: str = "broker") -> str:
    """One line on why the server did not answer ``client.ping()``, naming it and what to check."""
    import redis

    target = config.broker if what == "broker" else config.status
    where = target.safe_url()
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, redis.AuthenticationError) or (
            isinstance(exc, redis.ResponseError) and ("NOAUTH" in text or "WRONGPASS" in text or "AUTH" in text)):
        if not target.password_file:
            section = "results" if what != "broker" and config.results is not None else "broker"
            source = config.source if config.source != "defaults" else "app.yaml (none was found)"
            return (f"{what} {where} requires a password, and none is configured: set {section}.password_file "
                    f"(a file whose first line is the password) in {source}")
        return f"{what} {where} refused the password (check password_file in {config.source})"
    if isinstance(exc, redis.ResponseError):
        return f"{what} {where} answered with an error: {text}"
    if isinstance(exc, redis.TimeoutError):
        hint = (" (TLS mismatch: rediss:// to a server without TLS?)" if target.tls else
                " (a server that is stopped, frozen or overloaded?)")
        return f"{what} {where} did not answer within {timeout:g} s{hint}"
    if isinstance(exc, redis.ConnectionError):
        return f"cannot reach the {what} at {where}: {_connection_reason(exc, target.tls)}"
    return (f"{what} {where} does not answer like a Redis server (another service on that port?): "  # e.g. HTTP
            f"{text}")


def _tls_trouble(low: str) -> bool:
    low = low.lower()
    return "ssl" in low or "tls" in low or "certificate" in low or "wrong version number" in low


def _connection_reason(exc: Exception, tls: bool) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    low = text.lower()
    if _tls_trouble(low):
        hint = "rediss:// to a server without TLS?" if tls else "the server expects TLS (use rediss://)?"
        return f"TLS mismatch ({hint}): {text}"
    if "refused" in low:
        return "connection refused (is the server running? `merlin-mdm server start` starts one)"
    if "closed by server" in low or "connection reset" in low:
        return f"the server closed the connection (TLS server reached with redis://?): {text}"
    return text


def describe_queueing(plan: StudyPlan) -> list[str]:
    """One line per step instance: its units, its queue, and when it is queued (for `run --dry`)."""
    lines = []
    for inst in plan.instances:
        when = "queued by `run`" if not inst.parents else "queued by the workers after " + ", ".join(
            plan.instances[e.parent].name + ("[same unit]" if e.aligned else "") for e in inst.parents)
        lines.append(f"{inst.name}: {plan.n_units(inst.index)} unit(s), {plan.n_tasks(inst.index)} task(s), "
                     f"queue '{inst.task_queue}', {when}")
    return lines


def _initial_ranges(plan: StudyPlan) -> list[tuple[int, int, int]]:
    return [(inst.index, 0, plan.n_units(inst.index)) for inst in plan.instances if not inst.parents]


@register_backend
class CeleryBackend(Backend):
    """Queues studies on Redis for `merlin-mdm run-workers`; status lives in Redis too."""

    name = "celery"

    def __init__(self, config: AppConfig | None = None, spec: Path | str | None = None, **_: Any):
        self._config = config
        self._spec = Path(spec) if spec is not None else None

    def config(self, workspace: Workspace | None = None) -> AppConfig:
        """The configuration: the one given, the one a workspace was queued with, or the one in effect."""
        if self._config is not None:
            return self._config
        recorded = _recorded_config(workspace) if workspace is not None else None
        self._config = load_config(self._spec, recorded)
        return self._config

    def status_store(self, workspace: Workspace, patient: bool = True) -> StatusStore:
        config = self.config(workspace)
        plan_ws = workspace.load_plan().workspace
        if not patient:  # a server that refuses or is down is said as every other command says it, URL and hint
            check_server(config, timeout=READ_TIMEOUT, what="status store")
        client = config.status.client() if patient else config.status.client(timeout=READ_TIMEOUT, retry=False)
        return RedisStatusStore(client, plan_ws)

    def launch(self, workspace: Workspace, plan: StudyPlan, options: RunOptions) -> RunReport:
        config = self.config(workspace)
        check_server(config)
        if config.results is not None:
            check_server(config, what="status store")
        _record_config(workspace, config)
        _warn_visibility(plan, config, options)
        store = RedisStatusStore(config.status.client(), plan.workspace, plan)
        try:
            lost = options.resume and store.record_lost()
            if options.resume:
                _refuse_while_held(config, plan, lost)
            with _refusal_explained(config, workspace), _interruption_explained(store, workspace):
                if options.resume:
                    _refuse_while_running(store, config, plan, options, lost)
                    if not _queue_again_from_disk(store, plan):  # every task has its done-marker on disk
                        store.finish_if_over()
                        return RunReport(StudyState.FINISHED, store.snapshot(), "nothing to run: every task of the "
                                         "study finished (its done-markers are on disk)")
                    RedisDependencies(store.r, plan).reset()
                else:
                    _claim_record(store, config, plan)
                    store.register(plan)
                store.set_state(StudyState.QUEUED, "waiting for workers (`merlin-mdm run-workers SPEC`, or "
                                "`merlin-mdm launch SPEC` for batch jobs)")
                started = time.perf_counter()
                self.publish_initial(config, plan)
                elapsed = time.perf_counter() - started
            n_units = sum(hi - lo for _, lo, hi in _initial_ranges(plan))
            snap = store.snapshot()
            left = snap.total - snap.count(TaskState.FINISHED)
            sent = (f"queued {n_units} unit(s) of {plan.total_tasks()} task(s)" if not options.resume else
                    f"queued again: {left} of {snap.total} task(s) left to run, from {n_units} unit(s) "
                    "without parents")
            message = f"{sent} in {elapsed:.2f} s; start workers with `merlin-mdm run-workers SPEC`"
            return RunReport(StudyState.QUEUED, snap, message)
        finally:
            store.close()

    def check_handover(self, workspace: Workspace, plan: StudyPlan) -> None:
        """The broker must hold nothing of the study and no worker may serve its queues; an unreachable broker
        delivers nothing more, so the study may move then."""
        config = self.config(workspace)
        try:
            check_server(config)
        except BrokerError:
            return
        _refuse_while_held(config, plan)
        serving = serving_workers(config, plan)
        if serving:
            raise BackendError(f"worker(s) {', '.join(serving)} serve this study's queues: running it here too "
                               "would run its tasks twice at once. Stop them first (`merlin-mdm stop-workers`), "
                               "or let them finish it (`merlin-mdm monitor`)")

    def preflight(self) -> None:
        """Refuse to create a workspace when the broker (or status store) does not answer."""
        config = self.config()
        check_server(config)
        if config.results is not None:
            check_server(config, what="status store")

    def publish_initial(self, config: AppConfig, plan: StudyPlan) -> None:
        """Send the units that wait for nothing (as expand messages when a step has many), without Celery."""
        from merlin_mdm.backends.celery.scheduling import Dispatch, plan_dispatch, send_dispatch
        from merlin_mdm.study.plan import UnitKey

        units: list[UnitKey] = []
        ranges: list[tuple[int, int, int]] = []
        for inst, lo, hi in _initial_ranges(plan):
            if hi - lo > 200:
                ranges.append((inst, lo, hi))
            else:
                units.extend(UnitKey(inst, u) for u in range(lo, hi))
        small = plan_dispatch(units)
        broker = config.broker.client()
        try:
            send_dispatch(broker, plan.workspace, plan, Dispatch(small.units, (*small.ranges, *ranges)))
        finally:
            broker.close()


def _claim_record(store: RedisStatusStore, config: AppConfig, plan: StudyPlan) -> None:
    """A new study takes its status record for itself (SET NX, so that of two `run` at once one wins): a record
    already there is another study's whose workspace has this same path (node-local scratch mounted at one path
    on several nodes), and sharing it silently showed the second study finished with none of its tasks run.

    Raises:
        WorkspaceError: the status store already holds a study for this workspace path.
    """
    import socket

    mine = f"{socket.gethostname()} {time.time()}"
    if store.r.set(store.prefix + "run", mine, nx=True) and not store.r.hexists(store.k_meta, "name"):
        return
    if store.r.get(store.prefix + "run") == mine:
        store.r.delete(store.prefix + "run")  # an older version's record (no claim): not ours either
    other = store.r.hmget(store.k_meta, "name", "state")
    what = f"study {other[0]}, {other[1]}" if other[0] else "a study being registered by another `run` right now"
    raise WorkspaceError(
        f"the status store {config.status.safe_url()} already holds a study for the workspace path {plan.workspace} "
        f"({what}): two studies whose workspaces have one path (node-local scratch mounted at the same path on "
        "several nodes?) would share one status record. Give this study another OUTPUT_PATH (e.g. with the node "
        f"or job in it); if that other study is gone for good, delete its keys ({store.prefix}*) from the server")


@contextlib.contextmanager
def _refusal_explained(config: AppConfig, workspace: Workspace) -> Iterator[None]:
    """Recording and sending a study: a server that refuses the writes (out of memory, read-only, gone) is a
    BackendError that says how to go on (an OutOfMemoryError traceback came out of `run` after 183 of 300 messages,
    and the study sat `running` with nothing queued): the workspace exists, and once the server takes writes
    `restart` records and sends whatever is missing."""
    import redis

    try:
        yield
    except (redis.RedisError, StatusError) as exc:  # StatusError: the status store's own writes
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = out_of_memory_hint(reason)
        raise BackendError(f"the server {config.broker.safe_url()} refused to record or queue the study: "
                           f"{reason}{hint}. Once it takes writes again, `merlin-mdm restart {workspace.root}` "
                           "queues what is missing (nothing runs twice: each task's done-marker is checked)") from None


@contextlib.contextmanager
def _interruption_explained(store: RedisStatusStore, workspace: Workspace) -> Iterator[None]:
    """A stop signal while the study is recorded and sent leaves part of it queued, or none: the study is marked
    interrupted (so `monitor` and `run-workers --until-done` end; it showed `queued` with nothing queued and they
    waited for ever), and the error says how to go on."""
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        with contextlib.suppress(Exception):
            if store.r.hexists(store.k_meta, "name"):  # recorded: `status` can say it
                store.set_state(StudyState.INTERRUPTED, "interrupted while it was queued: part of it, or none, "
                                "is on the broker; `merlin-mdm restart WS` queues it")
        raise Interrupted(signum, f"the study in {workspace.root} was not queued whole; `merlin-mdm restart "
                                  f"{workspace.root}` queues it (if it says the broker holds some of it, "
                                  "`merlin-mdm purge SPEC -f` first)") from None


LOST_WAIT_MOST = 120.0  # seconds a restart waits at most for the workers of a study whose record was lost


def _wait_for_beats(config: AppConfig, plan: StudyPlan, options: RunOptions) -> None:
    """The server lost the study's record: wait until its running units have beaten into it again. They beat at
    their workers' interval, not this process's: wait two of ours, then, for the workers that serve the study's
    queues (they answer the broadcast at once), until each has beaten back into the registry, which names its
    interval, and two of the longest (at most ``LOST_WAIT_MOST`` s in all)."""
    from merlin_mdm.backends.celery.liveness import beat_seconds, live_worker_entries

    own, started = beat_seconds(), time.monotonic()
    if options.on_event is not None:
        options.on_event("the status server lost this study's record: waiting for the units that run now to say "
                         "so (two beats of the workers that serve its queues)")
    time.sleep(2 * own)
    serving = set(serving_workers(config, plan))
    longest = own
    while time.monotonic() - started < LOST_WAIT_MOST:
        entries = live_worker_entries(config)
        longest = max([own, *(float(e.get("every", own)) for name, e in entries.items() if name in serving)])
        if serving <= set(entries):
            break
        time.sleep(min(1.0, own))
    time.sleep(max(0.0, min(2 * longest, LOST_WAIT_MOST) - (time.monotonic() - started)))


def _refuse_while_running(store: RedisStatusStore, config: AppConfig, plan: StudyPlan,
                          options: RunOptions, lost: bool) -> None:
    """Units whose process beats run now: queueing them again would run their tasks twice at once. The broker's
    held messages say so while it keeps them; a server restarted empty lost those and the study's record, but not
    the beats, which the running units write back within one interval: waited for then. A unit whose every task
    has its done-marker runs nothing more, whatever its last beat says. ``lost``: the server lost the record.

    Raises:
        BackendError: a unit of the study runs now.
    """
    from merlin_mdm.backends.celery.liveness import MISSED, is_silent
    from merlin_mdm.backends.execution import markers_missing

    if lost:
        _wait_for_beats(config, plan, options)
    now = time.time()
    live = markers_missing(plan, (key for key, beat in store.beats_not_ended().items()
                                  if beat and not is_silent(beat, now) and key.instance < len(plan.instances)))
    if live:
        shown = ", ".join(k.to_id() for k in live[:10]) + (f" and {len(live) - 10} more" if len(live) > 10 else "")
        raise BackendError(
            f"{len(live)} unit(s) of this study run now in live workers ({shown}: their processes beat): queueing "
            "them again would run their tasks twice at once. Restart when they have ended (a unit's beats stop "
            f"when it ends, or {MISSED} beats after its worker dies), or stop the workers first (`merlin-mdm "
            "stop-workers --spec SPEC`)")


@dataclass(frozen=True)
class Unserved:
    """What `status` points out about a running study that runs less than it seems."""

    waiting: list[str]  # queues holding queued work that no live worker takes, while nothing of the study runs
    orphaned: list[UnitKey]  # units recorded running whose process has been silent: the workers that took them died
    orphaned_tasks: int = 0  # their tasks without a done-marker
    visibility_timeout: float = 0.0  # when the broker hands a dead worker's units out again on its own
    unsent: int = 0  # units released when their parents ended that never reached the broker, nothing running
    lost: int = 0  # messages workers took long ago and no longer have (a broker restarted under them), nothing running


def unserved_queues(workspace: Workspace, snap: StudySnapshot) -> Unserved:
    """Work waiting in queues that no live worker takes while nothing runs (workers stopped with
    `stop-workers`, their allocation ended), and running units whose process no longer beats (a worker killed,
    a node lost): then `status` can say so."""
    from merlin_mdm.backends.celery.liveness import silent_units
    from merlin_mdm.backends.celery.workers import active_queues
    from merlin_mdm.backends.execution import count_done

    if snap.state is not StudyState.RUNNING:
        return Unserved([], [])
    backend = CeleryBackend()
    config = backend.config(workspace)
    plan = workspace.load_plan()
    orphaned: list[UnitKey] = []
    if snap.count(TaskState.RUNNING):
        store = cast(RedisStatusStore, backend.status_store(workspace))
        try:
            orphaned = silent_units(store.unit_beats(), time.time())
        finally:
            store.close()
    waiting: list[str] = []
    if not snap.count(TaskState.RUNNING) and snap.count(TaskState.QUEUED):
        steps = {s.step for s in snap.steps if s.counts.get(TaskState.QUEUED.value)}
        taken = {q for names in active_queues(config, quick=True).values() for q in names}
        waiting = sorted({i.task_queue for i in plan.instances if i.step in steps} - taken)
    tasks = sum(len(plan.unit_samples(key)) - count_done(plan, key) for key in orphaned)
    derived = None if config.visibility_set else derived_visibility(plan)  # what run-workers gives its workers
    unsent = _unsent(config, plan) if not snap.count(TaskState.RUNNING) else 0
    lost = _lost(backend, workspace, config, plan) if not snap.count(TaskState.RUNNING) and not waiting else 0
    return Unserved(waiting, orphaned, tasks, derived or config.visibility_timeout, unsent, lost)


def _lost(backend: CeleryBackend, workspace: Workspace, config: AppConfig, plan: StudyPlan) -> int:
    """Messages of a study that runs nothing which workers took long ago and no longer have: a broker restarted
    under them (their connection broke), and kombu gives them back only after the visibility timeout."""
    from merlin_mdm.backends.celery.release import held_tags, lost_tags

    tags = held_tags(config, plan.workspace)
    if not tags:
        return 0
    store = cast(RedisStatusStore, backend.status_store(workspace))
    try:
        return len(lost_tags(config, store, tags))
    finally:
        store.close()


def _unsent(config: AppConfig, plan: StudyPlan) -> int:
    """Units released when their parents ended whose message no queue holds and no worker has: the send failed
    (a worker that crashed at the server's maxmemory after recording its unit), and the study would wait for
    them forever. Read twice, a second apart, so that a send in progress is not taken for a lost one."""
    queues = sorted({i.task_queue for i in plan.instances})
    client = config.status.client(timeout=READ_TIMEOUT, retry=False)
    try:
        for attempt in range(2):
            ready = int(client.scard(RedisDependencies(client, plan).k_ready))
            if not ready or held_messages(config, queues, plan.workspace).total:
                return 0
            if attempt == 0:
                time.sleep(1.0)
        return ready
    finally:
        client.close()


def _queue_again_from_disk(store: RedisStatusStore, plan: StudyPlan) -> list[UnitKey]:
    """Record a restarted study as its disk says, and return the units queued again. The disk is the truth: a
    unit recorded finished whose done-marker is gone runs again; one with every marker is finished (recorded or
    not: a forgotten record too); the others are queued counting theirs (their folders looked at once)."""
    from merlin_mdm.backends.execution import count_done, markers_missing

    finished = store.finished_units()
    marked = {key: count_done(plan, key) for key in plan.units() if key not in finished}
    found = [key for key, n in marked.items() if n == len(plan.unit_samples(key))]
    queued = store.reset_unfinished(markers_missing(plan, finished), found)
    store.requeue({key: done for key in queued if (done := marked[key] if key in marked else count_done(plan, key))})
    return queued


def serving_workers(config: AppConfig, plan: StudyPlan) -> list[str]:
    """The live workers that consume a queue of ``plan``'s steps: those that answer within a second, and those
    that beat (a worker in its warm shutdown answers nothing while it still runs the units in hand)."""
    from merlin_mdm.backends.celery.liveness import live_workers
    from merlin_mdm.backends.celery.workers import active_queues

    queues = {i.task_queue for i in plan.instances}
    workers = {**live_workers(config), **active_queues(config)}
    return sorted(w for w, names in workers.items() if queues & set(names))


def _refuse_while_held(config: AppConfig, plan: StudyPlan, lost: bool = False) -> None:
    """A restart must not queue what the broker still holds: it would run twice (the funnel too). ``lost``: the
    status server lost the study's record, which `monitor` cannot follow."""
    held = held_messages(config, sorted({i.task_queue for i in plan.instances}), plan.workspace)
    if held.total:
        raise BackendError(
            f"the broker still holds {held.total} message(s) of this study ({held.waiting} waiting, {held.unacked} "
            f"taken by workers; a dead worker's come back within visibility_timeout {config.visibility_timeout} s): "
            "restarting now would run them twice. Let the workers finish "
            + ("(the study's status was lost, which `monitor` cannot follow: run this `restart` again later, it counts "
               "them anew)" if lost else "(`merlin-mdm monitor`)")
            + (", or `merlin-mdm purge` the waiting ones first" if held.waiting else "")
            + ("; if the workers that took them are gone (a node died, an allocation was killed), `merlin-mdm "
               "restart WORKSPACE --release` gives them back now" if held.unacked else ""))


def record_purge(config: AppConfig, lost: dict[str, int]) -> None:
    """Tell each study that lost waiting messages to a purge (its status says so; `restart` re-queues)."""
    client = config.status.client()
    try:
        for workspace, n in lost.items():
            store = RedisStatusStore(client, workspace)
            if client.hexists(store.k_meta, "name"):
                store.set_state(StudyState.PURGED, f"{n} waiting message(s) were purged; "
                                f"`merlin-mdm restart {workspace}` queues the unfinished work again")
    finally:
        client.close()


def _record_config(workspace: Workspace, config: AppConfig) -> None:
    source = config.source if config.source != "defaults" else None
    (workspace.info / CONNECTION_FILE).write_text(json.dumps({"config": source}) + "\n", encoding="utf-8")


def _recorded_config(workspace: Workspace) -> str | None:
    try:
        data = json.loads((workspace.info / CONNECTION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("config")
    return str(value) if value and Path(value).is_file() else None


def longest_unit_seconds(plan: StudyPlan) -> float | None:
    """The longest a unit runs: walltime x its tasks (retries aside); None when a step has no walltime."""
    longest = 0.0
    for inst in plan.instances:
        wall = walltime_seconds(inst.walltime)
        if wall is None:
            return None
        tasks = len(plan.unit_samples(UnitKey(inst.index, 0)))  # the first unit is the fullest (3 samples: 3)
        longest = max(longest, tasks * wall)
    return longest


def derived_visibility(plan: StudyPlan) -> int | None:
    """A visibility timeout past the study's longest unit (x 1.25 + 5 min), None when that is unbounded.

    A message whose worker died comes back after this long; a unit that runs longer would be delivered twice.
    """
    longest = longest_unit_seconds(plan)
    return None if longest is None else int(longest * 1.25) + 300


def _warn_visibility(plan: StudyPlan, config: AppConfig, options: RunOptions) -> None:
    longest = longest_unit_seconds(plan) or 0.0
    if longest >= config.visibility_timeout and options.on_event is not None:
        options.on_event(f"warning: a unit may run {longest:.0f} s (walltime x its tasks), longer "
                         f"than visibility_timeout {config.visibility_timeout} s: raise it in app.yaml or its "
                         "message will be delivered again while it runs")
