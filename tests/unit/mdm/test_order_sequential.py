"""The sequential reveal policy (picks positions one at a time within a step, then stops): its probabilities by
enumeration, its decoding, its checkpoint, reward training on a tiny random-layout blocks task, where it
must reveal exactly one position of each coupled block at the first of two steps, and sequence imitation of EB
(teacher-forced log-probability of the teacher's set in confidence order).

The stand-in denoiser knows the blocks task exactly: a masked digit of a coupled block with a revealed member
is that member's digit, every other masked digit is uniform. Its hidden state spells out each answer
position's label (as the prompt-aligned denoiser's does).
"""

from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace
from typing import NamedTuple

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.order import OrderTrainConfig, load_policy, save_policy, train_order  # noqa: E402
from merlin_mdm.mdm.order.checkpoint import POLICY_FILE  # noqa: E402
from merlin_mdm.mdm.order.features import CONFIDENCE_COLUMN, OrderInputs, order_inputs  # noqa: E402
from merlin_mdm.mdm.order.networks import OrderNet, OrderNetConfig  # noqa: E402
from merlin_mdm.mdm.order.policies import SequentialPolicy, make_reveal_policy, pick_ranks  # noqa: E402
from merlin_mdm.mdm.order.reward import reward_rollout  # noqa: E402
from merlin_mdm.mdm.order.training import build_networks  # noqa: E402
from merlin_mdm.mdm.samplers import make_sampler  # noqa: E402
from merlin_mdm.mdm.samplers.base import generate  # noqa: E402
from merlin_mdm.mdm.samplers.learned import LearnedSampler  # noqa: E402
from merlin_mdm.mdm.tasks import make_task  # noqa: E402
from merlin_mdm.mdm.tasks.blocks import IND_ID, LABEL0_ID  # noqa: E402

pytestmark = pytest.mark.torch

TASK = make_task("blocks", nb=3, bl=2, layout="random", p_coupled=1.0)  # three coupled blocks, scattered
P, A, V, MASK = TASK.prompt_len, TASK.answer_len, TASK.vocab_size, TASK.mask_id
HIDDEN = 5  # IND, labels 0-2, masked


class _Out(NamedTuple):
    logits: torch.Tensor
    hidden: torch.Tensor


class _BlocksDenoiser(nn.Module):
    """The exact conditional of random-layout blocks (digits uniform unless a block member is revealed)."""

    config = SimpleNamespace(mask_id=MASK)

    def forward(self, x):
        n = x.shape[0]
        labels, answer = x[:, :P], x[:, P:]  # (N, A) each
        logits = torch.full((n, P + A, V), -30.0)
        logits[:, P:, :10] = 0.0
        for i, j in itertools.permutations(range(A), 2):
            same = (labels[:, i] == labels[:, j]) & (labels[:, i] >= LABEL0_ID) & (answer[:, j] < 10)  # (N,)
            copy = nn.functional.one_hot(answer[:, j].clamp(max=9), 10).float() * 30.0  # (N, 10)
            logits[:, P + i, :10] = torch.where(same[:, None], copy, logits[:, P + i, :10])
        hidden = torch.zeros(n, P + A, HIDDEN)
        hidden[:, P:, 0] = (labels == IND_ID).float()
        for b in range(3):
            hidden[:, P:, 1 + b] = (labels == LABEL0_ID + b).float()
        hidden[:, P:, 4] = (answer == MASK).float()
        return _Out(logits, hidden)


KINDS = ("sequential", "sequential-onepass")  # the flags as an input to every pass, or read late (one pass a step)


def _config(**kw):
    base = {"budget": 2, "objective": "reward", "policy_kind": "sequential", "rollouts": 4, "batch_size": 16,
            "iterations": 80, "d_model": 16, "n_heads": 2, "lr_policy": 1e-2}
    return OrderTrainConfig(**{**base, **kw})


def _net(seed: int = 0, kind: str = "sequential") -> OrderNet:
    return build_networks(_config(seed=seed, policy_kind=kind), V, P + A, HIDDEN)[0]


def _first_step_inputs(n: int, seed: int = 0, masked_answer: list[bool] | None = None) -> OrderInputs:
    x0 = TASK.sample_split(n, torch.Generator().manual_seed(seed), "train")
    x = x0.clone()
    x[:, P:] = MASK
    masked = x == MASK
    if masked_answer is not None:  # reveal some answer positions (their true digits)
        keep = torch.tensor([False] * P + masked_answer)
        x = torch.where(keep | (x != MASK), x, x0)
        masked = masked & keep
    out = _BlocksDenoiser()(x)
    return order_inputs(x, masked, out.logits, out.hidden, 0, 2)


