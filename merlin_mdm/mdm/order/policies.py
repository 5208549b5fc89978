"""How a policy network turns one step's features into a reveal set: a registered strategy per policy kind.

A policy kind says how the order network is shaped and how its outputs become a set of positions to reveal at
one denoiser step. Training (the ``reward`` objective), the ``learned`` sampler and the checkpoint only call
this small interface, so a new kind is one registered class:

* ``network_config``: the order network's shape for this kind (extra inputs, stop head);
* ``sample``: draw a reveal set with the log-probability of the draw (differentiable, for REINFORCE);
* ``decode``: a deterministic reveal set for evaluation (thresholded);
* ``imitation_loss``: how far the policy is from revealing a teacher's set (the ``imitate`` objective).

Three kinds are registered:

* ``bernoulli``: independent Bernoulli(p_i = sigmoid(a_i)) per masked position, conditioned on revealing at
  least one (:mod:`.bernoulli`). Its decisions are factorised: positions that look the same to the network
  (e.g. the positions of one coupled block at the first step) cannot be told apart, so it cannot reveal
  *exactly one* of them.
* ``sequential``: autoregressive within a step. The policy picks masked positions one at a time; every pick
  re-runs the network with one more input per position, "already chosen at this step", and reads per-position
  logits plus a stop logit (pooled over positions). Each pick is a softmax over the masked positions not yet
  chosen and, once at least one is chosen, "stop"; when every masked position is chosen the step ends. The
  log-probability of a draw is the sum of its pick and stop log-probabilities, i.e. the probability of the
  *sequence* of picks, which is the action REINFORCE needs (the probability of the revealed *set* sums this
  over the orders that lead to it). The extra input lets it break ties: after one position of a block is
  chosen, the others can be scored down. The ``reward`` objective trains it; the ``imitate`` objective clones a
  teacher sampler by turning each teacher set into a pick sequence (the denoiser's most confident position
  first, then "stop" unless the set is everything left) and maximising that sequence's log-probability with
  the "already chosen" inputs set as the policy itself would see them (teacher forcing).
* ``sequential-onepass``: the same picks, stop decision and imitation, with the "already chosen" flags read after
  the network's transformer, which then runs once per step instead of once per pick
  (:class:`SequentialOnePassPolicy`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, TypeVar

import torch
from torch import Tensor
from torch.nn import functional as F

from merlin_mdm.errors import MdmError
from merlin_mdm.mdm.order.bernoulli import policy_log_prob, sample_policy, threshold_policy
from merlin_mdm.mdm.order.features import CONFIDENCE_COLUMN, OrderInputs
from merlin_mdm.mdm.order.networks import OrderNet, OrderNetConfig, StepEncoding
from merlin_mdm.mdm.registry import build

__all__ = [
    "DEFAULT_POLICY_KIND",
    "POLICY_KINDS",
    "BernoulliPolicy",
    "PolicyDraw",
    "RevealPolicy",
    "SequentialOnePassPolicy",
    "SequentialPolicy",
    "make_reveal_policy",
    "pick_ranks",
    "register_policy_kind",
]

DEFAULT_POLICY_KIND = "bernoulli"  # what a checkpoint without a recorded kind holds


class PolicyDraw(NamedTuple):
    """A reveal set drawn from the policy.

    Attributes:
        reveal: (B, L) bool subset of the masked positions; at least one where anything is masked.
        log_prob: (B,) log-probability of the draw (0 for rows with nothing masked), differentiable.
        pick_rank: (B, L) long, for sequential draws the 0-based pick at which each position was chosen (-1 where
            not chosen); None for a Bernoulli draw (no order).
    """

    reveal: Tensor
    log_prob: Tensor
    pick_rank: Tensor | None = None


class RevealPolicy(ABC):
    """A policy kind: the network's shape and the rule turning its outputs into reveal sets (stateless)."""

    kind: ClassVar[str]
    imitation_figure: ClassVar[str] = "nll_per_token"  # the name :meth:`imitation_loss` is logged under

    def network_config(self, vocab_size: int, seq_len: int, hidden_dim: int, d_model: int, n_layers: int,
                       n_heads: int) -> OrderNetConfig:
        """The shape of this kind's order network: the common shape plus :meth:`network_extras`."""
        return OrderNetConfig(vocab_size=vocab_size, seq_len=seq_len, hidden_dim=hidden_dim, d_model=d_model,
                              n_layers=n_layers, n_heads=n_heads, **self.network_extras(d_model))

    def network_extras(self, d_model: int) -> dict[str, Any]:
        """Fields of :class:`OrderNetConfig` this kind sets beyond the common shape (none by default)."""
        return {}

    @abstractmethod
    def sample(self, net: OrderNet, inputs: OrderInputs, generator: torch.Generator | None) -> PolicyDraw:
        """Draw a reveal set and its log-probability (gradients flow into ``net``)."""

    @abstractmethod
    def decode(self, net: OrderNet, inputs: OrderInputs, threshold: float) -> Tensor:
        """Deterministic reveal set for evaluation: (B, L) bool, at least one per row with anything masked."""

    @abstractmethod
    def imitation_loss(self, net: OrderNet, inputs: OrderInputs, reveal: Tensor) -> Tensor:
        """Scalar, differentiable: the sum over rows of how far the policy is from revealing ``reveal``.

        Args:
            net: the policy network.
            inputs: the step's features.
            reveal: (B, L) bool, the teacher's reveal set (a subset of ``inputs.masked``, non-empty where anything
                is masked).
        """


