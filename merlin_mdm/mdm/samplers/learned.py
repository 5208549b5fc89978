"""The learned generation order: a trained policy p_theta(r | x_t) decides which masked positions to reveal.

Constructed as ``make_sampler("learned", policy_dir=DIR)``; the policy comes from ``DIR/policy.pt`` (see
:mod:`merlin_mdm.mdm.order.checkpoint`). At every step but the last the policy reads the denoiser's logits
and hidden state for the current sequence (already computed by the sampling loop, so the overhead is one small
network call) and returns Bernoulli probabilities p_i. ``decode="threshold"`` (the default) reveals every
masked position with p_i >= ``threshold`` and, if there is none, the single most likely one; this is the
policy's mode, deterministic given the state. ``decode="sample"`` draws r exactly from the policy conditioned on
revealing at least one position, using the step's generator. The last step (budget - 1) reveals everything.
How outputs become reveal sets is the policy's kind, recorded in its checkpoint (:mod:`merlin_mdm.mdm.order.policies`):
for a ``sequential`` policy, ``threshold`` picks the most likely position until P(stop) >= ``threshold``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.order.checkpoint import load_policy
from merlin_mdm.mdm.order.features import OrderInputs, order_inputs
from merlin_mdm.mdm.order.networks import OrderNet
from merlin_mdm.mdm.order.policies import DEFAULT_POLICY_KIND, make_reveal_policy
from merlin_mdm.mdm.samplers.base import Sampler, StepState, register_sampler, select_top_k

__all__ = ["DECODE_MODES", "LearnedCountsSampler", "LearnedSampler"]

DECODE_MODES = ("threshold", "sample")


@register_sampler
class LearnedSampler(Sampler):
    """Reveal the positions a trained order policy chooses (arXiv 2602.23968's learned order)."""

    name: ClassVar[str] = "learned"

    def __init__(self, policy_dir: str | None = None, decode: str = "threshold", threshold: float = 0.5) -> None:
        """Load the policy.

        Args:
            policy_dir: directory written by ``merlin-mdm mdm train-order`` (holds policy.pt).
            decode: ``threshold`` (reveal p_i >= threshold, deterministic) or ``sample`` (Bernoulli draws).
            threshold: the probability above which ``threshold`` decoding reveals a position, in (0, 1).

        Raises:
            MdmError: no policy_dir, an unknown decode mode, a bad threshold, or an unreadable policy.
        """
        if not policy_dir:
            raise MdmError("the learned sampler needs --policy DIR (policy_dir=DIR; a policy from "
                           "`merlin-mdm mdm train-order`)")
        loaded = load_policy(policy_dir)
        self._init(loaded.policy, str(policy_dir), decode, threshold, loaded.kind)
        self.meta: dict[str, Any] = loaded.meta

    @classmethod
    def from_policy(cls, policy: OrderNet, decode: str = "threshold", threshold: float = 0.5,
                    kind: str = DEFAULT_POLICY_KIND) -> LearnedSampler:
        """A sampler around an in-memory policy of the given kind (used right after training, before saving)."""
        sampler = cls.__new__(cls)
        sampler._init(policy, "", decode, threshold, kind)
        sampler.meta = {}
        return sampler

    def _init(self, policy: OrderNet, policy_dir: str, decode: str, threshold: float, kind: str) -> None:
        if decode not in DECODE_MODES:
            raise MdmError(f"learned sampler: unknown decode {decode!r}; valid: {', '.join(DECODE_MODES)}")
        if not 0.0 < threshold < 1.0:
            raise MdmError(f"learned sampler: threshold must be in (0, 1), got {threshold}")
        self.policy = policy.eval()
        self.reveal_policy = make_reveal_policy(kind)
        self.policy_dir = policy_dir
        self.decode = decode
        self.threshold = threshold

    def to(self, device: torch.device) -> None:
        """Run the policy network on ``device``."""
        self.policy.to(device)

    def knobs(self) -> dict[str, Any]:
        """The sampler's knobs as given (JSON-able)."""
        return {"policy_dir": self.policy_dir, "decode": self.decode, "threshold": self.threshold}

    def _inputs(self, state: StepState) -> OrderInputs:
        """The policy's features for the step, after checking the policy fits this denoiser."""
        cfg = self.policy.config
        _, length, vocab = state.logits.shape
        if (length, vocab, state.hidden.shape[-1]) != (cfg.seq_len, cfg.vocab_size, cfg.hidden_dim):
            raise MdmError(
                f"learned sampler: the policy at {self.policy_dir or '<memory>'} was trained for sequences of "
                f"{cfg.seq_len}, vocabulary {cfg.vocab_size}, hidden width {cfg.hidden_dim}; this denoiser has "
                f"{length}, {vocab}, {state.hidden.shape[-1]}"
            )
        return order_inputs(state.x, state.masked, state.logits, state.hidden, state.step, state.budget)

    def select(self, state: StepState) -> Tensor:
        """Positions to reveal: (B, L) bool subset of ``state.masked``, at least one per unfinished row."""
        if state.step >= state.budget - 1:
            return state.masked.clone()
        inputs = self._inputs(state)
        with torch.no_grad():
            if self.decode == "sample":
                return self.reveal_policy.sample(self.policy, inputs, state.generator).reveal
            return self.reveal_policy.decode(self.policy, inputs, self.threshold)


@register_sampler
class LearnedCountsSampler(LearnedSampler):
    """Ablation of the learned order: reveal as *many* positions as the policy would, but uniformly random *which*.

    It separates the policy's count schedule (including finishing early) from its choice of positions: if it
    does as well as ``learned``, the positions the policy picks do not matter.
    """

    name: ClassVar[str] = "learned_counts"

    def select(self, state: StepState) -> Tensor:
        """The learned count per row, at uniformly random masked positions."""
        counts = super().select(state).sum(-1)  # (B,)
        noise = torch.rand(state.masked.shape, generator=state.generator)
        return select_top_k(noise, state.masked, counts)
