"""$(TOKEN) primitives: finding, substituting, resolving nested variables; the exit-code tokens."""

from __future__ import annotations

import pytest

from merlin_mdm.spec import EXIT_CODE_TOKENS, ExitCode, known_tokens, load_spec_text
from merlin_mdm.spec.tokens import inlined_tokens, resolve_ordered, substitute, substitute_task, tokens_in


def test_tokens_in_finds_names_in_order_with_repeats() -> None:
    text = "$(A) $(b.workspace) $(SEED.label) $(A) $(not a token) $() $(x-y)"
    assert tokens_in(text) == ["A", "b.workspace", "SEED.label", "A", "x-y"]


def test_substitute_leaves_unknown_tokens_for_a_later_stage() -> None:
    assert substitute("$(A)/$(B)/$(A)", {"A": "1"}) == "1/$(B)/1"
    assert substitute("no tokens", {"A": "1"}) == "no tokens"


def test_substitute_is_a_single_pass() -> None:
    assert substitute("$(A)", {"A": "$(B)", "B": "2"}) == "$(B)"


def test_resolve_ordered_nested_variables() -> None:
    pairs = (("ROOT", "/data"), ("SUB", "$(ROOT)/sub"), ("FILE", "$(SUB)/$(NAME).txt"), ("NAME", "x"))
    assert resolve_ordered(pairs, {}) == {"ROOT": "/data", "SUB": "/data/sub", "FILE": "/data/sub/x.txt",
                                          "NAME": "x"}


def test_resolve_ordered_uses_known_tokens_and_keeps_undefined_ones() -> None:
    out = resolve_ordered((("OUT", "$(SPECROOT)/out"), ("P", "$(SEED)")), {"SPECROOT": "/spec"})
    assert out == {"OUT": "/spec/out", "P": "$(SEED)"}


def test_resolve_ordered_terminates_on_a_cycle() -> None:
    out = resolve_ordered((("A", "$(B)"), ("B", "$(A)")), {})
    assert all("$(" in value for value in out.values())


def test_exit_code_tokens_have_merlins_values() -> None:
    assert EXIT_CODE_TOKENS == {"MERLIN_SUCCESS": "0", "MERLIN_RESTART": "100", "MERLIN_SOFT_FAIL": "101",
                                "MERLIN_HARD_FAIL": "102", "MERLIN_RETRY": "104", "MERLIN_STOP_WORKERS": "105",
                                "MERLIN_RAISE_ERROR": "106"}
    assert ExitCode(104) is ExitCode.RETRY


def test_known_tokens() -> None:
    text = """
description: {name: t, description: d}
env:
  variables: {V: 1}
  labels: {L: x}
  dependencies:
    git: [{name: REPO, path: /tmp/repo, url: https://example.invalid/r.git}]
global.parameters:
  P: {values: [1], label: P.%%}
merlin:
  samples: {file: s.npy, column_labels: [X], generate: {cmd: make}}
study:
  - {name: a, description: a, run: {cmd: echo}}
"""
    known = known_tokens(load_spec_text(text, "/s/t.yaml").spec)
    assert {"V", "L", "REPO", "P", "P.label", "X", "a.workspace", "SPECROOT", "OUTPUT_PATH", "WORKSPACE",
            "MERLIN_INFO", "MERLIN_SAMPLE_ID", "MERLIN_SAMPLE_PATH", "MERLIN_GLOB_PATH", "MERLIN_PATHS_ALL",
            "LAUNCHER", "VLAUNCHER", "MERLIN_RETRY", "MERLIN_HARD_FAIL"} <= known
    assert "b.workspace" not in known


@pytest.mark.parametrize("token", ["WORKSPACE", "MERLIN_SAMPLE_VECTOR", "MERLIN_SAMPLE_NAMES", "MERLIN_TIMESTAMP",
                                   "MERLIN_WORKSPACE", "MERLIN_SPEC_ORIGINAL_TEMPLATE", "MERLIN_STOP_WORKERS"])
def test_reserved_tokens_validate_in_commands(token: str) -> None:
    text = ("description: {name: t, description: d}\n"
            f"study:\n  - {{name: a, description: a, run: {{cmd: echo $({token})}}}}\n")
    assert load_spec_text(text, "/s/t.yaml").spec.steps[0].run.cmd == f"echo $({token})"


def test_variables_resolve_whatever_order_they_are_written_in() -> None:
    from merlin_mdm.spec.tokens import resolve_ordered

    chain = tuple((f"V{i}", f"$(V{i + 1})/x" if i < 499 else "$(BASE)") for i in range(500))
    resolved = resolve_ordered(chain, {"BASE": "/b"})
    assert resolved["V0"] == "/b" + "/x" * 499 and resolved["V499"] == "/b"
    assert resolve_ordered(tuple(reversed(chain)), {"BASE": "/b"}) == resolved
    circle = resolve_ordered((("A", "$(B)"), ("B", "$(A)"), ("C", "$(D)"), ("D", "d")), {})
    assert circle["C"] == "d" and "$(" in circle["A"]  # a circle stays unresolved (reported by validate)


def test_a_column_that_is_no_token_name_is_found_and_filled_as_text() -> None:
    """Merlin takes any column label and replaces `$(my col)` as text; a token name goes through the usual rule."""
    tokens = {"my col": "2", "1st": "3", "X": "1", "WORKSPACE": "/w"}
    assert substitute_task("$(X) $(my col) $(1st) $(WORKSPACE) $(my  col) $(Y)", tokens) == "1 2 3 /w $(my  col) $(Y)"
    assert substitute("$(my col)", tokens) == "$(my col)"  # the spec-wide rule is unchanged
    variables = {"USE": "$(my col)", "OTHER": "$(1st)"}
    assert inlined_tokens("run $(USE)", variables, ["my col", "1st", "X"]) == ["my col"]
    assert inlined_tokens("run $(USE) $(X)", variables) == ["X"]