POLICY_KINDS: dict[str, type[RevealPolicy]] = {}

_P = TypeVar("_P", bound=type[RevealPolicy])


def register_policy_kind(cls: _P) -> _P:
    """Class decorator adding ``cls`` to :data:`POLICY_KINDS` under ``cls.kind``."""
    POLICY_KINDS[cls.kind] = cls
    return cls


def make_reveal_policy(kind: str) -> RevealPolicy:
    """The registered policy kind called ``kind``.

    Raises:
        MdmError: unknown kind (the message lists the registered ones).
    """
    return build("order policy kind", POLICY_KINDS, kind, {})


@register_policy_kind
class BernoulliPolicy(RevealPolicy):
    """Independent Bernoulli per masked position, conditioned on revealing at least one (the paper's policy)."""

    kind: ClassVar[str] = "bernoulli"
    imitation_figure: ClassVar[str] = "bce_per_token"

    def sample(self, net: OrderNet, inputs: OrderInputs, generator: torch.Generator | None) -> PolicyDraw:
        """Exact draw from the conditioned Bernoulli (:func:`.bernoulli.sample_policy`)."""
        logits = net(inputs)  # (B, L)
        reveal = sample_policy(logits.detach(), inputs.masked, generator)
        return PolicyDraw(reveal, policy_log_prob(logits, inputs.masked, reveal))

    def decode(self, net: OrderNet, inputs: OrderInputs, threshold: float) -> Tensor:
        """Reveal p_i >= threshold, or the single most likely position."""
        return threshold_policy(net(inputs), inputs.masked, threshold)

    def imitation_loss(self, net: OrderNet, inputs: OrderInputs, reveal: Tensor) -> Tensor:
        """Binary cross-entropy of each masked position's reveal decision, summed."""
        return F.binary_cross_entropy_with_logits(net(inputs)[inputs.masked], reveal[inputs.masked].float(),
                                                  reduction="sum")


def pick_ranks(reveal: Tensor, priority: Tensor) -> Tensor:
    """The pick sequence that reveals a set: its positions in decreasing ``priority`` (ties: leftmost first).

    Args:
        reveal: (B, L) bool, the set.
        priority: (B, L) float.

    Returns:
        (B, L) long, the 0-based pick at which each position of the set is chosen, -1 outside it (the format of
        :attr:`PolicyDraw.pick_rank`).
    """
    order = torch.sort(priority.masked_fill(~reveal, float("-inf")), dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1]).expand_as(order))  # (B, L)
    return torch.where(reveal, ranks, torch.full_like(ranks, -1))


# picks one option per row from log-probabilities (n, L + 1) (the last column is "stop"): (n,) long
_Chooser = Callable[[Tensor], Tensor]


