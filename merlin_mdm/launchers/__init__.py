"""Launchers: pure functions from a task's resources to the command prefix that $(LAUNCHER) becomes.

A launcher knows nothing of batch queues; which launcher a batch type uses by default is a table here,
and a spec may pick another with ``batch.launcher``. The srun, jsrun and flux lines are the ones Merlin 1.13
writes for the same step (its own `run --dry`), so a Merlin user's scripts look the same.
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

    nodes: int | str | None = None  # None: the step does not say (srun and flux then leave -N out, as Merlin)
    procs: int | str = 1
    cores_per_task: int | str | None = None
    gpus: int | str | None = None
    walltime: float | None = None  # seconds (the step's walltime); srun and flux add it as Merlin does
    flags: str = ""  # the launcher's own flags from the step (`slurm`, `lsf`, `flux`), appended as written
    resource_sets: int | str | None = None  # jsrun --nrs (default: nodes)
    distribution: str | None = None  # jsrun -d (default: plane:procs/nodes)
    exit_on_error: int | str | None = None  # jsrun -X (default: 1)
    bind: str | None = None  # jsrun -b (default: rs)
    step: str = ""  # the step asking, named in errors


def _check_spread(launcher: str, res: Resources) -> None:
    """Refuse fewer processes than nodes: the per-node count would be 0 (``-ppn 0``, ``plane:0``)."""
    if isinstance(res.procs, int) and isinstance(res.nodes, int) and res.procs < res.nodes:
        who = f"step '{res.step}'" if res.step else "a step"
        issue = SpecIssue("", 0, 0, f"study.{res.step}.run" if res.step else "study.run",
                          f"{who} asks for procs: {res.procs} on nodes: {res.nodes}: {launcher} needs at least one "
                          "process per node (procs must be >= nodes)")
        raise SpecError([issue])


class Launcher(ABC):
    """Builds a command prefix from resources."""

    name: ClassVar[str]
    step_key: ClassVar[str] = ""  # the run key whose text this launcher appends (Merlin's `slurm`, `lsf`, `flux`)

    @abstractmethod
    def prefix(self, res: Resources) -> str:
        """The launch prefix for ``res`` (no trailing space)."""


class PlainLauncher(Launcher):
    """No launcher: the command runs directly (local batch)."""

    name = "plain"

    def prefix(self, res: Resources) -> str:
        return ""


def _tasks_nodes(command: str, res: Resources) -> str:
    """`<command> -n P [-N N]`: the order and flags of Merlin's srun and flux lines."""
    return f"{command} -n {res.procs}" + (f" -N {res.nodes}" if res.nodes else "")


def _hms(seconds: float) -> str:
    """`HH:MM:SS`, Merlin's form for srun's -t."""
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


class SrunLauncher(Launcher):
    """Slurm's srun (`srun -n P -N N -c C`, as Merlin; GPUs, which Merlin leaves out, as --gpus-per-task)."""

    name = "srun"
    step_key = "slurm"

    def prefix(self, res: Resources) -> str:
        out = _tasks_nodes("srun", res)
        if res.cores_per_task is not None:
            out += f" -c {res.cores_per_task}"
        if res.gpus:
            out += f" --gpus-per-task={res.gpus}"
        if res.walltime:
            out += f" -t {_hms(res.walltime)}"
        return _with_flags(out, res)


def _with_flags(line: str, res: Resources) -> str:
    return f"{line} {res.flags}" if res.flags else line


class JsrunLauncher(Launcher):
    """LSF's jsrun as Merlin writes it: one resource set per node, processes spread evenly (plane)."""

    name = "jsrun"
    step_key = "lsf"

    def prefix(self, res: Resources) -> str:
        _check_spread("jsrun", res)
        nodes = res.nodes or 1
        sets = res.resource_sets or nodes
        distribution = res.distribution or f"plane:{_per_node(res.procs, nodes)}"
        out = (f"jsrun --np {res.procs} --nrs {sets} -b {res.bind or 'rs'} -d {distribution}"
               f" -X {1 if res.exit_on_error is None else res.exit_on_error}")
        # jsrun's -c and -g count per resource set, which holds procs/nrs tasks (Merlin writes the per-task value)
        if res.cores_per_task is not None:
            out += f" -c {_per_set(res.cores_per_task, res.procs, sets)}"
        if res.gpus:
            out += f" -g {_per_set(res.gpus, res.procs, sets)}"
        return _with_flags(out, res)


