"""User-facing errors. Every error a user can cause derives from :class:`MerlinMdmError`.

The tree::

    MerlinMdmError            exit code 1 (runtime) unless a child says otherwise
    ├── UsageError            exit code 2: bad command-line use
    ├── SpecError             exit code 2: one or more problems in a study spec, each with a location
    ├── ResourceError         a task needs more cores than the runner has (the spec's location, the fix)
    ├── WorkspaceError        a workspace is missing, corrupt or in use
    │   └── NoWorkspace       exit code 2: the path or spec named holds no workspace
    ├── Interrupted           exit code 128+signal: SIGTERM, SIGINT, SIGHUP or the early-warning signal arrived
    ├── StatusError           the status store cannot be read or written
    ├── BackendError          a task backend (local pool, Celery) cannot do its job
    │   └── BrokerError       the broker is unreachable, refuses the password, ...
    ├── BatchError            a batch system (Slurm, LSF, Flux) refused or failed
    ├── ResultsError          an HDF5 metrics or results file is missing or malformed
    └── MdmError              exit code 2: the MDM pack was given an impossible configuration
        └── CheckpointError   exit code 1: a checkpoint is damaged, of another kind or unfinished

The CLI catches :class:`MerlinMdmError` only, prints ``Error: <message>`` to stderr and exits with
``exit_code``. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

OUT_OF_MEMORY_HINT = " (the server is out of memory: raise its maxmemory or free some)"
"""Said after a Redis refusal that names its maxmemory (status store, `run`, any command): once, where it is seen."""


def out_of_memory_hint(text: str) -> str:
    """:data:`OUT_OF_MEMORY_HINT` for a Redis message about its maxmemory that does not carry the hint yet."""
    return OUT_OF_MEMORY_HINT if "maxmemory" in text and OUT_OF_MEMORY_HINT not in text else ""


__all__ = [
    "OUT_OF_MEMORY_HINT",
    "BackendError",
    "BatchError",
    "BrokerError",
    "CheckpointError",
    "Interrupted",
    "MdmError",
    "MerlinMdmError",
    "NoWorkspace",
    "ResourceError",
    "ResultsError",
    "SpecError",
    "SpecIssue",
    "StatusError",
    "StatusRecordLost",
    "UsageError",
    "WorkspaceError",
    "out_of_memory_hint",
]


class MerlinMdmError(Exception):
    """Base of every error a user can cause; the CLI prints it without a traceback."""

    exit_code = 1


class UsageError(MerlinMdmError):
    """The command line asks for something impossible."""

    exit_code = 2


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec, with where it is and what to do about it.

    Attributes:
        file: path of the spec file as the user named it.
        line: 1-based line, or 0 when unknown.
        column: 1-based column, or 0 when unknown.
        path: the YAML path, e.g. ``study[2].run.depends``.
        message: what is wrong, ending with a hint where one helps.
        severity: ``error``, ``warning`` or ``note`` (portability: runs here, but Merlin 1.13 refuses it).
    """

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column}"
        prefix = f"{where}: {self.path}: " if self.path else f"{where}: "
        tag = "" if self.severity == "error" else f"{self.severity}: "
        return f"{prefix}{tag}{self.message}"


class SpecError(MerlinMdmError):
    """A spec has one or more errors; ``issues`` lists all of them."""

    exit_code = 2

    def __init__(self, issues: list[SpecIssue]):
        self.issues = list(issues)
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in the spec:"
        super().__init__("\n".join([head, *(f"  {issue}" for issue in self.issues)]))


class ResourceError(MerlinMdmError):
    """Tasks need more cores than the runner that would run them has (checked before anything runs).

    Not a SpecError: the same spec is valid on a larger machine, so it exits 1 like other run-time refusals.
    """

    def __init__(self, issues: list[SpecIssue], fix: str):
        self.issues = list(issues)
        super().__init__("\n".join([*(str(issue) for issue in self.issues), fix]))


class WorkspaceError(MerlinMdmError):
    """A study workspace is missing, incomplete or not a workspace."""


class NoWorkspace(WorkspaceError):
    """The path (or spec) the user named holds no workspace: a usage error, so exit code 2."""

    exit_code = 2


class Interrupted(MerlinMdmError):
    """A signal asked the command to stop; it exits with 128 + the signal number, like a shell."""

    def __init__(self, signum: int, detail: str = ""):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}{': ' + detail if detail else ''}")


class StatusError(MerlinMdmError):
    """The status store cannot be opened, read or written."""


class StatusRecordLost(StatusError):
    """The status server answers but holds no record of the study, or part of one (restarted without its data):
    no wait brings it back; `restart` rebuilds it from the done-markers."""


class BackendError(MerlinMdmError):
    """A task backend cannot run or queue the study."""


class BrokerError(BackendError):
    """The message broker is unreachable or refuses us."""


class BatchError(MerlinMdmError):
    """A batch system refused a submission or a query."""


class ResultsError(MerlinMdmError):
    """A metrics or results file is missing or malformed."""


class MdmError(MerlinMdmError):
    """The MDM pack was given an impossible configuration: a usage error, so exit code 2."""

    exit_code = 2


class CheckpointError(MdmError):
    """A denoiser or policy checkpoint cannot be read or used (damaged, of another kind, unfinished): exit code 1."""

    exit_code = 1
