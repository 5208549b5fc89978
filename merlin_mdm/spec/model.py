"""The study spec as frozen dataclasses (Merlin 1.13 / Maestro format)."""

from __future__ import annotations

import graphlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_RETRY_DELAY",
    "MAX_WALLTIME",
    "BatchConfig",
    "Dependency",
    "Description",
    "Environment",
    "LaunchKeys",
    "Parameter",
    "Resources",
    "SamplesConfig",
    "Spec",
    "Step",
    "StepRun",
    "Worker",
    "parent_name",
    "step_order",
    "step_shell",
]

Scalar = str | int | float | bool

MAX_RETRY_DELAY = 86_400.0
"""The longest ``retry_delay`` (seconds): a day. A longer one, or ``.inf``, is no delay anyone means (and
``time.sleep`` overflows on it)."""
MAX_WALLTIME = 366 * 86_400.0
"""The longest walltime (seconds): a year; longer ones overflow the timers that enforce them."""


@dataclass(frozen=True)
class Description:
    """The `description` block."""

    name: str  # study name; the workspace is <OUTPUT_PATH>/<folder>_<timestamp>
    description: str  # free text

    @property
    def folder(self) -> str:
        """The name as its workspace folder starts: Merlin's rule, spaces become ``_`` (``my study`` ->
        ``my_study_<timestamp>``)."""
        return self.name.replace(" ", "_")


@dataclass(frozen=True)
class BatchConfig:
    """The `batch` block (also a step's `run.batch` override). Unknown-to-us but valid keys stay in ``extra``."""

    type: str = "local"  # local | slurm | lsf | flux
    shell: str = "/bin/bash"  # shell that runs generated task scripts
    bank: str | None = None  # allocation account
    queue: str | None = None  # partition / queue
    nodes: int | None = None  # nodes for worker allocations
    walltime: str | None = None  # HH:MM:SS
    launch_pre: str | None = None  # shell lines run before launching workers
    launch_args: str | None = None  # extra launcher arguments
    extra: Mapping[str, Any] = field(default_factory=dict)  # other recognised keys (flux_path, qos, ...)


@dataclass(frozen=True)
class Dependency:
    """One entry of `env.dependencies` (a path that must exist, or a git repository)."""

    kind: str  # "paths" or "git"
    name: str  # becomes the token $(name)
    path: str  # where it is (paths) or where to clone it (git)
    url: str | None = None  # git only
    tag: str | None = None  # git only


@dataclass(frozen=True)
class Environment:
    """The `env` block. Variables and labels keep their order: later ones may use earlier ones."""

    variables: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    sources: tuple[str, ...] = ()
    dependencies: tuple[Dependency, ...] = ()
    from_vars: tuple[str, ...] = ()  # the variables whose value came from the command line (--vars), not the file


@dataclass(frozen=True)
class LaunchKeys:
    """Merlin's run keys that only shape $(LAUNCHER) for one launcher (Merlin 1.13's script adapters)."""

    flags: Mapping[str, str] = field(default_factory=dict)  # `slurm`, `lsf`, `flux`: that launcher's own flags
    gpus_per_task: int | None = None  # `gpus per task` (jsrun and flux -g; `gpus` wins when both are set)
    resource_sets: int | None = None  # `num resource set` (jsrun --nrs)
    distribution: str | None = None  # `launch_distribution` (jsrun -d; default plane:procs/nodes)
    exit_on_error: int | None = None  # `exit_on_error` (jsrun -X; default 1)
    bind: str | None = None  # `bind` (jsrun -b; default rs)


@dataclass(frozen=True)
class StepRun:
    """A step's `run` block."""

    cmd: str  # the shell script of the step
    depends: tuple[str, ...] = ()  # parent steps; `x_*` waits for every instance of x (a funnel)
    restart: str | None = None  # run instead of cmd after the task exits with MERLIN_RESTART
    shell: str | None = None  # overrides batch.shell for this step
    task_queue: str = "merlin"  # Celery queue of this step
    max_retries: int = 30  # restarts/retries allowed before the task fails
    retry_delay: float = 1.0  # seconds before a MERLIN_RETRY re-run
    nodes: int | None = None  # resources, for $(LAUNCHER)
    procs: int | None = None
    cores_per_task: int | None = None
    gpus: int | None = None
    walltime: str | None = None
    batch: BatchConfig | None = None  # per-step batch override
    launch: LaunchKeys = field(default_factory=lambda: LaunchKeys())
    extra: Mapping[str, Any] = field(default_factory=dict)  # other Maestro keys (exclusive, reservation, ...)


