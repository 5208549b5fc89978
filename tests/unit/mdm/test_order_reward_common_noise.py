"""Common random numbers for the token draws of the ``reward`` objective's rollouts (``common_token_noise``).

The stand-in "chain" denoiser has a high-entropy, state-dependent output: the logits at a masked answer cell are a
fixed random vector of the cell plus one for each revealed cell's token, so a cell's distribution depends on what
was revealed before it. The stand-in reveal kinds are deterministic (left to right) or draw a random first set,
so the tests can tell a shared state from a shared order.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.order import OrderTrainConfig  # noqa: E402
from merlin_mdm.mdm.order.features import OrderInputs  # noqa: E402
from merlin_mdm.mdm.order.policies import PolicyDraw, RevealPolicy  # noqa: E402
from merlin_mdm.mdm.order.reward import GroupTokenNoise, reward_rollout, token_rule  # noqa: E402

pytestmark = pytest.mark.torch

VOCAB, MASK, PROMPT, HIDDEN = 7, 6, 1, 4  # tokens 0..5, the mask is 6


class _Out(NamedTuple):
    logits: torch.Tensor
    hidden: torch.Tensor


class _ChainDenoiser(nn.Module):
    """logits[i] = base[i] + sum over revealed cells j of link[j, x_j, i] (answer cells; -inf at the mask)."""

    def __init__(self, answer: int, scale: float = 1.5) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(11)
        length = PROMPT + answer
        self.base = torch.randn(length, VOCAB, generator=g) * scale  # (L, V)
        self.link = torch.randn(length, VOCAB, length, VOCAB, generator=g) * scale  # (L, V, L, V)

    def forward(self, x):
        known = (x != MASK).float()  # (B, L)
        one_hot = nn.functional.one_hot(x, VOCAB).float() * known[..., None]  # (B, L, V)
        logits = self.base + torch.einsum("bjv,jvil->bil", one_hot, self.link)  # (B, L, V)
        logits[..., MASK] = float("-inf")
        hidden = torch.stack([known, x.float(), torch.ones_like(known), torch.zeros_like(known)], -1)
        return _Out(logits, hidden)


class _LeftToRight(RevealPolicy):
    """Reveals the first masked cell at every step: every rollout follows the same order."""

    kind = "left_to_right_test"

    def sample(self, net, inputs: OrderInputs, generator) -> PolicyDraw:
        first = inputs.masked.float().argmax(-1, keepdim=True)  # (B, 1)
        reveal = torch.zeros_like(inputs.masked).scatter_(-1, first, True) & inputs.masked
        return PolicyDraw(reveal, torch.zeros(reveal.shape[0]), None)

    def decode(self, net, inputs: OrderInputs, threshold: float):
        return self.sample(net, inputs, None).reveal

    def imitation_loss(self, net, inputs: OrderInputs, reveal):
        return torch.zeros(())


class _RandomFirstStep(_LeftToRight):
    """A random non-empty first set per row (rollouts of a group differ), then left to right; keeps the first set."""

    kind = "random_first_test"
    first: torch.Tensor | None = None

    def sample(self, net, inputs: OrderInputs, generator) -> PolicyDraw:
        if self.first is not None:
            return super().sample(net, inputs, generator)
        coin = torch.rand(inputs.masked.shape, generator=generator) < 0.5
        self.first = (coin & inputs.masked) | super().sample(net, inputs, generator).reveal
        return PolicyDraw(self.first, torch.zeros(coin.shape[0]), None)


def _tokens(kind, answer, groups, rollouts, common, temperature=1.0, seed=3):
    prompts = torch.zeros(groups * rollouts, PROMPT, dtype=torch.long)
    with torch.no_grad():
        trace = reward_rollout(_ChainDenoiser(answer), None, prompts, answer, MASK, answer,
                               torch.Generator().manual_seed(seed), temperature, rollouts, kind, common)
    assert not bool((trace.tokens == MASK).any())
    return trace.tokens[:, PROMPT:].view(groups, rollouts, answer)  # (G, K, A)


def _all_rows_equal(tokens):
    """(G,) bool: every rollout of the group generated the same answer."""
    return (tokens == tokens[:, :1]).all(-1).all(-1)


def test_rollouts_of_a_group_that_reveal_alike_draw_alike_only_with_common_noise():
    common = _tokens(_LeftToRight(), answer=5, groups=40, rollouts=4, common=True)
    independent = _tokens(_LeftToRight(), answer=5, groups=40, rollouts=4, common=False)
    assert bool(_all_rows_equal(common).all())
    assert float(_all_rows_equal(independent).float().mean()) < 0.2  # high entropy: independent rows differ


def test_a_cell_revealed_in_the_same_state_gets_the_same_token_even_when_the_orders_differ():
    kind = _RandomFirstStep()
    tokens = _tokens(kind, answer=5, groups=40, rollouts=4, common=True)  # (G, K, A)
    first = kind.first[:, PROMPT:].view(40, 4, 5)  # revealed at step 0, from the prompt alone
    both = first[:, :, None, :] & first[:, None, :, :]  # (G, K, K, A) revealed at step 0 by both rollouts
    same = tokens[:, :, None, :] == tokens[:, None, :, :]
    assert bool(both.any()) and bool(same[both].all())
    differ = (first[:, :1] != first).any(-1).any(-1)  # (G,) groups whose orders differ
    assert bool(differ.any()) and not bool(_all_rows_equal(tokens)[differ].all())  # later cells are not forced


def test_different_groups_get_independent_noise():
    tokens = _tokens(_LeftToRight(), answer=5, groups=40, rollouts=4, common=True)[:, 0]  # (G, A), same prompts
    assert len({tuple(row.tolist()) for row in tokens}) > 10  # one noise for all groups would give 1
    rule = GroupTokenNoise(1.0, torch.Generator().manual_seed(0), rollouts=3)
    rule(torch.zeros(6, 5, VOCAB))
    noise = rule.noise.view(2, 3, 5, VOCAB)
    assert torch.equal(noise[0, 0], noise[0, 2]) and torch.equal(noise[1, 0], noise[1, 1])
    assert not bool(torch.isclose(noise[0, 0], noise[1, 0]).any())


def _exact_joint(temperature):
    """P(a1, a2) of the left-to-right chain at ``temperature``: (V-1, V-1)."""
    den = _ChainDenoiser(2)
    p1 = torch.softmax(den(torch.tensor([[0, MASK, MASK]])).logits[0, 1, :MASK] / temperature, -1)
    x = torch.tensor([[0, a, MASK] for a in range(MASK)])
    p2 = torch.softmax(den(x).logits[:, 2, :MASK] / temperature, -1)  # (V-1, V-1) given a1
    return p1[:, None] * p2


def test_each_rollout_is_an_exact_draw_at_the_token_temperature():
    temperature, tol = 0.6, 0.03
    exact, wrong = _exact_joint(temperature), _exact_joint(1.0)
    assert float((exact - wrong).abs().sum()) / 2 > 3 * tol  # forgetting the temperature would fail
    tokens = _tokens(_LeftToRight(), answer=2, groups=20000, rollouts=2, common=True, temperature=temperature)
    rows = tokens[:, 1]  # one rollout per group: independent draws
    counts = torch.zeros(MASK, MASK).index_put_((rows[:, 0], rows[:, 1]), torch.ones(len(rows)), accumulate=True)
    assert float((counts / len(rows) - exact).abs().sum()) / 2 < tol  # total variation


def test_the_group_noise_is_gumbel_max_at_the_temperature_for_one_dominant_token():
    # One token above five equal ones: where a reflected noise (log(-log U)) or a forgotten temperature is far off.
    temperature, tol, groups = 0.6, 0.02, 20000
    logits = torch.tensor([0.0] * 5 + [0.9]).expand(2 * groups, 1, 6)  # (N, 1, V), K = 2
    rows = GroupTokenNoise(temperature, torch.Generator().manual_seed(2), rollouts=2)(logits)[1::2, 0]
    freq = torch.bincount(rows, minlength=6).float() / groups
    exact = torch.softmax(logits[0, 0] / temperature, -1)
    assert float((torch.softmax(logits[0, 0], -1) - exact).abs().sum()) / 2 > 3 * tol
    assert float((freq - exact).abs().sum()) / 2 < tol


def test_temperature_zero_is_argmax_and_draws_no_noise():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 5, VOCAB, generator=torch.Generator().manual_seed(1))
    state = gen.get_state()
    assert torch.equal(token_rule(0.0, gen, 3, True)(logits), logits.argmax(-1))
    assert torch.equal(gen.get_state(), state)


def test_common_token_noise_belongs_to_the_reward_objective():
    assert OrderTrainConfig(budget=2, objective="reward", common_token_noise=True).common_token_noise
    with pytest.raises(MdmError, match="common_token_noise couples the reward objective"):
        OrderTrainConfig(budget=2, objective="elbo", common_token_noise=True)
