"""Running the tasks of one unit: scripts, logs, exit-code semantics and done-markers.

Shared by every backend: the local pool's worker processes and Celery tasks both call :func:`run_unit`.
A task whose directory holds the done-marker is never run again, so running a unit twice is harmless.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import heapq
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from merlin_mdm.backends.task_process import (
    LOG_FLAGS,
    WalltimeExceeded,
    close_on_exec,
    kept_cwd,
    kill_current_group,
    spawn,
    terminate_current,
    wait,
    watch_tasks,
)
from merlin_mdm.config import user_config_dir
from merlin_mdm.spec.exitcodes import ExitCode
from merlin_mdm.spec.hazards import parse_walltime
from merlin_mdm.spec.model import MAX_RETRY_DELAY
from merlin_mdm.spec.tokens import substitute_task
from merlin_mdm.status.model import StopKind, TaskFailure, TaskState, UnitOutcome
from merlin_mdm.status.states import RAISED_REASON
from merlin_mdm.study.plan import NO_SAMPLE, StepInstance, StudyPlan, UnitKey

__all__ = [
    "DONE_MARKER",
    "TaskResult",
    "count_done",
    "kill_current_group",
    "markers_missing",
    "os_error_reason",
    "run_task",
    "run_unit",
    "script_text",
    "task_dir",
    "task_env",
    "task_finished",
    "task_tokens",
    "terminate_current",
    "unit_failure",
    "walltime_seconds",
    "watch_tasks",
    "worker_deaths_outcome",
    "workspace_gone_message",
    "write_script",
]

DONE_MARKER = "MERLIN_FINISHED"
_MARKER_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
_SCRIPT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True)
class TaskResult:
    """How one task ended."""

    state: TaskState
    rc: int | None
    restarts: int
    reason: str = ""
    log: str = ""
    stop: StopKind | None = None
    ran: bool = True  # False when its done-marker was there already: it took no time of this run


def task_dir(plan: StudyPlan, inst: StepInstance, sample: int) -> Path:
    """The directory a task runs in."""
    return Path(_task_path(plan, inst, sample))


def _task_path(plan: StudyPlan, inst: StepInstance, sample: int) -> str:
    # a plain string: a task's few paths are joined on its hot path, where pathlib costs more than the work
    base = os.path.join(plan.workspace, inst.workspace)
    if sample == NO_SAMPLE or plan.samples is None:
        return base
    return os.path.join(base, plan.samples.path(sample))


def walltime_seconds(text: str | None) -> float | None:
    """A walltime `[[HH:]MM:]SS` in seconds; None when unset or zero (validation refused any other text)."""
    try:
        return parse_walltime(text)
    except ValueError:
        return None


def task_tokens(plan: StudyPlan, sample: int, directory: str | Path) -> dict[str, str]:
    """The per-task tokens. $(WORKSPACE) is the step's folder (with its labels) even in a sample task, as in
    Merlin, where the step is expanded before its samples; the sample's own folder is $(MERLIN_SAMPLE_PATH)."""
    tokens = {"WORKSPACE": str(directory)}
    if sample != NO_SAMPLE and plan.samples is not None:
        sample_dir = plan.samples.path(sample)
        tokens["WORKSPACE"] = str(directory)[: -len(sample_dir) - 1] if sample_dir else str(directory)
        values = plan.samples.values(sample)
        tokens.update(zip(plan.samples.column_labels, values, strict=True))
        tokens["MERLIN_SAMPLE_ID"] = str(sample)
        tokens["MERLIN_SAMPLE_PATH"] = plan.samples.path(sample)
        tokens["MERLIN_SAMPLE_VECTOR"] = " ".join(values)
    return tokens


@functools.lru_cache(maxsize=64)
def _interpreter(shell: str) -> tuple[str, ...]:
    """The argv prefix of a task's script: `shell` is an interpreter line, as in Merlin
    (`/usr/bin/env python3`), split like a shebang. A task dies with a Celery worker through that backend's
    task guard (backends/task_guard.py), not through anything here."""
    return tuple(shlex.split(shell))


