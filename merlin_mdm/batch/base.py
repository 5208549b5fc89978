"""The batch-system contract: one allocation request in, a job id out; job states through one enum.

A batch system knows how to write a batch script for an :class:`AllocationRequest`, which command
submits it, which command asks for states and how to read the answer, and which command cancels.
Running those commands goes through one injectable runner (:func:`merlin_mdm._shell.run` by default),
so tests can substitute it. Nothing here names a launcher: the request's ``command`` already holds
whatever runs inside the allocation.
"""

from __future__ import annotations

import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import ClassVar

from merlin_mdm import _shell
from merlin_mdm.errors import BatchError

__all__ = [
    "TERMINAL_STATES",
    "Allocation",
    "AllocationRequest",
    "BatchSystem",
    "JobState",
    "Runner",
    "UnsupportedRequest",
    "deadline_from_env",
    "exit_file_state",
    "int_from_env",
    "translate_state",
]

Runner = Callable[[Sequence[str]], _shell.ShellResult]


class UnsupportedRequest(BatchError):
    """A request this batch system has no way to honour (a setting of the spec's batch block): exit code 2."""

    exit_code = 2


class JobState(Enum):
    """Where a batch job stands, whatever the scheduler calls it."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"  # ran out of walltime: not a failure of the work, the next allocation goes on
    UNKNOWN = "unknown"  # the scheduler no longer knows the job and it left no exit code


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT})


def translate_state(table: Mapping[str, JobState], native: str) -> JobState:
    """The JobState of a scheduler's ``native`` state through ``table`` (UNKNOWN when it is not listed)."""
    return table.get(native.strip(), JobState.UNKNOWN)


@dataclass(frozen=True)
class AllocationRequest:
    """One batch allocation to ask for.

    ``command`` is the shell text that runs inside the allocation (on its first node); the batch
    system adds the scheduler's directives, ``launch_pre`` and the bookkeeping around it.
    """

    name: str  # job name shown by the scheduler
    command: str  # shell text run inside the allocation
    workdir: Path  # where the script, its output (<name>.<job id>.out) and exit code (<job id>.ec) go
    nodes: int = 1
    walltime: int | None = None  # seconds; None = the queue's default
    queue: str | None = None  # partition / queue
    bank: str | None = None  # account charged
    qos: str | None = None
    reservation: str | None = None
    exclusive: bool = True  # whole nodes
    launch_pre: str | None = None  # shell lines run before ``command`` (module loads, ...)
    options: tuple[tuple[str, str], ...] = ()  # extra scheduler options, long form: (("mem", "0"),)
    env: tuple[tuple[str, str], ...] = field(default=())  # variables exported before ``command``
    # the command's last line writes its own exit code to the file named by MERLIN_MDM_EXIT_CODE_FILE, so the
    # script `exec`s it: the batch shell becomes the command, and a signal to the shell (Slurm's
    # --signal=B:SIG@T early warning) reaches it instead of killing the shell
    writes_exit_code: bool = False
    system: str | None = None  # the batch system to submit to (a worker group's own batch type); None: the spec's
    cores_per_node: int | None = None  # cores of one node, where the scheduler must be told (PBS's ncpus)

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise BatchError(f"allocation '{self.name}': nodes must be at least 1, not {self.nodes}")
        if self.walltime is not None and self.walltime < 1:
            raise BatchError(f"allocation '{self.name}': walltime must be at least 1 s, not {self.walltime}")
        if not self.name or any(c.isspace() for c in self.name):
            raise BatchError(f"allocation name {self.name!r} must be one word")


@dataclass(frozen=True)
class Allocation:
    """The allocation this process runs in, as its environment describes it."""

    system: str  # the batch system's registered name
    job_id: str
    nodes: int
    cores_per_node: int | None  # None: let each node count its own
    end: float | None = None  # when the walltime runs out, seconds since the epoch; None = unknown

    def seconds_left(self, now: float) -> float | None:
        """Seconds until the walltime runs out at time ``now`` (None when unknown)."""
        return None if self.end is None else self.end - now


def int_from_env(env: Mapping[str, str], *names: str) -> int | None:
    """The first of ``names`` set to an integer (``"40(x2)"`` reads as 40)."""
    for name in names:
        try:
            return int(env[name].split("(")[0])
        except (KeyError, ValueError):
            continue
    return None


def deadline_from_env(env: Mapping[str, str]) -> float | None:
    """The walltime deadline our batch scripts export (MERLIN_MDM_ALLOC_END)."""
    try:
        return float(env["MERLIN_MDM_ALLOC_END"])
    except (KeyError, ValueError):
        return None


