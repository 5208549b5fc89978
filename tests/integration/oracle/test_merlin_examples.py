"""Merlin 1.13's own examples, run with Merlin and with merlin-mdm (`run --local`): the same files with the
same contents. Paths of the two workspaces and spec folders are normalised; see merlin_ref.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from .merlin_ref import compare_workspaces, run_pair

pytestmark = [pytest.mark.merlin_ref, pytest.mark.slow]

# (example, spec file, study name, extra --vars for both tools, files only merlin-mdm writes on purpose)
EXAMPLES = [
    ("hello", "hello.yaml", "hello", (), ()),
    ("hello", "hello_samples.yaml", "hello_samples", (), ()),
    ("simple_chain", "simple_chain.yaml", "simple_chain", (), ()),
    ("null_spec", "null_spec.yaml", "null_spec", (), ()),
    ("restart", "restart.yaml", "restart", (), ()),
    ("restart_delay", "restart_delay.yaml", "restart_delay", (), ()),
    ("feature_demo", "feature_demo.yaml", "feature_demo", (), ()),
    # a task that exits with MERLIN_STOP_WORKERS keeps its done-marker here (docs/merlin-compat.md)
    ("remote_feature_demo", "remote_feature_demo.yaml", "feature_demo", (),
     ("stop_workers/N_NEW.10.X2.0.5/MERLIN_FINISHED",)),
]


@pytest.mark.parametrize(("example", "spec", "study", "variables", "ours_only"), EXAMPLES,
                         ids=[f"{e[0]}/{e[1]}" for e in EXAMPLES])
def test_example_matches_merlin(merlin_ref: Path, tmp_path: Path, example: str, spec: str, study: str,
                                variables: tuple[str, ...], ours_only: tuple[str, ...]) -> None:
    args = ("--vars", *variables) if variables else ()
    pair = run_pair(merlin_ref, example, spec, study, tmp_path, mdm_args=args, merlin_args=args)
    assert pair.merlin_rc == 0, "Merlin itself failed"
    problems = [p for p in compare_workspaces(pair) if p not in {f"only in merlin-mdm's: {f}" for f in ours_only}]
    assert not problems, "\n".join(problems[:20]) + f"\nmerlin-mdm said:\n{pair.mdm_log[-3000:]}"
    assert any(pair.mdm_ws.rglob("MERLIN_FINISHED")), "nothing ran"
