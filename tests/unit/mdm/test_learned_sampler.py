"""The `learned` sampler: budget, at least one token per step, forced last step, determinism, knobs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig  # noqa: E402
from merlin_mdm.mdm.order import OrderNet, OrderNetConfig, save_policy  # noqa: E402
from merlin_mdm.mdm.samplers import SAMPLERS, make_sampler  # noqa: E402
from merlin_mdm.mdm.samplers.base import Sampler, StepState, generate  # noqa: E402
from merlin_mdm.mdm.samplers.learned import LearnedSampler  # noqa: E402
from merlin_mdm.mdm.tasks import make_task  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def task():
    return make_task("blocks", nb=2, bl=3)


@pytest.fixture(scope="module")
def denoiser(task):
    torch.manual_seed(0)
    cfg = DenoiserConfig(
        vocab_size=task.vocab_size,
        seq_len=task.seq_len,
        mask_id=task.mask_id,
        d_model=16,
        n_layers=1,
        n_heads=2,
        d_ff=32,
        dropout=0.0,
    )
    return Denoiser(cfg).eval()


def _policy(task, bias: float = 0.0) -> OrderNet:
    torch.manual_seed(1)
    net = OrderNet(OrderNetConfig(vocab_size=task.vocab_size, seq_len=task.seq_len, hidden_dim=16, d_model=8))
    with torch.no_grad():
        net.out.bias.fill_(bias)
    return net.eval()


@pytest.fixture()
def policy_dir(tmp_path, task):
    return str(save_policy(tmp_path / "policy", _policy(task), None, {"budget": 3}))


class _Recorder(Sampler):
    """Wraps a sampler and records what it chose at each step (not registered)."""

    name = "recorder"

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self.steps: list[tuple[torch.Tensor, torch.Tensor]] = []

    def knobs(self):
        return {}

    def select(self, state: StepState) -> torch.Tensor:
        chosen = self.inner.select(state)
        self.steps.append((state.masked.clone(), chosen.clone()))
        return chosen


def _prompts(task, n=16, seed=0):
    return task.sample(n, torch.Generator().manual_seed(seed))[:, : task.prompt_len]


def test_learned_is_registered_and_built_from_policy_dir(policy_dir):
    assert SAMPLERS["learned"] is LearnedSampler
    sampler = make_sampler("learned", policy_dir=policy_dir)
    assert sampler.knobs() == {"policy_dir": policy_dir, "decode": "threshold", "threshold": 0.5}
    assert sampler.meta["budget"] == 3


@pytest.mark.parametrize("decode", ["threshold", "sample"])
@pytest.mark.parametrize("budget", [1, 2, 3, 5])
def test_budget_one_token_per_step_and_forced_last_step(task, denoiser, policy_dir, decode, budget):
    rec = _Recorder(make_sampler("learned", policy_dir=policy_dir, decode=decode))
    result = generate(denoiser, _prompts(task), task.answer_len, rec, budget, torch.Generator().manual_seed(0))
    assert bool((result.nfe <= budget).all()) and bool((result.nfe >= 1).all())
    assert not bool((result.tokens == task.mask_id).any())
    for step, (masked, chosen) in enumerate(rec.steps):
        assert not bool((chosen & ~masked).any())
        assert bool(chosen.any(-1)[masked.any(-1)].all())
        if step == budget - 1:
            assert torch.equal(chosen, masked)


def test_select_itself_reveals_at_least_one_even_when_the_policy_says_no(task, denoiser, tmp_path):
    path = save_policy(tmp_path / "shy", _policy(task, bias=-30.0), None, {})
    sampler = make_sampler("learned", policy_dir=str(path))
    x = torch.full((4, task.seq_len), task.mask_id)
    x[:, : task.prompt_len] = _prompts(task, 4)
    out = denoiser(x)
    masked = x == task.mask_id
    state = StepState(
        x=x,
        masked=masked,
        logits=out.logits,
        hidden=out.hidden,
        step=0,
        budget=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(sampler.select(state).sum(-1), torch.ones(4, dtype=torch.long))
    last = StepState(
        x=x,
        masked=masked,
        logits=out.logits,
        hidden=out.hidden,
        step=3,
        budget=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(sampler.select(last), masked)


@pytest.mark.parametrize("decode", ["threshold", "sample"])
def test_deterministic_under_a_seed(task, denoiser, policy_dir, decode):
    def run(seed):
        sampler = make_sampler("learned", policy_dir=policy_dir, decode=decode)
        return generate(denoiser, _prompts(task), task.answer_len, sampler, 3, torch.Generator().manual_seed(seed))

    a, b = run(4), run(4)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.nfe, b.nfe)


def test_bad_knobs_and_mismatched_policy_are_reported(task, denoiser, policy_dir, tmp_path):
    with pytest.raises(MdmError, match="policy_dir"):
        make_sampler("learned")
    with pytest.raises(MdmError, match="decode"):
        make_sampler("learned", policy_dir=policy_dir, decode="greedy")
    with pytest.raises(MdmError, match="threshold"):
        make_sampler("learned", policy_dir=policy_dir, threshold=1.5)
    with pytest.raises(MdmError, match=r"policy\.pt is missing"):
        make_sampler("learned", policy_dir=str(tmp_path / "nowhere"))
    other = make_task("blocks", nb=3, bl=3)
    wrong = OrderNet(OrderNetConfig(vocab_size=other.vocab_size, seq_len=other.seq_len, hidden_dim=16, d_model=8))
    path = save_policy(tmp_path / "wrong", wrong, None, {})
    sampler = make_sampler("learned", policy_dir=str(path))
    with pytest.raises(MdmError, match="trained for sequences"):
        generate(denoiser, _prompts(task), task.answer_len, sampler, 2, torch.Generator().manual_seed(0))
