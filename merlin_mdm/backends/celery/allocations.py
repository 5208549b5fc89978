"""`merlin-mdm launch`: one batch allocation per worker group, each running `run-workers` until the study ends.

The requests are planned here (pure), submitted through :mod:`merlin_mdm.batch`, and recorded in the
workspace (``merlin_info/batch/jobs.jsonl``) so that `status` can show each allocation, its state and
the workers running in it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from merlin_mdm.backends.celery.workers import worker_commands
from merlin_mdm.backends.execution import walltime_seconds
from merlin_mdm.batch import TERMINAL_STATES, AllocationRequest, JobState, exit_file_state, get_batch_system
from merlin_mdm.config import AppConfig
from merlin_mdm.errors import BatchError, UsageError
from merlin_mdm.spec import BatchConfig, Spec
from merlin_mdm.spec.batch_options import owned_option, parse_batch_options
from merlin_mdm.spec.checks import step_run_place
from merlin_mdm.spec.hazards import NAME_MAX
from merlin_mdm.spec.issues import key_mark
from merlin_mdm.spec.loader import MarkedDict
from merlin_mdm.study.layout import Workspace
from merlin_mdm.study.plan import StudyPlan, UnitKey

__all__ = [
    "AllocationRecord",
    "AllocationRow",
    "LaunchOptions",
    "Planned",
    "allocation_requests",
    "allocation_rows",
    "allocation_states",
    "batch_dir",
    "ensure_queued",
    "read_records",
    "scheduler_name",
    "steps_beyond_nodes",
    "stuck_allocations",
    "submit_all",
    "units_beyond_walltime",
    "write_record",
]

RECORDS = "jobs.jsonl"


@dataclass(frozen=True)
class LaunchOptions:
    """Command-line overrides of the spec's batch block."""

    nodes: int | None = None
    walltime: str | None = None  # [[HH:]MM:]SS
    queue: str | None = None
    bank: str | None = None
    together: bool = False  # one allocation for every worker group
    config_source: str | None = None  # the app.yaml the workers must read
    variables: tuple[str, ...] = ()  # --vars KEY=VALUE the study was run with: its workers' names and queues
    cores_per_node: int | None = None  # each node's cores, for schedulers that must be told (PBS)
    workers: tuple[str, ...] = ()  # only these worker groups (a UsageError names the known ones); (): every group


@dataclass(frozen=True)
class AllocationRecord:
    """One submitted allocation, as `launch` wrote it down."""

    job_id: str
    system: str
    name: str  # the job name
    workers: tuple[str, ...]  # worker groups it runs
    nodes: int
    submitted: float  # seconds since the epoch


def scheduler_name(batch_type: str) -> str:
    """The batch system behind a spec's batch type (``lsf-srun`` is LSF with another launcher)."""
    return batch_type.partition("-")[0]


def batch_dir(workspace: Path) -> Path:
    """Where batch scripts, their output and exit codes go."""
    return Workspace(workspace).batch


def _merged(base: BatchConfig, override: BatchConfig | None) -> BatchConfig:
    """``override``'s fields that were given, on top of ``base`` (a worker's batch block over the spec's)."""
    if override is None:
        return base
    given = {f.name: getattr(override, f.name) for f in dataclasses.fields(override)
             if f.name not in ("type", "shell", "extra") and getattr(override, f.name) is not None}
    if override.type != "local":  # "local" is also the default of a block that names no type
        given["type"] = override.type
    return dataclasses.replace(base, **given, extra={**base.extra, **override.extra})


def _check_name_fits(name: str) -> None:
    """Refuse, before any job is submitted, an allocation whose script or output (NAME.<job id>.out) no file system
    can name: the study was queued, then `launch` ended in `File name too long` naming neither cause nor remedy."""
    longest = len(f"{name}.12345678901234567890.out".encode())
    if longest > NAME_MAX:
        raise BatchError(f"allocation {name[:60]!r}...: its job output NAME.<job id>.out would be up to {longest} "
                         f"bytes, past the {NAME_MAX} a file name may have: shorten the study's description.name or "
                         "the worker group's name (validate warns of it)")


def _options(raw: object, key: str = "", walltime: bool = True) -> tuple[tuple[str, str], ...]:
    """`slurm_args`/`lsf_args` as (option, value) pairs (:func:`parse_batch_options`); BatchError when malformed
    or when one sets what a field of the batch block sets (:func:`owned_option`: a value read at `launch`)."""
    try:
        options = parse_batch_options(raw)
    except ValueError as exc:
        raise BatchError(f"batch options {exc}") from None
    owned = owned_option(key, options, walltime)
    if owned is not None:
        raise BatchError(owned)
    return options


Planned = tuple[tuple[str, ...], AllocationRequest]  # the worker groups an allocation runs, and the request


