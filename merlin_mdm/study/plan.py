"""The plan of a study: step instances (a step x the parameter combination it uses), their dependencies, and
the work units that cover each instance's samples. Pure: no I/O.

A plan never holds per-sample objects. A sample step instance is split into units of at most ``batch_size``
samples, sized by guided self-scheduling for the tasks of it that can run at once (:class:`UnitLayout`): ``slots``
// its ``cores``, so a step of 2-core tasks on 4 slots gets units for 2 workers. Tasks are (instance, sample)
pairs generated on demand. Steps sized differently still pair their samples: an aligned child unit waits for
the parent units that hold its samples (:meth:`StudyPlan.aligned_units`).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property

from merlin_mdm.study.samples import SampleSet

__all__ = ["Edge", "StepInstance", "StudyPlan", "UnitKey", "UnitLayout"]

NO_SAMPLE = -1  # the sample index of a task that does not run per sample


@dataclass(frozen=True)
class Edge:
    """A dependency of an instance on a parent instance."""

    parent: int  # index of the parent instance in StudyPlan.instances
    aligned: bool  # True: a unit waits only for the parent's units holding its samples (sample steps, no funnel)
    funnel: bool = False  # `depends: [step_*]`: waits for every instance of the parent step


@dataclass(frozen=True)
class StepInstance:
    """One step expanded for one parameter combination."""

    index: int  # position in the plan (a topological order)
    step: str  # the spec's step name
    name: str  # `step` or `step_<labels>` (Maestro's expanded name)
    labels: str  # the combination string, '' when the step uses no parameters
    workspace: str  # directory relative to the study workspace: `step` or `step/<labels>`
    cmd: str  # fully substituted except the per-task tokens (WORKSPACE, samples)
    restart: str | None  # idem, for MERLIN_RESTART
    shell: str  # interpreter of the generated script
    uses_samples: bool  # runs once per sample
    parents: tuple[Edge, ...]
    task_queue: str = "merlin"
    max_retries: int = 30
    retry_delay: float = 1.0
    walltime: str | None = None
    sources: tuple[str, ...] = ()  # env.sources, sourced at the top of every task script
    cores: int = 1  # worker slots one task reserves on the local runner: procs x cores per task
    script_ext: str = ""  # Merlin's files are <name>.sh on a local batch, <name>.slurm.sh on the others
    # the parameters (name, value) its cmd and its restart use, as Merlin's status records them ((): none, or a
    # plan written before they were recorded)
    cmd_params: tuple[tuple[str, str], ...] = ()
    restart_params: tuple[tuple[str, str], ...] = ()

    def file_stem(self, restart: bool = False) -> str:
        """The stem of a task's .sh/.out/.err files, as Merlin names them (`step_<labels>[.restart][.slurm]`)."""
        return f"{self.name}{'.restart' if restart else ''}{self.script_ext}"


@dataclass(frozen=True, order=True)
class UnitKey:
    """A unit of work: one instance, one batch of its samples (unit 0 for a non-sample instance)."""

    instance: int
    unit: int

    def to_id(self) -> str:
        """Compact text id, `instance:unit`."""
        return f"{self.instance}:{self.unit}"

    @classmethod
    def from_id(cls, text: str) -> UnitKey:
        """Parse :meth:`to_id` output."""
        a, b = text.split(":")
        return cls(int(a), int(b))