class _WorkspaceGone(Exception):
    """The workspace's root is no longer where the plan says: moved or deleted while the study ran."""


def workspace_gone_message(root: str) -> str:
    """What a user is told when the workspace ``root`` was moved or deleted under a running study."""
    return (f"the workspace {root} was moved or deleted while the study ran; move it back and "
            f"`merlin-mdm restart {root}`")


def _make_dir(directory: str, root: str) -> None:
    """Create a task's directory below the workspace ``root``; one system call when its parent exists (the common
    case). Folders are made one level at a time from ``root``, never ``root`` or a folder above it: a workspace moved
    away is not silently made again (a second, half tree without merlin_info).

    Raises:
        _WorkspaceGone: ``root`` is not there.
    """
    try:
        os.mkdir(directory)
        return
    except FileExistsError:
        return
    except FileNotFoundError:
        pass
    folder = root
    for part in os.path.relpath(directory, root).split(os.sep):
        folder = os.path.join(folder, part)
        try:
            os.mkdir(folder)
        except FileExistsError:
            continue
        except FileNotFoundError:
            raise _WorkspaceGone(root) from None


def _run_script(shell: str, script: str, directory: str, name: str, env: dict[str, str],
                timeout: float | None) -> int:
    prefix = _interpreter(shell)
    out = os.open(os.path.join(directory, f"{name}.out"), LOG_FLAGS, 0o666)
    try:
        err = os.open(os.path.join(directory, f"{name}.err"), LOG_FLAGS, 0o666)
        try:
            pid = spawn([*prefix, script], directory, out, err, env)
        except OSError as exc:  # the interpreter is missing or not executable: this task fails, nothing else
            os.write(err, f"merlin-mdm: cannot start the shell '{shell}': {exc.strerror or exc}\n".encode())
            raise
        finally:
            os.close(err)
    finally:
        os.close(out)
    return wait(pid, timeout)


def script_text(shell: str, cmd: str, sources: tuple[str, ...] = ()) -> str:
    """A task script as Merlin writes it: `#!<shell>`, a blank line, the `env.sources` lines, the command.

    Merlin's command went through its YAML provenance dump and back: a one-line command became a plain
    scalar (no surrounding blanks), a longer one a block ending with exactly one newline; the script then adds
    a newline of its own.
    """
    head = f"#!{shell}\n\n" + "".join(f"source {src}\n" for src in sources)
    lines = cmd.splitlines()
    body = "\n".join(lines) + "\n" if len(lines) > 1 else cmd.strip()
    return f"{head}{body}\n"


def write_script(path: str | Path, shell: str, cmd: str, sources: tuple[str, ...] = ()) -> None:
    """Write a task script (executable, so it also runs by its shebang line)."""
    # a path that is not UTF-8 (the spec's folder in $(SPECROOT)) keeps its own bytes
    data = memoryview(script_text(shell, cmd, sources).encode("utf-8", "surrogateescape"))
    fd = os.open(path, _SCRIPT_FLAGS, 0o755)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def os_error_reason(exc: OSError) -> str:
    """One line naming an OS error, e.g. `OS error ENOSPC (No space left on device): /path`."""
    code = errno.errorcode.get(exc.errno or 0, "")
    where = f": {exc.filename}" if exc.filename else ""
    return f"OS error {code} ({exc.strerror or exc}){where}".replace(" ()", "")


@dataclass
class _Attempt:
    """A task between attempts: where it runs, what it has done, when it may run again."""

    sample: int
    directory: str  # absolute: tasks are spawned from their directories
    tokens: dict[str, str]
    root: str  # the workspace's root
    restarts: int = 0
    restart_next: bool = False  # run the `restart` command next (after MERLIN_RESTART)
    due: float = 0.0  # time.monotonic() before which it must not run again (retry_delay)


