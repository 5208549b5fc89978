"""Does the learned order depend on the state? Two measurements on the evaluation examples.

1. **Distinct schedules**: how many different reveal schedules (the step at which each answer position is
   revealed) the policy produces per 100 prompts, and how many different first-step sets. A policy that ignores
   the prompt produces 1 of each.
2. **Shuffled schedules**: replay prompt i-1's schedule on prompt i (a cyclic shift, so no prompt keeps its own)
   with :class:`~merlin_mdm.mdm.samplers.schedules.ScheduleSampler`. The positions revealed per step and the
   NFE distribution are unchanged; only the match between schedule and prompt is broken. The accuracy drop is
   what the policy's state dependence is worth.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from merlin_mdm.mdm.checkpoint import load_denoiser
from merlin_mdm.mdm.devices import resolve_device
from merlin_mdm.mdm.evaluation import EvalConfig, EvalResult, evaluate
from merlin_mdm.mdm.samplers.schedules import ScheduleSampler

__all__ = ["SHUFFLED_SAMPLER", "distinct_per_100", "order_diagnostic"]

SHUFFLED_SAMPLER = "learned_shuffled"  # the ``sampler`` attribute of the shuffled run's metrics file


def distinct_per_100(rows: np.ndarray) -> float:
    """Mean number of distinct rows in consecutive chunks of 100 rows (a last, shorter chunk is dropped
    unless it is the only one)."""
    chunks = [rows[i : i + 100] for i in range(0, len(rows), 100)]
    full = [c for c in chunks if len(c) == 100] or chunks
    return float(np.mean([len({tuple(r) for r in c.tolist()}) for c in full]))


def order_diagnostic(cfg: EvalConfig) -> tuple[EvalResult, EvalResult]:
    """Evaluate the policy sampler of ``cfg`` and its schedules shuffled across prompts.

    Args:
        cfg: an evaluation of a policy sampler (``learned``), as for ``merlin-mdm mdm eval``.

    Returns:
        (the policy's own run, the shuffled run); the shuffled run's attributes carry ``diag.*`` figures:
        distinct schedules and first-step sets per 100 prompts and the unshuffled accuracy.
    """
    loaded = load_denoiser(cfg.checkpoint, resolve_device(cfg.device))
    whole = dataclasses.replace(cfg, batch_size=cfg.n_examples)  # one batch: schedules index the whole set
    own = evaluate(whole, loaded)
    answer = own.reveal_step[:, loaded.task.prompt_len :]  # (N, A)
    shuffled_schedule = torch.from_numpy(own.reveal_step).roll(1, dims=0)
    shuffled = evaluate(whole, loaded, sampler=ScheduleSampler(shuffled_schedule))
    attrs: dict[str, Any] = {**{k: v for k, v in own.attrs.items() if not k.startswith("sampler.")},
                             **{k: v for k, v in shuffled.attrs.items() if k not in own.attrs}}
    method = str(own.attrs.get("method", cfg.sampler))
    attrs.update({key: shuffled.attrs[key] for key in ("accuracy", "mean_nfe", "min_nfe", "max_nfe", "end_time")})
    attrs.update({
        "sampler": SHUFFLED_SAMPLER,
        "method": f"{method}, schedules shuffled across prompts",
        "diag.distinct_schedules_per_100": distinct_per_100(answer),
        "diag.distinct_first_steps_per_100": distinct_per_100(answer == 0),
        "diag.accuracy_unshuffled": float(own.attrs["accuracy"]),
        "diag.mean_nfe_unshuffled": float(own.attrs["mean_nfe"]),
    })
    return own, dataclasses.replace(shuffled, attrs=attrs)
