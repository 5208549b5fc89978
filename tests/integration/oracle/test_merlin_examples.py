"""Merlin 1.13's own examples, run with Merlin and with merlin-mdm (`run --local`): the same files with the
same contents. Paths of the two workspaces and spec folders are normalised; see merlin_ref.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .merlin_ref import compare_workspaces, run_pair

pytestmark = [pytest.mark.merlin_ref, pytest.mark.slow]

@dataclass(frozen=True)
class Example:
    """One of Merlin's examples and how to run it here."""

    example: str  # `merlin example NAME`
    spec: str
    study: str  # the workspace's name before its timestamp
    variables: tuple[str, ...] = ()  # --vars for both tools
    mdm_args: tuple[str, ...] = ()  # merlin-mdm options
    ours_only: tuple[str, ...] = ()  # files only merlin-mdm writes, on purpose (docs/merlin-compat.md)
    merlin_done: str | None = None  # where Merlin stays up after its work: a glob that means it is done


EXAMPLES = [
    Example("hello", "hello.yaml", "hello"),
    Example("hello", "hello_samples.yaml", "hello_samples"),
    Example("simple_chain", "simple_chain.yaml", "simple_chain"),
    Example("null_spec", "null_spec.yaml", "null_spec"),
    # Its steps ask for `procs: 4`: a runner with fewer slots refuses them, so it gets 4 (oversubscribed here).
    Example("restart", "restart.yaml", "restart", mdm_args=("--workers", "4")),
    # Also `procs: 4`. Its retry delays (10 s, 30 s) are honoured here (Merlin's --local skips them); 40 slots
    # run the 10 one-sample units of a step at once (4 slots each), so their waits overlap: about 45 s.
    Example("restart_delay", "restart_delay.yaml", "restart_delay", mdm_args=("--workers", "40")),
    Example("feature_demo", "feature_demo.yaml", "feature_demo"),
    # A task that exits with MERLIN_STOP_WORKERS keeps its done-marker here. Merlin's `run --local` stays up
    # about 5 minutes after that task before it exits: it is stopped once its work is done.
    Example("remote_feature_demo", "remote_feature_demo.yaml", "feature_demo",
            ours_only=("stop_workers/N_NEW.10.X2.0.5/MERLIN_FINISHED",),
            merlin_done="studies/*/stop_workers/*/MERLIN_STATUS.json"),
    # One iteration, in the example's folder. Its scripts use `np.float`, gone in NumPy 2: its simulations
    # fail under both tools, with the same files and logs.
    Example("optimization_basic", "optimization_basic.yaml", "rosenbrock_optimization_ITER_1",
            variables=("MAX_ITER=1", "OUTPUT_PATH=./studies")),
]


@pytest.mark.parametrize("case", EXAMPLES, ids=[f"{e.example}/{e.spec}" for e in EXAMPLES])
def test_example_matches_merlin(merlin_ref: Path, tmp_path: Path, case: Example) -> None:
    both = ("--vars", *case.variables) if case.variables else ()
    pair = run_pair(merlin_ref, case.example, case.spec, case.study, tmp_path, mdm_args=(*both, *case.mdm_args),
                    merlin_args=both, merlin_done=case.merlin_done)
    assert pair.merlin_rc == 0 or (case.merlin_done and pair.merlin_rc == 124), "Merlin itself failed"
    expected = {f"only in merlin-mdm's: {f}" for f in case.ours_only}
    problems = [p for p in compare_workspaces(pair) if p not in expected]
    assert not problems, "\n".join(problems[:20]) + f"\nmerlin-mdm said:\n{pair.mdm_log[-3000:]}"
    assert any(pair.mdm_ws.rglob("MERLIN_FINISHED")), "nothing ran"


# The batch examples cannot run here (no Slurm allocation, LSF or Flux): their dry runs are compared, which
# holds the $(LAUNCHER) lines (`srun -n 4 -N 2`, `jsrun --np 4 --nrs 2 -b rs -d plane:2 -X 1`, `flux run ...`).
DRY = ["slurm_par", "lsf_par", "lsf_par_srun", "flux_par"]


@pytest.mark.parametrize("example", DRY)
def test_dry_run_matches_merlins(merlin_ref: Path, tmp_path: Path, example: str) -> None:
    pair = run_pair(merlin_ref, example, f"{example}.yaml", example, tmp_path, mdm_args=("--dry",),
                    merlin_args=("--dry", "--no-errors"))
    assert pair.merlin_rc == 0 and pair.mdm_rc == 0, pair.mdm_log[-3000:]
    problems = compare_workspaces(pair)
    assert not problems, "\n".join(problems[:20])
    scripts = sorted(pair.mdm_ws.glob("runs/*/runs.slurm.sh"))
    assert len(scripts) == 10 and "$(LAUNCHER)" not in scripts[0].read_text()
