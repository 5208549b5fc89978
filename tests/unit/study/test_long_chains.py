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


LONG = 20_000  # an outside probe's chain: `validate` kept every step's ancestor set (9.4 GB, 78 s)


def test_a_chain_of_twenty_thousand_steps_checks_workspace_references_by_walking_only_where_asked() -> None:
    from merlin_mdm.spec.checks import _runs_before

    parents = {f"s{i}": ({f"s{i - 1}"} if i else set()) for i in range(LONG)}
    assert _runs_before(parents, f"s{LONG - 1}", {"s0", "s5", "nope"}) == {"s0", "s5"}
    assert _runs_before(parents, "s5", {"s6", "s5"}) == set()  # neither a child nor itself runs before it


def test_a_workspace_reference_outside_the_ancestry_of_a_long_chain_is_refused() -> None:
    text = "\n".join(["description: {name: chain, description: x}", "study:",
                      *(f"  - {{name: s{i}, run: {{cmd: echo {i}{f', depends: [s{i - 1}]' if i else ''}}}}}"
                        for i in range(LONG)),
                      f"  - {{name: last, run: {{cmd: 'cat $(s0.workspace) $(x.workspace)', depends: [s{LONG - 1}]}}}}",
                      "  - {name: x, run: {cmd: echo}}"]) + "\n"
    with pytest.raises(SpecError) as error:
        load_spec_text(text, "/s/chain.yaml")
    (issue,) = error.value.issues
    assert issue.message == "$(x.workspace) names a step that does not run before 'last'; add 'x' (or 'x_*') to depends"
    spec = load_spec_text(text.replace(" $(x.workspace)", ""), "/s/chain.yaml").spec
    plan = expand(spec, StudyContext("/w/chain_1", "/w", "1"))
    last = next(i for i in plan.instances if i.step == "last")
    assert len(plan.instances) == LONG + 2 and plan.instances[last.parents[0].parent].step == f"s{LONG - 1}"
