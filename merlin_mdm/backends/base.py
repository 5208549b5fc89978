"""The contract every task backend satisfies, and the registry that names them."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from merlin_mdm.errors import UsageError
from merlin_mdm.status.model import StudySnapshot, StudyState

if TYPE_CHECKING:  # only for annotations: `status` must not pay for importing the spec parser
    from merlin_mdm.signals import SignalWatch
    from merlin_mdm.spec.model import Spec
    from merlin_mdm.status.store import StatusStore
    from merlin_mdm.study.plan import StudyPlan
    from merlin_mdm.study.workspace import Workspace

__all__ = ["BACKENDS", "BACKEND_MODULES", "Backend", "RunOptions", "RunReport", "get_backend", "register_backend"]


@dataclass(frozen=True)
class RunOptions:
    """How to run a study."""

    workers: int | None = None  # local: worker slots (default: slots.default_workers(), the allocation's cores)
    resume: bool = False  # skip units already finished (merlin-mdm restart)
    progress: bool = False  # show a progress bar on stderr
    on_event: Callable[[str], None] | None = None  # receives one-line messages for the user
    signals: SignalWatch | None = None  # stop signals: the runner polls it and winds down when one arrives
    grace: float = 10.0  # seconds running tasks get to finish after a stop signal, before they are killed
    # Called about once a second by a runner that holds the study: keeps its lock whole (WorkspaceLock.keep);
    # returns a line for the user, or raises WorkspaceError when another runner took the study meanwhile.
    keep_claim: Callable[[], str | None] | None = None


@dataclass(frozen=True)
class RunReport:
    """What a launch left behind."""

    state: StudyState
    snapshot: StudySnapshot
    message: str = ""
    signal: int = 0  # the stop signal that interrupted the run, 0 when none

    @property
    def exit_code(self) -> int:
        """0 when nothing failed or was left unrun (a queued study counts as success); 128+signal if stopped by one."""
        if self.signal:
            return 128 + self.signal
        if self.state in (StudyState.FINISHED, StudyState.QUEUED):
            return 0
        if self.state is StudyState.STOPPED and self.snapshot.count_failed == 0:
            return 0
        return 1


class Backend(ABC):
    """Executes (or queues) the units of a study plan and records their states in a StatusStore."""

    name: ClassVar[str]

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """Check, before any workspace is written, that the backend can work (e.g. the broker answers)."""

    def check_spec(self, spec: Spec, options: RunOptions) -> None:  # noqa: B027 - optional hook
        """Raise SpecError, before any workspace is written, when this backend cannot run ``spec`` as asked."""

    def check_handover(self, workspace: Workspace, plan: StudyPlan) -> None:  # noqa: B027 - optional hook
        """Raise BackendError when the study in ``workspace`` may not move to another backend now (`restart
        --local`): this backend still runs, or holds, some of its work, which would then run twice."""

    @abstractmethod
    def status_store(self, workspace: Workspace, patient: bool = True) -> StatusStore:
        """The store this backend records into for ``workspace``. ``patient`` rides out a server restart (what
        records and waits needs); without it a server that does not answer is an error within seconds (what a
        person reading `status` needs)."""

    @abstractmethod
    def launch(self, workspace: Workspace, plan: StudyPlan, options: RunOptions) -> RunReport:
        """Run (local) or queue (distributed) every unit not yet finished."""


BACKENDS: dict[str, type[Backend]] = {}  # filled by @register_backend as each backend's module is imported
# Where each backend registers itself: imported on first use, so a command loads only the backend it uses.
BACKEND_MODULES = {"local": "merlin_mdm.backends.local", "celery": "merlin_mdm.backends.celery.backend"}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator adding a backend to :data:`BACKENDS` under its ``name``."""
    BACKENDS[cls.name] = cls
    return cls


def get_backend(name: str, **config: Any) -> Backend:
    """An instance of the backend called ``name``."""
    if name not in BACKENDS and name in BACKEND_MODULES:
        importlib.import_module(BACKEND_MODULES[name])
    if name not in BACKENDS:
        raise UsageError(f"unknown backend '{name}' (known: {', '.join(sorted({*BACKEND_MODULES, *BACKENDS}))})")
    return BACKENDS[name](**config)
