"""The shape of a study, for people: the step graph as DOT and Mermaid text (`merlin-mdm dag`), and the plan
of a dry run (steps x instances x tasks, with their dependencies). Pure."""

from __future__ import annotations

from dataclasses import dataclass

from merlin_mdm.spec import Spec, parent_name
from merlin_mdm.study.plan import StudyPlan

__all__ = ["StepEdge", "describe_plan", "step_edges", "to_dot", "to_mermaid"]


@dataclass(frozen=True)
class StepEdge:
    """``child`` depends on ``parent``; a funnel (`parent_*`) waits for every instance of it."""

    parent: str
    child: str
    funnel: bool


def step_edges(spec: Spec) -> list[StepEdge]:
    """Every `depends` entry of the spec, in spec order."""
    return [StepEdge(parent_name(dep)[0], step.name, parent_name(dep)[1])
            for step in spec.steps for dep in step.run.depends]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'


def to_dot(spec: Spec) -> str:
    """Graphviz DOT text of the step graph (funnels dashed)."""
    lines = [f"digraph {_quote(spec.description.name)} {{", "  rankdir=TB;", "  node [shape=box, style=rounded];"]
    lines += [f"  {_quote(step.name)};" for step in spec.steps]
    for edge in step_edges(spec):
        style = ' [style=dashed, label="all"]' if edge.funnel else ""
        lines.append(f"  {_quote(edge.parent)} -> {_quote(edge.child)}{style};")
    return "\n".join([*lines, "}"]) + "\n"


def to_mermaid(spec: Spec) -> str:
    """Mermaid flowchart text of the step graph (funnels dotted, labelled `all`)."""
    ids = {step.name: f"s{i}" for i, step in enumerate(spec.steps)}
    lines = ["flowchart TD"] + [f'  {ids[step.name]}["{step.name}"]' for step in spec.steps]
    for edge in step_edges(spec):
        arrow = "-. all .->" if edge.funnel else "-->"
        lines.append(f"  {ids.get(edge.parent, edge.parent)} {arrow} {ids[edge.child]}")
    return "\n".join(lines) + "\n"


def describe_plan(plan: StudyPlan) -> list[str]:
    """What a dry run would run: per step, instances x tasks, and what each step waits for."""
    lines = [f"study {plan.name}: {len(plan.instances)} step instance(s), {plan.total_tasks()} task(s)"]
    steps: dict[str, list[int]] = {}
    for inst in plan.instances:
        steps.setdefault(inst.step, []).append(inst.index)
    for step, indices in steps.items():
        tasks = sum(plan.n_tasks(i) for i in indices)
        parents = sorted({plan.instances[e.parent].step for i in indices for e in plan.instances[i].parents})
        after = f"; after {', '.join(parents)}" if parents else ""
        per = plan.n_tasks(indices[0])
        lines.append(f"  {step}: {len(indices)} instance(s) x {per} task(s) = {tasks}{after}")
    return lines
