"""A study of thousands of steps in one chain is ordinary: checks and expansion walk it without recursion.

An outside probe saw `validate` end in a RecursionError from 400 chained steps (the ancestry of
`$(step.workspace)`, the plan's step order) and the cycle check fail alike instead of naming the cycle.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from merlin_mdm.errors import SpecError
from merlin_mdm.spec import load_spec_text
from merlin_mdm.study.expand import StudyContext, expand

STEPS = 3000  # well past Python's default recursion limit of 1000


def _chain(n: int, cycle: bool = False) -> str:
    lines = ["description: {name: chain, description: x}", "env: {variables: {OUTPUT_PATH: ./out}}", "study:",
             f"  - {{name: s0, run: {{cmd: echo 0{', depends: [s' + str(n - 1) + ']' if cycle else ''}}}}}"]
    lines += [f"  - {{name: s{i}, run: {{cmd: echo $(s0.workspace), depends: [s{i - 1}]}}}}" for i in range(1, n)]
    return "\n".join(lines) + "\n"


def test_a_chain_of_thousands_of_steps_validates_and_expands_in_order() -> None:
    spec = load_spec_text(_chain(STEPS), "/s/chain.yaml").spec
    plan = expand(spec, StudyContext(Path("/w/chain_1"), Path("/w"), "1"))
    assert [i.step for i in plan.instances] == [f"s{i}" for i in range(STEPS)]


def test_a_cycle_through_thousands_of_steps_is_named() -> None:
    with pytest.raises(SpecError) as error:
        load_spec_text(_chain(STEPS, cycle=True), "/s/chain.yaml")
    message = str(error.value)
    assert "/s/chain.yaml:4:" in message and "study[0].run.depends: dependency cycle: s0 -> s1 -> s2" in message
    assert f"s{STEPS - 1} -> s0; remove one of these depends" in message
