"""Maestro parameter generators (--pgen/--pargs) applied with :func:`apply_pgen`."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from merlin_mdm.errors import SpecError, UsageError
from merlin_mdm.spec import Parameter, Spec, load_spec_text
from merlin_mdm.study.pgen import apply_pgen, parse_pargs
from tests.unit.study.plans import OUTPUT, STAMP, WORKSPACE

REPO = Path(__file__).resolve().parents[3]

with warnings.catch_warnings():  # import maestrowf once, outside the tests (its import warns)
    warnings.simplefilter("ignore", DeprecationWarning)
    import maestrowf.datastructures.core  # noqa: F401

SPEC = """
description: {name: pg, description: d}
env:
  variables: {BASE: "10"}
study:
  - {name: train, description: t, run: {cmd: echo $(SEED) $(LR)}}
"""

PGEN = '''
from maestrowf.datastructures.core import ParameterGenerator


def get_custom_generator(env, **kwargs):
    n = int(kwargs.get("N", "2"))
    base = int(env.find("BASE").value)
    p_gen = ParameterGenerator()
    p_gen.add_parameter("SEED", [base + i for i in range(n)], "SEED.%%")
    p_gen.add_parameter("LR", [0.1 * (i + 1) for i in range(n)], "LR.%%")
    p_gen.add_parameter("ROOT", [kwargs["SPECROOT"]] * n)
    return p_gen
'''


def _pgen(tmp_path: Path, body: str = PGEN) -> Path:
    path = tmp_path / "pgen.py"
    path.write_text(body, encoding="utf-8")
    return path


def test_pgen_replaces_the_parameters(tmp_path: Path) -> None:
    pgen = _pgen(tmp_path)
    loaded = load_spec_text(SPEC, tmp_path / "s.yaml", transform=lambda s: apply_pgen(s, pgen, {"N": "3"}))
    assert loaded.spec.parameters == (
        Parameter("SEED", (10, 11, 12), "SEED.%%"),
        Parameter("LR", (0.1, 0.2, 0.30000000000000004), "LR.%%"),
        Parameter("ROOT", (str(tmp_path),) * 3, "ROOT.%%"),
    )


def test_pgen_parameters_expand(tmp_path: Path) -> None:
    from merlin_mdm.study.expand import StudyContext, expand

    pgen = _pgen(tmp_path)
    spec = load_spec_text(SPEC, tmp_path / "s.yaml", transform=lambda s: apply_pgen(s, pgen, {})).spec
    plan = expand(spec, StudyContext(WORKSPACE, OUTPUT, STAMP))
    assert [i.name for i in plan.instances] == ["train_LR.0.1.SEED.10", "train_LR.0.2.SEED.11"]


def test_without_pgen_the_tokens_are_undefined(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"\$\(SEED\) is not a defined token"):
        load_spec_text(SPEC, tmp_path / "s.yaml", strict=True)


@pytest.mark.parametrize(("body", "message"), [
    ("x = 1\n", "define get_custom_generator"),
    ("raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
    ("def get_custom_generator(env, **kw):\n    return 1 / 0\n", "ZeroDivisionError"),
    ("def get_custom_generator(env, **kw):\n    return [1]\n", "must return a maestrowf ParameterGenerator"),
    (PGEN.replace('"LR", [0.1 * (i + 1) for i in range(n)]', '"LR", [0.1]'), "Length of values list"),
    ("class G:\n    parameters = {'A': [1, 2], 'B': [1]}\n    labels = {}\n"
     "def get_custom_generator(env, **kw):\n    return G()\n", "equally long value lists \\(A: 2, B: 1\\)"),
    (PGEN.replace('"SEED.%%"', '"SEED"'), "a label with %%"),
    ("import sys\nsys.exit(3)\n", "raised SystemExit: 3"),
    ("def get_custom_generator(env, **kw):\n    raise SystemExit('no')\n", "raised SystemExit: no"),
])  # fmt: skip
def test_bad_pgen_files_are_usage_errors(tmp_path: Path, body: str, message: str) -> None:
    spec = load_spec_text(SPEC.replace("$(SEED) $(LR)", ""), tmp_path / "s.yaml").spec
    with pytest.raises(UsageError, match=message):
        apply_pgen(spec, _pgen(tmp_path, body), {})


def test_missing_pgen_file(tmp_path: Path) -> None:
    spec = load_spec_text(SPEC.replace("$(SEED) $(LR)", ""), tmp_path / "s.yaml").spec
    with pytest.raises(UsageError, match="no such Python file"):
        apply_pgen(spec, tmp_path / "nope.py", {})


def test_parse_pargs() -> None:
    assert parse_pargs(["N:3", "URL:http://x:1"]) == {"N": "3", "URL": "http://x:1"}
    with pytest.raises(UsageError, match="KEY:VALUE"):
        parse_pargs(["N=3"])


def _shipped_plan(text: str, transform: Callable[[Spec], Spec] | None = None) -> list[tuple[str, str, str]]:
    from merlin_mdm.study.expand import StudyContext, expand

    spec = load_spec_text(text, REPO / "specs" / "mdm_sudoku_avg.yaml", transform=transform).spec
    plan = expand(spec, StudyContext(WORKSPACE, OUTPUT, STAMP))
    names = [i.name for i in plan.instances]
    return sorted((i.name, i.cmd, ",".join(sorted(names[e.parent] for e in i.parents))) for i in plan.instances)


def test_the_shipped_seed_sets_generator_runs_a_spec_on_other_seeds() -> None:
    """specs/seed_sets.py gives the study the spec would give with those lists as crossed parameters."""
    text = (REPO / "specs" / "mdm_sudoku_avg.yaml").read_text(encoding="utf-8")
    edited = text.replace("values: [0, 1, 2]", "values: [9, 10, 11, 12]").replace("values: [4, 6, 8, 10]",
                                                                                   "values: [4]")
    assert edited.count("values: [4]") == 1 and "[9, 10, 11, 12]" in edited
    pargs = {"TRAIN_SEED": "9,10,11,12", "PRICED_SEED": "4"}
    generated = _shipped_plan(text, lambda s: apply_pgen(s, REPO / "specs" / "seed_sets.py", pargs))
    assert generated == _shipped_plan(edited)
    assert len(generated) == 10 * 4 + 1 and any("--seed 410 " in cmd for _, cmd, _ in generated)
    assert any("--seed 13410 " in cmd and "--nfe-penalty 0.13 " in cmd for _, cmd, _ in generated)
    with pytest.raises(UsageError, match=r"--pargs TRAIN_SEED: give its values as TRAIN_SEED:V1,V2"):
        apply_pgen(load_spec_text(text, REPO / "specs" / "x.yaml").spec, REPO / "specs" / "seed_sets.py",
                   {"TRAIN_SEED": ","})


def test_a_spec_parameter_the_generator_leaves_out_is_an_error() -> None:
    """Without PRICED_SEED, $(PRICED_SEED) would reach bash as a command substitution and the seed be wrong."""
    spec = load_spec_text((REPO / "specs" / "mdm_sudoku_avg.yaml").read_text(encoding="utf-8"),
                          REPO / "specs" / "mdm_sudoku_avg.yaml").spec
    with pytest.raises(UsageError, match=r"parameter\(s\) PRICED_SEED \(used by train_priced, train_cheaper\)"):
        apply_pgen(spec, REPO / "specs" / "seed_sets.py", {"TRAIN_SEED": "9"})


def test_a_generator_too_large_is_refused_naming_pgen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The size check pointed at `global.parameters` (1:1) of a spec that has none, and said "drop `product`"."""
    monkeypatch.setenv("MERLIN_MDM_MAX_INSTANCES", "5")
    pgen = _pgen(tmp_path)
    with pytest.raises(SpecError) as caught:
        load_spec_text(SPEC, tmp_path / "s.yaml", transform=lambda s: apply_pgen(s, pgen, {"N": "6"}))
    text = str(caught.value)
    assert "--pgen: " in text and "make the generator (--pgen) return fewer combinations" in text, text
    assert "s.yaml:1:1" not in text and "global.parameters" not in text, text