def _start(plan: StudyPlan, inst: StepInstance, sample: int) -> _Attempt | TaskResult:
    """A task ready for its first attempt, or its result (done-marker already there, or an OS error)."""
    directory = os.path.abspath(_task_path(plan, inst, sample))
    stem = os.path.join(directory, inst.file_stem())
    try:
        if os.path.exists(os.path.join(directory, DONE_MARKER)):
            return TaskResult(TaskState.FINISHED, 0, 0, "already finished", ran=False)
        _make_dir(directory, os.path.abspath(plan.workspace))
        tokens = task_tokens(plan, sample, directory)
        write_script(f"{stem}.sh", inst.shell, substitute_task(inst.cmd, tokens), inst.sources)
        if inst.restart:  # Merlin writes every task's restart script before it runs (read it, run it by hand)
            restart = os.path.join(directory, inst.file_stem(restart=True))
            write_script(f"{restart}.sh", inst.shell, substitute_task(inst.restart, tokens), inst.sources)
    except _WorkspaceGone:
        return TaskResult(TaskState.NOT_RUN, None, 0, workspace_gone_message(plan.workspace))
    except OSError as exc:
        return TaskResult(TaskState.FAILED, None, 0, os_error_reason(exc), f"{stem}.err")
    return _Attempt(sample, directory, tokens, plan.workspace)


def _attempt(inst: StepInstance, task: _Attempt, env: dict[str, str]) -> TaskResult | None:
    """Run one attempt of ``task``; None when it asked to run again (``task`` then says how and when).

    The task's folder is held open while it runs: its done-marker is written in that folder even when the
    workspace was moved meanwhile (the task's work moved with it). A folder that is gone before the attempt is a
    workspace moved or deleted: the task does not run.
    """
    try:
        folder = os.open(task.directory, _DIR_FLAGS)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not os.path.isdir(task.root):
            return TaskResult(TaskState.NOT_RUN, None, task.restarts, workspace_gone_message(task.root))
        return TaskResult(TaskState.FAILED, None, task.restarts, os_error_reason(exc))
    try:
        return _attempt_in(inst, task, env, folder)
    finally:
        os.close(folder)


def _attempt_in(inst: StepInstance, task: _Attempt, env: dict[str, str], folder: int) -> TaskResult | None:
    """:func:`_attempt` with the task's folder open as ``folder``.

    An OS error (a full disk, a refused permission, a name too long, a missing shell) fails the task with
    the error's message; it never escapes to the worker.
    """
    restart = task.restart_next and bool(inst.restart)
    name = inst.file_stem(restart)  # Merlin's names: a restart writes its own script and logs
    log = os.path.join(task.directory, f"{name}.err")
    try:
        script = os.path.join(task.directory, f"{name}.sh")
        if restart:
            write_script(script, inst.shell, substitute_task(inst.restart or "", task.tokens), inst.sources)
        rc = _run_script(inst.shell, script, task.directory, name, env, walltime_seconds(inst.walltime))
    except OSError as exc:
        return TaskResult(TaskState.FAILED, None, task.restarts, os_error_reason(exc), log)
    except WalltimeExceeded:
        with contextlib.suppress(OSError), open(log, "a", encoding="utf-8") as err:  # the log says why it ended
            err.write(f"merlin-mdm: the step's walltime {inst.walltime} ran out: every process of the task was "
                      "killed (SIGKILL)\n")
        return TaskResult(TaskState.FAILED, -signal.SIGKILL, task.restarts,
                          f"walltime {inst.walltime} exceeded, killed", log)
    if rc in (ExitCode.RESTART, ExitCode.RETRY) and task.restarts < inst.max_retries:
        task.restarts += 1
        task.restart_next = rc == ExitCode.RESTART
        # Merlin delays both codes by retry_delay; a plan of before validation bounded it may hold .inf or NaN
        delay = inst.retry_delay if 0 <= inst.retry_delay <= MAX_RETRY_DELAY else MAX_RETRY_DELAY
        task.due = time.monotonic() + delay
        return None
    return _finish(folder, rc, task.restarts, log)


