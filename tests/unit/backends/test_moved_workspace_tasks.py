"""A unit whose workspace was moved or deleted runs none of its tasks and never makes the workspace again."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from merlin_mdm.backends.execution import run_unit
from merlin_mdm.spec import load_spec
from merlin_mdm.status.model import TaskState
from merlin_mdm.study.workspace import create_workspace

SPEC = """
    description: {name: gone, description: x}
    env: {variables: {OUTPUT_PATH: ./studies}}
    batch: {shell: /nonexistent/shell}
    global.parameters:
      P: {values: [a, b], label: P.%%}
    study:
      - name: work
        run: {cmd: "echo $(P)"}
"""


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_a_unit_of_a_workspace_gone_runs_nothing_and_makes_nothing(tmp_path: Path, how: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(SPEC), encoding="utf-8")
    ws, plan = create_workspace(load_spec(spec))
    if how == "moved":
        (tmp_path / "studies").rename(tmp_path / "studiesR")  # as `mv studies studiesR` while it runs
    else:
        shutil.rmtree(tmp_path / "studies")
    outcomes = [run_unit(plan, key) for key in plan.units()]
    # the runner made `studies/<ws>/work/P.a` again (no merlin_info) and ran the tasks there
    assert not (tmp_path / "studies").exists()
    assert sum(o.not_run for o in outcomes) == 2 and not any(o.finished or o.failed for o in outcomes)
    reasons = {f.reason for o in outcomes for f in o.failures if f.state is TaskState.NOT_RUN}
    assert reasons == {f"the workspace {ws.root} was moved or deleted while the study ran; move it back and "
                       f"`merlin-mdm restart {ws.root}`"}
