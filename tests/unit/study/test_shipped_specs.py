"""The MDM study specs shipped in specs/ expand, and each eval command names only registered samplers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .plans import plan_of

SPECS = sorted((Path(__file__).resolve().parents[3] / "specs").glob("mdm_*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_spec_expands_with_three_training_seeds(path: Path) -> None:
    plan = plan_of(path.read_text(encoding="utf-8"), path=path)
    names = [inst.name for inst in plan.instances]
    assert sum(name.startswith("train_denoiser") for name in names) == 3
    assert names[-1] == "aggregate" and "--seed $(" not in plan.instances[0].cmd
    aggregate = plan.instances[-1]
    assert len(aggregate.parents) == len(plan.instances) - 1 - sum(n.startswith("train_") for n in names)
    evals = [inst.cmd for inst in plan.instances if inst.name.startswith("eval_")]
    splits = {match for cmd in evals for match in re.findall(r"--seed (\d+) ", cmd)}
    assert evals and len(splits) == 1  # one evaluation split for every method: paired
    assert all(cmd.count("--seed ") == cmd.count(f"--seed {next(iter(splits))} ") for cmd in evals)
    assert all("--max-seconds" not in inst.cmd for inst in plan.instances)  # budgets are iterations only