def _per_set(per_task: int | str, procs: int | str, sets: int | str) -> str:
    """``per_task`` x the tasks of one resource set (procs / sets, rounded up); a shell expression when any is one."""
    if isinstance(per_task, int) and isinstance(procs, int) and isinstance(sets, int):
        return str(per_task * -(-procs // sets))
    return f"$(( {per_task} * (({procs} + {sets} - 1) / {sets}) ))"


def _per_node(procs: int | str, nodes: int | str) -> str:
    """Processes per node (integer division); a shell expression when either is one (for $(VLAUNCHER))."""
    if isinstance(procs, int) and isinstance(nodes, int):
        return str(procs // nodes)
    return f"$(( {procs} / {nodes} ))"


class FluxLauncher(Launcher):
    """Flux's `flux run -n P -N N -c C -g G`, as Merlin writes it."""

    name = "flux"
    step_key = "flux"

    def prefix(self, res: Resources) -> str:
        _check_spread("flux run", res)
        out = _tasks_nodes("flux run", res)
        if res.cores_per_task is not None:
            out += f" -c {res.cores_per_task}"
        if res.gpus:
            out += f" -g {res.gpus}"
        if res.walltime:
            out += f" -t {float(res.walltime)}s"  # Flux Standard Duration, as Merlin writes it
        return _with_flags(out, res)


class MpirunLauncher(Launcher):
    """Open MPI's mpirun: `--map-by ppr:P/N:node` spreads processes over nodes, `PE=C` gives each C cores.

    GPUs have no mpirun flag; the step selects them itself (CUDA_VISIBLE_DEVICES).
    """

    name = "mpirun"

    def prefix(self, res: Resources) -> str:
        _check_spread("mpirun", res)
        out = f"mpirun -np {res.procs}"
        pe = f":PE={res.cores_per_task}" if res.cores_per_task is not None else ""
        if res.nodes:
            out += f" --map-by ppr:{_per_node(res.procs, res.nodes)}:node{pe}"
        elif pe:
            out += f" --map-by slot{pe}"
        return out


class MpiexecLauncher(Launcher):
    """MPICH (Hydra) mpiexec: `-ppn P/N` processes per node, `-bind-to core:C` C cores each.

    GPUs have no mpiexec flag; the step selects them itself (CUDA_VISIBLE_DEVICES).
    """

    name = "mpiexec"

    def prefix(self, res: Resources) -> str:
        _check_spread("mpiexec", res)
        out = f"mpiexec -n {res.procs}"
        if res.nodes:
            out += f" -ppn {_per_node(res.procs, res.nodes)}"
        if res.cores_per_task is not None:
            out += f" -bind-to core:{res.cores_per_task}"
        return out


LAUNCHERS: dict[str, type[Launcher]] = {
    cls.name: cls
    for cls in (PlainLauncher, SrunLauncher, JsrunLauncher, FluxLauncher, MpirunLauncher, MpiexecLauncher)
}
# `lsf-srun` is Merlin's batch type for LSF machines whose MPI jobs start with srun.
DEFAULT_LAUNCHER = {
    "local": "plain", "slurm": "srun", "lsf": "jsrun", "lsf-srun": "srun", "flux": "flux", "pbs": "mpiexec",
}  # fmt: skip


def get_launcher(name: str) -> Launcher:
    """The launcher registered as ``name``; a SpecError listing the known ones otherwise."""
    try:
        return LAUNCHERS[name]()
    except KeyError:
        known = ", ".join(sorted(LAUNCHERS))
        issue = SpecIssue("", 0, 0, "batch.launcher", f"unknown launcher '{name}' (known: {known})")
        raise SpecError([issue]) from None