def _enumerate(net: OrderNet, inputs: OrderInputs) -> dict[tuple[int, ...], float]:
    """P(sequence of picks) for every pick sequence of row 0, straight from the definition."""
    masked = inputs.masked[0].tolist()
    out: dict[tuple[int, ...], float] = {}

    def walk(seq: tuple[int, ...], prob: float) -> None:
        chosen = torch.zeros(1, len(masked), dtype=torch.bool)
        chosen[0, list(seq)] = True
        with torch.no_grad():
            if net.config.chosen_late:  # the flags after the transformer: its pass does not depend on them
                logits, stop = net.pick_scores(net.encode(inputs), chosen)
            else:
                logits, stop = net.scores(inputs, chosen.float()[..., None], chosen)
        options = [i for i, m in enumerate(masked) if m and i not in seq]
        if not options:  # everything picked: the step ends
            out[seq] = prob
            return
        values = [float(logits[0, i]) for i in options] + ([float(stop[0])] if seq else [])
        log_z = math.log(sum(math.exp(v) for v in values))
        for i, v in zip(options, values, strict=False):
            walk((*seq, i), prob * math.exp(v - log_z))
        if seq:
            out[seq] = prob * math.exp(values[-1] - log_z)

    walk((), 1.0)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_is_the_enumerated_probability_of_the_pick_sequence_and_draws_follow_it(kind):
    torch.manual_seed(3)
    net = _net(seed=3, kind=kind)
    for param in net.parameters():  # make the distribution far from uniform, so a wrong bookkeeping shows
        param.data += 0.5 * torch.randn_like(param)
    one = _first_step_inputs(1, seed=1, masked_answer=[True, False, True, False, True, False])
    table = _enumerate(net, one)
    assert sum(table.values()) == pytest.approx(1.0, abs=1e-6)
    n = 6000
    batch = OrderInputs(*(field.expand(n, *field.shape[1:]) for field in one))
    draw = make_reveal_policy(kind).sample(net, batch, torch.Generator().manual_seed(0))
    assert draw.pick_rank is not None
    counts: dict[frozenset[int], int] = {}
    for row in range(n):
        ranks = draw.pick_rank[row].tolist()
        seq = tuple(sorted((r, i) for i, r in enumerate(ranks) if r >= 0))
        order = tuple(i for _, i in seq)
        assert set(order) == set(draw.reveal[row].nonzero().flatten().tolist())
        assert float(draw.log_prob[row].detach().exp()) == pytest.approx(table[order], rel=1e-4)
        counts[frozenset(order)] = counts.get(frozenset(order), 0) + 1
    by_set: dict[frozenset[int], float] = {}
    for order, prob in table.items():
        by_set[frozenset(order)] = by_set.get(frozenset(order), 0.0) + prob
    assert len(by_set) == 7  # the non-empty subsets of 3 positions
    for subset, prob in by_set.items():
        se = math.sqrt(prob * (1 - prob) / n)
        assert abs(counts.get(subset, 0) / n - prob) < 4 * se + 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_sampling_never_returns_an_empty_set_and_stays_inside_the_masked_positions(kind):
    net = _net(kind=kind)
    inputs = _first_step_inputs(300, seed=2)
    masked = inputs.masked.clone()
    masked[:100, P + 1 :] = False  # one masked position left
    masked[100:110] = False  # nothing left to reveal
    inputs = inputs._replace(masked=masked)
    for seed in range(5):
        draw = make_reveal_policy(kind).sample(net, inputs, torch.Generator().manual_seed(seed))
        assert not bool((draw.reveal & ~masked).any())
        assert bool((draw.reveal.sum(-1) >= 1)[masked.any(-1)].all())
        assert not bool(draw.reveal[100:110].any()) and bool((draw.log_prob[100:110] == 0).all())
        assert bool(draw.reveal[:100, P].all())  # the only choice, and the step ends there