@register_policy_kind
class SequentialPolicy(RevealPolicy):
    """Pick masked positions one at a time, re-reading the state with "already chosen" flags, until stop."""

    kind: ClassVar[str] = "sequential"

    def network_extras(self, d_model: int) -> dict[str, Any]:
        """The "chosen" flag as an extra input, a stop logit, the pairwise term with the chosen positions, and the
        hidden state relative to the other masked positions (:func:`.networks.relative_hidden`)."""
        return {"extra_dim": 1, "stop_head": True, "pair_dim": d_model, "relative_hidden": True}

    def sample(self, net: OrderNet, inputs: OrderInputs, generator: torch.Generator | None) -> PolicyDraw:
        """Draw picks from the softmax over (unchosen masked positions, stop) until stop or nothing is left."""
        def draw(log_p: Tensor) -> Tensor:
            return torch.multinomial(log_p.detach().exp(), 1, generator=generator).squeeze(1)

        return self._picks(net, inputs, draw)

    def decode(self, net: OrderNet, inputs: OrderInputs, threshold: float) -> Tensor:
        """Stop once P(stop) >= threshold (after at least one pick); otherwise pick the most likely position."""
        def greedy(log_p: Tensor) -> Tensor:
            best = log_p[:, :-1].argmax(-1)  # (n,)
            stop = log_p[:, -1].exp() >= threshold
            return torch.where(stop, torch.full_like(best, log_p.shape[1] - 1), best)

        with torch.no_grad():
            return self._picks(net, inputs, greedy).reveal

    def imitation_loss(self, net: OrderNet, inputs: OrderInputs, reveal: Tensor) -> Tensor:
        """Negative log-probability of the teacher's set picked in the denoiser's confidence order, then "stop"."""
        ranks = pick_ranks(reveal & inputs.masked, inputs.scalars[..., CONFIDENCE_COLUMN])
        return -self.sequence_log_prob(net, inputs, ranks).sum()

    def sequence_log_prob(self, net: OrderNet, inputs: OrderInputs, pick_rank: Tensor) -> Tensor:
        """Log-probability of a given pick sequence, as :meth:`sample` would have drawn it (teacher forcing).

        Args:
            net: the policy network.
            inputs: the step's features.
            pick_rank: (B, L) long, the 0-based pick of each chosen position, -1 elsewhere (chosen positions must
                be masked, ranked 0..n-1, at least one where anything is masked). The sequence ends with "stop"
                unless it chose every masked position.

        Returns:
            (B,) float, differentiable; 0 for rows with nothing masked.
        """
        chosen_all = pick_rank >= 0  # (B, L)
        if bool((chosen_all & ~inputs.masked).any()):
            raise MdmError("sequential policy: a pick sequence chooses a position that is not masked")
        count = chosen_all.sum(-1)  # (B,)
        decisions = count + (inputs.masked & ~chosen_all).any(-1).long()  # picks, plus "stop" if anything is left
        log_prob = torch.zeros(pick_rank.shape[0], device=pick_rank.device)
        encoding = net.encode(inputs)
        for k in range(int(decisions.max()) if decisions.numel() else 0):
            rows = (decisions > k).nonzero().squeeze(1)  # (n,) rows taking their k-th decision
            ranks = pick_rank[rows]  # (n, L)
            before = (ranks >= 0) & (ranks < k)  # (n, L) the first k picks: "already chosen" at this decision
            log_p = self._pick_log_probs(net, encoding.select(rows), before)  # (n, L + 1)
            target = torch.where(count[rows] > k, (ranks == k).long().argmax(-1), log_p.shape[1] - 1)  # (n,)
            log_prob = log_prob.index_add(0, rows, log_p.gather(1, target[:, None]).squeeze(1))
        return log_prob

    @staticmethod
    def _pick_log_probs(net: OrderNet, encoding: StepEncoding, chosen: Tensor) -> Tensor:
        """Log-probabilities (n, L + 1) of the next decision given the positions already ``chosen`` (n, L): each
        masked position not yet chosen, and (last column) "stop" once something is chosen."""
        logits, stop = net.pick_scores(encoding, chosen)
        if stop is None:
            raise MdmError("sequential policy: the order network has no stop head (a Bernoulli policy?)")
        available = encoding.masked & ~chosen  # (n, L)
        logits = torch.where(available, logits, torch.full_like(logits, float("-inf")))
        stop = torch.where(chosen.any(-1), stop, torch.full_like(stop, float("-inf")))
        return torch.log_softmax(torch.cat([logits, stop[:, None]], -1), -1)

    @staticmethod
    def _picks(net: OrderNet, inputs: OrderInputs, choose: _Chooser) -> PolicyDraw:
        masked = inputs.masked
        batch, length = masked.shape
        chosen = torch.zeros_like(masked)
        rank = torch.full(masked.shape, -1, dtype=torch.long, device=masked.device)
        log_prob = torch.zeros(batch, device=masked.device)
        open_rows = masked.any(-1)  # (B,) rows still picking
        encoding = net.encode(inputs)
        while bool(open_rows.any()):
            rows = open_rows.nonzero().squeeze(1)  # (n,)
            log_p = SequentialPolicy._pick_log_probs(net, encoding.select(rows), chosen[rows])  # (n, L + 1)
            pick = choose(log_p)  # (n,)
            log_prob = log_prob.index_add(0, rows, log_p.gather(1, pick[:, None]).squeeze(1))
            stopped = pick == length
            picked = rows[~stopped]
            rank[picked, pick[~stopped]] = chosen[picked].sum(-1)
            chosen[picked, pick[~stopped]] = True
            open_rows = open_rows.clone()
            open_rows[rows[stopped]] = False
            open_rows &= (masked & ~chosen).any(-1)  # everything chosen: the step ends without a stop decision
        return PolicyDraw(chosen, log_prob, rank)


@register_policy_kind
class SequentialOnePassPolicy(SequentialPolicy):
    """The sequential policy with one network pass per step: "already chosen" is read after the transformer.

    The picks, the stop decision, decoding and imitation are the ``sequential`` kind's. Only where the flags enter
    differs (:meth:`.networks.OrderNet.pick_scores`): the transformer mixes the step's state once, and each pick
    re-reads only the head, i.e. each position's logit plus its pairwise term with the chosen positions, and a
    stop logit that also reads the chosen positions' mixed states. Attention never sees the flags, so what is
    already chosen can only act through those two terms; in exchange a step costs about one network pass
    instead of one per pick (the order networks took most of a reward iteration's time, docs/mdm.md).
    """

    kind: ClassVar[str] = "sequential-onepass"

    def network_extras(self, d_model: int) -> dict[str, Any]:
        """As ``sequential``, with the chosen flags read late (so no extra input)."""
        return {"extra_dim": 0, "stop_head": True, "pair_dim": d_model, "relative_hidden": True,
                "chosen_late": True}
