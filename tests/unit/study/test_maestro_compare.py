"""Our parameter expansion against maestrowf's own staging of the same spec.

maestrowf builds a Study from its YAMLSpecification and stages it into an ExecutionGraph; we compare the
expanded step names, their workspaces (relative to the study workspace), commands and edges.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from merlin_mdm.study.expand import StudyContext, expand
from tests.unit.study.plans import spec_of

with warnings.catch_warnings():  # maestrowf 1.2 imports with the deprecated load_module()
    warnings.simplefilter("ignore", DeprecationWarning)
    from maestrowf.datastructures.core import Study
    from maestrowf.datastructures.environment import Variable
    from maestrowf.specification import YAMLSpecification

Expanded = tuple[dict[str, str], dict[str, str], set[tuple[str, str]]]  # workspaces, commands, edges

HEADER = """
description: {name: cmp, description: compare with maestro}
env:
  variables:
    OUTPUT_PATH: ./out
"""

SPECS: dict[str, str] = {
    "zip_and_inherit": """
global.parameters:
  SEED: {values: [1, 2, 3], label: SEED.%%}
  LR: {values: [0.1, 0.2, 0.3], label: LR.%%}
study:
  - {name: prep, description: p, run: {cmd: "echo $(SEED)"}}
  - {name: train, description: t, run: {cmd: "train $(LR) in $(prep.workspace)", depends: [prep]}}
  - {name: report, description: r, run: {cmd: "cat $(train.workspace)/*", depends: [train_*]}}
""",
    "labels_and_label_tokens": """
  labels:
    LOG: log_$(SEED.label).txt
global.parameters:
  SEED: {values: [1, 2], label: SEED.%%}
  MODEL: {values: [small, large], label: M-%%}
study:
  - {name: a, description: uses a label holding a parameter, run: {cmd: "echo hi > $(LOG)"}}
  - {name: b, description: uses only a label token, run: {cmd: "echo $(MODEL.label)"}}
  - {name: c, description: no parameters, run: {cmd: "echo c"}}
  - {name: d, description: joins, run: {cmd: "echo $(a.workspace) $(c.workspace)", depends: [a, b, c]}}
""",
    "diamond_and_funnels": """
global.parameters:
  A: {values: [1, 2], label: A.%%}
  B: {values: [x, y], label: B.%%}
  C: {values: [5, 6], label: C.%%}
study:
  - {name: left, description: l, run: {cmd: "echo $(A)"}}
  - {name: right, description: r, run: {cmd: "echo $(B)"}}
  - {name: join, description: j, run: {cmd: "echo join", depends: [left, right]}}
  - {name: fan, description: f, run: {cmd: "echo $(C) $(join.workspace)", depends: [join_*]}}
  - {name: last, description: z, run: {cmd: "echo last", depends: [fan]}}
  - {name: end, description: e, run: {cmd: "ls $(last.workspace) $(fan.workspace)", depends: [last_*, fan_*]}}
""",
    "restart_and_plain_steps": """
global.parameters:
  N: {values: [10, 20], label: N.%%}
study:
  - {name: setup, description: s, run: {cmd: "mkdir data"}}
  - name: run
    description: the restart command uses a parameter, the command does not
    run:
      cmd: "echo run"
      restart: "echo again $(N)"
      depends: [setup]
  - {name: plot, description: p, run: {cmd: "echo $(run.workspace)", depends: [run]}}
""",
    "workspace_without_depends": """
global.parameters:
  P: {values: [1, 2], label: P.%%}
study:
  - {name: gen, description: g, run: {cmd: "echo $(P)"}}
  - {name: use, description: u, run: {cmd: "cat $(gen.workspace)/out", depends: [gen_*]}}
  - {name: again, description: u, run: {cmd: "cat $(gen.workspace)/out && echo $(use.workspace)", depends: [use]}}
""",
    "variable_holds_parameter": """
    CMD: run --seed $(SEED)
global.parameters:
  SEED: {values: [1, 2], label: SEED.%%}
study:
  - {name: a, description: a variable whose value uses a parameter, run: {cmd: "$(CMD)"}}
""",
    "description_uses_parameter": """
global.parameters:
  SEED: {values: [1, 2], label: SEED.%%}
study:
  - {name: a, description: "seed $(SEED)", run: {cmd: "echo a"}}
""",
}


def _maestro(path: Path, out: Path) -> Expanded:
    spec = YAMLSpecification.load_specification(str(path))
    env = spec.get_study_environment()
    env.add(Variable("SPECROOT", str(path.parent)))
    env.remove("OUTPUT_PATH")
    env.add(Variable("OUTPUT_PATH", str(out)))
    study = Study(spec.name, spec.description, studyenv=env, parameters=spec.get_parameters(),
                  steps=spec.get_study_steps(), out_path=str(out))
    study.setup_workspace()
    study.configure_study(dry_run=True)
    study.setup_environment()
    _, graph = study.stage()
    records: dict[str, Any] = {k: v for k, v in graph.values.items() if v is not None}
    workspaces = {name: os.path.relpath(rec.workspace.value, out) for name, rec in records.items()}
    commands = {name: rec.step.run["cmd"] for name, rec in records.items()}
    edges = {(parent, child) for child, parents in graph._dependencies.items() for parent in parents
             if parent in records}
    return workspaces, commands, edges


def _ours(path: Path, out: Path) -> Expanded:
    plan = expand(spec_of(path.read_text(encoding="utf-8"), path),
                  StudyContext(str(out), str(out.parent), "20260101-000000"))
    workspaces = {inst.name: inst.workspace for inst in plan.instances}
    commands = {inst.name: inst.cmd for inst in plan.instances}
    edges = {(plan.instances[e.parent].name, inst.name) for inst in plan.instances for e in inst.parents}
    return workspaces, commands, edges


@pytest.mark.parametrize("name", sorted(SPECS))
def test_expansion_matches_maestro(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.yaml"
    text = HEADER + SPECS[name]
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "out" / "study"
    theirs = _maestro(path, out)
    ours = _ours(path, out)
    assert ours[0] == theirs[0]  # instance names and workspaces
    assert ours[2] == theirs[2]  # edges
    assert ours[1] == theirs[1]  # substituted commands
    assert len(ours[0]) > len(spec_of(text, path).steps)  # the spec really did expand
