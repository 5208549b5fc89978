"""Model selection for order training: keep the iterate that decodes best on validation prompts.

Order training is REINFORCE-like and noisy: on the quick study's ``blocks`` task the budget-conditioned policy
usually reaches a perfect schedule within 100-200 iterations (one seed in ten needed 250), but its last iterate
is a lottery, because the reveal probabilities of a few positions oscillate around the 1/2 that thresholded
decoding cuts at (at T=2 one seed's last iterate scored 25%, while the iterate 25 steps earlier scored 99.5%;
see docs/mdm-order-learning.md, section 9). With ``select_every`` = N > 0, :func:`train_order` hands the networks to
a :class:`ValidationSelector` every N iterations and after the last one; the selector decodes
``select_samples`` validation prompts with the policy at every trained budget, exactly as evaluation does
(thresholded decoding, token draws at temperature 1), and keeps a copy of the best iterate, which
``train_order`` restores at the end.

* **Validation prompts** come from the task's *training* split, drawn once from their own generator (seeded by
  ``seed + 3``), never from the evaluation split: the evaluation examples are not looked at.
* **Deterministic**: the checkpoints are chosen by iteration count, and every checkpoint is decoded with the same
  token draws (a generator reseeded with ``seed + 4`` per budget), so two checkpoints are compared on the
  same prompts and draws, and the same config gives the same choice whatever the machine's speed.
* **Criterion** (``select_by``, :data:`SELECTION_CRITERIA`): ``score``, the mean task score over the trained
  budgets, or ``return``, that score less ``nfe_penalty`` times the mean denoiser calls (the quantity reward
  training maximises, for policies meant to be compared at equal *mean* calls: by score alone a policy with a
  large cap is chosen for spending calls). Ties go to the fewer mean denoiser calls, then to the later iteration.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from merlin_mdm.mdm.order.networks import OrderNet

__all__ = ["SELECTION_CRITERIA", "Checkpoint", "ValidationSelector", "decode_and_score"]

SELECTION_CRITERIA: dict[str, Callable[[float, float, float], float]] = {
    "score": lambda score, mean_nfe, nfe_penalty: score,
    "return": lambda score, mean_nfe, nfe_penalty: score - nfe_penalty * mean_nfe,
}
"""What a validated iterate is ranked by: ``(score, mean NFE, price per call) -> value``, the larger the better."""


def decode_and_score(
    denoiser: Any, task: Any, policy: OrderNet, prompts: Tensor, budget: int, generator: torch.Generator,
    decode: str = "threshold", kind: str = "bernoulli", mask_id: int | None = None,
) -> tuple[float, float, float]:
    """Answer ``prompts`` with the policy in at most ``budget`` calls, as evaluation does; (score, mean NFE, max NFE).

    Shared by the validation below and the quick check after training (``pipeline.evaluate_policy``).
    """
    from merlin_mdm.mdm.samplers.base import generate  # deferred: samplers import the order package
    from merlin_mdm.mdm.samplers.learned import LearnedSampler

    with torch.no_grad():
        sampler = LearnedSampler.from_policy(policy, decode, kind=kind)
        out = generate(denoiser, prompts, task.answer_len, sampler, budget, generator, mask_id=mask_id)
    nfe = out.nfe.float()
    return float(task.score(out.tokens).float().mean()), float(nfe.mean()), float(nfe.max())


@dataclass(frozen=True)
class Checkpoint:
    """One validated iterate: when, and what it scored."""

    iteration: int  # Adam steps taken when it was validated
    score: float  # mean task score over the trained budgets (thresholded decoding)
    mean_nfe: float  # mean denoiser calls per sequence, averaged over the budgets
    value: float | None = None  # what it is ranked by (SELECTION_CRITERIA); None: the score

    @property
    def rank(self) -> float:
        """The selection criterion's value (the score when none was given)."""
        return self.score if self.value is None else self.value

    def beats(self, other: Checkpoint | None) -> bool:
        """Higher criterion; on a tie fewer calls; on a tie the later iteration (``self``)."""
        if other is None:
            return True
        return (self.rank, -self.mean_nfe) >= (other.rank, -other.mean_nfe)


class ValidationSelector:
    """Validates the policy every ``config.select_every`` iterations and remembers the best iterate."""

    def __init__(self, denoiser: Any, task: Any, config: Any) -> None:
        """Draw the validation prompts (the task's training split, generator seeded by ``config.seed + 3``).

        Args:
            denoiser: the frozen denoiser.
            task: the task (``sample_split``, ``prompt_len``, ``answer_len``, ``score``).
            config: the :class:`~merlin_mdm.mdm.order.training.OrderTrainConfig`.
        """
        self.denoiser, self.task, self.config = denoiser, task, config
        gen = torch.Generator().manual_seed(config.seed + 3)
        self.prompts = task.sample_split(config.select_samples, gen, "train")[:, : task.prompt_len]  # (S, P)
        self.best: Checkpoint | None = None
        self._weights: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None

    def due(self, iteration: int) -> bool:
        """Whether the iterate after ``iteration`` Adam steps is validated (every N, and the last one)."""
        every, last = int(self.config.select_every), int(self.config.iterations)
        return every > 0 and (iteration % every == 0 or iteration == last)

    def validate(self, policy: OrderNet) -> tuple[float, float]:
        """(mean score, mean NFE) of the policy's thresholded decoding over the trained budgets."""
        scores, nfes = [], []
        was_training = policy.training
        policy.eval()
        for budget in self.config.all_budgets:
            gen = torch.Generator().manual_seed(self.config.seed + 4)
            score, mean_nfe, _ = decode_and_score(self.denoiser, self.task, policy, self.prompts, budget, gen,
                                                  kind=self.config.policy_kind, mask_id=self.task.mask_id)
            scores.append(score)
            nfes.append(mean_nfe)
        policy.train(was_training)
        return sum(scores) / len(scores), sum(nfes) / len(nfes)

    def observe(self, iteration: int, policy: OrderNet, posterior: OrderNet) -> dict[str, float]:
        """Validate the current iterate, keep its weights if it is the best so far; returns figures to log."""
        score, nfe = self.validate(policy)
        value = SELECTION_CRITERIA[self.config.select_by](score, nfe, float(self.config.nfe_penalty))
        checkpoint = Checkpoint(iteration=iteration, score=score, mean_nfe=nfe, value=value)
        if checkpoint.beats(self.best):
            self.best = checkpoint
            self._weights = (copy.deepcopy(policy.state_dict()), copy.deepcopy(posterior.state_dict()))
        return {"val_score": score, "val_mean_nfe": nfe}

    def state(self) -> dict[str, Any]:
        """The best iterate so far (figures and weights), for a saved training state (:mod:`.resume`)."""
        best = None if self.best is None else dict(vars(self.best))
        weights = None if self._weights is None else {"policy": self._weights[0], "posterior": self._weights[1]}
        return {"best": best, "weights": weights}

    def load_state(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state` returned."""
        self.best = None if state["best"] is None else Checkpoint(**state["best"])
        weights = state["weights"]
        self._weights = None if weights is None else (weights["policy"], weights["posterior"])

    def restore(self, policy: OrderNet, posterior: OrderNet) -> int | None:
        """Load the best iterate's weights into the networks; returns its iteration (None: nothing validated)."""
        if self.best is None or self._weights is None:
            return None
        policy.load_state_dict(self._weights[0])
        posterior.load_state_dict(self._weights[1])
        return self.best.iteration