@dataclass(frozen=True)
class Step:
    """One entry of `study`."""

    name: str
    description: str
    run: StepRun


@dataclass(frozen=True)
class Parameter:
    """One entry of `global.parameters`.

    Parameters in the same ``product`` group (default: the single unnamed group, Maestro's behaviour)
    are zipped; the groups are then crossed with each other.
    """

    name: str
    values: tuple[Scalar, ...]
    label: str  # e.g. "NAME.%%"; %% becomes the value
    product: str = ""  # "" = the zipped default group


@dataclass(frozen=True)
class Worker:
    """One entry of `merlin.resources.workers`."""

    name: str
    args: str = ""  # extra Celery worker options
    steps: tuple[str, ...] = ("all",)  # steps whose queues it serves
    nodes: int | None = None
    batch: BatchConfig | None = None
    machines: tuple[str, ...] = ()
    # its key under merlin.resources.workers as written, before $(VARIABLES) are filled in ("": the name)
    key: str = field(default="", compare=False)

    @property
    def spec_key(self) -> str:
        """The key of this worker's entry in the spec (where its settings and their positions are)."""
        return self.key or self.name


@dataclass(frozen=True)
class Resources:
    """`merlin.resources`."""

    task_server: str = "celery"
    overlap: bool = False  # may two workers consume the same queue?
    workers: tuple[Worker, ...] = ()


@dataclass(frozen=True)
class SamplesConfig:
    """`merlin.samples`."""

    file: str  # .npy, .csv or .tab (may use tokens)
    column_labels: tuple[str, ...]
    generate_cmd: str | None = None  # run before the study to create `file`
    level_max_dirs: int = 25  # directories per level of the sample hierarchy


@dataclass(frozen=True)
class Spec:
    """A whole, structurally valid study spec. ``raw`` keeps the parsed YAML with positions."""

    path: Path
    description: Description
    batch: BatchConfig
    env: Environment
    steps: tuple[Step, ...]
    parameters: tuple[Parameter, ...] = ()
    resources: Resources = field(default_factory=Resources)
    samples: SamplesConfig | None = None
    user: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def root(self) -> Path:
        """SPECROOT: the directory holding the spec file as named (a symlink's own folder, as in Merlin)."""
        return Path(os.path.abspath(self.path)).parent

    @property
    def copy_name(self) -> str:
        """The stem of the spec copies in merlin_info/ (`<stem>.orig.yaml`, `.partial.yaml`, `.expanded.yaml`): the
        spec file's name without its extension (and without `.partial`/`.expanded`/`.out`), as in Merlin 1.13."""
        name = self.path.name
        for made in (".out", ".partial", ".expanded"):
            name = name.replace(made, "")
        return Path(name).stem or self.description.name

    def step(self, name: str) -> Step:
        """The step called ``name`` (KeyError when there is none)."""
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> dict[str, Step]:
        """Steps by name, the first of a name written twice (looking each up by a scan was quadratic)."""
        out: dict[str, Step] = {}
        for step in self.steps:
            out.setdefault(step.name, step)
        return out


def parent_name(dep: str) -> tuple[str, bool]:
    """Split a `depends` entry into (step name, is_funnel): `x_*` and `x*` both funnel x (maestrowf 1.2)."""
    if dep.endswith("_*"):
        return dep[:-2], True
    return (dep[:-1], True) if dep.endswith("*") else (dep, False)


def step_shell(spec: Spec, run: StepRun) -> str:
    """The shell a step's tasks run under: its own, its own batch block's, else the spec's batch shell."""
    return run.shell or (run.batch.shell if run.batch else None) or spec.batch.shell


def step_order(spec: Spec) -> list[str]:
    """The steps' names, every parent before its children; steps ready together keep their spec order (stable,
    readable plans). One pass, no recursion: a chain may have thousands of steps. A cycle (refused by
    validation) leaves the spec order."""
    graph = {s.name: {parent_name(d)[0] for d in s.run.depends} for s in spec.steps}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        return list(graph)
    depth: dict[str, int] = {}
    for name in order:  # parents come first
        depth[name] = 1 + max((depth[p] for p in graph.get(name, ())), default=-1)
    position = {name: i for i, name in enumerate(graph)}
    return sorted(graph, key=lambda n: (depth[n], position[n]))
