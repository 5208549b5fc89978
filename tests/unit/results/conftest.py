"""Builders of real metrics files and small study workspaces for the results tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from merlin_mdm.results.metrics import summarize, write_metrics

MakeRun = Callable[..., Path]


def write_run(path: Path, sampler: str, steps: int, train_seed: int, correct: np.ndarray, nfe: np.ndarray,
              **extra: object) -> None:
    """Write one run of a blocks study with the given per-example outcomes and calls (evaluation seed 0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"task": "blocks", "task.nb": 4, "sampler": sampler, "steps": steps, "seed": 0,
             "train_seed": train_seed, **summarize(correct, nfe), **extra}
    write_metrics(path, attrs, {"correct": correct, "nfe": nfe, "wall_time": np.zeros(len(correct))})


def run_payload(n: int = 8, seed: int = 0, steps: int = 4, sampler: str = "top_prob",
                **extra: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Attributes and datasets of one consistent run, deterministic in ``seed``."""
    rng = np.random.default_rng(1000 * steps + seed)
    correct = rng.random(n) < 0.5
    nfe = rng.integers(1, steps + 1, n)
    attrs = {"task": "blocks", "task.nb": 4, "task.bl": 4, "sampler": sampler, "steps": steps, "seed": seed,
             **summarize(correct, nfe), **extra}
    return attrs, {"correct": correct, "nfe": nfe, "wall_time": rng.random(n)}


@pytest.fixture
def make_run() -> MakeRun:
    """Write one valid metrics file at ``path`` (directories created)."""

    def make(path: Path, **kwargs: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        attrs, datasets = run_payload(**kwargs)
        return write_metrics(path, attrs, datasets)

    return make


@pytest.fixture
def workspace(tmp_path: Path, make_run: MakeRun) -> Path:
    """A study workspace: 2 samplers x 2 budgets x 2 seeds of good runs, plus one of every kind of bad file."""
    root = tmp_path / "study_20260101-000000"
    (root / "merlin_info").mkdir(parents=True)
    for sampler, knobs in (("top_prob", {}), ("threshold", {"sampler.tau": 0.9})):
        for steps in (2, 4):
            for seed in (0, 1):
                run_dir = root / "eval" / f"SAMPLER.{sampler}.SEED.{seed}.STEPS.{steps}"
                make_run(run_dir / "metrics.h5", seed=seed, steps=steps, sampler=sampler, **knobs)
    bad = root / "eval"
    (bad / "SAMPLER.iid.SEED.0.STEPS.2").mkdir()  # the run failed before writing anything: missing
    corrupt = bad / "SAMPLER.iid.SEED.1.STEPS.2"
    corrupt.mkdir()
    (corrupt / "metrics.h5").write_bytes(b"this is not HDF5 at all\n" * 10)
    truncated = bad / "SAMPLER.iid.SEED.0.STEPS.4" / "metrics.h5"
    make_run(truncated, seed=0, steps=4, sampler="iid")
    truncated.write_bytes(truncated.read_bytes()[:1500])
    killed = bad / "SAMPLER.iid.SEED.1.STEPS.4"
    killed.mkdir()
    (killed / ".metrics.h5.4242.deadbeef.tmp").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (root / "train").mkdir()
    with h5py.File(root / "train" / "weights.h5", "w") as handle:  # someone else's HDF5 file: not_metrics
        handle.create_dataset("w", data=np.zeros(3))
    return root