@pytest.mark.parametrize("kind_name", KINDS)
def test_thresholded_decoding_is_deterministic_and_does_not_depend_on_the_batch(kind_name):
    net = _net(seed=1, kind=kind_name)
    inputs = _first_step_inputs(50, seed=4)
    kind = make_reveal_policy(kind_name)
    a, b = kind.decode(net, inputs, 0.5), kind.decode(net, inputs, 0.5)
    assert torch.equal(a, b)
    assert bool((a.sum(-1) >= 1).all()) and not bool((a & ~inputs.masked).any())
    alone = kind.decode(net, OrderInputs(*(field[7:8] for field in inputs)), 0.5)
    assert torch.equal(alone[0], a[7])
    assert int(kind.decode(net, inputs, 0.01).sum()) == 50  # stop as soon as allowed: one pick per row


def test_checkpoint_round_trip_records_the_kind_and_format_1_files_still_load(tmp_path):
    net = _net(seed=2)
    save_policy(tmp_path / "seq", net, None, {"budget": 2}, kind="sequential")
    loaded = load_policy(tmp_path / "seq")
    assert loaded.kind == "sequential" and loaded.policy.config.stop_head
    assert json.loads((tmp_path / "seq" / "meta.json").read_text())["policy_kind"] == "sequential"
    assert all(torch.equal(x, y) for x, y in zip(net.parameters(), loaded.policy.parameters(), strict=True))
    inputs = _first_step_inputs(20, seed=5)
    kind = SequentialPolicy()
    assert torch.equal(kind.decode(net, inputs, 0.5), kind.decode(loaded.policy, inputs, 0.5))
    # a policy.pt written before policy kinds existed: format 1, no kind, no stop head -> a Bernoulli policy
    bern = build_networks(_config(policy_kind="bernoulli"), V, P + A, HIDDEN)[0]
    save_policy(tmp_path / "old", bern, None, {"budget": 2})
    blob = torch.load(tmp_path / "old" / POLICY_FILE, weights_only=True)
    del blob["policy_kind"]
    del blob["policy_config"]["stop_head"]
    blob["format"] = 1
    torch.save(blob, tmp_path / "old" / POLICY_FILE)
    old = load_policy(tmp_path / "old")
    assert old.kind == "bernoulli" and not old.policy.config.stop_head
    blob["format"], blob["policy_kind"] = 2, "telepathic"
    torch.save(blob, tmp_path / "old" / POLICY_FILE)
    with pytest.raises(MdmError, match="unknown order policy kind 'telepathic'"):
        load_policy(tmp_path / "old")


def test_the_elbo_objective_refuses_the_sequential_policy_and_init_kinds_must_match(tmp_path):
    with pytest.raises(MdmError, match="the elbo objective trains policy kinds bernoulli"):
        _config(objective="elbo")
    _config(objective="imitate")  # imitation trains either kind
    with pytest.raises(MdmError, match="kind 'psychic'; choose one of: bernoulli, sequential, sequential-onepass"):
        _config(policy_kind="psychic")
    save_policy(tmp_path / "bern", build_networks(_config(policy_kind="bernoulli"), V, P + A, HIDDEN)[0], None,
                {"budget": 2})
    with pytest.raises(MdmError, match="is a bernoulli policy, not sequential"):
        build_networks(_config(init_policy=str(tmp_path / "bern")), V, P + A, HIDDEN)


def _score(net: OrderNet, n: int = 1000, kind: str = "sequential") -> float:
    prompts = TASK.sample_split(n, torch.Generator().manual_seed(9), "eval")[:, :P]
    with torch.no_grad():
        trace = reward_rollout(_BlocksDenoiser(), net, prompts, A, MASK, 2, torch.Generator().manual_seed(9),
                               kind=make_reveal_policy(kind))
    return float(TASK.score(trace.tokens).float().mean())


@pytest.mark.parametrize("kind", KINDS)
def test_reward_training_teaches_the_sequential_policy_one_position_per_coupled_block(tmp_path, kind):
    before = _score(_net(kind=kind), kind=kind)
    # the onepass kind learns it too, more slowly: 80 iterations gave 74% / 96% on seeds 0 / 1, 160 gave >= 99.5%
    iterations = 160 if kind == "sequential-onepass" else 80
    result = train_order(_BlocksDenoiser(), TASK, HIDDEN, _config(policy_kind=kind, iterations=iterations))
    after = _score(result.policy, kind=kind)
    assert before < 0.5  # random picks: often two of one block, or none of the other
    assert after > 0.9 and after > before + 0.3
    save_policy(tmp_path / "pol", result.policy, None, {"budget": 2}, kind=kind)
    sampler = make_sampler("learned", policy_dir=str(tmp_path / "pol"))
    prompts = TASK.sample_split(400, torch.Generator().manual_seed(1), "eval")[:, :P]
    out = generate(_BlocksDenoiser(), prompts, A, sampler, 2, torch.Generator().manual_seed(1))
    assert float(TASK.score(out.tokens).float().mean()) > 0.9  # thresholded decoding in the sampling loop