def run_task(plan: StudyPlan, inst: StepInstance, sample: int, env: dict[str, str]) -> TaskResult:
    """Run one task to its end, following the exit-code protocol; skip it when its done-marker exists."""
    task = _start(plan, inst, sample)
    close_on_exec()
    with kept_cwd():
        while not isinstance(task, TaskResult):
            time.sleep(max(0.0, task.due - time.monotonic()))
            task = _attempt(inst, task, env) or task
    return task


def _finish(folder: int, rc: int, restarts: int, log: str) -> TaskResult:
    """The result of an attempt that exited with ``rc``; a success writes the done-marker in ``folder`` (open)."""
    if rc in (ExitCode.SUCCESS, ExitCode.STOP_WORKERS):
        try:
            os.close(os.open(DONE_MARKER, _MARKER_FLAGS, 0o666, dir_fd=folder))
        except OSError as exc:  # without its marker the task is not done: it must run again
            reason = f"exited with {rc} but its done-marker could not be written, so it is not done: "
            return TaskResult(TaskState.FAILED, rc, restarts, reason + os_error_reason(exc), log)
        stop = StopKind.STOP_WORKERS if rc == ExitCode.STOP_WORKERS else None
        return TaskResult(TaskState.FINISHED, rc, restarts, stop=stop)
    if rc in (ExitCode.RESTART, ExitCode.RETRY):
        reason = f"gave up after {restarts} restarts/retries (max_retries)"
    elif rc == ExitCode.HARD_FAIL:
        return TaskResult(TaskState.FAILED, rc, restarts, "hard fail: the study was stopped", log, StopKind.HARD_FAIL)
    elif rc == ExitCode.SOFT_FAIL:
        reason = "soft fail"
    elif rc == ExitCode.RAISE_ERROR:
        reason = f"{RAISED_REASON}: the tasks that depend on it do not run"
    elif rc < 0:
        reason = f"killed by signal {-rc} ({_signal_name(-rc)})"
    else:
        reason = f"exit code {rc}"
    return TaskResult(TaskState.FAILED, rc, restarts, reason, log)


