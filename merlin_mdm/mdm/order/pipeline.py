"""``train-order`` end to end: load a denoiser checkpoint, train the order policy, check it, save it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from merlin_mdm.mdm.order.checkpoint import save_policy
from merlin_mdm.mdm.order.lineage import LINEAGE_KEY, policy_lineage
from merlin_mdm.mdm.order.networks import OrderNet
from merlin_mdm.mdm.order.selection import decode_and_score
from merlin_mdm.mdm.order.training import OrderTrainConfig, train_order

__all__ = ["OrderRunSummary", "evaluate_policy", "run_train_order"]


@dataclass(frozen=True)
class OrderRunSummary:
    """What ``train-order`` did; also written into the policy's meta.json."""

    out_dir: str  # where policy.pt and meta.json are
    iterations: int  # Adam steps taken
    train_seconds: float  # wall time of training
    final: dict[str, float]  # the last training log entry (ELBO per token, ...)
    evaluation: dict[str, float] = field(default_factory=dict)  # valid rate and NFE of a quick check, if run
    selected_iteration: int | None = None  # the validated iterate saved (select_every > 0), else None: the last

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view."""
        return {
            "out_dir": self.out_dir,
            "iterations": self.iterations,
            "train_seconds": self.train_seconds,
            "final": self.final,
            "evaluation": self.evaluation,
            "selected_iteration": self.selected_iteration,
        }


def evaluate_policy(
    model: Any, task: Any, policy: OrderNet, budget: int, samples: int, seed: int, decode: str = "threshold",
    kind: str = "bernoulli",
) -> dict[str, float]:
    """Generate ``samples`` answers with the policy and score them.

    Returns:
        ``{"valid": rate, "mean_nfe": ..., "max_nfe": ..., "samples": n, "seconds": ...}``.
    """
    gen = torch.Generator().manual_seed(seed)
    prompts = task.sample_split(samples, gen, "eval")[:, : task.prompt_len]
    start = time.perf_counter()
    valid, mean_nfe, max_nfe = decode_and_score(model, task, policy, prompts, budget, gen, decode=decode, kind=kind)
    return {
        "valid": valid,
        "mean_nfe": mean_nfe,
        "max_nfe": max_nfe,
        "samples": float(samples),
        "seconds": time.perf_counter() - start,
    }


def run_train_order(
    denoiser_dir: str | Path,
    out_dir: str | Path,
    config: OrderTrainConfig,
    eval_samples: int = 512,
    progress: Callable[[dict[str, float]], None] | None = None,
    device: str = "auto",
) -> OrderRunSummary:
    """Train an order policy for the denoiser at ``denoiser_dir`` and save it to ``out_dir``.

    Args:
        denoiser_dir: a checkpoint written by ``merlin-mdm mdm train``.
        out_dir: where ``policy.pt`` and ``meta.json`` go.
        config: the training knobs.
        eval_samples: answers generated with the trained policy as a check (0 skips it).
        progress: called with each training log entry.
        device: where the frozen denoiser and the order networks run (auto, cpu, cuda, cuda:N); the data, the
            rollouts' bookkeeping and every random draw stay on the CPU.

    Returns:
        The :class:`OrderRunSummary`.
    """
    from merlin_mdm.mdm.checkpoint import load_denoiser
    from merlin_mdm.mdm.devices import resolve_device

    where = resolve_device(device)
    loaded = load_denoiser(denoiser_dir, where)
    model = loaded.model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    result = train_order(model, loaded.task, loaded.config.d_model, config, progress=progress, device=where)
    evaluation = {}
    if eval_samples > 0:
        evaluation = evaluate_policy(model, loaded.task, result.policy, config.budget, eval_samples, config.seed + 1000,
                                     kind=config.policy_kind)
    summary = OrderRunSummary(
        out_dir=str(out_dir),
        iterations=result.iterations,
        train_seconds=result.seconds,
        final=result.history[-1] if result.history else {},
        evaluation=evaluation,
        selected_iteration=result.selected_iteration,
    )
    meta = {
        "train_config": config.to_dict(),
        "budget": config.budget,
        "budgets": list(config.all_budgets),
        "denoiser_dir": str(denoiser_dir),
        "denoiser_checkpoint_id": loaded.meta.get("checkpoint_id"),
        "task": loaded.task.name,
        "task_knobs": loaded.task.knobs(),
        LINEAGE_KEY: policy_lineage(config.init_policy),
        **{k: v for k, v in summary.to_dict().items() if k != "out_dir"},
    }
    save_policy(out_dir, result.policy, result.posterior, meta, kind=config.policy_kind)
    return summary
