"""Heuristic priors of the sequential policies: a fresh policy with a prior decodes exactly as the heuristic
sampler does (on a denoiser whose confidences spread over (0, 1)), its network's outputs move it away from the
heuristic, it round-trips through a checkpoint, reward training moves it where the heuristic is wrong, and bad
settings are refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from merlin_mdm.cli.main import cli  # noqa: E402
from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig  # noqa: E402
from merlin_mdm.mdm.order import OrderTrainConfig, load_policy, save_policy, train_order  # noqa: E402
from merlin_mdm.mdm.order.networks import OrderNet, OrderNetConfig, StepEncoding  # noqa: E402
from merlin_mdm.mdm.order.training import build_networks  # noqa: E402
from merlin_mdm.mdm.samplers import make_sampler  # noqa: E402
from merlin_mdm.mdm.samplers.base import Sampler, StepState, generate  # noqa: E402
from merlin_mdm.mdm.samplers.learned import LearnedSampler  # noqa: E402
from merlin_mdm.mdm.tasks import make_task  # noqa: E402
from tests.unit.mdm.test_order_sequential import HIDDEN, KINDS, TASK, A, P, V, _BlocksDenoiser  # noqa: E402

pytestmark = pytest.mark.torch

ARITH = make_task("arith", n_ops=2, max_value=9)
HEURISTICS = [("threshold", "tau", 0.9), ("threshold", "tau", 0.5), ("eb", "gamma", 0.1), ("eb", "gamma", 1.0)]


@pytest.fixture(scope="module")
def sharp_denoiser() -> Denoiser:
    """An untrained denoiser with its head scaled up: confidences spread over (0, 1), so every heuristic has close
    decisions to make at every step."""
    torch.manual_seed(0)
    cfg = DenoiserConfig(vocab_size=ARITH.vocab_size, seq_len=ARITH.seq_len, mask_id=ARITH.mask_id, d_model=32,
                         n_layers=1, n_heads=2, d_ff=64, dropout=0.0)
    model = Denoiser(cfg).eval()
    with torch.no_grad():
        model.head.weight.mul_(30.0)
    return model


class _Sizes(Sampler):
    """Wraps a sampler and records how many positions it reveals per row and step (not registered)."""

    name = "sizes"

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self.sizes: list[int] = []

    def knobs(self):
        return {}

    def select(self, state: StepState) -> torch.Tensor:
        chosen = self.inner.select(state)
        self.sizes += chosen.sum(-1).tolist()
        return chosen


def _prior_policy(kind: str, prior: str, knob: str, value: float, seed: int = 0) -> OrderNet:
    config = OrderTrainConfig(budget=4, objective="reward", policy_kind=kind, prior=prior, prior_knobs=((knob, value),),
                              prior_scale=2.0, d_model=16, seed=seed)
    return build_networks(config, ARITH.vocab_size, ARITH.seq_len, 32)[0].eval()


def _generate(model, sampler: Sampler, budget: int):
    prompts = ARITH.sample_split(200, torch.Generator().manual_seed(5), "eval")[:, : ARITH.prompt_len]
    with torch.no_grad():
        return generate(model, prompts, ARITH.answer_len, sampler, budget, torch.Generator().manual_seed(6))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("prior", "knob", "value"), HEURISTICS)
def test_a_fresh_policy_with_a_prior_decodes_exactly_as_its_heuristic(sharp_denoiser, kind, prior, knob, value):
    heuristic = _Sizes(make_sampler(prior, **{knob: value}))
    learned = LearnedSampler.from_policy(_prior_policy(kind, prior, knob, value, seed=3), kind=kind)
    for budget in (3, 8):
        want, got = _generate(sharp_denoiser, heuristic, budget), _generate(sharp_denoiser, learned, budget)
        assert torch.equal(got.tokens, want.tokens)
        assert torch.equal(got.nfe, want.nfe)
        assert torch.equal(got.reveal_step, want.reveal_step)
    early = heuristic.sizes[: len(heuristic.sizes) // 4]
    assert min(early) == 1 and max(early) > 1  # not a degenerate case: one position at some steps, several at others


@pytest.mark.parametrize("kind", KINDS)
def test_the_network_moves_the_policy_away_from_its_prior(sharp_denoiser, kind):
    net = _prior_policy(kind, "threshold", "tau", 0.5)
    with torch.no_grad():
        net.stop.bias.fill_(100.0)  # stop is always the most likely option once one position is chosen
    learned = _Sizes(LearnedSampler.from_policy(net, kind=kind))
    out = _generate(sharp_denoiser, learned, 8)
    assert set(learned.sizes[: 7 * 200]) == {1}  # one position per step but the last (200 rows, 27 to reveal)
    assert torch.equal(out.nfe, torch.full_like(out.nfe, 8))
    alone = _Sizes(make_sampler("threshold", tau=0.5))
    _generate(sharp_denoiser, alone, 8)
    assert max(alone.sizes[:200]) > 1  # the prior alone reveals several positions at once


def test_the_prior_round_trips_through_a_checkpoint(tmp_path, sharp_denoiser):
    net = _prior_policy("sequential-onepass", "eb", "gamma", 0.3)
    save_policy(tmp_path / "pol", net, None, {"budget": 4}, kind="sequential-onepass")
    loaded = load_policy(tmp_path / "pol")
    assert (loaded.policy.config.prior, loaded.policy.config.prior_knobs) == ("eb", (("gamma", 0.3),))
    assert loaded.policy.config.prior_scale == 2.0
    want = _generate(sharp_denoiser, make_sampler("eb", gamma=0.3), 6)
    got = _generate(sharp_denoiser, make_sampler("learned", policy_dir=str(tmp_path / "pol")), 6)
    assert torch.equal(got.tokens, want.tokens)


def test_a_separate_stop_scale_sharpens_the_stop_and_leaves_the_picks_alone(tmp_path):
    # EB gamma 0.1 with zero network outputs: P(stop) = sigmoid(stop_scale x margin), picks softmax(scale x key)
    config = OrderNetConfig(vocab_size=5, seq_len=4, hidden_dim=3, stop_head=True, prior="eb",
                            prior_knobs=(("gamma", 0.1),), prior_scale=1.0, prior_stop_scale=30.0, init_scale=0.0)
    net = OrderNet(config)
    keys = torch.tensor([[-0.05, -0.3, -0.9, -0.02]])  # minus entropies (nats)
    masked = torch.ones(1, 4, dtype=torch.bool)
    chosen = torch.tensor([[False, False, False, True]])  # 0.02 nats chosen: margin -0.08, so EB goes on
    encoding = StepEncoding(masked, None, None, prior_keys=keys)
    out, stop = net._with_prior(encoding, chosen, torch.zeros(1, 4), torch.zeros(1))
    assert stop is not None
    probs = torch.softmax(torch.cat([out.masked_fill(chosen, float("-inf")), stop[:, None]], -1), -1)[0]
    assert float(probs[-1]) == pytest.approx(float(torch.sigmoid(torch.tensor(30.0 * -0.08 - 30.0 * 1e-6))), rel=1e-4)
    picks = probs[:3] / probs[:3].sum()
    assert torch.allclose(picks, torch.softmax(keys[0, :3], -1), atol=1e-6)  # scale 1: the stop scale is not in it
    assert replace(config, prior_stop_scale=None).stop_scale == 1.0  # unset: the pick scale
    save_policy(tmp_path / "pol", net, None, {"budget": 4}, kind="sequential-onepass")
    assert load_policy(tmp_path / "pol").policy.config.stop_scale == 30.0
    with pytest.raises(MdmError, match="must be > 0"):
        replace(config, prior_stop_scale=0.0)
    with pytest.raises(MdmError, match="need --prior"):
        OrderTrainConfig(budget=2, objective="reward", policy_kind="sequential", prior_stop_scale=30.0)


def _blocks_score(net: OrderNet, kind: str) -> float:
    prompts = TASK.sample_split(600, torch.Generator().manual_seed(9), "eval")[:, :P]
    out = generate(_BlocksDenoiser(), prompts, A, LearnedSampler.from_policy(net, kind=kind), 2,
                   torch.Generator().manual_seed(9))
    return float(TASK.score(out.tokens).float().mean())


def test_reward_training_corrects_the_prior_where_the_heuristic_is_wrong():
    # random-layout blocks at T = 2: every digit is uniform at the first step (confidence 0.1), so threshold
    # tau 0.9 reveals one position, then the rest at once: two members of an uncovered block clash. At scale 0.3
    # the prior stops after one pick with probability sigmoid(0.3 x 4.39) = 0.79, so rollouts explore (at
    # scale 1, 0.988: 120 and 300 iterations both left it at 40%).
    config = OrderTrainConfig(budget=2, objective="reward", policy_kind="sequential", prior="threshold",
                              prior_knobs=(("tau", 0.9),), prior_scale=0.3, rollouts=4, batch_size=16,
                              iterations=120, d_model=16, lr_policy=1e-2)
    before = build_networks(config, V, P + A, HIDDEN)[0].eval()
    result = train_order(_BlocksDenoiser(), TASK, HIDDEN, config)
    assert _blocks_score(before, "sequential") < 0.2
    assert _blocks_score(result.policy.eval(), "sequential") > 0.9


def test_bad_prior_settings_are_refused(tmp_path):
    with pytest.raises(MdmError, match="unknown order prior 'nope'"):
        OrderNetConfig(vocab_size=5, seq_len=4, hidden_dim=3, stop_head=True, prior="nope")
    with pytest.raises(MdmError, match="tau must be in"):
        OrderNetConfig(vocab_size=5, seq_len=4, hidden_dim=3, stop_head=True, prior="threshold",
                       prior_knobs=(("tau", 1.5),))
    with pytest.raises(MdmError, match="needs a stop head"):
        OrderNetConfig(vocab_size=5, seq_len=4, hidden_dim=3, prior="eb")
    with pytest.raises(MdmError, match="needs a sequential policy kind"):
        OrderTrainConfig(budget=2, objective="reward", policy_kind="bernoulli", prior="eb")
    with pytest.raises(MdmError, match="need --prior"):
        OrderTrainConfig(budget=2, objective="reward", policy_kind="sequential", prior_scale=3.0)
    first = OrderTrainConfig(budget=2, objective="reward", policy_kind="sequential", prior="eb", d_model=16)
    save_policy(tmp_path / "pol", build_networks(first, V, P + A, HIDDEN)[0], None, {}, kind="sequential")
    other = OrderTrainConfig(budget=2, objective="reward", policy_kind="sequential", prior="threshold",
                             init_policy=str(tmp_path / "pol"), d_model=16)
    with pytest.raises(MdmError, match="has the prior eb"):
        build_networks(other, V, P + A, HIDDEN)
    result = CliRunner().invoke(cli, ["mdm", "train-order", "--denoiser", str(tmp_path), "--budget", "2",
                                      "--out", str(tmp_path / "x"), "--prior-knob", "tau=0.9"])
    assert result.exit_code != 0 and "need --prior" in result.output and "Traceback" not in result.output



def test_the_method_label_names_the_prior_and_its_scales_other_than_one():
    from types import SimpleNamespace

    from merlin_mdm.mdm.evaluation import _policy_attrs

    def label(**train) -> str:
        config = OrderTrainConfig(budget=5, objective="reward", policy_kind="sequential-onepass", **train)
        meta = {"budget": 5, "train_config": config.to_dict()}
        sampler = SimpleNamespace(name="learned", decode="threshold", meta=meta)
        return str(_policy_attrs(sampler)["method"])

    assert "prior=threshold[tau=0.95], prior_scale=0.3" in label(prior="threshold", prior_knobs=(("tau", 0.95),),
                                                                  prior_scale=0.3)
    assert "prior=eb[gamma=0.1])" in label(prior="eb", prior_knobs=(("gamma", 0.1),))
    assert "prior=eb[gamma=0.045], prior_stop_scale=30)" in label(prior="eb", prior_knobs=(("gamma", 0.045),),
                                                                 prior_stop_scale=30.0)
    assert "prior" not in label()
