"""Expand a spec into a :class:`StudyPlan`: Maestro's parameter semantics, Merlin's samples. Pure."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

from merlin_mdm.errors import SpecError, SpecIssue
from merlin_mdm.launchers import DEFAULT_LAUNCHER, Resources, get_launcher
from merlin_mdm.spec import EXIT_CODE_TOKENS, Parameter, Spec, Step, parent_name
from merlin_mdm.spec.hazards import NAME_MAX, directory_label, label_problem, parse_walltime
from merlin_mdm.spec.issues import value_mark
from merlin_mdm.spec.limits import (
    PARAMETERS_REMEDY,
    SAMPLES_REMEDY,
    combination_count,
    parameters_source,
    size_problem,
    step_parameters,
)
from merlin_mdm.spec.model import step_order, step_shell
from merlin_mdm.spec.tokens import TOKEN_RE, plain_names_in, resolve_ordered, substitute, tokens_in
from merlin_mdm.study.parameters import Combo, combinations, format_value, project
from merlin_mdm.study.plan import Edge, StepInstance, StudyPlan
from merlin_mdm.study.samples import SampleSet

__all__ = ["SAMPLE_TASK_TOKENS", "StudyContext", "expand", "resolve_variables", "study_tokens"]

SAMPLE_TASK_TOKENS = frozenset({"MERLIN_SAMPLE_ID", "MERLIN_SAMPLE_PATH", "MERLIN_SAMPLE_VECTOR"})
# Merlin writes a task's files with the extension of its batch system's script adapter (Maestro's slurm
# adapter, which Merlin's lsf and flux adapters extend): `<name>.slurm.sh`, `.slurm.out`, `.slurm.err`.
_SCRIPT_EXT = {"slurm": ".slurm", "lsf": ".slurm", "lsf-srun": ".slurm", "flux": ".slurm"}
_T = TypeVar("_T")
_MAX_NESTING = 8  # substitution passes: a token's value may hold tokens, up to this depth


@dataclass(frozen=True)
class StudyContext:
    """Facts about a study's workspace that expansion needs (decided by the workspace writer)."""

    workspace: str  # absolute study workspace
    output_path: str  # absolute OUTPUT_PATH
    timestamp: str  # YYYYmmdd-HHMMSS
    samples: SampleSet | None = None
    batch_size: int = 100
    slots: int = 1  # workers the units are sized for (see plan.UnitLayout)


def resolve_variables(spec: Spec, extra: Mapping[str, str]) -> dict[str, str]:
    """The env variables with nested references (and ``extra`` tokens) resolved."""
    return resolve_ordered(spec.env.variables, {"SPECROOT": str(spec.root), **extra})


def study_tokens(spec: Spec, ctx: StudyContext) -> dict[str, str]:
    """Tokens with one value for the whole study: reserved tokens, exit codes, variables, dependencies."""
    info = f"{ctx.workspace}/merlin_info"
    name = spec.copy_name
    tokens = {
        "SPECROOT": str(spec.root), "OUTPUT_PATH": ctx.output_path, "MERLIN_WORKSPACE": ctx.workspace,
        "MERLIN_INFO": info, "MERLIN_TIMESTAMP": ctx.timestamp,
        "MERLIN_SPEC_ORIGINAL_TEMPLATE": f"{info}/{name}.orig.yaml",
        "MERLIN_SPEC_EXECUTED_RUN": f"{info}/{name}.partial.yaml",
        "MERLIN_SPEC_ARCHIVED_COPY": f"{info}/{name}.expanded.yaml",
        **EXIT_CODE_TOKENS,
    }  # fmt: skip
    if ctx.samples is not None:
        tokens["MERLIN_SAMPLE_NAMES"] = " ".join(ctx.samples.column_labels)
        tokens["MERLIN_GLOB_PATH"] = ctx.samples.glob()
        tokens["MERLIN_SAMPLE_FILE"] = ctx.samples.file
    # OUTPUT_PATH is a variable like the others, as in Merlin: $(OUTPUT_PATH) and the variables built from it
    # keep the form the user wrote (`./studies`); the workspace itself is found from it by the writer.
    variables = resolve_ordered(spec.env.variables, {k: v for k, v in tokens.items() if k != "OUTPUT_PATH"})
    tokens.update(variables)
    for dep in spec.env.dependencies:
        tokens[dep.name] = substitute(dep.path, tokens)
    return tokens