@dataclass(frozen=True)
class UnitLayout:
    """How ``n`` samples split into units: guided self-scheduling for ``slots`` workers, capped at ``batch``.

    Each unit takes ``ceil(remaining / slots)`` samples, at most ``batch`` and at least one: a long study
    runs in units of ``batch`` (per-unit costs paid once per batch), and its last units shrink so that every
    worker has work until the end. ``slots=1`` gives fixed units of ``batch``. Pure and deterministic, so every
    process that loads the plan computes the same units.
    """

    n: int
    batch: int
    slots: int

    @cached_property
    def _full(self) -> int:
        """Units of exactly ``batch`` at the start: while ceil(remaining / slots) >= batch."""
        threshold = self.slots * (self.batch - 1)
        return 0 if self.n <= threshold else min(self.n // self.batch, -(-(self.n - threshold) // self.batch))

    @cached_property
    def _tail(self) -> tuple[int, ...]:
        """Start of each shrinking unit after the full ones, then ``n``."""
        starts, lo = [], self._full * self.batch
        while lo < self.n:
            starts.append(lo)
            lo += min(self.batch, max(1, -(-(self.n - lo) // self.slots)))
        return (*starts, self.n)

    @property
    def count(self) -> int:
        """Number of units (one, empty, when there are no samples)."""
        return max(1, self._full + len(self._tail) - 1)

    def samples(self, unit: int) -> range:
        """Sample indices of ``unit``."""
        if unit < self._full:
            return range(unit * self.batch, (unit + 1) * self.batch)
        i = unit - self._full
        if i + 1 >= len(self._tail):
            return range(self.n, self.n)
        return range(self._tail[i], self._tail[i + 1])

    def units_over(self, samples: range) -> range:
        """The units holding any of ``samples`` (unit 0, the empty one, for no samples)."""
        if not samples:
            return range(1) if self.n == 0 else range(0)
        return range(self._unit_of(samples[0]), self._unit_of(samples[-1]) + 1)

    def _unit_of(self, sample: int) -> int:
        if sample < self._full * self.batch:
            return sample // self.batch
        return self._full + bisect_right(self._tail, sample) - 1


@dataclass(frozen=True)
class StudyPlan:
    """Everything needed to run a study, serialisable to JSON for workers on other hosts."""

    name: str  # description.name
    workspace: str  # absolute path of the study workspace
    instances: tuple[StepInstance, ...]
    samples: SampleSet | None
    batch_size: int  # most samples per unit
    slots: int = 1  # worker slots the units are sized for (guided self-scheduling); 1: fixed units of batch_size
    # True: an instance's units are sized for its tasks that run at once (slots // cores). False in plans written
    # before (their plan.json has no such field), which sized every instance for ``slots``: a restart of such a
    # study keeps its units.
    per_step_units: bool = True

    def concurrency(self, index: int) -> int:
        """How many tasks of instance ``index`` run at once on ``slots`` slots: the workers its units are sized for."""
        if not self.per_step_units:
            return max(1, self.slots)
        return max(1, self.slots // max(1, self.instances[index].cores))

    def layout(self, index: int) -> UnitLayout:
        """How the samples of sample instance ``index`` split into units."""
        slots = self.concurrency(index)
        layout = self._layouts.get(slots)
        if layout is None:
            layout = self._layouts[slots] = UnitLayout(self.samples.count if self.samples else 0,
                                                       max(1, self.batch_size), slots)
        return layout

    @cached_property
    def _layouts(self) -> dict[int, UnitLayout]:  # by concurrency: most plans have one or two
        return {}

    def n_units(self, index: int) -> int:
        """Number of units of instance ``index``."""
        if not self.instances[index].uses_samples or self.samples is None:
            return 1
        return self.layout(index).count

    def n_tasks(self, index: int) -> int:
        """Number of tasks of instance ``index`` (its samples, or 1)."""
        if not self.instances[index].uses_samples or self.samples is None:
            return 1
        return self.samples.count

    def unit_samples(self, key: UnitKey) -> range:
        """Sample indices of a unit; ``range(-1, 0)`` (one task, no sample) for a non-sample instance."""
        if not self.instances[key.instance].uses_samples or self.samples is None:
            return range(NO_SAMPLE, NO_SAMPLE + 1)
        return self.layout(key.instance).samples(key.unit)

    def aligned_units(self, index: int, key: UnitKey) -> range:
        """The units of sample instance ``index`` holding the samples of ``key`` (a unit of another sample instance
        at the end of an aligned edge): the same unit when both are sized alike."""
        if self.concurrency(index) == self.concurrency(key.instance):
            return range(key.unit, key.unit + 1)
        return self.layout(index).units_over(self.unit_samples(key))

    def n_parent_units(self, key: UnitKey) -> int:
        """How many parent units ``key`` waits for."""
        return sum(len(self.aligned_units(e.parent, key)) if e.aligned else self.n_units(e.parent)
                   for e in self.instances[key.instance].parents)

    def units(self) -> Iterator[UnitKey]:
        """Every unit, instance by instance."""
        for inst in self.instances:
            for unit in range(self.n_units(inst.index)):
                yield UnitKey(inst.index, unit)

    def total_tasks(self) -> int:
        """Number of tasks in the whole study."""
        return sum(self.n_tasks(i) for i in range(len(self.instances)))

    def unit_parents(self, key: UnitKey) -> Iterator[UnitKey]:
        """The units ``key`` waits for."""
        for edge in self.instances[key.instance].parents:
            if edge.aligned:
                for unit in self.aligned_units(edge.parent, key):
                    yield UnitKey(edge.parent, unit)
            else:
                for unit in range(self.n_units(edge.parent)):
                    yield UnitKey(edge.parent, unit)

    def children(self) -> list[list[Edge]]:
        """For each instance, the edges to its children (``Edge.parent`` holds the child's index)."""
        out: list[list[Edge]] = [[] for _ in self.instances]
        for inst in self.instances:
            for edge in inst.parents:
                out[edge.parent].append(Edge(inst.index, edge.aligned, edge.funnel))
        return out

    def to_json(self) -> str:
        """JSON text of the plan."""
        data = asdict(self)
        if self.samples is not None:
            data["samples"] = {k: v for k, v in data["samples"].items() if not k.startswith("_")}
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> StudyPlan:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        instances = tuple(
            StepInstance(**{**inst, "parents": tuple(Edge(**e) for e in inst["parents"]),
                            "sources": tuple(inst.get("sources", ())),
                            **{k: tuple((n, v) for n, v in inst.get(k, ())) for k in ("cmd_params", "restart_params")}})
            for inst in data["instances"]
        )
        samples = data.get("samples")
        sample_set = None
        if samples:
            sample_set = SampleSet(samples["file"], samples["count"], tuple(samples["column_labels"]),
                                   samples["level_max_dirs"])
        return cls(data["name"], data["workspace"], instances, sample_set, data["batch_size"], data.get("slots", 1),
                   data.get("per_step_units", False))