def _signal_name(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return "unknown signal"
    return f"{name}: the out-of-memory killer, or another process" if signum == signal.SIGKILL else name


def task_env(plan: StudyPlan, inst: StepInstance) -> dict[str, str]:
    """The environment of an instance's tasks: the user's, plus where the task sits in the study."""
    # Steps run in the user's environment: their PATH comes first, so a step's `python3` is the user's, with
    # the user's packages. A folder holding only `merlin-mdm` is appended, so the command is found even when its
    # virtual environment was not activated, while that environment's other tools (mpicc, mpiexec, python)
    # stay out of the steps' sight, as in Merlin.
    path = os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin"  # a shell's own default when none is set
    bindir = os.path.dirname(sys.executable)
    if bindir not in path.split(os.pathsep):
        own = command_folder()
        if own not in path.split(os.pathsep):
            path = path + os.pathsep + own
    return {**os.environ, "PATH": path, "MERLIN_MDM_STUDY": plan.name, "MERLIN_MDM_STEP": inst.step,
            "MERLIN_MDM_PARAM_LABELS": inst.labels, "MERLIN_MDM_WORKSPACE": plan.workspace}


@functools.cache
def command_folder() -> str:
    """A folder whose only entry is a link to this installation's `merlin-mdm`, one per installation:
    ``~/.merlin-mdm/bin/<id>``, or ``<tmp>/merlin-mdm-<uid>/bin/<id>`` where the home is not an existing, absolute,
    writable folder, or the installation's own bin/ where neither can be made. Always absolute: a task runs in its
    own folder, where a relative PATH entry finds nothing."""
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    if not os.path.exists(os.path.join(bindir, "merlin-mdm")):  # run from a source tree: the interpreter's folder
        return bindir
    for where in (_link_home, _private_tmp):
        base = where()
        folder = _linked(base, bindir) if base is not None else None
        if folder is not None:
            return folder
    return bindir


def _linked(base: str, bindir: str) -> str | None:
    """``<base>/bin/<id>`` holding the link to ``bindir``'s `merlin-mdm` (made when missing); None when it cannot
    be made. ``base`` is made when missing, never a folder above it."""
    import hashlib

    target = os.path.join(bindir, "merlin-mdm")
    folder = os.path.join(base, "bin", hashlib.sha1(bindir.encode("utf-8", "surrogateescape")).hexdigest()[:12])
    link = os.path.join(folder, "merlin-mdm")
    try:
        if os.readlink(link) == target:
            return folder
    except OSError:
        pass
    try:
        for level in (base, os.path.dirname(folder), folder):
            with contextlib.suppress(FileExistsError):
                os.mkdir(level)
        staged = os.path.join(folder, f".merlin-mdm.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        os.symlink(target, staged)
        os.replace(staged, link)
    except OSError:
        return None
    return folder


def _link_home() -> str | None:
    """``~/.merlin-mdm`` where the home is an existing, absolute folder other than /; None otherwise: a relative,
    empty or missing HOME made a relative PATH entry, a folder at /, or a whole home tree."""
    config = os.fspath(user_config_dir())
    home = os.path.dirname(config)
    if not os.path.isabs(config) or os.path.realpath(home) == os.sep or not os.path.isdir(home):
        return None
    return config


def _private_tmp() -> str | None:
    """``<tmp>/merlin-mdm-<uid>``, this user's own folder (made 0700); None when it is not a folder of this user's
    that only this user may write: another user could otherwise put a `merlin-mdm` of theirs on the tasks' PATH."""
    import stat
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), f"merlin-mdm-{os.getuid()}")
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
        info = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None
    return folder


def task_finished(plan: StudyPlan, key: UnitKey, sample: int) -> bool:
    """Whether task ``sample`` of unit ``key`` has its done-marker."""
    return os.path.exists(os.path.join(_task_path(plan, plan.instances[key.instance], sample), DONE_MARKER))


def count_done(plan: StudyPlan, key: UnitKey) -> int:
    """Tasks of ``key`` whose done-marker exists: the truth an interrupted unit is recorded with."""
    inst = plan.instances[key.instance]
    # string paths: the local runner counts a running unit's markers on every progress tick
    return sum(os.path.exists(os.path.join(_task_path(plan, inst, sample), DONE_MARKER))
               for sample in plan.unit_samples(key))


def markers_missing(plan: StudyPlan, keys: Iterable[UnitKey]) -> list[UnitKey]:
    """Those of ``keys`` (units an index calls finished) with a task whose done-marker is not on disk."""
    return sorted(key for key in keys if count_done(plan, key) < len(plan.unit_samples(key)))


def unit_failure(plan: StudyPlan, key: UnitKey, reason: str) -> UnitOutcome:
    """The outcome of a unit that could not run at all: its finished tasks count, every other one failed (the
    first of them is named)."""
    samples = plan.unit_samples(key)
    left = _unfinished(plan, key)
    failure = TaskFailure(left[0] if left else samples[0], TaskState.FAILED, None, reason, "")
    now = time.time()
    return UnitOutcome(len(samples) - len(left), len(left), 0, 0, now, now, socket.gethostname(), (failure,))


