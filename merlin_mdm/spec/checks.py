"""Semantic checks of a structurally valid spec: dependencies, cycles, tokens, parameters, samples, files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from merlin_mdm.errors import SpecIssue
from merlin_mdm.spec.batch_options import OPTION_KEYS, owned_option, parse_batch_options
from merlin_mdm.spec.exitcodes import EXIT_CODE_TOKENS
from merlin_mdm.spec.hazards import NAME_MAX, check_hazards, parse_walltime
from merlin_mdm.spec.issues import IssueCollector, did_you_mean, key_mark, value_mark
from merlin_mdm.spec.limits import check_size
from merlin_mdm.spec.loader import Located, MarkedDict, MarkedList
from merlin_mdm.spec.model import Spec, Step, parent_name, step_shell
from merlin_mdm.spec.tokens import (
    LATE_TOKENS,
    RESERVED_NAMES,
    STUDY_TOKENS,
    inlined_tokens,
    resolve_ordered,
    substitute,
    tokens_in,
)
from merlin_mdm.spec.worker_args import split_worker_args

__all__ = ["DEFAULT_BATCH_TYPES", "check_cores", "check_shells", "check_spec", "known_tokens", "output_path_issue",
           "output_path_problem", "parent_name", "step_run_place", "unknown_token_message"]

DEFAULT_BATCH_TYPES = ("local", "slurm", "lsf", "lsf-srun", "flux", "pbs")


def check_spec(spec: Spec, issues: IssueCollector, batch_types: Iterable[str] = DEFAULT_BATCH_TYPES,
               to_run: bool = True) -> None:
    """Record every semantic problem of ``spec`` in ``issues`` (OUTPUT_PATH's only when it is loaded ``to_run``)."""
    _check_study_name(spec, issues)
    _check_step_names(spec, issues)
    _check_depends(spec, issues)
    _check_cycles(spec, issues)
    _check_parameters(spec, issues)
    check_size(spec, issues)
    _check_samples(spec, issues)
    _check_tokens(spec, issues)
    _check_sample_tokens(spec, issues)
    _check_other_tokens(spec, issues)
    _check_workspace_refs(spec, issues)
    _check_batch(spec, issues, tuple(batch_types))
    _check_batch_options(spec, issues)
    _check_workers(spec, issues)
    _check_load_time_tokens(spec, issues)
    _check_worker_args(spec, issues)
    _check_paths(spec, issues)
    if to_run:
        _check_output_path(spec, issues)
    check_hazards(spec, issues)


@dataclass(frozen=True)
class _Located:
    """A built step with its index in the YAML `study` list and its parsed nodes (for positions)."""

    index: int
    step: Step
    node: MarkedDict
    run: MarkedDict

    def depends_mark(self, position: int) -> Located:
        """Where the ``position``-th entry of `depends` is (the whole value for a single string)."""
        return value_mark(self.run.get("depends"), position) if isinstance(self.run.get("depends"), MarkedList) \
            else value_mark(self.run, "depends")


def _located_steps(spec: Spec) -> list[_Located]:
    """Pair each built step with its YAML entry.

    The builder skips entries that are not mappings or lack a `run` mapping, so the i-th built step is not
    always the i-th YAML entry; this repeats the builder's rule to find the right one.
    """
    study = spec.raw.get("study")
    entries = [(i, e) for i, e in enumerate(study if isinstance(study, list) else [])
               if isinstance(e, MarkedDict) and isinstance(e.get("run"), MarkedDict)]
    return [_Located(i, step, node, node["run"]) for (i, node), step in zip(entries, spec.steps, strict=False)]


def step_run_place(spec: Spec, step: str, key: str) -> str:
    """``spec.yaml:LINE`` of ``key`` in step ``step``'s `run` block (the block's own line where it lacks ``key``;
    the file alone where the step cannot be found)."""
    for loc in _located_steps(spec):
        if loc.step.name == step:
            return f"{spec.path}:{key_mark(loc.run, key)[0]}"
    return str(spec.path)


_SHELL_QUOTING = frozenset("\"'`$\\")  # characters a double- or single-quoted word cannot hold as they are
_WORKSPACE_SUFFIX = "_20260101-000000.9999"  # the longest timestamp and suffix a workspace folder takes
_TASK_FILE_SUFFIX = ".restart.slurm.err"  # the longest ending of a task's files (<step>[_labels].restart.slurm.err)


def _check_study_name(spec: Spec, issues: IssueCollector) -> None:
    name = spec.description.name
    where = value_mark(_node(spec, "description"), "name")
    if name and any(c == "/" or not c.isprintable() for c in name):  # Merlin's own names (`my study`, `v:2`) pass
        issues.error(where, "description.name", f"{name!r}: a '/' or a control character cannot be in a folder name "
                     "(the name becomes the workspace's folder)")
    elif name and any(c in _SHELL_QUOTING for c in name):  # the batch script and $(WORKSPACE) name the folder
        issues.error(where, "description.name", f"{name!r}: quotes, backquotes, '$' and '\\' in the name would "
                     "break the shell commands that name the workspace's folder (its batch scripts, $(WORKSPACE)); "
                     "leave them out")
    folder = len(spec.description.folder.encode()) + len(_WORKSPACE_SUFFIX)
    if folder > NAME_MAX:
        issues.error(where, "description.name", f"the name is {len(name.encode())} bytes: its workspace folder "
                     f"(NAME{_WORKSPACE_SUFFIX}) would be {folder}, longer than the {NAME_MAX} bytes a file name "
                     f"may have; use at most {NAME_MAX - len(_WORKSPACE_SUFFIX)}")
        return
    _check_batch_file_names(spec, where, issues)


_JOB_OUTPUT_SUFFIX = ".12345678901234567890.out"  # `launch`'s job output NAME.GROUP.<job id>.out: ids of 20 digits


def _check_batch_file_names(spec: Spec, where: Located, issues: IssueCollector) -> None:
    """`launch` names a worker group's script and output NAME.GROUP.sh and NAME.GROUP.<job id>.out: a study whose
    name fits its workspace folder was queued, then never launched (`File name too long`; an outside probe)."""
    groups = [w.name for w in spec.resources.workers] or ["default_worker"]
    group = max(groups, key=lambda g: len(g.encode()))
    longest = len(f"{spec.description.folder}.{group}{_JOB_OUTPUT_SUFFIX}".encode())
    if longest > NAME_MAX:
        room = NAME_MAX - len(f".{group}{_JOB_OUTPUT_SUFFIX}".encode())
        issues.warn(where, "description.name", f"`merlin-mdm launch` names worker group {group[:40]!r}'s job output "
                    f"NAME.{group[:40]}{_JOB_OUTPUT_SUFFIX} ({longest} bytes), longer than the {NAME_MAX} bytes a "
                    f"file name may have: use at most {max(room, 0)} bytes for the name, or a shorter group name")


def _check_step_names(spec: Spec, issues: IssueCollector) -> None:
    seen: set[str] = set()
    for loc in _located_steps(spec):
        name, where, path = loc.step.name, value_mark(loc.node, "name"), f"study[{loc.index}].name"
        if name in seen:
            issues.error(where, path, f"step '{name}' is defined twice")
        if not all(c.isalnum() or c in "-_" for c in name) or name.endswith("_*"):
            issues.error(where, path, "use only letters, digits, '-' and '_' in step names")
        if name == "merlin_info":
            issues.error(where, path, "'merlin_info' is the study's own folder (plan, logs, status); name the "
                         "step otherwise")
        longest = len(name.encode()) + len(_TASK_FILE_SUFFIX)
        if longest > NAME_MAX:
            issues.error(where, path, f"step '{name[:40]}...' would name its task files NAME{_TASK_FILE_SUFFIX} "
                         f"({longest} bytes), longer than the {NAME_MAX} bytes a file name may have; use at most "
                         f"{NAME_MAX - len(_TASK_FILE_SUFFIX)} bytes")
        seen.add(name)


def _check_depends(spec: Spec, issues: IssueCollector) -> None:
    study = spec.raw.get("study")
    # Steps the builder dropped (already reported as broken) still count as defined here.
    names = [*(s.name for s in spec.steps), *(str(e["name"]) for e in (study if isinstance(study, list) else [])
                                              if isinstance(e, MarkedDict) and "name" in e)]
    defined = set(names)  # a list searched per `depends` entry was quadratic in the number of steps
    for loc in _located_steps(spec):
        for position, dep in enumerate(loc.step.run.depends):
            parent, _ = parent_name(dep)
            where, path = loc.depends_mark(position), f"study[{loc.index}].run.depends"
            if parent == loc.step.name:
                issues.error(where, path, f"step '{parent}' depends on itself")
            elif parent not in defined:
                issues.error(where, path, f"unknown step '{parent}'{did_you_mean(parent, names)}")


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as [a, ..., a] (following `depends`), or None. Self-loops are reported elsewhere.

    Depth-first without recursion: a chain of thousands of steps is an ordinary study, not a RecursionError."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if root in state:
            continue
        path, todo = [root], [iter(graph.get(root, []))]
        state[root] = 1
        while todo:
            parent = next(todo[-1], None)
            if parent is None:
                state[path.pop()] = 2
                todo.pop()
            elif parent in graph and parent != path[-1] and state.get(parent) == 1:
                return [*path[path.index(parent):], parent]
            elif parent in graph and parent not in state:
                state[parent] = 1
                path.append(parent)
                todo.append(iter(graph.get(parent, [])))
    return None


def _check_cycles(spec: Spec, issues: IssueCollector) -> None:
    graph = {s.name: [parent_name(d)[0] for d in s.run.depends] for s in spec.steps}
    cycle = _find_cycle(graph)
    if cycle is None:
        return
    located = {loc.step.name: loc for loc in reversed(_located_steps(spec))}
    at = min((located[name] for name in cycle if name in located), key=lambda loc: loc.index)
    issues.error(value_mark(at.run, "depends"), f"study[{at.index}].run.depends",
                 f"dependency cycle: {' -> '.join(reversed(cycle))}; remove one of these depends")


def _check_parameters(spec: Spec, issues: IssueCollector) -> None:
    node = spec.raw.get("global.parameters") or MarkedDict()
    groups: dict[str, list[tuple[str, int]]] = {}
    for param in spec.parameters:
        if param.values:  # an empty list was already reported
            groups.setdefault(param.product, []).append((param.name, len(param.values)))
    for group, members in groups.items():
        lengths = {n for _, n in members}
        if len(lengths) > 1:
            listing = ", ".join(f"{name}: {n}" for name, n in members)
            first = members[-1][0]
            what = "zipped parameters" if not group else f"parameters of product group '{group}'"
            issues.error(key_mark(node, first), f"global.parameters.{first}",
                         f"{what} must have equally long value lists ({listing}); add `product: true` to "
                         "cross a parameter with the others instead of zipping it")
    variables = {name for name, _ in spec.env.variables}
    for param in spec.parameters:
        if param.name in variables:
            issues.error(key_mark(node, param.name), f"global.parameters.{param.name}",
                         f"'{param.name}' is also an env variable; rename one of them")


def _check_samples(spec: Spec, issues: IssueCollector) -> None:
    if spec.samples is None:
        return
    merlin = spec.raw.get("merlin") or MarkedDict()
    node = merlin.get("samples") if isinstance(merlin, MarkedDict) else None
    where = value_mark(node, "column_labels") if isinstance(node, MarkedDict) else (0, 0)
    params = {p.name for p in spec.parameters}
    variables = {name for name, _ in (*spec.env.variables, *spec.env.labels)}
    reserved = STUDY_TOKENS | LATE_TOKENS | set(EXIT_CODE_TOKENS)
    labels = node.get("column_labels") if isinstance(node, MarkedDict) else None
    for i, label in enumerate(spec.samples.column_labels):
        at = value_mark(labels, i) if isinstance(labels, MarkedList) else where
        if not _writable_label(label):  # `my col` and `1st` are taken, as by Merlin: found and filled in as text
            issues.error(at, "merlin.samples.column_labels",
                         f"sample column {label!r} cannot be written as $(NAME) in a command; name it without ')', "
                         "'$(', control characters or surrounding spaces")
        elif label in reserved:  # it took $(WORKSPACE) over: a funnel ran once per sample, in no folder of its own
            issues.error(at, "merlin.samples.column_labels",
                         f"sample column '{label}' is a reserved token ($({label}) is merlin-mdm's); rename the column")
        elif label in params:
            issues.error(where, "merlin.samples.column_labels",
                         f"sample column '{label}' collides with the parameter of the same name; rename one")
        elif label in variables:
            issues.error(where, "merlin.samples.column_labels",
                         f"sample column '{label}' collides with the env variable/label of the same name; rename one")
    if len(set(spec.samples.column_labels)) != len(spec.samples.column_labels):
        issues.error(where, "merlin.samples.column_labels", "column labels must be unique")


def _writable_label(label: str) -> bool:
    """Whether ``$(label)`` can stand in a command and be found there: not empty, no ')' to end it early, no '$('
    inside, no control character, no space at either end."""
    return (bool(label) and label == label.strip() and ")" not in label and "$(" not in label
            and all(ch.isprintable() for ch in label))


def known_tokens(spec: Spec) -> set[str]:
    """Every token a step command may use."""
    known = set(STUDY_TOKENS | LATE_TOKENS) | set(EXIT_CODE_TOKENS)
    known |= {name for name, _ in (*spec.env.variables, *spec.env.labels)}
    known |= {d.name for d in spec.env.dependencies}
    for param in spec.parameters:
        known |= {param.name, f"{param.name}.label"}
    known |= {f"{s.name}.workspace" for s in spec.steps}
    if spec.samples is not None:
        known |= set(spec.samples.column_labels)
    return known


def unknown_token_message(token: str, known: Iterable[str]) -> str | None:
    """Why an unknown ``$(token)`` deserves a warning, or None when it reads as a shell command.

    As in Maestro, a ``$(...)`` that is no token goes to the shell unchanged (``$(pwd)``, ``$(nproc)``). One
    close to a known token, or written in capitals like a variable, is most likely a typo or a missing --vars.
    """
    hint = did_you_mean(token, known)
    if not hint and not token.isupper():
        return None
    return (f"$({token}) is not a defined token{hint}; the shell will run it as a command"
            + ("" if hint else " (define it under env.variables or pass --vars)"))


def _warn_unknown(issues: IssueCollector, where: Located, path: str, text: str, known: set[str]) -> None:
    for token in dict.fromkeys(tokens_in(text)):
        if token not in known and (message := unknown_token_message(token, known)):
            issues.warn(where, path, message)


def _check_tokens(spec: Spec, issues: IssueCollector) -> None:
    known = known_tokens(spec)
    env = spec.raw.get("env")
    for section, items in (("variables", spec.env.variables), ("labels", spec.env.labels)):
        block = env.get(section) if isinstance(env, MarkedDict) else None
        for name, value in items:
            if name in RESERVED_NAMES:
                issues.error(key_mark(block, name), f"env.{section}.{name}", f"{name} is a reserved token "
                             f"(merlin-mdm fills $({name}) in itself, as Merlin does); name the {section[:-1]} "
                             "otherwise")
                continue
            _warn_unknown(issues, value_mark(block, name), f"env.{section}.{name}", value, known)
    for loc in _located_steps(spec):
        for key, text in (("cmd", loc.step.run.cmd), ("restart", loc.step.run.restart or "")):
            _warn_unknown(issues, value_mark(loc.run, key), f"study[{loc.index}].run.{key}", text, known)


_SAMPLE_TOKENS = ("MERLIN_SAMPLE_ID", "MERLIN_SAMPLE_PATH", "MERLIN_SAMPLE_VECTOR", "MERLIN_SAMPLE_NAMES",
                  "MERLIN_SAMPLE_FILE", "MERLIN_GLOB_PATH", "MERLIN_PATHS_ALL")


def _check_sample_tokens(spec: Spec, issues: IssueCollector) -> None:
    """The sample tokens of a study without ``merlin.samples`` are empty: most likely the block is missing."""
    if spec.samples is not None:
        return
    for loc in _located_steps(spec):
        for key, text in (("cmd", loc.step.run.cmd), ("restart", loc.step.run.restart or "")):
            used = [t for t in dict.fromkeys(tokens_in(text)) if t in _SAMPLE_TOKENS]
            if used:
                issues.warn(value_mark(loc.run, key), f"study[{loc.index}].run.{key}",
                            f"$({used[0]}) is empty: the study has no merlin.samples (add the block, or remove "
                            "the token)")


def _node(spec: Spec, *keys: str) -> object:
    """The parsed YAML under ``keys`` (None when any level is missing or not a mapping)."""
    node: object = spec.raw
    for key in keys:
        node = node.get(key) if isinstance(node, MarkedDict) else None
    return node


def _check_other_tokens(spec: Spec, issues: IssueCollector) -> None:
    """Tokens in env.sources and merlin.samples.generate go to the shell too; paths and files must resolve."""
    known = known_tokens(spec)
    for i, text in enumerate(spec.env.sources):
        _warn_unknown(issues, value_mark(_node(spec, "env", "sources"), i), f"env.sources[{i}]", text, known)
    if spec.samples is not None and spec.samples.generate_cmd:
        _warn_unknown(issues, value_mark(_node(spec, "merlin", "samples", "generate"), "cmd"),
                      "merlin.samples.generate.cmd", spec.samples.generate_cmd, known)
    fields: list[tuple[object, str | int, str, str]] = []
    for kind in ("paths", "git"):
        deps = [d for d in spec.env.dependencies if d.kind == kind]
        fields += [(_node(spec, "env", "dependencies", kind), i, f"env.dependencies.{kind}[{i}]", d.path)
                   for i, d in enumerate(deps)]
    if spec.samples is not None:
        fields.append((_node(spec, "merlin", "samples"), "file", "merlin.samples.file", spec.samples.file))
    for node, key, path, text in fields:
        for token in dict.fromkeys(tokens_in(text)):
            if token not in known:
                issues.error(value_mark(node, key), path, f"undefined token $({token}){did_you_mean(token, known)}")


def _runs_before(parents: dict[str, set[str]], name: str, wanted: set[str]) -> set[str]:
    """Those of ``wanted`` that are ancestors of ``name`` through `depends`.

    A walk from ``name`` that stops once every wanted step is found; only steps that name a ``$(s.workspace)``
    ask, so a chain of 20,000 steps keeps no ancestor set per step (that was quadratic in memory)."""
    found: set[str] = set()
    seen = {name}
    todo = list(parents.get(name, ()))
    while todo and found != wanted:
        step = todo.pop()
        if step in seen:
            continue
        seen.add(step)
        if step in wanted:
            found.add(step)
        todo.extend(parents.get(step, ()))
    return found


def _check_workspace_refs(spec: Spec, issues: IssueCollector) -> None:
    """``$(s.workspace)`` needs s to run first: s must be a parent, or a parent's ancestor."""
    names = {s.name for s in spec.steps}
    parents = {s.name: {parent_name(d)[0] for d in s.run.depends} for s in spec.steps}
    variables = dict(spec.env.variables)
    for loc in _located_steps(spec):
        fields = [(key, text, [t for t in inlined_tokens(text, variables)  # a variable may name one too
                               if t.endswith(".workspace") and t[: -len(".workspace")] in names])
                  for key, text in (("cmd", loc.step.run.cmd), ("restart", loc.step.run.restart or ""))]
        wanted = {t[: -len(".workspace")] for _, _, refs in fields for t in refs}
        before = _runs_before(parents, loc.step.name, wanted) if wanted else set()
        for key, _, refs in fields:
            for token in refs:
                ref = token[: -len(".workspace")]
                if ref in before:
                    continue
                hint = "use $(WORKSPACE) for the step's own folder" if ref == loc.step.name \
                    else f"add '{ref}' (or '{ref}_*') to depends"
                issues.error(value_mark(loc.run, key), f"study[{loc.index}].run.{key}",
                             f"$({token}) names a step that does not run before '{loc.step.name}'; {hint}")


def _check_batch(spec: Spec, issues: IssueCollector, batch_types: tuple[str, ...]) -> None:
    if spec.batch.type not in batch_types:
        batch = spec.raw.get("batch")
        issues.error(value_mark(batch, "type"), "batch.type",
                     f"unknown batch type '{spec.batch.type}'{did_you_mean(spec.batch.type, batch_types)}"
                     f" (known: {', '.join(batch_types)})")


def _check_batch_options(spec: Spec, issues: IssueCollector) -> None:
    """`slurm_args`/`lsf_args` of the batch block and of each worker's: `launch` refuses what it cannot read."""
    blocks: list[tuple[str, object]] = [("batch", spec.raw.get("batch"))]
    workers = _node(spec, "merlin", "resources", "workers")
    if isinstance(workers, MarkedDict):
        blocks += [(f"merlin.resources.workers.{name}.batch", node.get("batch"))
                   for name, node in workers.items() if isinstance(node, MarkedDict)]
    for where, block in blocks:
        if not isinstance(block, MarkedDict):
            continue
        walltime = _sets_walltime(block.get("walltime")) or _sets_walltime(spec.batch.walltime)  # inherited
        for key in OPTION_KEYS:
            raw = block.get(key)
            if raw is None or "$(" in str(raw):  # a variable's value is read at `launch`
                continue
            try:
                owned = owned_option(key, parse_batch_options(raw), walltime)
            except ValueError as exc:
                issues.error(value_mark(block, key), f"{where}.{key}",
                             f"{exc}: write the options as the scheduler's command line takes them "
                             "(e.g. \"--mem=0 --exclusive -p big\")")
                continue
            if owned is not None:
                issues.error(value_mark(block, key), f"{where}.{key}", owned)


def _sets_walltime(value: object) -> bool:
    """Whether a batch block's walltime gives a time limit (a bad one is reported by the walltime check)."""
    try:
        return parse_walltime(None if value is None else str(value)) is not None
    except ValueError:
        return True


def _check_workers(spec: Spec, issues: IssueCollector) -> None:
    names = {s.name for s in spec.steps}
    merlin = spec.raw.get("merlin")
    resources = merlin.get("resources") if isinstance(merlin, MarkedDict) else None
    workers = resources.get("workers") if isinstance(resources, MarkedDict) else None
    for worker in spec.resources.workers:
        node = workers.get(worker.spec_key) if isinstance(workers, MarkedDict) else None
        for step in worker.steps:
            if step != "all" and step not in names and "$(" not in step:  # a token left: _check_load_time_tokens
                issues.error(value_mark(node, "steps"), f"merlin.resources.workers.{worker.spec_key}.steps",
                             f"unknown step '{step}'{did_you_mean(step, names)}")
    _check_worker_overlap(spec, workers, issues)


def _check_worker_overlap(spec: Spec, workers: object, issues: IssueCollector) -> None:
    """Without merlin.resources.overlap, two worker groups should not consume one queue (run-workers refuses)."""
    if spec.resources.overlap:
        return
    queue_of = {s.name: s.run.task_queue for s in spec.steps}
    owner: dict[str, str] = {}
    for worker in spec.resources.workers:
        steps = list(queue_of) if "all" in worker.steps else [s for s in worker.steps if s in queue_of]
        for queue in dict.fromkeys(queue_of[s] for s in steps):
            first = owner.setdefault(queue, worker.name)
            if first != worker.name:
                node = workers.get(worker.spec_key) if isinstance(workers, MarkedDict) else None
                issues.warn(value_mark(node, "steps"), f"merlin.resources.workers.{worker.spec_key}.steps",
                            f"workers {first} and {worker.name} both consume queue '{queue}', which `run-workers` "
                            "and `launch` refuse (Merlin skips the second): give their steps their own "
                            "run.task_queue, or set merlin.resources.overlap: true")


def _check_load_time_tokens(spec: Spec, issues: IssueCollector) -> None:
    """Task queues and workers are read before a study exists and never by a shell: a token left in them after
    the variables were filled in (:mod:`merlin_mdm.spec.variables`) would reach Celery as it is written."""
    fields: list[tuple[Located, str, str]] = [
        (value_mark(loc.run, "task_queue"), f"study[{loc.index}].run.task_queue", loc.step.run.task_queue)
        for loc in _located_steps(spec)]
    workers = _node(spec, "merlin", "resources", "workers")
    named: dict[str, str] = {}
    for worker in spec.resources.workers:
        node, path = workers.get(worker.spec_key) if isinstance(workers, MarkedDict) else None, \
            f"merlin.resources.workers.{worker.spec_key}"
        fields += [(key_mark(workers, worker.spec_key), path, worker.name),
                   (value_mark(node, "args"), f"{path}.args", worker.args),
                   *((value_mark(node, "steps"), f"{path}.steps", s) for s in worker.steps),
                   *((value_mark(node, "machines"), f"{path}.machines", m) for m in worker.machines)]
        if (first := named.setdefault(worker.name, worker.spec_key)) != worker.spec_key:
            issues.error(key_mark(workers, worker.spec_key), path, f"workers {first} and {worker.spec_key} are "
                         f"both named '{worker.name}' once the variables are filled in; name them apart")
    known = known_tokens(spec)
    for where, path, text in fields:
        for token in dict.fromkeys(tokens_in(text)):
            issues.error(where, path, _load_time_token_message(token, known))


def _check_worker_args(spec: Spec, issues: IssueCollector) -> None:
    """Each worker's `args` split into Celery's words, without the options merlin-mdm sets itself."""
    workers = _node(spec, "merlin", "resources", "workers")
    for worker in spec.resources.workers:
        try:
            split_worker_args(worker.args)
        except ValueError as exc:
            node = workers.get(worker.spec_key) if isinstance(workers, MarkedDict) else None
            issues.error(value_mark(node, "args"), f"merlin.resources.workers.{worker.spec_key}.args", str(exc))


def _load_time_token_message(token: str, known: set[str]) -> str:
    if token in known:
        return (f"$({token}) has no value yet when workers and queues are set up: only env variables, labels, "
                "SPECROOT and --vars can be used here")
    hint = did_you_mean(token, known)
    if not hint and not token.isupper():  # `$(nproc)` in args: Merlin's shell would run it, Celery would not
        return f"$({token}) is no token, and no shell reads this field to run it: write the value itself"
    return f"undefined token $({token}){hint}: define it under env.variables or pass --vars"


def _check_paths(spec: Spec, issues: IssueCollector) -> None:
    tokens = {"SPECROOT": str(spec.root), **dict(spec.env.variables)}
    env = spec.raw.get("env")
    deps = env.get("dependencies") if isinstance(env, MarkedDict) else None
    paths = deps.get("paths") if isinstance(deps, MarkedDict) else None
    for i, dep in enumerate(d for d in spec.env.dependencies if d.kind == "paths"):
        path = Path(substitute(dep.path, tokens)).expanduser()
        if "$(" not in str(path) and not (spec.root / path).exists():
            issues.error(value_mark(paths, i), f"env.dependencies.paths[{i}]", f"path does not exist: {path}")
    if spec.samples is not None and spec.samples.generate_cmd is None:
        path = Path(substitute(spec.samples.file, tokens)).expanduser()
        if "$(" not in str(path) and not (spec.root / path).exists():
            merlin = spec.raw.get("merlin")
            node = merlin.get("samples") if isinstance(merlin, MarkedDict) else None
            issues.error(value_mark(node, "file"), "merlin.samples.file",
                         f"samples file not found: {spec.root / path} (add merlin.samples.generate.cmd to create it,"
                         " or pass --samplesfile)")


_PSEUDO_FILE_SYSTEMS = (Path("/proc"), Path("/sys"))  # the kernel's: no folder can be made there


def output_path_issue(spec: Spec, problem: str) -> SpecIssue:
    """``problem`` with the place OUTPUT_PATH was set: its line in env.variables, or the ``--vars`` that gave it."""
    variables = _node(spec, "env", "variables")
    given = dict(spec.env.variables).get("OUTPUT_PATH", "")
    where = value_mark(variables, "OUTPUT_PATH") if isinstance(variables, MarkedDict) else (0, 0)
    by = f"--vars OUTPUT_PATH={given}: " if "OUTPUT_PATH" in spec.env.from_vars else ""
    return SpecIssue(str(spec.path), where[0], where[1], "env.variables.OUTPUT_PATH",
                     f"{by}{problem}; set OUTPUT_PATH to a folder you can write (or one that can be created)")


def output_path_problem(path: Path) -> str | None:
    """Why no workspace can be made under ``path`` (None when it looks possible), found without writing: a file in
    the way, a kernel file system, a folder without write permission."""
    longest = max(path.parts, key=lambda part: len(os.fsencode(part)), default="")
    if len(os.fsencode(longest)) > NAME_MAX:  # `run` refused it (ENAMETOOLONG) where `validate` passed it
        return f"{path}: its folder name '{longest[:40]}...' is {len(os.fsencode(longest))} bytes, more than the " \
               f"{NAME_MAX} a file system allows"
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return f"{path} cannot be resolved ({exc})"
    kernel = next((fs for fs in _PSEUDO_FILE_SYSTEMS if fs == resolved or fs in resolved.parents), None)
    if kernel is not None:
        return f"{path} is in the kernel's {kernel} file system, where no folder can be made"
    try:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
    except OSError:  # a folder on the way we may not look into: let the run say what happens
        return None
    if existing is None:
        return None
    if not existing.is_dir():
        what = "is a file" if existing == path else f"is under {existing}, which is a file"
        return f"{path} {what}, not a folder: the workspace is made inside it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{path}: no permission to create folders in {existing}"
    return None


def _check_output_path(spec: Spec, issues: IssueCollector) -> None:
    """OUTPUT_PATH, when it is given and fully known here, must be a folder a workspace can be made in."""
    value = resolve_ordered(spec.env.variables, {"SPECROOT": str(spec.root)}).get("OUTPUT_PATH", "")
    if not value or "$(" in value:
        return
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # `~nouser/x`: no such user's home
        issue = output_path_issue(spec, f"{value}: no home folder for its ~user")
        issues.error((issue.line, issue.column), issue.path, issue.message)
        return
    problem = output_path_problem(path if path.is_absolute() else spec.root / path)
    if problem:
        issue = output_path_issue(spec, problem)
        issues.error((issue.line, issue.column), issue.path, issue.message)


def check_shells(spec: Spec, missing: Callable[[str], str | None]) -> list[SpecIssue]:
    """The shell each step's tasks run under (the step's, its own batch block's, or the spec's: as
    :func:`step_shell`) when ``missing`` says why the machine asking cannot run it; each issue sits where that
    shell is given (the machine is the caller's: `validate` warns, since workers elsewhere may have it)."""
    issues = IssueCollector(str(spec.path))
    seen: set[str] = set()
    for located in _located_steps(spec):
        run = located.step.run
        shell = step_shell(spec, run)
        why = missing(shell)
        if why is None:
            continue
        if run.shell:
            issues.error(value_mark(located.run, "shell"), f"study[{located.index}].run.shell", why)
        elif run.batch is not None:
            issues.error(value_mark(located.run.get("batch"), "shell"), f"study[{located.index}].run.batch.shell",
                         why)
        elif "batch.shell" not in seen:
            seen.add("batch.shell")
            issues.error(value_mark(spec.raw.get("batch"), "shell"), "batch.shell", why)
    return issues.errors


def check_cores(spec: Spec, available: int, where: str) -> list[SpecIssue]:
    """Steps whose one task needs more cores (procs x cores per task) than the runner's ``available``.

    ``where`` says where that number comes from (`--workers 4`, `this machine's cores`). Each issue sits on
    the step's `procs` (its `cores per task` when that is what makes the task too large).
    """
    issues = IssueCollector(str(spec.path))
    for located in _located_steps(spec):
        run = located.step.run
        procs, cores = run.procs or 1, run.cores_per_task or 1
        if procs * cores > available:
            key = "cores per task" if cores > 1 and procs <= available else "procs"
            issues.error(value_mark(located.run, key), f"study[{located.index}].run.{key}",
                         f"step '{located.step.name}' needs {procs * cores} cores for one task (procs {procs} x "
                         f"cores per task {cores}) but the runner has {available} ({where})")
    return issues.errors