def allocation_requests(spec: Spec, spec_path: Path, workspace: Path, opts: LaunchOptions) -> list[Planned]:
    """The allocations that run the workers of ``spec`` for the study in ``workspace``."""
    groups: list[tuple[str, ...]] = [(c.name,) for c in worker_commands(spec, only=opts.workers)]
    if opts.together:
        groups = [tuple(g[0] for g in groups)]
    by_name = {w.name: w for w in spec.resources.workers}
    out = []
    for names in groups:
        worker = by_name.get(names[0]) if len(names) == 1 else None
        batch = _merged(spec.batch, worker.batch if worker else None)
        nodes = opts.nodes or (worker.nodes if worker else None) or batch.nodes or 1
        walltime = walltime_seconds(opts.walltime or batch.walltime)
        command = [sys.executable, "-m", "merlin_mdm.cli.main", "run-workers", str(spec_path.resolve()),
                   *(a for n in names for a in ("--worker", n)), *(a for v in opts.variables for a in ("--vars", v)),
                   "--until-done", str(workspace)]
        label = "all" if len(names) > 1 else names[0]
        key = f"{scheduler_name(batch.type)}_args"
        options = _options(batch.extra.get(key), key, walltime is not None)
        env: tuple[tuple[str, str], ...] = (("MERLIN_MDM_CONFIG", opts.config_source),) if opts.config_source else ()
        env += _early_warning(options)
        _check_name_fits(f"{spec.description.folder}.{label}")
        out.append((names, AllocationRequest(
            name=f"{spec.description.folder}.{label}", command=f"cd {shlex.quote(str(spec_path.resolve().parent))}\n"
            + shlex.join(command), workdir=batch_dir(workspace), nodes=nodes,
            walltime=int(walltime) if walltime else None, queue=opts.queue or batch.queue,
            bank=opts.bank or batch.bank, qos=_text(batch.extra.get("qos")),
            reservation=_text(batch.extra.get("reservation")), launch_pre=_launch_pre(batch),
            options=options, env=env, writes_exit_code=True, system=scheduler_name(batch.type),
            cores_per_node=opts.cores_per_node)))
    return out


def units_beyond_walltime(spec: Spec, plan: StudyPlan, planned: Sequence[Planned], margin: float) -> list[str]:
    """The steps whose units may need longer than the allocations that would run them have (walltime less the
    margin): their workers would give each unit back at once, and the allocation would run none of them."""
    queues = {c.name: set(c.queues) for c in worker_commands(spec)}
    out = []
    for names, req in planned:
        if req.walltime is None:
            continue
        served = set().union(*(queues.get(n, set()) for n in names))
        for inst in plan.instances:
            per_task = walltime_seconds(inst.walltime)
            need = (per_task or 0) * len(plan.unit_samples(UnitKey(inst.index, 0)))
            if inst.task_queue in served and need > req.walltime - margin:
                out.append(f"step {inst.step}: a unit may need {need:.0f} s (walltime x tasks per unit), more than "
                           f"allocation {req.name} has ({req.walltime} s less the {margin:.0f} s margin): its workers "
                           "would give such units back at once; raise the walltime (--walltime, batch.walltime) or "
                           "queue the study in smaller units (run --batch-size)")
                break
    return out


def steps_beyond_nodes(spec: Spec, plan: StudyPlan, planned: Sequence[Planned]) -> list[str]:
    """The steps whose ``nodes`` exceed the allocation that would run them: their launcher (srun -N, flux -N)
    would fail every task, each after its wait in the queue."""
    queues = {c.name: set(c.queues) for c in worker_commands(spec)}
    wanted = {s.name: s.run.nodes for s in spec.steps if s.run.nodes}
    out = []
    for names, req in planned:
        served = set().union(*(queues.get(n, set()) for n in names))
        over = dict.fromkeys(i.step for i in plan.instances
                             if i.task_queue in served and (wanted.get(i.step) or 0) > req.nodes)
        out += [f"{step_run_place(spec, step, 'nodes')}: step {step} asks for {wanted[step]} nodes, allocation "
                f"{req.name} has {req.nodes}: its tasks' launcher cannot place them; give the allocation more nodes "
                "(--nodes, the batch block's nodes, or its worker group's) or the step fewer" for step in over]
    return out


