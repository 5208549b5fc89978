"""Variable cycles made by --vars are blamed on --vars (naming its entries), not on a line of the spec file."""

from __future__ import annotations

import pytest

from merlin_mdm.errors import SpecError
from merlin_mdm.spec import load_spec_text

SPEC = """\
description: {name: cyc, description: x}
env:
  variables:
    OUTPUT_PATH: ./out
    X: hello
    C: $(A)
study:
  - name: s
    description: s
    run: {cmd: echo $(X) $(C)}
"""


def _only_error(overrides: dict[str, str]) -> str:
    with pytest.raises(SpecError) as info:
        load_spec_text(SPEC, "s.yaml", overrides=overrides)
    (issue,) = info.value.issues
    return str(issue)


def test_a_cycle_made_only_of_vars_has_no_spec_line_and_names_the_vars() -> None:
    assert _only_error({"A": "$(B)", "B": "$(A)"}) == (
        "s.yaml: env.variables: --vars A='$(B)' B='$(A)' refer to each other in a circle "
        "($(A) -> $(B) -> $(A)), so none has a value")


def test_a_var_that_refers_to_itself() -> None:
    assert _only_error({"X": "$(X)"}) == (
        "s.yaml: env.variables: --vars X='$(X)' refers to itself ($(X) -> $(X)), so it has no value")


def test_a_cycle_through_a_spec_variable_is_at_its_line_and_names_the_vars() -> None:
    assert _only_error({"A": "$(C)"}) == (
        "s.yaml:6:5: env.variables.C: variables refer to each other in a circle ($(C) -> $(A) -> $(C)) "
        "through --vars A='$(C)', so none has a value")


def test_a_var_replacing_a_spec_variable_counts_as_a_var() -> None:
    """X is in the file (line 5), but its value in the cycle is the one --vars gave: C's line is the one to fix."""
    assert _only_error({"X": "$(C)", "A": "$(X)"}) == (
        "s.yaml:6:5: env.variables.C: variables refer to each other in a circle ($(C) -> $(A) -> $(X) -> $(C)) "
        "through --vars A='$(X)' X='$(C)', so none has a value")


def test_a_cycle_in_the_file_alone_is_reported_as_before() -> None:
    text = SPEC.replace("X: hello", "X: $(C)").replace("C: $(A)", "C: $(X)")
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml", overrides={"OUTPUT_PATH": "./o"})  # a --vars outside the circle
    assert [str(i) for i in info.value.issues] == [
        "s.yaml:5:5: env.variables.X: variables refer to each other in a circle ($(X) -> $(C) -> $(X)), "
        "so none has a value"]
