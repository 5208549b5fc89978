"""Issue 11's building blocks: disjoint splits, random-layout blocks, DUS, learned counts, budget-conditioned and
adaptive-compute order training."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig  # noqa: E402
from merlin_mdm.mdm.order import OrderNet, OrderNetConfig, OrderTrainConfig, save_policy, train_order  # noqa: E402
from merlin_mdm.mdm.order.training import rollout  # noqa: E402
from merlin_mdm.mdm.samplers import make_sampler  # noqa: E402
from merlin_mdm.mdm.samplers.base import StepState, generate  # noqa: E402
from merlin_mdm.mdm.tasks import make_task  # noqa: E402
from merlin_mdm.mdm.tasks.base import eval_mask  # noqa: E402
from merlin_mdm.mdm.tasks.blocks import COUP_ID, IND_ID, LABEL0_ID  # noqa: E402

pytestmark = pytest.mark.torch


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("name", "knobs"), [("blocks", {}), ("blocks", {"layout": "random"}),
                                             ("sudoku", {"n": 4, "blanks": 12}), ("arith", {}),
                                             ("addition", {})])
def test_train_and_eval_splits_are_disjoint_and_seeded(name, knobs) -> None:
    task = make_task(name, **knobs)
    train = task.sample_split(400, gen(0), "train")
    ev = task.sample_split(100, gen(0), "eval")
    assert train.shape == (400, task.seq_len) and ev.shape == (100, task.seq_len)
    assert not eval_mask(task.split_key(train)).any() and eval_mask(task.split_key(ev)).all()
    train_keys = {tuple(row) for row in task.split_key(train).tolist()}
    assert not train_keys & {tuple(row) for row in task.split_key(ev).tolist()}
    assert torch.equal(ev, task.sample_split(100, gen(0), "eval")) and task.score(ev).all()
    with pytest.raises(MdmError, match="split"):
        task.sample_split(1, gen(0), "test")


def test_the_split_hash_is_fixed() -> None:
    keys = torch.arange(40).view(20, 2)
    assert eval_mask(keys).nonzero().flatten().tolist() == eval_mask(keys.clone()).nonzero().flatten().tolist()
    assert 0 < int(eval_mask(torch.arange(2000).view(-1, 1)).sum()) < 2000 // 4  # about 1 in 8


def test_random_layout_blocks_score_and_oracle() -> None:
    task = make_task("blocks", nb=2, bl=2, layout="random")
    assert (task.prompt_len, task.answer_len, task.vocab_size, task.mask_id) == (4, 4, 15, 12)
    # one label per answer position, aligned with it: coupled block 1 at answer positions 0 and 2
    one = [LABEL0_ID + 1, IND_ID, LABEL0_ID + 1, IND_ID]
    two = [LABEL0_ID + 1, LABEL0_ID, LABEL0_ID + 1, LABEL0_ID]  # and coupled block 0 at 1 and 3
    x = torch.tensor([[*one, 3, 5, 3, 7],  # coupled block 1 = (3, 3): valid
                      [*one, 3, 5, 4, 5],  # block 1 = (3, 4): broken
                      [*two, 3, 5, 3, 5],  # both coupled blocks constant: valid
                      [*two, 3, 5, 3, 6]])  # block 0 = (5, 6): broken
    assert task.score(x).tolist() == [True, False, True, False]
    assert task.render(x[0]) == "C | 33 | 57" and task.render(x[2]) == "C C | 55 33 | "
    masked = torch.zeros_like(x, dtype=torch.bool)
    masked[:, 4:] = True
    picked = make_sampler("blocks_oracle").select(StepState(x.masked_fill(masked, 12), masked, None, None, 0, 2,
                                                            None, prompt_len=4))
    # row 0: positions 1, 3 independent, block 1 coupled -> only its first position 0; row 2: 0 and 1 first
    assert picked[0, 4:].tolist() == [True, True, False, True]
    assert picked[2, 4:].tolist() == [True, True, False, False]
    assert not picked[:, :4].any()
    drawn = task.sample(200, gen(0))
    assert task.score(drawn).all() and (drawn[:, :4] != COUP_ID).all()
    assert ((drawn[:, :4] >= LABEL0_ID).sum(-1) % 2 == 0).all()  # a coupled block labels both of its positions
    sudoku = make_task("sudoku", n=4, blanks=4).sample(2, gen(0))
    with pytest.raises(MdmError, match="blocks task"):
        make_sampler("blocks_oracle").select(StepState(sudoku, sudoku >= 0, None, None, 0, 2, None, prompt_len=16))


def test_dus_reveals_in_bit_reversal_order() -> None:
    task = make_task("blocks", nb=4, bl=4)
    x = torch.cat([torch.full((1, 4), IND_ID), torch.full((1, 16), task.mask_id)], dim=1)
    masked = x == task.mask_id
    picked = make_sampler("dus").select(StepState(x, masked, torch.zeros(1, 20, 13), None, 0, 4, None, 4))
    assert picked[0, 4:].nonzero().flatten().tolist() == [0, 4, 8, 12]


@pytest.fixture(scope="module")
def tiny():
    task = make_task("blocks", nb=2, bl=3)
    torch.manual_seed(0)
    cfg = DenoiserConfig(task.vocab_size, task.seq_len, task.mask_id, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    return task, Denoiser(cfg).eval()


def test_learned_counts_keeps_the_counts_and_changes_the_positions(tiny, tmp_path) -> None:
    task, den = tiny
    torch.manual_seed(1)
    net = OrderNet(OrderNetConfig(vocab_size=task.vocab_size, seq_len=task.seq_len, hidden_dim=16, d_model=8))
    with torch.no_grad():
        net.out.weight.normal_(0, 0.3)
    path = str(save_policy(tmp_path / "p", net.eval(), None, {"budget": 3}))
    prompts = task.sample(64, gen(5))[:, : task.prompt_len]
    x = torch.cat([prompts, torch.full((64, task.answer_len), task.mask_id)], dim=1)
    masked = x == task.mask_id
    out = den(x)
    state = StepState(x, masked, out.logits, out.hidden, 0, 3, gen(0), task.prompt_len)
    learned = make_sampler("learned", policy_dir=path, threshold=0.85).select(state)
    counts = make_sampler("learned_counts", policy_dir=path, threshold=0.85).select(state)
    assert 0 < int(learned.sum()) < int(masked.sum())
    assert torch.equal(learned.sum(-1), counts.sum(-1)) and not torch.equal(learned, counts)


def test_nfe_penalty_rollout_and_budget_conditioned_training(tiny) -> None:
    task, den = tiny
    cfg = OrderTrainConfig(budget=2, budgets=(2, 4), nfe_penalty=1.0, iterations=4, batch_size=4, rollouts=2,
                           d_model=8)
    assert cfg.all_budgets == (2, 4)
    result = train_order(den, task, 16, cfg)
    assert result.iterations == 4
    x0 = task.sample(4, gen(0)).repeat_interleave(2, 0)
    free = rollout(den, result.policy, result.posterior, x0, task.prompt_len, task.mask_id, 4, 0.1, gen(1), 2)
    paid = rollout(den, result.policy, result.posterior, x0, task.prompt_len, task.mask_id, 4, 0.1, gen(1), 2, 1.0)
    assert torch.equal(free.revealed, paid.revealed)  # same draws: the penalty changes values, not the rollout
    gap = (free.recon - paid.recon)[:, :-1]  # lambda * P(masks remain) in [0, 1] at non-final steps
    assert bool((gap >= 0).all()) and bool((gap <= 1.0 + 1e-6).all()) and bool((gap > 0).any())
    with pytest.raises(MdmError, match="budget"):
        OrderTrainConfig(budget=2, budgets=(1, 2))
    with pytest.raises(MdmError, match="nfe_penalty"):
        OrderTrainConfig(budget=2, nfe_penalty=-1.0)


def test_generate_with_a_learned_policy_may_stop_early(tiny, tmp_path) -> None:
    task, den = tiny
    torch.manual_seed(1)
    net = OrderNet(OrderNetConfig(vocab_size=task.vocab_size, seq_len=task.seq_len, hidden_dim=16, d_model=8))
    with torch.no_grad():
        net.out.bias.fill_(30.0)  # reveal everything at once
    path = str(save_policy(tmp_path / "eager", net.eval(), None, {"budget": 4}))
    prompts = task.sample(8, gen(2))[:, : task.prompt_len]
    result = generate(den, prompts, task.answer_len, make_sampler("learned", policy_dir=path), 4, gen(0))
    assert result.nfe.tolist() == [1] * 8


def test_method_labels_name_the_budgets_penalty_decoding_and_non_default_recipe(tiny, tmp_path) -> None:
    from merlin_mdm.mdm.evaluation import _policy_attrs

    task, _ = tiny
    net = OrderNet(OrderNetConfig(vocab_size=task.vocab_size, seq_len=task.seq_len, hidden_dim=16, d_model=8))
    config = OrderTrainConfig(budget=4, budgets=(2, 4), nfe_penalty=0.5, iterations=800, d_model=8, seed=3)
    meta = {"budget": 4, "budgets": [2, 4], "train_config": config.to_dict()}
    path = str(save_policy(tmp_path / "p", net.eval(), None, meta))
    attrs = _policy_attrs(make_sampler("learned", policy_dir=path, decode="sample"))
    assert attrs["method"] == "learned (T=2/4, tau=0.1, nfe_penalty=0.5, iterations=800, d_model=8, sample)"
    assert attrs["policy.seed"] == 3 and attrs["policy.budgets"] == "2|4"
    plain = OrderTrainConfig(budget=2)
    path2 = str(save_policy(tmp_path / "q", net.eval(), None, {"budget": 2, "train_config": plain.to_dict()}))
    assert _policy_attrs(make_sampler("learned_counts", policy_dir=path2))["method"] == "learned_counts (T=2, tau=0.1)"