def _early_warning(options: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """MERLIN_MDM_SIGNAL for an early warning before the walltime, Slurm's ``--signal=[B:]SIG[@T]`` or LSF's
    ``-wa SIG`` (with ``-wt``): run-workers winds down on that signal instead of dying of it."""
    for key, value in options:
        if key in ("signal", "-wa") and value:
            name = value.split(":", 1)[-1].split("@", 1)[0].strip("'\"").upper()
            return (("MERLIN_MDM_SIGNAL", name.removeprefix("SIG")),)
    return ()


def _launch_pre(batch: BatchConfig) -> str | None:
    """``launch_pre``, after putting Merlin's ``flux_path`` first on PATH (the flux that runs the workers)."""
    flux = batch.extra.get("flux_path")
    lines = [f"export PATH={shlex.quote(str(flux))}:\"$PATH\""] if flux else []
    return "\n".join([*lines, batch.launch_pre]) if batch.launch_pre else ("\n".join(lines) or None)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def write_record(workspace: Path, record: AllocationRecord) -> None:
    """Append ``record`` to the workspace's allocation list."""
    path = batch_dir(workspace) / RECORDS
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(dataclasses.asdict(record)) + "\n")


def read_records(workspace: Path) -> list[AllocationRecord]:
    """Every allocation `launch` submitted for the study in ``workspace`` (oldest first)."""
    path = batch_dir(workspace) / RECORDS
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [AllocationRecord(r["job_id"], r["system"], r["name"], tuple(r["workers"]), r["nodes"], r["submitted"])
            for r in rows]


def submit_all(spec: Spec, planned: Sequence[Planned], workspace: Path,
               given: Sequence[str] = ()) -> list[AllocationRecord]:
    """Submit the planned requests (each to its own batch system: a worker group's block may name another) and
    record each job. ``given``: the command line's overrides, named where a submission is refused."""
    records: list[AllocationRecord] = []
    for names, req in planned:
        system = get_batch_system(req.system or scheduler_name(spec.batch.type))
        try:
            job_id = system.submit(req)
        except BatchError as exc:
            why = (f"{exc} (the request comes from {batch_origin(spec, names, given)}; `merlin-mdm launch "
                   f"{spec.path} --dry` prints it)")
            if not records:
                raise BatchError(why) from None
            done = ", ".join(f"job {r.job_id} ({r.name})" for r in records)
            raise BatchError(f"{why}; submitted before it, and left to run (cancel them with the scheduler if "
                             f"need be): {done}") from None
        record = AllocationRecord(job_id, system.name, req.name, names, req.nodes, time.time())
        write_record(workspace, record)
        records.append(record)
    return records


def batch_origin(spec: Spec, names: Sequence[str], given: Sequence[str] = ()) -> str:
    """Where the spec writes the batch settings of an allocation for the worker group(s) ``names``: the
    `batch` block, and a single group's own `batch` block over it; then ``given``, the command line's overrides
    (`--queue nope`: the value sbatch refused may be one of them)."""
    spec_part = _spec_origin(spec, names)
    return f"{spec_part}, with {' '.join(given)} from the command line" if given else spec_part


def _spec_origin(spec: Spec, names: Sequence[str]) -> str:
    merlin = spec.raw.get("merlin")
    resources = merlin.get("resources") if isinstance(merlin, MarkedDict) else None
    workers = resources.get("workers") if isinstance(resources, MarkedDict) else None
    places = [("batch", spec.raw.get("batch"), key_mark(spec.raw, "batch"))]
    key = next((w.spec_key for w in spec.resources.workers if w.name == names[0]), names[0])  # as written
    worker = workers.get(key) if len(names) == 1 and isinstance(workers, MarkedDict) else None
    if isinstance(worker, MarkedDict) and "batch" in worker:
        places.append((f"merlin.resources.workers.{key}.batch", worker.get("batch"), key_mark(worker, "batch")))
    found = [f"{spec.path}:{mark[0]}: {path}" for path, node, mark in places if node is not None]
    return " and ".join(found) or f"{spec.path} (no batch block: the defaults)"


FINAL_STATES = "final_states.json"  # in the batch folder: job id -> the terminal state first seen


def allocation_states(workspace: Path, records: Sequence[AllocationRecord], notes: list[str] | None = None,
                      reasons: dict[str, str] | None = None) -> dict[str, JobState]:
    """Job id -> state, asking each batch system once, except for jobs already seen ended.

    A terminal state is written down the first time it is seen: a scheduler forgets a job minutes after it ends
    (Slurm's MinJobAge, 300 s), after which only its exit code file is left (143 for a job cancelled, 0 for one
    that ran to its walltime), and a probe saw `cancelled` turn `failed`, `timeout` turn `completed`.
    ``reasons`` gets why each pending job waits, where its scheduler says.
    """
    final = _final_states(workspace)
    states: dict[str, JobState] = {}
    for system in {r.system for r in records if r.job_id not in final}:
        ids = [r.job_id for r in records if r.system == system and r.job_id not in final]
        try:
            states.update(get_batch_system(system).status(ids, batch_dir(workspace), reasons))
        except BatchError as exc:  # the scheduler cannot be asked from here (another machine, its controller down)
            states.update({job: exit_file_state(batch_dir(workspace), job) for job in ids})  # an ended job's code
            if notes is not None:
                notes.append(f"{exc} (the states of jobs that ended are read from their exit code files; the "
                             "others are unknown)")
    ended = {job: state for job, state in states.items() if state in TERMINAL_STATES}
    if ended:
        _write_final_states(workspace, {**final, **ended})
    return {**states, **final}


