"""Starting, resuming and inspecting studies: the one call each CLI command makes.

What only starting a study needs (the workspace writer, the script writer, the executor) is imported where it
is used, so that `status` loads little more than the status store.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shlex
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from merlin_mdm.backends import get_backend
from merlin_mdm.backends.base import RunOptions, RunReport
from merlin_mdm.errors import NoWorkspace, SpecIssue, StatusError, WorkspaceError
from merlin_mdm.status.model import StudySnapshot, StudyState
from merlin_mdm.status.sqlite_store import rebuild_hint
from merlin_mdm.status.store import StatusStore
from merlin_mdm.study.layout import Workspace, study_of
from merlin_mdm.study.lock import LOCK_FILE, LockHolder, WorkspaceLock, lock_holder
from merlin_mdm.study.plan import StudyPlan, UnitKey

if TYPE_CHECKING:  # the spec loads when a study is started or validated, not for `status`
    from merlin_mdm.spec import LoadedSpec, Spec

__all__ = ["StudyRequest", "backend_of", "find_workspace", "finished_without_markers", "prepare", "restart_study",
           "start_study", "study_status", "validate_study"]

BACKEND_FILE = "backend"


@dataclass(frozen=True)
class StudyRequest:
    """What `merlin-mdm run` was asked to do."""

    spec: Path
    variables: Mapping[str, str] = dataclasses.field(default_factory=dict)
    samples_file: Path | None = None
    pgen: Path | None = None
    pargs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    backend: str = "local"
    batch_size: int = 100
    dry: bool = False
    slots: int | None = None  # workers the units are sized for (default: slots.default_workers())


def prepare(request: StudyRequest, check: Callable[[Spec], None] | None = None,
            say: Callable[[str], None] | None = None) -> tuple[LoadedSpec, Workspace, StudyPlan]:
    """Validate the spec (and ``check`` it) and write the workspace and plan (nothing runs yet); ``say`` is told
    when the samples' generator starts (it may run for long before anything else is shown)."""
    from merlin_mdm.spec import load_spec

    loaded = load_spec(request.spec, request.variables, transform=lambda spec: _rewrite(spec, request), to_run=True)
    if check is not None:
        check(loaded.spec)
    from merlin_mdm.backends.slots import default_workers
    from merlin_mdm.backends.task_guard import task_guard
    from merlin_mdm.study.workspace import create_workspace

    # the samples' generator dies with this command, even by SIGKILL (it went on, and wrote into the removed
    # workspace's folder)
    guard = task_guard()

    def watch(group: int) -> None:
        guard(group)
        if group and say is not None:
            say("generating the samples (merlin.samples.generate; its output goes to merlin_info/cmd.out and "
                "cmd.err) ...")

    ws, plan = create_workspace(loaded, request.samples_file, request.batch_size,
                                slots=request.slots or default_workers(), watch=watch)
    (ws.info / BACKEND_FILE).write_text(request.backend + "\n", encoding="utf-8")
    return loaded, ws, plan


def validate_study(path: Path, variables: Mapping[str, str], strict: bool = False) -> tuple[LoadedSpec, StudyPlan]:
    """Everything `validate` checks: the spec, its parameter expansion (label collisions) and, when it exists
    already, its samples file; and the plan that expansion gives (without samples). Writes nothing."""
    from merlin_mdm.spec import load_spec
    from merlin_mdm.study.expand import StudyContext, expand, study_tokens
    from merlin_mdm.study.samples import check_samples_file
    from merlin_mdm.study.workspace import output_path

    loaded = load_spec(path, variables, strict=strict, to_run=True)
    spec = loaded.spec
    ctx = StudyContext("/validate", str(output_path(spec)), "00000000-000000")
    plan = expand(spec, ctx)
    notes = check_samples_file(spec, study_tokens(spec, ctx))
    machine = (*_cores_warnings(spec), *_shell_warnings(spec))
    return dataclasses.replace(loaded, warnings=(*loaded.warnings, *machine), notes=(*loaded.notes, *notes)), plan


def _shell_warnings(spec: Spec) -> list[SpecIssue]:
    """Steps whose shell this machine lacks (every task failed with ENOENT, and `validate` said nothing): a
    warning, never an error, since the workers may run elsewhere (also under --strict)."""
    from merlin_mdm.spec.checks import check_shells

    return [dataclasses.replace(issue, severity="warning") for issue in check_shells(spec, _missing_program)]


