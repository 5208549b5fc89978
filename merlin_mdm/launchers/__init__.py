"""Launchers: pure functions from a task's resources to the command prefix that $(LAUNCHER) becomes.

A launcher knows nothing of batch queues; which launcher a batch type uses by default is a table here,
and a spec may pick another with ``batch.launcher``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from merlin_mdm.errors import SpecError, SpecIssue

__all__ = [
    "DEFAULT_LAUNCHER",
    "LAUNCHERS",
    "FluxLauncher",
    "JsrunLauncher",
    "Launcher",
    "MpiexecLauncher",
    "MpirunLauncher",
    "PlainLauncher",
    "Resources",
    "SrunLauncher",
    "get_launcher",
]


@dataclass(frozen=True)
class Resources:
    """What one task asks for. Values may be ints or shell expressions (for $(VLAUNCHER))."""

    nodes: int | str = 1
    procs: int | str = 1
    cores_per_task: int | str | None = None
    gpus: int | str | None = None


class Launcher(ABC):
    """Builds a command prefix from resources."""

    name: ClassVar[str]

    @abstractmethod
    def prefix(self, res: Resources) -> str:
        """The launch prefix for ``res`` (no trailing space)."""


class PlainLauncher(Launcher):
    """No launcher: the command runs directly (local batch)."""

    name = "plain"

    def prefix(self, res: Resources) -> str:
        return ""


class SrunLauncher(Launcher):
    """Slurm's srun."""

    name = "srun"

    def prefix(self, res: Resources) -> str:
        out = f"srun -N {res.nodes} -n {res.procs}"
        if res.cores_per_task is not None:
            out += f" -c {res.cores_per_task}"
        if res.gpus:
            out += f" --gpus-per-task={res.gpus}"
        return out


class JsrunLauncher(Launcher):
    """LSF's jsrun (one resource set per process)."""

    name = "jsrun"

    def prefix(self, res: Resources) -> str:
        return f"jsrun -a 1 -n {res.procs} -c {res.cores_per_task or 1} -g {res.gpus or 0} --bind rs"


class FluxLauncher(Launcher):
    """Flux's `flux run`."""

    name = "flux"

    def prefix(self, res: Resources) -> str:
        out = f"flux run -N {res.nodes} -n {res.procs}"
        if res.cores_per_task is not None:
            out += f" -c {res.cores_per_task}"
        if res.gpus:
            out += f" -g {res.gpus}"
        return out


class MpirunLauncher(Launcher):
    """mpirun (Open MPI style)."""

    name = "mpirun"

    def prefix(self, res: Resources) -> str:
        return f"mpirun -np {res.procs}"


class MpiexecLauncher(Launcher):
    """mpiexec (MPICH style)."""

    name = "mpiexec"

    def prefix(self, res: Resources) -> str:
        return f"mpiexec -n {res.procs}"


LAUNCHERS: dict[str, type[Launcher]] = {
    cls.name: cls
    for cls in (PlainLauncher, SrunLauncher, JsrunLauncher, FluxLauncher, MpirunLauncher, MpiexecLauncher)
}
DEFAULT_LAUNCHER = {"local": "plain", "slurm": "srun", "lsf": "jsrun", "flux": "flux"}


def get_launcher(name: str) -> Launcher:
    """The launcher registered as ``name``; a SpecError listing the known ones otherwise."""
    try:
        return LAUNCHERS[name]()
    except KeyError:
        known = ", ".join(sorted(LAUNCHERS))
        issue = SpecIssue("", 0, 0, "batch.launcher", f"unknown launcher '{name}' (known: {known})")
        raise SpecError([issue]) from None