def worker_deaths_outcome(plan: StudyPlan, key: UnitKey, deaths: int, limit: int) -> UnitOutcome:
    """A unit whose worker died ``deaths`` times (more than ``limit``): its tasks with a done-marker finished; the
    first without one, where its tasks run in order, is the one that killed the worker (failed, named); the ones
    after it never ran (not run)."""
    samples = plan.unit_samples(key)
    left = _unfinished(plan, key)
    culprit = left[0] if left else samples[0]
    failed = TaskFailure(culprit, TaskState.FAILED, None, f"its worker died {deaths} times while it ran "
                         f"(max_deliveries {limit})", "")
    skipped = tuple(TaskFailure(s, TaskState.NOT_RUN, None, f"not run: sample {culprit} before it killed the "
                                f"worker {deaths} times", "") for s in left[1:])
    now = time.time()
    return UnitOutcome(len(samples) - len(left), 1 if left else 0, max(0, len(left) - 1), 0, now, now,
                       socket.gethostname(), (failed, *skipped))


def _unfinished(plan: StudyPlan, key: UnitKey) -> list[int]:
    """The samples of ``key`` without their done-marker, in the order the unit runs them."""
    inst = plan.instances[key.instance]
    return [s for s in plan.unit_samples(key)
            if not os.path.exists(os.path.join(_task_path(plan, inst, s), DONE_MARKER))]


def run_unit(plan: StudyPlan, key: UnitKey, should_stop: Callable[[], bool] = lambda: False,
             on_task: Callable[[], None] | None = None) -> UnitOutcome:
    """Run every task of ``key``; tasks after a stop request are reported as not run.

    A task that asks to run again (MERLIN_RESTART, MERLIN_RETRY) waits its ``retry_delay`` while the unit's
    other tasks run, so the delays of sibling samples overlap instead of adding up. A task whose parent
    sample failed still runs (Merlin's semantics).
    ``on_task`` is called each time a task ran to its end (progress per sample).
    """
    close_on_exec()
    with kept_cwd():  # tasks are spawned from their own directories
        return _run_unit(plan, key, should_stop, on_task)


def _run_unit(plan: StudyPlan, key: UnitKey, should_stop: Callable[[], bool],
              on_task: Callable[[], None] | None) -> UnitOutcome:
    inst = plan.instances[key.instance]
    env = task_env(plan, inst)
    started = time.time()
    results: dict[int, TaskResult] = {}
    waiting: list[tuple[float, int, _Attempt]] = []  # a heap by due time (then sample order)
    for sample in plan.unit_samples(key):
        task = _start(plan, inst, sample)
        if isinstance(task, TaskResult):
            results[sample] = task
        else:
            waiting.append((task.due, sample, task))
    heapq.heapify(waiting)
    hard_fail = any(r.stop is StopKind.HARD_FAIL for r in results.values())
    while waiting:
        _, _, task = heapq.heappop(waiting)
        if hard_fail or should_stop():
            results[task.sample] = TaskResult(TaskState.NOT_RUN, None, task.restarts, "the study was stopped")
            continue
        delay = task.due - time.monotonic()
        if delay > 0:  # only a retry_delay waits; sleep(0) would still yield the CPU once per task
            time.sleep(delay)
        result = _attempt(inst, task, env)
        if result is None:
            heapq.heappush(waiting, (task.due, task.sample, task))
        else:
            results[task.sample] = result
            hard_fail = hard_fail or result.stop is StopKind.HARD_FAIL
            if on_task is not None:
                on_task()
    samples = list(plan.unit_samples(key))
    return _outcome([results[s] for s in samples], samples, started)


def _outcome(results: list[TaskResult], samples: list[int], started: float) -> UnitOutcome:
    counts = {state: sum(1 for r in results if r.state == state) for state in TaskState}
    failures = tuple(TaskFailure(sample, r.state, r.rc, r.reason, r.log)
                     for sample, r in zip(samples, results, strict=True) if r.state != TaskState.FINISHED)
    stop = next((r.stop for r in results if r.stop), None)
    ran = sum(1 for r in results if r.ran and r.state in (TaskState.FINISHED, TaskState.FAILED))
    return UnitOutcome(counts[TaskState.FINISHED], counts[TaskState.FAILED], counts[TaskState.NOT_RUN],
                       sum(r.restarts for r in results), started, time.time(), socket.gethostname(), failures, stop,
                       ran=ran)