def _missing_program(shell: str) -> str | None:
    """Why the program ``shell`` starts with cannot run on this machine, or None (found, or not known here: a
    token, a shell variable, a path relative to the task's folder)."""
    try:
        words = shlex.split(shell)
    except ValueError:
        return None
    program = words[0] if words else ""
    if not program or "$" in program or (os.sep in program and not os.path.isabs(program)):
        return None
    if os.sep in program:
        if os.path.isfile(program) and os.access(program, os.X_OK):
            return None
        why = "is not an executable file" if os.path.exists(program) else "is not found"
    elif shutil.which(program) is None:
        why = "is not found on PATH"
    else:
        return None
    return (f"shell {program} {why} on this machine: tasks that use it fail where it is missing (it may exist "
            "where the workers run)")


def _cores_warnings(spec: Spec) -> list[SpecIssue]:
    """Tasks larger than this machine: a warning here (`validate` does not know the machine that will run the
    study), an error for `run --local` on a runner this small."""
    from merlin_mdm.backends.slots import runner_cores
    from merlin_mdm.spec.checks import check_cores

    available, where = runner_cores(None)
    return [dataclasses.replace(issue, severity="warning", message=f"{issue.message}; `validate` does not know the "
                                "machine that will run it, but `run --local` here refuses it unless --workers "
                                "oversubscribes") for issue in check_cores(spec, available, where)]


def _rewrite(spec: Spec, request: StudyRequest) -> Spec:
    """Command-line replacements applied before validation: --pgen parameters, --samplesfile."""
    if request.pgen is not None:
        from merlin_mdm.study.pgen import apply_pgen

        spec = apply_pgen(spec, request.pgen, dict(request.pargs))
    if request.samples_file is not None:
        from merlin_mdm.spec import with_samples_file

        spec = with_samples_file(spec, request.samples_file.resolve())
    return spec


def start_study(request: StudyRequest, options: RunOptions) -> tuple[Workspace, RunReport | None]:
    """Create the workspace and run (local) or queue (celery) the study; ``dry`` only writes the scripts."""
    backend = get_backend(request.backend, spec=request.spec)
    if not request.dry:
        backend.preflight()  # an unreachable broker must not leave a workspace behind
    loaded, ws, plan = prepare(request, None if request.dry else lambda spec: backend.check_spec(spec, options),
                               options.on_event)
    for warning in loaded.warnings:  # e.g. an unknown $(TOKEN) that looks like a misspelt one
        if options.on_event is not None:
            options.on_event(str(warning))
    if request.dry:
        _record_dry_run(ws, plan, options.progress)
        return ws, None
    with WorkspaceLock(ws.info, "run") as lock:
        lock.acquire()
        return ws, backend.launch(ws, plan, dataclasses.replace(options, keep_claim=lock.keep))


