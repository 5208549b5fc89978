"""Reproducible by construction: the same micro study run twice gives byte-identical result tables, and the
state-dependence diagnostic measures what it claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from merlin_mdm.mdm.evaluation import EvalConfig, run_eval, write_eval  # noqa: E402
from merlin_mdm.mdm.order.diagnostics import distinct_per_100, order_diagnostic  # noqa: E402
from merlin_mdm.mdm.order.pipeline import run_train_order  # noqa: E402
from merlin_mdm.mdm.order.training import OrderTrainConfig  # noqa: E402
from merlin_mdm.mdm.training import TrainConfig, train  # noqa: E402
from merlin_mdm.results import load_dataset  # noqa: E402
from merlin_mdm.results.aggregate import aggregate, default_outputs  # noqa: E402
from merlin_mdm.results.metrics import read_metrics  # noqa: E402

pytestmark = pytest.mark.torch

TASK = {"nb": 2, "bl": 2, "layout": "random"}


def _micro_study(root: Path) -> Path:
    """Two training seeds x (denoiser, T=2 policy) x (iid, dus, learned, learned_counts, shuffled) on one split."""
    for seed in (0, 1):
        den, pol = root / f"den{seed}", root / f"pol{seed}"
        train(TrainConfig(task="blocks", task_knobs=TASK, steps=4, batch_size=8, d_model=16, n_layers=1, n_heads=2,
                          d_ff=32, warmup=1, seed=seed), den, quiet=True)
        run_train_order(den, pol, OrderTrainConfig(budget=2, iterations=2, batch_size=4, rollouts=2, d_model=8,
                                                   seed=seed), eval_samples=0)
        for sampler, policy in (("iid", None), ("dus", None), ("learned", pol), ("learned_counts", pol)):
            # one batch, as the diagnostic evaluates: the token draws depend on how examples are batched
            cfg = EvalConfig(str(den), sampler, steps=2, seed=0, n_examples=24, batch_size=24,
                             policy_dir=None if policy is None else str(policy))
            run_eval(cfg, root / "ws" / "eval" / f"{sampler}.{seed}" / "metrics.h5")
        _, shuffled = order_diagnostic(EvalConfig(str(den), "learned", steps=2, seed=0, n_examples=24,
                                                  policy_dir=str(pol)))
        (root / "ws" / "eval" / f"shuffled.{seed}").mkdir(parents=True)
        write_eval(shuffled, root / "ws" / "eval" / f"shuffled.{seed}" / "metrics.h5")
    report = aggregate(root / "ws", default_outputs(root / "out" / "results.h5", command="(micro)"), progress=False)
    assert report is not None and report.table.n_rows == 10 and not report.table.problems
    return root / "out"


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _micro_study(tmp_path_factory.mktemp("a")), _micro_study(tmp_path_factory.mktemp("b"))


def test_the_same_micro_study_twice_gives_identical_tables(studies: tuple[Path, Path]) -> None:
    first, second = studies
    for name in ("results.md", "results.svg", "results.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # results.h5 also records paths and times (checkpoint, start_time, written_at): compare what was measured
    a, b = load_dataset(first / "results.h5"), load_dataset(second / "results.h5")
    for name in ("accuracy", "mean_nfe", "max_nfe", "correct", "nfe", "method_label", "train_seed"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert load_dataset(first / "results.h5", "summary").equals(load_dataset(second / "results.h5", "summary"))
    text = (first / "results.md").read_text(encoding="utf-8")
    recipe = "T=2, tau=0.1, iterations=2, d_model=8, rollouts=2, batch_size=4"
    assert f"| learned ({recipe}) | 2 |" in text and f"learned_counts ({recipe})" in text
    assert "schedules shuffled across prompts" in text and "State dependence" in text


def test_the_shuffle_diagnostic_keeps_counts_and_breaks_the_match(studies: tuple[Path, Path]) -> None:
    root = studies[0]
    shuffled = read_metrics(root.parent / "ws" / "eval" / "shuffled.0" / "metrics.h5")
    own = read_metrics(root.parent / "ws" / "eval" / "learned.0" / "metrics.h5")
    assert shuffled.attrs["sampler"] == "learned_shuffled"
    assert shuffled.attrs["diag.accuracy_unshuffled"] == pytest.approx(own.attrs["accuracy"])
    steps_own, steps_shuffled = own.datasets["reveal_step"], shuffled.datasets["reveal_step"]
    prompt = 4  # one block label per answer position
    np.testing.assert_array_equal(steps_shuffled[1:, prompt:], steps_own[:-1, prompt:])  # prompt i got i-1's
    assert 1 <= shuffled.attrs["diag.distinct_schedules_per_100"] <= 24


def test_distinct_per_100() -> None:
    assert distinct_per_100(np.zeros((250, 3), dtype=int)) == 1.0
    assert distinct_per_100(np.arange(200).reshape(200, 1)) == 100.0
    assert distinct_per_100(np.arange(30).reshape(30, 1)) == 30.0
