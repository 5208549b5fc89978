"""``train-order`` end to end: load a denoiser checkpoint, train the order policy, check it, save it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from merlin_mdm.errors import Interrupted, MdmError
from merlin_mdm.mdm.order.checkpoint import save_policy
from merlin_mdm.mdm.order.lineage import LINEAGE_KEY, policy_lineage
from merlin_mdm.mdm.order.networks import OrderNet
from merlin_mdm.mdm.order.resume import TrainingStateFile, recipe_facts, recipe_fingerprint
from merlin_mdm.mdm.order.selection import decode_and_score
from merlin_mdm.mdm.order.training import OrderTrainConfig, OrderTrainResult, TrainingSaving, train_order
from merlin_mdm.signals import SignalWatch

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
    state_every: int = 10,
    signals: SignalWatch | None = None,
    notify: Callable[[str], None] | None = None,
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
        state_every: save the training state in ``out_dir`` every N iterations (0: only on a stop signal), and
            continue from a state of the same recipe found there (:mod:`.resume`).
        signals: the command's signal watch: during training a stop signal ends the run after the iteration in
            flight, its state saved (None: signals act as they would anyway).
        notify: called with a line for the user (continuing from a saved state, or why one is not continued).

    Returns:
        The :class:`OrderRunSummary`.
    """
    from merlin_mdm.mdm.checkpoint import load_denoiser
    from merlin_mdm.mdm.devices import resolve_device

    if (Path(out_dir) / "denoiser.pt").is_file():
        raise MdmError(f"--out {out_dir} holds a denoiser (denoiser.pt): a policy would overwrite its meta.json; "
                       "name another folder")
    where = resolve_device(device)
    loaded = load_denoiser(denoiser_dir, where)
    longest = max((config.budget, *config.budgets))
    if longest > loaded.task.answer_len:
        raise MdmError(f"train-order: a budget of {longest} exceeds the {loaded.task.answer_len} answer positions "
                       f"of the denoiser's task: every call reveals at least one; use a budget <= "
                       f"{loaded.task.answer_len}")
    model = loaded.model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    recipe = (config.to_dict(), loaded.meta.get("checkpoint_id"), loaded.task.name, loaded.task.knobs())
    state_file = TrainingStateFile(Path(out_dir), recipe_fingerprint(*recipe), state_every, recipe_facts(*recipe))
    if (Path(out_dir) / "policy.pt").is_file() and not state_file.path.is_file() and notify is not None:
        notify(f"replacing the policy in {out_dir} (its training had ended; a new --out keeps it)")
    result = _train_keeping_state(model, loaded.task, loaded.config.d_model, config, state_file,
                                  (progress, notify or (lambda line: None)), where, signals)
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
    state_file.remove()
    return summary


def _train_keeping_state(
    model: Any, task: Any, hidden_dim: int, config: OrderTrainConfig, state_file: TrainingStateFile,
    report: tuple[Callable[[dict[str, float]], None] | None, Callable[[str], None]], where: torch.device,
    signals: SignalWatch | None,
) -> OrderTrainResult:
    """:func:`train_order`, continuing from ``state_file``'s state when it holds one of this recipe."""
    progress, notify = report
    resume_from, why_not = state_file.load()
    if why_not is not None:
        notify(f"note: {why_not}")
    if resume_from is not None:
        notify(f"continuing from iteration {resume_from['iteration']} of {config.iterations} "
               f"(state saved in {state_file.path})")
    saving = TrainingSaving(state_file=state_file, resume_from=resume_from,
                            stop_requested=None if signals is None else (lambda: signals.received))
    try:
        with signals.deferred() if signals is not None else contextlib.nullcontext():
            return train_order(model, task, hidden_dim, config, progress=progress, device=where, saving=saving)
    except Interrupted:
        if state_file.path.is_file():
            notify(f"stopped; the state is saved in {state_file.path}: run the same command again to continue")
        raise