def _record_dry_run(ws: Workspace, plan: StudyPlan, progress: bool = False) -> None:
    """Write every script, and record the study in the local store: a dry run queues nothing on a broker, so
    `status` and `restart` of it never need one. ``progress``: a bar on the terminal (125,000 scripts take 35 s)."""
    from merlin_mdm.backends.dryrun import write_scripts

    if progress and plan.total_tasks() > 1000:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from merlin_mdm.status.render import stderr_console

        with Progress(TextColumn("[bold]writing scripts"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=stderr_console(), transient=True) as bar:
            task = bar.add_task("scripts", total=plan.total_tasks())
            write_scripts(plan, lambda n: bar.update(task, completed=n))
    else:
        write_scripts(plan)
    (ws.info / BACKEND_FILE).write_text("local\n", encoding="utf-8")
    store = get_backend("local").status_store(ws)
    try:
        store.register(plan)
        store.set_state(StudyState.DRY_RUN, "scripts written, nothing ran; `merlin-mdm restart` runs it here")
    finally:
        store.close()


def restart_study(path: Path, options: RunOptions, wait: bool = False,
                  backend_name: str | None = None) -> tuple[Workspace, RunReport]:
    """Resume a study: every task without its done-marker runs again, finished ones are skipped.

    One runner per study: a workspace another runner holds is refused (naming it), or awaited with ``wait``.
    ``backend_name`` (`restart --local`) switches the study to another backend from now on.
    """
    ws = Workspace.find(path)
    plan = ws.load_plan()
    ws.check_in_place(plan)
    edited = ws.edited_source()
    if edited is not None and options.on_event is not None:
        options.on_event(f"note: {edited} changed since this study was made from it; restart runs the study as it "
                         f"was made (merlin_info/ holds that spec and its task scripts), as Merlin does: to run the "
                         f"edited spec, `merlin-mdm run {shlex.quote(edited)}` (a new workspace)")
    if plan.samples is not None:
        plan.samples.rows()  # refused before anything runs when the samples changed
    if backend_name is not None and backend_name != backend_of(ws):
        get_backend(backend_of(ws)).check_handover(ws, plan)
    if backend_name is not None:
        (ws.info / BACKEND_FILE).write_text(backend_name + "\n", encoding="utf-8")
    backend = get_backend(backend_of(ws))
    with WorkspaceLock(ws.info, "restart") as lock:
        lock.acquire(wait)
        return ws, backend.launch(ws, plan, dataclasses.replace(options, resume=True, keep_claim=lock.keep))


def backend_of(ws: Workspace) -> str:
    """The backend the study in ``ws`` runs on: "local" (the embedded one) or "celery"."""
    try:
        return (ws.info / BACKEND_FILE).read_text(encoding="utf-8").strip() or "local"
    except FileNotFoundError:
        return "local"


def find_workspace(target: Path, backend: str | None = None, output: Path | None = None) -> Workspace:
    """A workspace path, or a spec file (its newest workspace under OUTPUT_PATH, or under ``output``: Merlin's
    `status -o`; with ``backend``, its newest of that backend: `launch` serves the newest study queued on Redis,
    not a newer `run --dry` or `--local`)."""
    if target.is_file() and target.suffix in (".yaml", ".yml"):
        from merlin_mdm.spec import load_spec
        from merlin_mdm.study.workspace import output_path

        loaded = load_spec(target)
        spec = loaded.spec
        try:
            base = output_path(spec) if output is None else output.absolute()
        except RuntimeError:  # `~nouser/x`: no such user's home
            from merlin_mdm.errors import SpecError
            from merlin_mdm.spec.checks import output_path_issue

            raise SpecError([output_path_issue(spec, "no home folder for its ~user")]) from None
        folder = spec.description.folder
        candidates = sorted((p for p in base.glob(f"{glob.escape(folder)}_*/merlin_info/plan.json")
                             if study_of(folder, p.parent.parent.name)),
                            key=lambda p: p.stat().st_mtime)
        if backend is not None:
            candidates = [p for p in candidates if _backend_may_be(p.parent, backend)]
        if not candidates:
            which = f" queued on {backend}" if backend == "celery" else ""
            raise NoWorkspace(f"no workspace{which} of study '{spec.description.name}' under {base}; run it first")
        # another spec may share the name and OUTPUT_PATH: prefer the workspaces this very spec text made
        own = [p for p in candidates if Workspace(p.parent.parent).spec_text("orig") == loaded.text]
        return Workspace((own or candidates)[-1].parent.parent)
    return Workspace.find(target)


def _backend_may_be(info: Path, backend: str) -> bool:
    """Whether the workspace whose merlin_info/ is ``info`` runs on ``backend``: it records it, or records none
    (a workspace written by create_workspace alone, or by an older version)."""
    try:
        recorded = (info / BACKEND_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return True
    return recorded in (backend, "")


def study_status(target: Path, patient: bool = True) -> StudySnapshot:
    """Where the study stands, read from its backend's status store (never by walking the workspace).

    A local study recorded as running whose runner is gone (it holds no lock any more, whatever killed it) is
    recorded as interrupted first: its units in flight go back to queued with their done-markers counted.
    """
    return study_tasks(target, patient)[0]


MARKER_CHECKS = 50_000  # the most done-markers `status` looks for: every one up to this many tasks, fewer beyond


def finished_without_markers(ws: Workspace) -> tuple[int, str]:
    """Tasks the status store records finished whose done-marker is not on disk (deleted by hand, purged from a
    scratch file system, a partial copy), and how they were counted ('' when every marker was looked for): the
    marker is the truth, and `restart` runs those tasks again.

    One existence check per task (about 1 s per 100,000 here, more on a parallel file system), so `status` asks it
    only of a study that is over, and looks for at most :data:`MARKER_CHECKS` markers: beyond, each unit's last
    one (written last; a purge takes whole trees), and beyond that many units, those of units spread evenly."""
    from merlin_mdm.backends.execution import count_done, markers_missing, task_finished

    store = get_backend(backend_of(ws)).status_store(ws, patient=False)
    try:
        finished = sorted(store.finished_units())
    finally:
        store.close()
    plan = ws.load_plan()
    if sum(len(plan.unit_samples(key)) for key in finished) <= MARKER_CHECKS:
        return sum(len(plan.unit_samples(k)) - count_done(plan, k) for k in markers_missing(plan, finished)), ""
    step = -(-len(finished) // MARKER_CHECKS)  # 1 up to MARKER_CHECKS units
    looked = finished[::step]
    lost = [key for key in looked if not task_finished(plan, key, plan.unit_samples(key)[-1])]
    how = "in units whose last task has" + ("" if step == 1 else f" (of {len(looked)} of {len(finished)} units "
                                            "looked at)")
    return sum(len(plan.unit_samples(key)) for key in lost), how


def study_tasks(target: Path, patient: bool = True, every_failure: bool = False) -> tuple[StudySnapshot,
                                                                                         list[UnitKey]]:
    """:func:`study_status` (``every_failure``: with every failure kept, not only the first ones `status`
    shows), and the units in flight (taken by a worker or runner, outcome not recorded yet).

    ``patient`` waits out a status server's restart (monitoring, waiting); without it (a person's `status`) a
    server that does not answer is an error within seconds."""
    ws = find_workspace(target)
    name = backend_of(ws)
    if name == "local" and not ws.status_path.exists():
        _no_database(ws)
    if name == "local" and ws.status_path.stat().st_size == 0:  # read as an empty study, and written to
        raise StatusError(f"the status database {ws.status_path} is empty{rebuild_hint(ws.status_path, 'empty')}")
    store = get_backend(name).status_store(ws, patient=patient)
    try:
        return _current(ws, name, store, every_failure), store.units_in_flight()
    finally:
        store.close()


def _no_database(ws: Workspace) -> None:
    """Refuse a status of a local study without its database, saying what is true now: a runner that still holds
    the study (its database deleted under it: a `restart` would be refused) or none (a `run --dry` stopped while
    it wrote the scripts left neither the database nor the lock file: it was said to be held by a runner)."""
    held, holder = lock_holder(ws.info, missing_is_held=False)
    if held:
        raise StatusError(f"no status database in {ws.info}, but {holder or 'a runner'} still holds the study: its "
                          f"database was deleted while it runs. Let it end (or stop it), then `merlin-mdm restart "
                          f"{ws.root}` rebuilds the database from the done-markers")
    raise StatusError(f"no status database in {ws.info}: the study was never started, or the database was "
                      f"deleted (`merlin-mdm restart {ws.root}` rebuilds it from the done-markers)")


def _current(ws: Workspace, backend: str, store: StatusStore, every_failure: bool = False) -> StudySnapshot:
    snap = store.snapshot(every_failure)  # read once: on a 100,000-unit study one read is most of the time
    if backend != "local" or snap.state is not StudyState.RUNNING:
        return snap
    held, holder = lock_holder(ws.info)
    if not held and not ws.may_record():  # another user's study, a read-only one: said, not recorded
        who = f"the runner {holder}" if holder else "the runner"
        return dataclasses.replace(snap, state=StudyState.INTERRUPTED, message=(
            f"{who} is gone without recording an end (killed?); `merlin-mdm restart` by one who may write the "
            "workspace resumes it"))
    live = holder if held else _record_dead_runner(ws, store)
    if live is None:
        return store.snapshot(every_failure)  # recorded as interrupted (or it ended meanwhile): what is now true
    if live.gone():  # SIGKILLed: the task processes it started still hold the lock for a moment
        return dataclasses.replace(snap, message=f"the runner {live} is gone; its task processes are ending, and "
                                                 "the study is recorded as interrupted when they have")
    if live.stopped():  # the counts stand still until it is continued
        return dataclasses.replace(snap, message=f"run by {live}, which is stopped (SIGSTOP or Ctrl-Z): nothing "
                                                 f"runs until `kill -CONT {live.pid}` (or `fg` in its shell)")
    return snap if snap.message else dataclasses.replace(snap, message=f"run by {live}")


def _record_dead_runner(ws: Workspace, store: StatusStore) -> LockHolder | None:
    """Record a study whose runner died as interrupted; returns the live runner when there is one. The look
    leaves the lock file naming that runner (on a full disk `status` failed to record and left its own name)."""
    holder = LockHolder.read(ws.info / LOCK_FILE)
    lock = WorkspaceLock(ws.info, "status", record=False)
    try:
        lock.acquire(tries=1)
    except WorkspaceError:
        return holder  # a live runner holds the study
    try:
        if store.snapshot().state is not StudyState.RUNNING:
            return None
        plan = ws.load_plan()
        from merlin_mdm.backends.execution import count_done

        store.requeue({key: count_done(plan, key) for key in store.units_in_flight()})
        who = f"the runner {holder}" if holder else "the runner"
        store.set_state(StudyState.INTERRUPTED, f"{who} is gone without recording an end (killed?); "
                                                  "`merlin-mdm restart` resumes")
        return None
    finally:
        lock.release()
