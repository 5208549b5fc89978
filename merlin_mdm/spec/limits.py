"""How large a study is, counted from the spec before anything is built, and the most merlin-mdm plans.

Parameters crossed with ``product`` multiply: eight of twenty values each are 25.6 billion combinations, which no
plan can hold (an outside probe's spec grew past 4 GB before anything was said). :func:`planned_instances` counts
each step's instances as a product of its parameter groups' sizes, so `validate` and `run` refuse such a study at
once, before a workspace exists. Two limits: step instances (each an entry of the plan in memory,
``MERLIN_MDM_MAX_INSTANCES``, default 1,000,000) and tasks, the instances times the samples of those that run per
sample (each a folder and a script, ``MERLIN_MDM_MAX_TASKS``, default 10,000,000); the samples count where they
are known (the samples file, once read).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from merlin_mdm.errors import UsageError
from merlin_mdm.spec.issues import IssueCollector, key_mark
from merlin_mdm.spec.model import Parameter, Spec, parent_name, step_order
from merlin_mdm.spec.tokens import inlined_tokens

__all__ = [
    "DEFAULT_MAX_INSTANCES",
    "DEFAULT_MAX_TASKS",
    "MAX_INSTANCES_ENV",
    "MAX_TASKS_ENV",
    "PARAMETERS_REMEDY",
    "PGEN_REMEDY",
    "SAMPLES_REMEDY",
    "check_size",
    "combination_count",
    "max_instances",
    "max_tasks",
    "parameters_source",
    "planned_instances",
    "planned_tasks",
    "size_problem",
    "step_parameters",
]

MAX_TASKS_ENV = "MERLIN_MDM_MAX_TASKS"
DEFAULT_MAX_TASKS = 10_000_000
"""The most tasks (step instances x the samples of those that run per sample) a study may have unless
``MERLIN_MDM_MAX_TASKS`` says otherwise: each is a folder and a script."""
MAX_INSTANCES_ENV = "MERLIN_MDM_MAX_INSTANCES"
DEFAULT_MAX_INSTANCES = 1_000_000
"""The most step instances (steps x the parameter combinations each uses) unless ``MERLIN_MDM_MAX_INSTANCES``
says otherwise: unlike samples, each is an entry of the plan, held in memory (about 2.5 kB and 50 us to build
each: a million is 2.5 GB) and written to plan.json."""


def _limit(env: str, default: int) -> int:
    text = os.environ.get(env, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{env}={text!r}: give the most a study may have, a whole number above 0 (default "
                         f"{default:,})")
    return value


def max_tasks() -> int:
    """The task limit in effect: ``MERLIN_MDM_MAX_TASKS`` when set (`_` or `,` allowed), else the default."""
    return _limit(MAX_TASKS_ENV, DEFAULT_MAX_TASKS)


def max_instances() -> int:
    """The step instance limit in effect: ``MERLIN_MDM_MAX_INSTANCES`` when set, else the default."""
    return _limit(MAX_INSTANCES_ENV, DEFAULT_MAX_INSTANCES)


PARAMETERS_REMEDY = "use fewer values, zip parameters instead of crossing them (drop `product`), or sweep with " \
    "merlin.samples"
SAMPLES_REMEDY = "use fewer samples (or split them over several studies)"


def size_problem(instances: int, tasks: int, what: str, remedy: str = PARAMETERS_REMEDY) -> str | None:
    """Why a study of ``instances`` step instances and ``tasks`` tasks is too large (None when it is not), with
    what to do; ``what`` says what makes them, ``remedy`` how to make fewer."""
    if tasks > max_tasks():
        count, noun, limit, env = tasks, "tasks", max_tasks(), MAX_TASKS_ENV
    elif instances > max_instances():
        count, noun, limit, env = instances, "step instances", max_instances(), MAX_INSTANCES_ENV
    else:
        return None
    return f"{what} make {count:,} {noun}, more than the {limit:,} merlin-mdm plans: {remedy}; to plan it anyway, " \
        f"set {env}={count}"


def combination_count(params: Sequence[Parameter], used: frozenset[str] | None = None) -> int:
    """How many distinct combinations of ``params`` (only of the ``used`` ones, when given) there are, computed
    without building any: the product over the groups (zipped parameters go together) of the distinct tuples of
    the used parameters' values in each group. A `--pgen` generator's parameters are one zipped group holding the
    whole cross product: a step using one of them has as many instances as that one has distinct values."""
    groups: dict[str, list[Parameter]] = {}
    for param in params:
        if used is None or param.name in used:
            groups.setdefault(param.product, []).append(param)
    return math.prod(_distinct(members) for members in groups.values())


def _distinct(members: list[Parameter]) -> int:
    """The distinct tuples of one zipped group's values (as many as its shortest parameter has: a group of unequal
    lengths is refused by its own check, reported beside this one)."""
    if len(members) == 1:
        return len({repr(value) for value in members[0].values})
    rows = min(len(param.values) for param in members)
    return len({tuple(repr(param.values[i]) for param in members) for i in range(rows)})


def step_parameters(spec: Spec) -> dict[str, frozenset[str]]:
    """The parameters each step runs over, the one rule the study's expansion follows: those its cmd, restart and
    description use (the env variables and labels written out), those of its parents (except funnelled ones), and
    those of the earlier steps (in :func:`step_order`) whose ``$(s.workspace)`` its cmd or restart names."""
    names = {p.name for p in spec.parameters}
    inline = _written_out(spec)
    used: dict[str, frozenset[str]] = {}
    for name in step_order(spec):
        step = spec.step(name)
        run = step.run
        commands = f"{run.cmd} {run.restart or ''}"
        own = {t.split(".")[0] for t in inlined_tokens(f"{commands} {step.description}", inline)
               if t.split(".")[0] in names}
        links = [parent_name(d) for d in run.depends]
        funnels = {parent for parent, funnel in links if funnel}
        refs = [t[: -len(".workspace")] for t in inlined_tokens(commands, inline) if t.endswith(".workspace")]
        # a parent named plainly passes its parameters on, also when it is funnelled too (`[a, a_*]`, as Merlin)
        for other in [*(parent for parent, funnel in links if not funnel), *(r for r in refs if r not in funnels)]:
            own |= used.get(other, frozenset())
        used[name] = frozenset(own)
    return used


def _written_out(spec: Spec) -> dict[str, str]:
    """The tokens a step's text is read through, as the expansion writes them out: variables, then
    `env.dependencies` (their paths), then labels, a later kind winning over an earlier one of the same name."""
    deps = {dep.name: dep.path for dep in spec.env.dependencies}
    return {**dict(spec.env.variables), **deps, **dict(spec.env.labels)}


def planned_instances(spec: Spec) -> int:
    """How many step instances the spec makes (samples not counted)."""
    used = step_parameters(spec)
    return sum(combination_count(spec.parameters, used.get(s.name, frozenset())) for s in spec.steps)


_SAMPLE_TOKENS = frozenset({"MERLIN_SAMPLE_ID", "MERLIN_SAMPLE_PATH", "MERLIN_SAMPLE_VECTOR"})  # run per sample


def planned_tasks(spec: Spec, samples: int) -> int:
    """How many tasks the spec makes with ``samples`` samples: the instances of a step whose cmd or restart uses a
    sample token or column run once per sample."""
    used = step_parameters(spec)
    inline = _written_out(spec)
    columns = spec.samples.column_labels if spec.samples else ()
    per_sample = _SAMPLE_TOKENS | set(columns)
    total = 0
    for step in spec.steps:
        tokens = inlined_tokens(f"{step.run.cmd} {step.run.restart or ''}", inline, columns)
        times = samples if per_sample.intersection(tokens) else 1
        total += combination_count(spec.parameters, used.get(step.name, frozenset())) * times
    return total


def check_size(spec: Spec, issues: IssueCollector) -> None:
    """Refuse, at ``global.parameters``, a study with more instances than :func:`max_instances` (or
    :func:`max_tasks`)."""
    if not spec.parameters:
        return
    count = planned_instances(spec)
    if size_problem(count, count, "") is None:
        return
    sizes: dict[str, tuple[str, int]] = {}
    for param in spec.parameters:
        sizes.setdefault(param.product, (param.name, len(param.values)))
    shown = [f"{name}: {n}" for name, n in sizes.values()]
    groups = " x ".join(shown[:8]) + (" x ..." if len(shown) > 8 else "")
    what = f"the steps over their parameters' combinations ({groups} values)"
    mark, path, remedy = parameters_source(spec)
    issues.error(mark, path, str(size_problem(count, count, what, remedy)))


PGEN_REMEDY = "make the generator (--pgen) return fewer combinations"


def parameters_source(spec: Spec) -> tuple[tuple[int, int], str, str]:
    """Where the spec's parameters come from, for an error about them: (line and column, YAML path, what to do).
    Parameters of a `--pgen` generator have no place in the file."""
    if "global.parameters" not in spec.raw:
        return (0, 0), "--pgen", PGEN_REMEDY
    return key_mark(spec.raw, "global.parameters"), "global.parameters", PARAMETERS_REMEDY