def _ranks_of(order: tuple[int, ...], length: int) -> torch.Tensor:
    rank = torch.full((1, length), -1, dtype=torch.long)
    for k, i in enumerate(order):
        rank[0, i] = k
    return rank


@pytest.mark.parametrize("kind_name", KINDS)
def test_sequence_log_prob_is_the_enumerated_probability_of_every_pick_sequence_and_of_the_draws(kind_name):
    torch.manual_seed(5)
    net = _net(seed=5, kind=kind_name)
    for param in net.parameters():  # far from uniform, so that a wrong "already chosen" input or target shows
        param.data += 0.5 * torch.randn_like(param)
    one = _first_step_inputs(1, seed=3, masked_answer=[True, True, False, True, False, False])
    table = _enumerate(net, one)
    kind = make_reveal_policy(kind_name)
    assert isinstance(kind, SequentialPolicy)
    assert len(table) == 15  # 3 + 6 + 6 ordered sequences; the 6 of all three positions end without a stop
    for order, prob in table.items():
        log_p = kind.sequence_log_prob(net, one, _ranks_of(order, P + A)).detach()
        assert float(log_p.exp()) == pytest.approx(prob, rel=1e-5), order
    batch = _first_step_inputs(64, seed=6)
    batch = batch._replace(masked=batch.masked & (torch.arange(P + A) < P + 2 + torch.arange(64)[:, None] % 5))
    batch.masked[:3] = False  # rows with nothing masked: probability one, no decision
    draw = kind.sample(net, batch, torch.Generator().manual_seed(1))
    assert draw.pick_rank is not None
    forced = kind.sequence_log_prob(net, batch, draw.pick_rank)
    assert torch.allclose(forced, draw.log_prob, atol=1e-5) and bool((forced[:3] == 0).all())
    forced.sum().backward()  # differentiable in the network
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.parameters())
    with pytest.raises(MdmError, match="not masked"):
        kind.sequence_log_prob(net, one, _ranks_of((P + 1, P + 2), P + A))


def test_the_imitation_loss_is_the_teacher_set_picked_in_confidence_order_then_stop():
    net = _net(seed=6)
    for param in net.parameters():
        param.data += 0.5 * torch.randn_like(param)
    one = _first_step_inputs(1, seed=3, masked_answer=[True, True, False, True, False, False])
    conf = torch.zeros(1, P + A)
    conf[0, P:] = torch.tensor([0.2, 0.9, 0.0, 0.5, 0.0, 0.0])  # confidence order: P + 1, P + 3, P
    one = one._replace(scalars=one.scalars.clone())
    one.scalars[..., CONFIDENCE_COLUMN] = conf
    table, kind = _enumerate(net, one), SequentialPolicy()
    reveal = torch.zeros(1, P + A, dtype=torch.bool)
    reveal[0, [P, P + 3]] = True
    assert torch.equal(pick_ranks(reveal, conf), _ranks_of((P + 3, P), P + A))
    with torch.no_grad():
        assert float(kind.imitation_loss(net, one, reveal)) == pytest.approx(-math.log(table[(P + 3, P)]), rel=1e-5)
        everything = one.masked.clone()  # the whole masked set: no stop decision
        assert float(kind.imitation_loss(net, one, everything)) == pytest.approx(
            -math.log(table[(P + 1, P + 3, P)]), rel=1e-5)


