"""Turn parsed YAML into a :class:`Spec`, reporting every structural problem (unknown keys, wrong types)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from merlin_mdm.spec.fields import FieldReader
from merlin_mdm.spec.issues import IssueCollector, key_mark, value_mark
from merlin_mdm.spec.loader import Located, MarkedDict
from merlin_mdm.spec.model import (
    MAX_RETRY_DELAY,
    BatchConfig,
    Dependency,
    Description,
    Environment,
    LaunchKeys,
    Parameter,
    Resources,
    SamplesConfig,
    Spec,
    Step,
    StepRun,
    Worker,
)

__all__ = ["build_spec"]

TOP_KEYS = ("description", "batch", "env", "study", "global.parameters", "merlin", "user")
BATCH_KEYS = (
    "type", "shell", "bank", "queue", "nodes", "walltime", "launch_pre", "launch_args", "worker_launch",
    "flux_path", "flux_start_opts", "flux_exec", "flux_exec_workers", "dry_run", "qos", "reservation",
    "lsf_args", "slurm_args", "launcher",
)  # fmt: skip
RUN_KEYS = (
    "cmd", "depends", "restart", "shell", "task_queue", "max_retries", "retry_delay", "nodes", "procs",
    "cores per task", "gpus", "walltime", "batch", "exclusive", "reservation", "bind", "bind gpus", "qos",
    "rs per node", "tasks per rs", "cpus per rs", "gpus per rs", "priority", "pre", "post",
    "slurm", "lsf", "flux", "gpus per task", "num resource set", "launch_distribution", "launch distribution",
    "exit_on_error",
)  # fmt: skip
LAUNCHER_FLAG_KEYS = ("slurm", "lsf", "flux")  # a launcher's own flags, appended to its $(LAUNCHER) line
WORKER_KEYS = ("args", "steps", "nodes", "batch", "machines")


def build_spec(data: MarkedDict, path: Path, issues: IssueCollector) -> Spec:
    """Build the Spec, best effort: every structural problem is recorded in ``issues``."""
    _report_duplicates(data, "", issues, set())
    top = FieldReader(data, "", issues)
    top.only(TOP_KEYS, "the spec")
    at = top.node.value_marks.get
    desc = _description(top.raw("description", required=True), issues, at("description"))
    batch = _batch(top.raw("batch"), "batch", issues, at("batch")) or BatchConfig()
    env = _environment(top.raw("env"), issues, at("env"))
    steps = _steps(top.raw("study", required=True), batch, issues, at("study"))
    params = _parameters(top.raw("global.parameters"), issues, at("global.parameters"))
    resources, samples = _merlin(top.raw("merlin"), issues, at("merlin"))
    user = top.raw("user") or {}
    # Built even when structural errors were found, so the semantic checks can report theirs too.
    return Spec(path, desc, batch, env, steps, params, resources, samples, user, raw=data)


def _report_duplicates(node: Any, path: str, issues: IssueCollector, seen: set[int]) -> None:
    """Report keys written twice anywhere in the document (aliased nodes are visited once)."""
    if id(node) in seen or not isinstance(node, (MarkedDict, list)):
        return
    seen.add(id(node))
    if isinstance(node, MarkedDict):
        for key, where in node.duplicates:
            issues.error(where, f"{path}.{key}" if path else key,
                         "duplicate key: this value would silently replace the earlier one; merge the two")
        for key, value in node.items():
            _report_duplicates(value, f"{path}.{key}" if path else key, issues, seen)
    else:
        for i, item in enumerate(node):
            _report_duplicates(item, f"{path}[{i}]", issues, seen)


def _description(node: Any, issues: IssueCollector, where: Located | None) -> Description:
    if node is None:
        return Description("", "")
    reader = FieldReader(node, "description", issues, where)
    reader.only(("name", "description"), "description")
    name = reader.text("name", required=True) or ""
    text = reader.text("description", required=True) or ""
    return Description(name, text)  # checked once its $(VARIABLES) are resolved


def _batch(node: Any, path: str, issues: IssueCollector, where: Located | None) -> BatchConfig | None:
    if node is None:
        return None
    reader = FieldReader(node, path, issues, where)
    reader.only(BATCH_KEYS, "batch")
    known = {"type", "shell", "bank", "queue", "nodes", "walltime", "launch_pre", "launch_args"}
    extra = {k: v for k, v in reader.node.items() if k not in known and k in BATCH_KEYS}
    return BatchConfig(
        type=reader.text("type", default="local") or "local",
        shell=reader.text("shell", default="/bin/bash") or "/bin/bash",
        bank=reader.text("bank"),
        queue=reader.text("queue"),
        nodes=reader.integer("nodes", minimum=1),
        walltime=reader.text("walltime"),
        launch_pre=reader.text("launch_pre"),
        launch_args=reader.text("launch_args"),
        extra=extra,
    )


def _pairs(node: Any, path: str, issues: IssueCollector, where: Located | None) -> tuple[tuple[str, str], ...]:
    if node is None:
        return ()
    reader = FieldReader(node, path, issues, where)
    out = []
    for key in reader.node:
        value = reader.text(key)
        if value is not None:
            out.append((key, value))
    return tuple(out)


def _environment(node: Any, issues: IssueCollector, where: Located | None) -> Environment:
    if node is None:
        return Environment()
    reader = FieldReader(node, "env", issues, where)
    reader.only(("variables", "labels", "sources", "dependencies"), "env")
    at = reader.node.value_marks.get if reader.ok else (lambda key: None)
    return Environment(
        variables=_pairs(reader.raw("variables"), "env.variables", issues, at("variables")),
        labels=_pairs(reader.raw("labels"), "env.labels", issues, at("labels")),
        sources=reader.strings("sources"),
        dependencies=_dependencies(reader.raw("dependencies"), issues, at("dependencies")),
    )


def _dependencies(node: Any, issues: IssueCollector, where: Located | None) -> tuple[Dependency, ...]:
    if node is None:
        return ()
    reader = FieldReader(node, "env.dependencies", issues, where)
    reader.only(("paths", "git", "spack"), "env.dependencies")
    out: list[Dependency] = []
    for kind, keys in (("paths", ("name", "path")), ("git", ("name", "path", "url", "tag"))):
        entries = reader.raw(kind) or []
        if not isinstance(entries, list):
            issues.error(value_mark(reader.node, kind), reader.sub(kind), "must be a list of {name, path}")
            continue
        for i, entry in enumerate(entries):
            item = FieldReader(entry, f"env.dependencies.{kind}[{i}]", issues, value_mark(entries, i))
            item.only(keys, f"a {kind} dependency")
            out.append(Dependency(kind, item.text("name", required=True) or "", item.text("path", required=True)
                                  or "", item.text("url", required=kind == "git"), item.text("tag")))
    return tuple(out)


def _steps(node: Any, batch: BatchConfig, issues: IssueCollector, where: Located | None) -> tuple[Step, ...]:
    if node is None:
        return ()
    if not isinstance(node, list) or not node:
        issues.error(getattr(node, "mark", None) or where or (0, 0), "study", "must be a non-empty list of steps")
        return ()
    steps = []
    for i, entry in enumerate(node):
        reader = FieldReader(entry, f"study[{i}]", issues, value_mark(node, i))
        if not reader.ok:
            continue
        misplaced = _misplaced_run_keys(reader, i, issues)
        reader.only(("name", "description", "run", *misplaced), "a step")
        name = reader.text("name", required=True) or f"step{i}"
        run = _run(reader.raw("run", required=True), f"study[{i}].run", batch, issues, value_mark(reader.node, "run"))
        description = reader.text("description", default="") or ""
        if not description.strip():
            issues.note(value_mark(reader.node, "description") if "description" in reader.node else
                        value_mark(node, i), f"study[{i}].description",
                        f"step {name!r} has no description: it runs here, but Merlin 1.13 and Maestro refuse the "
                        "whole spec (\"Key 'description' is missing from study step\"); add a `description:` line "
                        "to the step to keep the spec portable")
        if run is not None:
            steps.append(Step(name, description, run))
    return tuple(steps)


def _run(node: Any, path: str, batch: BatchConfig, issues: IssueCollector, where: Located) -> StepRun | None:
    if node is None:
        return None
    reader = FieldReader(node, path, issues, where)
    if not reader.ok:
        return None
    reader.only(RUN_KEYS, "a step's run block")
    named = {"cmd", "depends", "restart", "shell", "task_queue", "max_retries", "retry_delay", "nodes", "procs",
             "cores per task", "gpus", "walltime", "batch", "bind", "gpus per task", "num resource set",
             "launch_distribution", "launch distribution", "exit_on_error", *LAUNCHER_FLAG_KEYS}
    _check_against_merlin(reader)
    return StepRun(
        cmd=reader.text("cmd", required=True) or "",
        depends=reader.strings("depends"),
        restart=reader.text("restart"),
        shell=reader.text("shell"),
        task_queue=reader.text("task_queue", default="merlin") or "merlin",
        max_retries=reader.integer("max_retries", default=30) or 0,
        retry_delay=reader.number("retry_delay", 1.0, maximum=MAX_RETRY_DELAY),
        nodes=reader.integer("nodes", minimum=1),
        procs=reader.integer("procs", minimum=1),
        cores_per_task=reader.integer("cores per task", minimum=1),
        gpus=reader.integer("gpus", minimum=0),
        walltime=reader.text("walltime"),
        batch=_batch(reader.raw("batch"), f"{path}.batch", issues, value_mark(reader.node, "batch")),
        launch=_launch_keys(reader),
        extra={k: v for k, v in reader.node.items() if k not in named},
    )


MERLIN_PRIORITIES = ("held", "minimal", "low", "medium", "high", "expedited")  # Merlin 1.13's run.priority words


def _check_against_merlin(reader: FieldReader) -> None:
    """Run values Merlin 1.13 refuses: an empty `task_queue` or `shell` is an error here too (it ran on the queue
    'merlin' and the default shell: a `$(Q)` that came out empty sent the tasks where no worker of theirs waits);
    the ones that run here are notes (:meth:`IssueCollector.note`)."""
    for key, what in (("task_queue", "a queue, or leave the key out for the default queue 'merlin'"),
                      ("shell", "a shell such as /bin/bash, or leave the key out for the spec's shell")):
        value = reader.node.get(key)
        if isinstance(value, str) and not value.strip():
            reader.issues.error(value_mark(reader.node, key), reader.sub(key), f"is empty: name {what} (Merlin "
                                "refuses it too: \"empty string found as value\")")
    notes = {
        "max_retries": reader.node.get("max_retries") == 0 and "0 runs here (no retry); Merlin 1.13 refuses a "
                       "max_retries below 1",
        "depends": isinstance(reader.node.get("depends"), list)
                   and len(set(map(str, reader.node["depends"]))) < len(reader.node["depends"])
                   and "a step named twice runs here; Merlin 1.13 refuses it (\"Non-unique step names\"): name each "
                       "once",
        "priority": isinstance(reader.node.get("priority"), str) and not reader.node["priority"].startswith("$(")
                    and reader.node["priority"].lower() not in MERLIN_PRIORITIES
                    and f"{reader.node['priority']!r} runs here; Merlin 1.13 refuses it: use one of "
                        f"{', '.join(MERLIN_PRIORITIES)} or a number in [0, 1]",
    }
    for key, message in notes.items():
        if message:
            reader.issues.note(value_mark(reader.node, key), reader.sub(key), str(message))


def _launch_keys(reader: FieldReader) -> LaunchKeys:
    """Merlin's launcher-shaping run keys (`launch distribution`, with a space, is its schema's spelling)."""
    flags = {key: reader.text(key) for key in LAUNCHER_FLAG_KEYS}
    exit_on_error = reader.integer("exit_on_error")
    if exit_on_error is not None and exit_on_error > 1:
        reader.issues.error(value_mark(reader.node, "exit_on_error"), reader.sub("exit_on_error"),
                            "must be 0 or 1 (jsrun -X)")
    return LaunchKeys(flags={k: v for k, v in flags.items() if v}, gpus_per_task=reader.integer("gpus per task"),
                      resource_sets=reader.integer("num resource set", minimum=1),
                      distribution=reader.text("launch_distribution") or reader.text("launch distribution"),
                      exit_on_error=exit_on_error, bind=reader.text("bind"))


def _misplaced_run_keys(reader: FieldReader, index: int, issues: IssueCollector) -> tuple[str, ...]:
    """The keys of the run block written at the step's level (`cmd:` beside `name:`), each said as such (a plain
    "unknown key" hid that only its indentation was wrong); the step's node is left as it is (a spec is built
    twice when variables fill its fields: a key deleted by the first build was gone from the second)."""
    misplaced = tuple(key for key in reader.node if key in RUN_KEYS)
    for key in misplaced:
        issues.error(key_mark(reader.node, key), f"study[{index}].{key}",
                     f"`{key}` belongs in the step's run block: indent it under `run:`")
    return misplaced


def _parameters(node: Any, issues: IssueCollector, where: Located | None) -> tuple[Parameter, ...]:
    if node is None:
        return ()
    top = FieldReader(node, "global.parameters", issues, where)
    params = []
    for name in top.node:
        if isinstance(top.node[name], list):  # `A: [1, 2]`: the values without their mapping
            issues.error(value_mark(top.node, name), f"global.parameters.{name}",
                         f"must be a mapping of values and a label, e.g. {name}: {{values: [1, 2], label: {name}.%%}}")
            continue
        reader = FieldReader(top.node[name], f"global.parameters.{name}", issues, value_mark(top.node, name))
        if not reader.ok:
            continue
        reader.only(("values", "label", "product"), "a parameter")
        values = reader.raw("values", required=True)
        if values is not None and (not isinstance(values, list) or not values
                                   or any(isinstance(v, (dict, list)) or v is None for v in values)):
            issues.error(value_mark(reader.node, "values"), reader.sub("values"),
                         "must be a non-empty list of plain values")
            values = None
        label = reader.text("label", required=True) or f"{name}.%%"
        if "%%" not in label:
            issues.error(value_mark(reader.node, "label"), reader.sub("label"),
                         f"must contain %% where the value goes, e.g. '{name}.%%'")
        product = reader.raw("product")
        group = "" if product in (None, False) else (name if product is True else str(product))
        params.append(Parameter(name, tuple(values or ()), label, group))
    return tuple(params)


def _merlin(node: Any, issues: IssueCollector, where: Located | None) -> tuple[Resources, SamplesConfig | None]:
    if node is None:
        return Resources(), None
    reader = FieldReader(node, "merlin", issues, where)
    reader.only(("resources", "samples"), "merlin")
    return (_resources(reader.raw("resources"), issues, value_mark(reader.node, "resources")),
            _samples(reader.raw("samples"), issues, value_mark(reader.node, "samples")))


def _resources(node: Any, issues: IssueCollector, where: Located) -> Resources:
    if node is None:
        return Resources()
    reader = FieldReader(node, "merlin.resources", issues, where)
    reader.only(("task_server", "overlap", "workers"), "merlin.resources")
    workers_node = FieldReader(reader.raw("workers") or MarkedDict(), "merlin.resources.workers", issues,
                               value_mark(reader.node, "workers"))
    workers = []
    for name in workers_node.node:
        wr = FieldReader(workers_node.node[name], f"merlin.resources.workers.{name}", issues,
                         value_mark(workers_node.node, name))
        if not wr.ok:
            continue
        wr.only(WORKER_KEYS, "a worker")
        workers.append(Worker(name, wr.text("args", default="") or "", wr.strings("steps", ("all",)),
                              wr.integer("nodes", minimum=1),
                              _batch(wr.raw("batch"), wr.sub("batch"), issues, value_mark(wr.node, "batch")),
                              wr.strings("machines"), key=name))
    return Resources(reader.text("task_server", default="celery") or "celery",
                     reader.boolean("overlap", False), tuple(workers))


def _samples(node: Any, issues: IssueCollector, where: Located) -> SamplesConfig | None:
    if node is None:
        return None
    reader = FieldReader(node, "merlin.samples", issues, where)
    if not reader.ok:
        return None
    reader.only(("generate", "file", "column_labels", "level_max_dirs"), "merlin.samples")
    generate = reader.raw("generate")
    cmd = None
    if generate is not None:
        gen = FieldReader(generate, "merlin.samples.generate", issues, value_mark(reader.node, "generate"))
        gen.only(("cmd",), "merlin.samples.generate")
        cmd = gen.text("cmd", required=True)
    labels = reader.strings("column_labels")
    if not labels and "column_labels" not in reader.node:
        issues.error(key_mark(reader.node, "file"), "merlin.samples.column_labels",
                     "missing required key `column_labels` (one name per sample column)")
    return SamplesConfig(reader.text("file", required=True) or "", labels, cmd,
                         reader.integer("level_max_dirs", default=25, minimum=2) or 25)