class _Expander:
    """Walks the steps in topological order, expanding each over the parameters it uses."""

    def __init__(self, spec: Spec, ctx: StudyContext):
        self.spec = spec
        self.ctx = ctx
        self.tokens = study_tokens(spec, ctx)
        self.params = {p.name for p in spec.parameters}
        self.parameters = [self._filled(p) for p in spec.parameters]
        self.tasks = 0  # counted before each step is built: a study over the limits is refused before it is built
        self.instance_count = 0
        self.step_used = step_parameters(spec)  # the parameters each step runs over (one rule, in .limits)
        self.used: dict[str, frozenset[str]] = {}  # those of the steps expanded so far
        self.by_labels: dict[str, dict[str, int]] = {}  # step -> labels -> instance index
        self.combo_of: dict[tuple[str, str], tuple[tuple[str, str, str], ...]] = {}  # (step, labels) -> combo
        self.folders: dict[tuple[str, str], str] = {}  # (step, folder name) -> the labels that made it
        self.issues: list[SpecIssue] = []  # unsafe labels and label collisions, all reported at the end
        self.instances: list[StepInstance] = []
        self._paths_all: str | None = None
        self.memo: dict[tuple[str, str | None], object] = {}  # per text or step: what every instance shares
        self.sample_tokens = set(SAMPLE_TASK_TOKENS) | set(ctx.samples.column_labels if ctx.samples else ())

    def run(self) -> StudyPlan:
        for name in step_order(self.spec):
            self._expand_step(self.spec.step(name))
        if self.issues:
            raise SpecError(list(dict.fromkeys(self.issues)))
        return StudyPlan(self.spec.description.name, self.ctx.workspace, tuple(self.instances), self.ctx.samples,
                         self.ctx.batch_size, self.ctx.slots)

    def _env_text(self, text: str, combo: Combo | None = None) -> str:
        """``text`` with the labels, variables and study tokens written out (their values may hold parameters,
        labels and other variables: Maestro inlines the environment first), and the parameters filled in once.

        One pass: a parameter's value goes in as it is written, never read again for tokens, as in Merlin
        (``values: ["a$(X)"]`` gives ``a$(X)``; filling in until nothing changed made ``aaaaaaaa$(X)``)."""
        params = combo.tokens() if combo is not None else {}
        labels = dict(self.spec.env.labels)

        def fill(part: str, depth: int) -> str:
            def one(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in params:
                    return params[name]
                inner = labels.get(name, self.tokens.get(name))
                return match.group(0) if inner is None or depth >= _MAX_NESTING else fill(inner, depth + 1)

            return TOKEN_RE.sub(one, part) if "$(" in part else part

        return fill(text, 0)

    def _filled(self, param: Parameter) -> Parameter:
        """``param`` with the variables, labels and study tokens in its values and label written out, as Maestro
        inlines the environment into the whole spec (Merlin 1.13: `values: ["z$(V)"]` is `zvee` in commands and
        folders); a value naming another parameter keeps it as written."""
        if "$(" not in param.label and not any("$(" in str(v) for v in param.values):
            return param
        values = tuple(self._env_text(v) if isinstance(v, str) else v for v in param.values)
        return dataclasses.replace(param, values=values, label=self._env_text(param.label))

    def _workspace_refs(self, step: Step) -> list[str]:
        tokens = self._tokens(f"{step.run.cmd} {step.run.restart or ''}")  # a variable may name one (Maestro)
        return [t[: -len(".workspace")] for t in tokens if t.endswith(".workspace")]

    @staticmethod
    def _funnels(step: Step) -> set[str]:
        return {parent_name(d)[0] for d in step.run.depends if parent_name(d)[1]}

    def _expand_step(self, step: Step) -> None:
        used = self.step_used[step.name]
        self.used[step.name] = used
        self.by_labels[step.name] = {}
        self._count(step, used)
        for combo in combinations(self.parameters, used):
            if combo.label_string in self.by_labels[step.name]:
                self._check_collision(step, combo, combo.label_string, "label")
                continue
            folder = directory_label(combo.label_string)
            if (step.name, folder) in self.folders:
                self._check_collision(step, combo, self.folders[(step.name, folder)], "folder name")
                continue
            self.folders[(step.name, folder)] = combo.label_string
            self._check_labels(combo, folder)
            inst = self._instance(step, combo, folder)
            self._check_name_length(inst, combo)
            self.by_labels[step.name][combo.label_string] = inst.index
            self.combo_of[(step.name, combo.label_string)] = combo.items
            self.instances.append(inst)

    def _count(self, step: Step, used: frozenset[str]) -> None:
        """Add the instances of ``step`` and its tasks (its instances, times the samples when it runs per sample) to
        the study's; refuse the study, before the step is built, when they pass the limits (:mod:`.limits`)."""
        count = combination_count(self.parameters, used)
        samples = self.ctx.samples.count if self.ctx.samples is not None and self._uses_samples(step) else 1
        self.instance_count += count
        self.tasks += count * samples
        problem = size_problem(self.instance_count, self.tasks, "")
        if problem is None:
            return
        remedy = PARAMETERS_REMEDY
        if self.tasks > self.instance_count and self.ctx.samples is not None:
            where, path = self._samples_mark(), "merlin.samples"
            what = f"the steps' parameter combinations times the {self.ctx.samples.count:,} samples"
            remedy = f"{SAMPLES_REMEDY}, or fewer parameter values"
        else:
            where, path, remedy = parameters_source(self.spec)
            what = "the steps' parameter combinations"
        problem = size_problem(self.instance_count, self.tasks, f"{what} (step '{step.name}' and those before)",
                               remedy)
        raise SpecError([SpecIssue(str(self.spec.path), where[0], where[1], path, str(problem))])

    def _samples_mark(self) -> tuple[int, int]:
        """Where ``merlin.samples.file`` is in the spec file; (0, 0) when unknown."""
        node = self.spec.raw.get("merlin")
        node = node.get("samples") if isinstance(node, dict) else None
        line, column = value_mark(node, "file")
        return int(line), int(column)

    def _check_collision(self, step: Step, combo: Combo, labels: str, what: str) -> None:
        """Two different combinations with one label string, or one folder name, would share a directory: one
        would be lost."""
        other = self.combo_of[(step.name, labels)]
        if other == combo.items:
            return
        shared = combo.label_string if what == "label" else directory_label(labels)

        def show(items: tuple[tuple[str, str, str], ...]) -> str:
            return ", ".join(f"{name}={value!r}" for name, value, _ in items)

        where = self._mark()
        self.issues.append(SpecIssue(str(self.spec.path), where[0], where[1], "global.parameters",
                                     f"step '{step.name}': the combinations ({show(other)}) and ({show(combo.items)}) "
                                     f"both get the {what} '{shared}', so one would overwrite the other; "
                                     "make the labels distinct"))

    def _mark(self, *path: str | int) -> tuple[int, int]:
        """Where ``global.parameters`` (or a node under it) is in the spec file; (0, 0) when unknown."""
        node = self.spec.raw.get("global.parameters")
        for key in path:
            child = node.get(key) if isinstance(node, dict) and isinstance(key, str) else None
            if isinstance(key, int) and isinstance(node, list) and key < len(node):
                return value_mark(node, key)
            if child is None:
                break
            node = child
        return getattr(node, "mark", (0, 0))

    def _check_labels(self, combo: Combo, folder: str) -> None:
        """Labels whose folder name is no directory of its own (`..`) would put task files outside the step."""
        why = label_problem(folder) if combo.items else None
        if why:
            name, value, label = combo.items[0]
            self._value_issue(name, value, f"the label {label!r} (label {self._param(name).label!r}, value "
                                           f"{value!r}) {why}; task folders are named by labels, so they must "
                                           "make one plain directory name")

    def _check_name_length(self, inst: StepInstance, combo: Combo) -> None:
        """A task's files are named by its labels: a name longer than the file system allows would fail every
        task at run time (ENAMETOOLONG), so it is refused at the value with the longest label."""
        longest = f"{inst.file_stem(restart=inst.restart is not None)}.err"
        size = len(longest.encode("utf-8", "surrogateescape"))
        if size <= NAME_MAX or not combo.items:
            return
        name, value, _ = max(combo.items, key=lambda item: len(item[2].encode("utf-8", "surrogateescape")))
        self._value_issue(name, value, f"step '{inst.step}' would name its task files '{longest[:40]}...' ({size} "
                                       f"bytes), longer than the {NAME_MAX} bytes a file name may have; shorten "
                                       f"this value or its label (label {self._param(name).label!r})")

    def _param(self, name: str) -> Parameter:
        return next(p for p in self.parameters if p.name == name)

    def _value_issue(self, name: str, value: str, message: str) -> None:
        """An issue at the value ``value`` of parameter ``name``."""
        index = next((i for i, v in enumerate(self._param(name).values) if format_value(v) == value), 0)
        where = self._mark(name, "values", index)
        self.issues.append(SpecIssue(str(self.spec.path), where[0], where[1],
                                     f"global.parameters.{name}.values[{index}]", message))

    def _instance(self, step: Step, combo: Combo, folder: str) -> StepInstance:
        index = len(self.instances)
        workspace = f"{step.name}/{folder}" if combo.items else step.name
        name = f"{step.name}_{folder}" if combo.items else step.name
        uses_samples = self._uses_samples(step)
        parents = self._edges(step, combo, uses_samples)
        run = step.run
        extra = {**self._workspace_tokens(step, combo), **self._launcher_tokens(step)}
        cmd = substitute(self._env_text(run.cmd, combo), extra)
        restart = substitute(self._env_text(run.restart, combo), extra) if run.restart else None
        if self.ctx.samples is not None:
            cmd = self._with_paths_all(cmd)
            restart = self._with_paths_all(restart) if restart else restart
        shell = step_shell(self.spec, run)
        sources = tuple(self._env_text(src, combo) for src in self.spec.env.sources)
        return StepInstance(index, step.name, name, combo.label_string, workspace, cmd, restart, shell,
                            uses_samples, parents, run.task_queue, run.max_retries, run.retry_delay, run.walltime,
                            sources, (run.procs or 1) * (run.cores_per_task or 1),
                            _SCRIPT_EXT.get((run.batch or self.spec.batch).type, ""),
                            self._command_params(run.cmd, combo), self._command_params(run.restart, combo))

    def _command_params(self, text: str | None, combo: Combo) -> tuple[tuple[str, str], ...]:
        """The parameters of ``combo`` that ``text`` names, as $(P) or $(P.label), with their values."""
        used = self._memo(("names", text), lambda: {t.removesuffix(".label") for t in self._tokens(text or "")})
        return tuple((name, value) for name, value, _ in combo.items if name in used)

    def _uses_samples(self, step: Step) -> bool:
        if self.ctx.samples is None:
            return False
        text = f"{step.run.cmd} {step.run.restart or ''}"
        if any(t in self.sample_tokens for t in self._tokens(text)):
            return True  # a column named otherwise (`my col`) is found as plain text, as Merlin finds every one
        labels = self.ctx.samples.column_labels
        return self._memo(("plain", text), lambda: bool(plain_names_in(self._env_text(text), labels)))

    def _tokens(self, text: str) -> list[str]:
        """The tokens ``text`` holds once the environment is written out (once per text, not per instance)."""
        return self._memo(("tokens", text), lambda: tokens_in(self._env_text(text)))

    def _memo(self, key: tuple[str, str | None], make: Callable[[], _T]) -> _T:
        if key not in self.memo:
            self.memo[key] = make()
        return cast(_T, self.memo[key])

    def _edges(self, step: Step, combo: Combo, uses_samples: bool) -> tuple[Edge, ...]:
        """One edge per parent instance; a parent both named and funnelled (`[a, a_*]`) is waited for whole."""
        edges: dict[int, Edge] = {}
        for dep in step.run.depends:
            parent, funnel = parent_name(dep)
            if funnel:
                edges.update((i, Edge(i, False, funnel=True)) for i in self.by_labels[parent].values())
            else:
                index = self.by_labels[parent][project(combo, self.used[parent]).label_string]
                edges.setdefault(index, Edge(index, uses_samples and self.instances[index].uses_samples))
        return tuple(edges.values())

    def _workspace_tokens(self, step: Step, combo: Combo) -> dict[str, str]:
        out = {}
        for ref in self._workspace_refs(step):
            if ref not in self.used:
                continue
            if ref in self._funnels(step) or not self.used[ref]:
                out[f"{ref}.workspace"] = f"{self.ctx.workspace}/{ref}"
            else:
                labels = project(combo, self.used[ref]).label_string
                out[f"{ref}.workspace"] = f"{self.ctx.workspace}/{ref}/{directory_label(labels)}"
        return out

    def _launcher_tokens(self, step: Step) -> dict[str, str]:
        return self._memo(("launcher", step.name), lambda: self._launcher_tokens_of(step))

    def _launcher_tokens_of(self, step: Step) -> dict[str, str]:
        run = step.run
        batch = run.batch or self.spec.batch
        name = str(batch.extra.get("launcher") or DEFAULT_LAUNCHER.get(batch.type, "plain"))
        launcher = get_launcher(name)
        keys = run.launch
        gpus = run.gpus if run.gpus is not None else keys.gpus_per_task
        shaping = Resources(flags=keys.flags.get(launcher.step_key, "") if launcher.step_key else "",
                            resource_sets=keys.resource_sets, distribution=keys.distribution,
                            exit_on_error=keys.exit_on_error, bind=keys.bind, step=step.name)
        fixed = dataclasses.replace(shaping, nodes=run.nodes, procs=run.procs or 1, cores_per_task=run.cores_per_task,
                                    gpus=gpus, walltime=_seconds(run.walltime))
        variable = dataclasses.replace(
            shaping, nodes=f"${{MERLIN_NODES:-{run.nodes or 1}}}", procs=f"${{MERLIN_PROCS:-{fixed.procs}}}",
            cores_per_task=f"${{MERLIN_CORES:-{run.cores_per_task or 1}}}" if run.cores_per_task else None,
            gpus=f"${{MERLIN_GPUS:-{gpus}}}" if gpus else None)
        return {"LAUNCHER": launcher.prefix(fixed), "VLAUNCHER": launcher.prefix(variable)}

    def _with_paths_all(self, text: str) -> str:
        """MERLIN_PATHS_ALL: every sample directory, space separated (built once, only when used)."""
        if "$(MERLIN_PATHS_ALL)" not in text or self.ctx.samples is None:
            return text
        if self._paths_all is None:
            samples = self.ctx.samples
            self._paths_all = " ".join(samples.path(i) for i in range(samples.count))
        return text.replace("$(MERLIN_PATHS_ALL)", self._paths_all)


def _seconds(walltime: str | None) -> float | None:
    try:
        return parse_walltime(walltime)
    except ValueError:  # reported by validation
        return None


def expand(spec: Spec, ctx: StudyContext) -> StudyPlan:
    """Expand ``spec`` into its plan of step instances."""
    return _Expander(spec, ctx).run()