def _agreement(policy: OrderNet, teacher, budget: int, n: int = 300, kind: str = "sequential") -> float:
    """Fraction of prompts on which the policy's thresholded decoding reveals exactly what the teacher does."""
    prompts = TASK.sample_split(n, torch.Generator().manual_seed(11), "eval")[:, :P]
    steps = []
    for sampler in (teacher, LearnedSampler.from_policy(policy, kind=kind)):
        out = generate(_BlocksDenoiser(), prompts, A, sampler, budget, torch.Generator().manual_seed(11))
        steps.append(out.reveal_step)
    return float((steps[0] == steps[1]).all(-1).float().mean())


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_imitation_of_eb_reproduces_its_teacher_set_by_set(kind):
    # EB at T=4 on coupled blocks: one digit, then each step the revealed digit's block mate (certain) and one
    # new digit; the policy must pick the mate first, then one new position, then stop: an adaptive set size.
    teacher = make_sampler("eb", gamma=0.1)
    config = _config(objective="imitate", teacher="eb", teacher_knobs=(("gamma", 0.1),), budget=4, iterations=60,
                     rollouts=2, policy_kind=kind)
    before = _agreement(_net(kind=kind), teacher, 4, kind=kind)
    result = train_order(_BlocksDenoiser(), TASK, HIDDEN, config, log_every=1)
    assert result.history[0]["teacher_nfe"] == 4.0
    assert result.history[-1]["nll_per_token"] < 0.2 * result.history[0]["nll_per_token"]
    assert before < 0.2
    assert _agreement(result.policy, teacher, 4, kind=kind) > 0.9


def _passes_per_draw(kind: str) -> tuple[int, int]:
    """(transformer passes, picks) of one sampled first step over 40 prompts."""
    net = _net(seed=7, kind=kind)
    passes = [0]
    assert net.mix is not None
    net.mix.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    draw = make_reveal_policy(kind).sample(net, _first_step_inputs(40, seed=8), torch.Generator().manual_seed(2))
    assert draw.pick_rank is not None
    return passes[0], int(draw.pick_rank.max()) + 1


def test_the_onepass_kind_runs_the_transformer_once_per_step_and_the_flags_reach_only_the_head():
    passes, picks = _passes_per_draw("sequential-onepass")
    assert passes == 1 and picks >= 2
    passes, picks = _passes_per_draw("sequential")
    assert passes >= picks >= 2  # one pass per pick (plus the stop decision's)
    net = _net(seed=9, kind="sequential-onepass")
    for param in net.parameters():
        param.data += 0.5 * torch.randn_like(param)
    inputs = _first_step_inputs(4, seed=9)
    none, some = torch.zeros_like(inputs.masked), inputs.masked & (torch.arange(P + A) == P)
    with torch.no_grad():
        encoding = net.encode(inputs)
        base, stop0 = net.pick_scores(encoding, none)
        scored, stop1 = net.pick_scores(encoding, some)
        mixed = net._mixed(inputs, None)  # the transformer's output, by hand
        pair = net.pair(mixed).chunk(2, dim=-1)
        by_hand = (pair[0] @ pair[1].transpose(1, 2) / net.config.pair_dim**0.5)[:, :, P]
        stop_by_hand = net.stop_chosen(mixed[:, P]).squeeze(-1) / (P + A)
    assert net.config.chosen_late and net.config.extra_dim == 0
    assert torch.allclose(scored - base, by_hand, atol=1e-5)  # choosing P moves the others by u_i . v_P only
    assert torch.allclose(stop1 - stop0, stop_by_hand, atol=1e-6) and bool((stop_by_hand != 0).all())
    with pytest.raises(MdmError, match="through encode and pick_scores"):
        net.scores(inputs, None, some)  # the flags cannot go in as an input


def test_a_onepass_policy_round_trips_and_its_config_rules_are_checked(tmp_path):
    net = _net(seed=4, kind="sequential-onepass")
    save_policy(tmp_path / "one", net, None, {"budget": 2}, kind="sequential-onepass")
    loaded = load_policy(tmp_path / "one")
    assert loaded.kind == "sequential-onepass" and loaded.policy.config.chosen_late
    inputs = _first_step_inputs(30, seed=6)
    kind = make_reveal_policy("sequential-onepass")
    assert torch.equal(kind.decode(net, inputs, 0.5), kind.decode(loaded.policy, inputs, 0.5))
    config = net.config.to_dict()
    for bad in ({"stop_head": False}, {"pair_dim": 0}, {"extra_dim": 1}):
        with pytest.raises(MdmError, match="chosen_late needs stop_head, pair_dim > 0 and no extra input"):
            OrderNetConfig(**{**config, **bad})
    blob = torch.load(tmp_path / "one" / POLICY_FILE, weights_only=True)
    blob["policy_config"]["from_the_future"] = 1
    torch.save(blob, tmp_path / "one" / POLICY_FILE)
    with pytest.raises(MdmError, match="network config not understood by this version"):
        load_policy(tmp_path / "one")
