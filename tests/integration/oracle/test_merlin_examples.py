"""Merlin 1.13's own examples, run with Merlin and with merlin-mdm (`run --local`): the same files with the
same contents. Paths of the two workspaces and spec folders are normalised; see merlin_ref.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from .merlin_ref import compare_workspaces, run_pair

pytestmark = [pytest.mark.merlin_ref, pytest.mark.slow]

# (example, spec file, study name, extra merlin-mdm options, files only merlin-mdm writes on purpose,
#  where Merlin stays up after its work is done: a glob whose first match means it is done)
EXAMPLES = [
    ("hello", "hello.yaml", "hello", (), (), None),
    ("hello", "hello_samples.yaml", "hello_samples", (), (), None),
    ("simple_chain", "simple_chain.yaml", "simple_chain", (), (), None),
    ("null_spec", "null_spec.yaml", "null_spec", (), (), None),
    ("restart", "restart.yaml", "restart", (), (), None),
    # Its retry delays (10 s, 30 s) are honoured here (Merlin's --local skips them); one unit per step keeps
    # each step's waits overlapping: about 45 s instead of 90 s on two cores.
    ("restart_delay", "restart_delay.yaml", "restart_delay", ("--workers", "1"), (), None),
    ("feature_demo", "feature_demo.yaml", "feature_demo", (), (), None),
    # A task that exits with MERLIN_STOP_WORKERS keeps its done-marker here (docs/merlin-compat.md). Merlin's
    # `run --local` stays up about 5 minutes after that task before it exits: it is stopped once it is done.
    ("remote_feature_demo", "remote_feature_demo.yaml", "feature_demo", (),
     ("stop_workers/N_NEW.10.X2.0.5/MERLIN_FINISHED",), "studies/*/stop_workers/*/MERLIN_STATUS.json"),
]


@pytest.mark.parametrize(("example", "spec", "study", "mdm_args", "ours_only", "merlin_done"), EXAMPLES,
                         ids=[f"{e[0]}/{e[1]}" for e in EXAMPLES])
def test_example_matches_merlin(merlin_ref: Path, tmp_path: Path, example: str, spec: str, study: str,
                                mdm_args: tuple[str, ...], ours_only: tuple[str, ...],
                                merlin_done: str | None) -> None:
    pair = run_pair(merlin_ref, example, spec, study, tmp_path, mdm_args=mdm_args, merlin_done=merlin_done)
    assert pair.merlin_rc == 0 or (merlin_done and pair.merlin_rc == 124), "Merlin itself failed"
    problems = [p for p in compare_workspaces(pair) if p not in {f"only in merlin-mdm's: {f}" for f in ours_only}]
    assert not problems, "\n".join(problems[:20]) + f"\nmerlin-mdm said:\n{pair.mdm_log[-3000:]}"
    assert any(pair.mdm_ws.rglob("MERLIN_FINISHED")), "nothing ran"