class BatchSystem(ABC):
    """A scheduler: script, submit, status, cancel. Subclasses are registered by ``name``."""

    name: ClassVar[str]
    job_id_var: ClassVar[str]  # the variable holding the job id inside the job (e.g. SLURM_JOB_ID)
    script_suffix: ClassVar[str] = ".sh"
    title: ClassVar[str] = ""  # the scheduler's name in messages (default: ``name`` in capitals)
    stuck_reasons: ClassVar[Mapping[str, str]] = {}
    """Reasons a job waits (as :meth:`parse_reasons` reads them) that mean it will not start as it was asked for,
    each with what it means: `launch` fails and `status` says so instead of showing a plain `pending`."""
    doubtful_reasons: ClassVar[Mapping[str, str]] = {}
    """Reasons that mean the same, or only that resources are down for now: `launch` and `status` warn."""
    lacks: ClassVar[tuple[tuple[str, str], ...]] = ()
    """Request settings (``qos``, ``reservation``) the scheduler has no option for, each with where its like goes
    instead (or ""): refused with that advice, never dropped without a word."""

    def __init__(self, runner: Runner | None = None) -> None:
        self._runner: Runner = runner or _shell.run

    # -- what each scheduler supplies -------------------------------------------------------------
    @abstractmethod
    def directives(self, req: AllocationRequest) -> list[str]:
        """The script's first lines: shebang and scheduler directives."""

    @abstractmethod
    def submit_command(self, script: Path) -> list[str]:
        """The command that submits ``script``."""

    @abstractmethod
    def parse_job_id(self, out: str) -> str:
        """The job id in the submit command's output."""

    @abstractmethod
    def status_command(self, ids: Sequence[str]) -> list[str]:
        """The command that reports the states of ``ids``."""

    @abstractmethod
    def parse_status(self, out: str) -> dict[str, JobState]:
        """Job id -> state, for every job the status command's output names."""

    def parse_reasons(self, out: str) -> dict[str, str]:
        """Job id -> why it waits, for the jobs the status command's output gives a reason (default: none)."""
        return {}

    @abstractmethod
    def cancel_command(self, ids: Sequence[str]) -> list[str]:
        """The command that cancels ``ids``."""

    @classmethod
    def detect(cls, env: Mapping[str, str]) -> Allocation | None:
        """The allocation ``env`` is inside of, when it is one of this system's (default: never)."""
        return None

    def granted_walltime(self, req: AllocationRequest) -> int | None:
        """The walltime the scheduler will enforce for ``req`` (seconds): ``req.walltime`` unless it rounds it."""
        return req.walltime

    def end_time(self, job_id: str) -> float | None:
        """When running job ``job_id`` hits its walltime (seconds since the epoch); None when unknown.

        For allocations whose script did not export MERLIN_MDM_ALLOC_END (a hand-written batch script).
        """
        return None

    # -- shared behaviour -------------------------------------------------------------------------
    def script(self, req: AllocationRequest) -> str:
        """The whole batch script for ``req``; a setting the scheduler lacks is refused (:attr:`lacks`)."""
        for key, instead in self.lacks:
            value = getattr(req, key)
            if value:
                raise UnsupportedRequest(f"allocation '{req.name}': {key} {value!r}: {self.title or self.name.upper()} "
                                         f"has no {key} option; remove `{key}` from the batch block{instead}")
        _check_names(req)
        return "\n".join([*self.directives(req), "", *self.body(req)]) + "\n"

    def body(self, req: AllocationRequest) -> list[str]:
        """Bookkeeping around the request's command: deadline, output file, launch_pre, exit code."""
        out = shlex.quote(str(req.workdir))
        job = f"${{{self.job_id_var}}}"
        walltime = self.granted_walltime(req)
        lines = [
            f'exec >>{out}/"{req.name}.{job}.out" 2>&1',
            "# the deadline the workers plan against (seconds since the epoch)",
            f"export MERLIN_MDM_ALLOC_END=$(( $(date +%s) + {walltime} ))" if walltime else
            "unset MERLIN_MDM_ALLOC_END",
            f"export MERLIN_MDM_BATCH={self.name} MERLIN_MDM_JOB_ID={job}",
            *(f"export {k}={shlex.quote(v)}" for k, v in req.env),
        ]
        ec_file = f'{out}/"{job}.ec"'
        # a launch_pre (or cd) that ends the script leaves its exit code too: `status` judges a job the
        # scheduler forgot by it (a failing launch_pre left none, and the job showed `unknown`)
        lines += [f"export MERLIN_MDM_EXIT_CODE_FILE={ec_file}",
                  'trap \'echo "$?" >"$MERLIN_MDM_EXIT_CODE_FILE"\' EXIT']
        if req.launch_pre:
            lines += ["# launch_pre", *req.launch_pre.rstrip().splitlines()]
        if req.writes_exit_code:
            *first, last = req.command.rstrip().splitlines()
            return [*lines, *first, f"exec {last}"]
        return [*lines, req.command.rstrip()]

    def submit(self, req: AllocationRequest) -> str:
        """Write the script into ``req.workdir``, submit it, return the job id."""
        req.workdir.mkdir(parents=True, exist_ok=True)
        path = req.workdir / f"{req.name}{self.script_suffix}"
        path.write_text(self.script(req), encoding="utf-8")
        path.chmod(0o755)
        res = self._call(self.submit_command(path), "submit")
        try:
            return self.parse_job_id(res.stdout)
        except (IndexError, ValueError) as exc:
            raise BatchError(f"{self.name}: cannot read a job id from {res.stdout.strip()!r}") from exc

    def status(self, ids: Iterable[str], workdir: Path | None = None,
               reasons: dict[str, str] | None = None) -> dict[str, JobState]:
        """The state of each of ``ids``. A job the scheduler forgot is judged by its exit code file in ``workdir``.
        ``reasons`` gets why each pending job waits, where the scheduler says."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        out = self._call(self.status_command(wanted), "status", ok_codes=self.status_ok_codes).stdout
        try:
            known = self.parse_status(out)
            why = self.parse_reasons(out) if reasons is not None else {}
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise BatchError(f"{self.name}: cannot read job states from {out.strip()[:200]!r}") from exc
        states = {i: known.get(i) or exit_file_state(workdir, i) for i in wanted}
        if reasons is not None:
            reasons.update({i: why[i] for i in wanted if states[i] is JobState.PENDING and why.get(i)})
        return states

    status_ok_codes: ClassVar[tuple[int, ...]] = (0,)

    def cancel(self, ids: Iterable[str]) -> None:
        """Cancel ``ids`` (jobs already gone are not an error)."""
        wanted = list(dict.fromkeys(ids))
        if wanted:
            self._call(self.cancel_command(wanted), "cancel", ok_codes=self.cancel_ok_codes)

    cancel_ok_codes: ClassVar[tuple[int, ...]] = (0,)

    def _call(self, cmd: list[str], what: str, ok_codes: tuple[int, ...] = (0,)) -> _shell.ShellResult:
        res = self._runner(cmd)
        if res.rc == 127:
            raise BatchError(f"{self.name}: cannot {what}: '{cmd[0]}' is not on PATH (is this a {self.name} machine?)")
        if res.rc not in ok_codes:
            raise BatchError(f"{self.name}: {shlex.join(cmd[:2])} failed (exit {res.rc}): "
                             f"{_telling_line(res.stderr or res.stdout)}")
        return res


_SCHEDULER_NAME = re.compile(r"[A-Za-z0-9_.,:@+%=/-]+")  # partitions, accounts, QOS, reservations (and lists)


def _check_names(req: AllocationRequest) -> None:
    """A queue, bank, QOS or reservation is a scheduler's name: one with a space, a quote or a ';' was quoted twice
    on its way into the script (`--partition="'de bug'"`), which no scheduler knows, or broke sbatch's own
    parsing (an outside probe)."""
    for key in ("queue", "bank", "qos", "reservation"):
        value = getattr(req, key, None)
        if value and not _SCHEDULER_NAME.fullmatch(value):
            raise UnsupportedRequest(f"allocation '{req.name}': {key} {value!r} is no name a scheduler takes (letters, "
                                     "digits and _ . , : @ + % = / - only): correct it in the batch block or on the "
                                     "command line")


def _telling_line(output: str) -> str:
    """The line of a scheduler command's output that says what went wrong: the last, unless it only points to the
    help (sbatch's `unrecognized option '--bogus'` came before `Try "sbatch --help" for more information`)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    telling = [line for line in lines if not re.match(r"\s*try\b.*--help", line, re.IGNORECASE)]
    return (telling or lines or ["no output"])[-1]


# run-workers' exit codes when a stop signal ended it or its workers: `scancel -b --signal=TERM`, `scancel
# --signal=TERM` of the job's steps, a Ctrl-C of an interactive allocation (128 + SIGHUP, SIGINT, SIGTERM)
SIGNALLED_CODES = frozenset({"129", "130", "143"})


def exit_file_state(workdir: Path | None, job_id: str) -> JobState:
    """The state of an ended job by the exit code its script left in ``workdir`` (``JOBID.ec``): COMPLETED for 0,
    CANCELLED for a stop signal's (:data:`SIGNALLED_CODES`), FAILED for any other; UNKNOWN where there is none (a
    job that never ran, or is running)."""
    if workdir is None:
        return JobState.UNKNOWN
    path = workdir / f"{job_id}.ec"
    try:
        code = path.read_text(encoding="utf-8").strip()
    except OSError:
        return JobState.UNKNOWN
    if code in SIGNALLED_CODES:
        return JobState.CANCELLED
    return JobState.COMPLETED if code == "0" else JobState.FAILED