def _final_states(workspace: Path) -> dict[str, JobState]:
    try:
        raw = json.loads((batch_dir(workspace) / FINAL_STATES).read_text(encoding="utf-8"))
        return {str(job): JobState(value) for job, value in raw.items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_final_states(workspace: Path, states: Mapping[str, JobState]) -> None:
    path = batch_dir(workspace) / FINAL_STATES
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(OSError):  # a read-only workspace: the states are asked again next time
        tmp.write_text(json.dumps({job: state.value for job, state in states.items()}), encoding="utf-8")
        os.replace(tmp, path)


def ensure_queued(workspace: Path | None, spec_path: Path) -> Path:
    """The workspace to launch for; a UsageError saying how to queue the study when there is none."""
    if workspace is None:
        raise UsageError(f"no queued study for {spec_path}: queue it first with `merlin-mdm run {spec_path}`")
    return workspace


@dataclass(frozen=True)
class AllocationRow:
    """What `status` shows for one allocation."""

    job_id: str
    system: str
    name: str
    state: JobState
    workers: tuple[str, ...]  # full worker names answering from it (``group.<job id>@host``)
    reason: str = ""  # why a pending job waits, as the scheduler says ("" when it does not)
    stuck: str = ""  # what the reason means when it may never start as asked, else ""
    sure: bool = False  # stuck, and no waiting cures it (the request must change); else it may start one day


def allocation_rows(workspace: Path, config: AppConfig | None,
                    notes: list[str] | None = None) -> list[AllocationRow]:
    """Each allocation of the study, its state and the workers that answer from it; ``notes`` gets a line for
    each scheduler that could not be asked (its controller down), why.

    Workers are asked only when an allocation runs and ``config`` (the broker) is given.
    """
    records = read_records(workspace)
    if not records:
        return []
    reasons: dict[str, str] = {}
    states = allocation_states(workspace, records, notes, reasons)
    running = [r for r in records if states.get(r.job_id) is JobState.RUNNING]
    names: list[str] = []
    if running and config is not None:
        from merlin_mdm.backends.celery.workers import active_queues

        names = sorted(active_queues(config))
    return [AllocationRow(r.job_id, r.system, r.name, states.get(r.job_id, JobState.UNKNOWN),
                          tuple(n for n in names if _of_job(n, r.job_id)), reasons.get(r.job_id, ""),
                          *_stuck(r.system, reasons.get(r.job_id, ""))) for r in records]


SETTLE_S = 5.0  # how long `launch` waits for a scheduler's first word on a job it just took


def stuck_allocations(workspace: Path, submitted: set[str], settle: float = SETTLE_S) -> list[AllocationRow]:
    """Those of the jobs just ``submitted`` that their scheduler says will not start as asked, waiting up to
    ``settle`` s for it to give each pending job a reason (it does on its next pass); none when it cannot be
    asked (`status` says how the jobs stand) or gives no reasons (LSF, PBS, Flux: no wait)."""
    systems = {get_batch_system(r.system) for r in read_records(workspace) if r.job_id in submitted}
    if not any(s.stuck_reasons or s.doubtful_reasons for s in systems):
        return []
    deadline = time.monotonic() + settle
    while True:
        try:
            rows = [r for r in allocation_rows(workspace, None) if r.job_id in submitted]
        except BatchError:
            return []
        stuck = [r for r in rows if r.stuck]
        if stuck or time.monotonic() > deadline or all(r.reason or r.state is not JobState.PENDING for r in rows):
            return stuck
        time.sleep(0.5)


def _stuck(system: str, reason: str) -> tuple[str, bool]:
    """What ``reason`` means when it says the job may never start as asked, and whether surely (the batch system's
    stuck_reasons) or unless resources come back (its doubtful_reasons); ("", False) otherwise."""
    if not reason:
        return "", False
    batch = get_batch_system(system)
    sure = batch.stuck_reasons.get(reason, "")
    return (sure, True) if sure else (batch.doubtful_reasons.get(reason, ""), False)


def _of_job(worker: str, job_id: str) -> bool:
    """Whether the Celery node ``worker`` is one the job started: GROUP.JOBID@host, or GROUP.JOBID.PID@host."""
    return re.search(rf"\.{re.escape(job_id)}(\.\d+)?@", worker) is not None
