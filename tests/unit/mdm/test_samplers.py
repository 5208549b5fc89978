"""Every heuristic sampler through the real generation loop with a tiny untrained denoiser."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.model import Denoiser, DenoiserConfig  # noqa: E402
from merlin_mdm.mdm.samplers import (  # noqa: E402
    SAMPLERS,
    StepState,
    generate,
    make_sampler,
    reveal_counts,
    select_top_k,
)
from merlin_mdm.mdm.tasks import make_task  # noqa: E402

pytestmark = pytest.mark.torch

HEURISTICS = ["iid", "top_prob", "margin", "entropy", "threshold", "eb", "dus"]
TASK = make_task("blocks", nb=3, bl=4)


class Recorder(torch.nn.Module):
    """Wraps a model and records, per call, the number of masks of each row it was given."""

    def __init__(self, model: Denoiser) -> None:
        super().__init__()
        self.model, self.config, self.calls = model, model.config, []

    def forward(self, x):
        self.calls.append((x == self.config.mask_id).sum(-1).tolist())
        return self.model(x)


@pytest.fixture(scope="module")
def model() -> Denoiser:
    torch.manual_seed(0)
    cfg = DenoiserConfig(TASK.vocab_size, TASK.seq_len, TASK.mask_id, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    return Denoiser(cfg).eval()


def _run(model, name, budget, seed=0, n=6, **knobs):
    prompts = TASK.sample(n, torch.Generator().manual_seed(123))[:, : TASK.prompt_len]
    rec = Recorder(model)
    out = generate(rec, prompts, TASK.answer_len, make_sampler(name, **knobs), budget,
                   torch.Generator().manual_seed(seed))
    return prompts, rec, out


def test_every_heuristic_is_registered() -> None:
    assert set(HEURISTICS) <= set(SAMPLERS)


@pytest.mark.parametrize("name", HEURISTICS)
@pytest.mark.parametrize("budget", [1, 3, 5, 40])
def test_budget_progress_nfe_and_prompt(model, name, budget) -> None:
    prompts, rec, out = _run(model, name, budget)
    assert len(rec.calls) <= budget
    assert (out.tokens != TASK.mask_id).all()
    assert torch.equal(out.tokens[:, : TASK.prompt_len], prompts)
    assert (out.nfe <= budget).all() and (out.nfe >= 1).all()
    # Rows drop out of the batch when finished, so count calls per row by following mask counts.
    first = rec.calls[0]
    assert first == [TASK.answer_len] * len(prompts)
    assert int(out.nfe.sum()) == sum(len(c) for c in rec.calls)  # one NFE per row per call it took part in
    _, single, one = _run(model, name, budget, n=1)  # a single row: follow its masks call by call
    counts = [c[0] for c in single.calls]
    assert all(a > b for a, b in itertools.pairwise(counts))  # >= 1 token revealed per step
    assert int(one.nfe[0]) == len(counts)


@pytest.mark.parametrize("name", ["iid", "top_prob", "margin", "entropy"])
def test_fixed_budget_samplers_spend_exactly_min_budget_answer(model, name) -> None:
    for budget in (1, 3, 5):
        _, rec, out = _run(model, name, budget)
        assert out.nfe.tolist() == [budget] * 6
        per_step = [c[0] for c in rec.calls] + [0]
        reveals = [a - b for a, b in itertools.pairwise(per_step)]
        assert max(reveals) - min(reveals) <= 1 and min(reveals) >= 1  # an even split, >= 1 per step
    _, _, out = _run(model, name, 40)
    assert out.nfe.tolist() == [TASK.answer_len] * 6  # one token per step, then done


@pytest.mark.parametrize("name", HEURISTICS)
def test_deterministic_under_a_seed(model, name) -> None:
    _, _, a = _run(model, name, 4, seed=7)
    _, _, b = _run(model, name, 4, seed=7)
    _, _, c = _run(model, "iid", 4, seed=8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.nfe, b.nfe)
    assert not torch.equal(a.tokens, c.tokens)


def test_reveal_counts_split_evenly() -> None:
    masked = torch.ones(1, 16, dtype=torch.bool)
    counts = []
    for step in range(3):
        state = StepState(None, masked, None, None, step, 3, None)
        k = int(reveal_counts(state)[0])
        counts.append(k)
        masked = masked.clone()
        masked[0, : sum(counts)] = False
    assert counts == [6, 5, 5]


def test_select_top_k_stays_inside_masked_and_breaks_ties_left() -> None:
    scores = torch.tensor([[5.0, 1.0, 1.0, 1.0, 9.0]])
    masked = torch.tensor([[False, True, True, True, True]])
    picked = select_top_k(scores, masked, torch.tensor([2]))
    assert picked.tolist() == [[False, True, False, False, True]]


def _state_from_probs(probs):
    logits = torch.log(torch.tensor(probs))[None]  # (1, L, V)
    masked = torch.ones(1, logits.shape[1], dtype=torch.bool)
    return StepState(torch.zeros_like(masked, dtype=torch.long), masked, logits, None, 0, 8,
                     torch.Generator().manual_seed(0))


def test_threshold_reveals_confident_positions_or_the_best_one() -> None:
    state = _state_from_probs([[0.95, 0.05], [0.5, 0.5], [0.91, 0.09], [0.6, 0.4]])
    assert make_sampler("threshold", tau=0.9).select(state).tolist() == [[True, False, True, False]]
    assert make_sampler("threshold", tau=0.99).select(state).tolist() == [[True, False, False, False]]


def test_eb_reveals_the_entropy_bounded_prefix() -> None:
    # entropies: ~0, ln2 (0.693), ~0.325, ln2
    state = _state_from_probs([[1.0 - 1e-9, 1e-9], [0.5, 0.5], [0.9, 0.1], [0.5, 0.5]])
    assert make_sampler("eb", gamma=0.0).select(state).tolist() == [[True, False, False, False]]
    # sorted: 0, 0.325, 0.693, 0.693; a prefix's sum minus its max is the sum of all but its last entry
    assert make_sampler("eb", gamma=0.2).select(state).tolist() == [[True, False, True, False]]
    assert make_sampler("eb", gamma=0.4).select(state).tolist() == [[True, True, True, False]]  # 0.325 <= 0.4
    assert make_sampler("eb", gamma=1.0).select(state).sum() == 3  # 1.018 > 1.0
    assert make_sampler("eb", gamma=1.1).select(state).sum() == 4


def test_unknown_sampler_or_knob_lists_valid_ones() -> None:
    with pytest.raises(MdmError, match="top_prob"):
        make_sampler("nope")
    with pytest.raises(MdmError, match="valid knobs: tau"):
        make_sampler("threshold", gamma=1.0)
    with pytest.raises(MdmError, match="tau"):
        make_sampler("threshold", tau=0.0)


@pytest.mark.parametrize("name", ["iid", "top_prob", "threshold"])
def test_blocks_knob_generates_left_to_right(model, name) -> None:
    _, rec, out = _run(model, name, 6, n=4, blocks=3)
    assert (out.tokens != TASK.mask_id).all()
    assert make_sampler(name, blocks=3).knobs()["blocks"] == 3
    if name != "threshold":
        assert out.nfe.tolist() == [6] * 4
        # After 2 steps (the first block's share of 6 steps over 3 blocks) exactly the first block is done.
        assert rec.calls[2] == [TASK.answer_len - 4] * 4


def test_blocks_needs_budget_per_block(model) -> None:
    with pytest.raises(MdmError, match="budget"):
        _run(model, "top_prob", 2, blocks=3)


def test_blocks_oracle_reveals_independent_digits_and_one_per_coupled_block(model) -> None:
    from merlin_mdm.mdm.tasks.blocks import COUP_ID, IND_ID

    x = torch.tensor([[COUP_ID, IND_ID, COUP_ID] + [TASK.mask_id] * 12])
    masked = x == TASK.mask_id
    state = StepState(x, masked, None, None, 0, 4, None, prompt_len=3)
    picked = make_sampler("blocks_oracle").select(state)[0, 3:].view(3, 4).tolist()
    assert picked == [[True, False, False, False], [True] * 4, [True, False, False, False]]
    assert torch.equal(make_sampler("blocks_oracle").select(StepState(x, masked, None, None, 1, 4, None, 3)), masked)
    with pytest.raises(MdmError, match="blocks task"):
        make_sampler("blocks_oracle").select(StepState(x, masked, None, None, 0, 4, None, prompt_len=0))


def test_addition_oracle_reveals_the_low_columns_first_in_either_direction() -> None:
    from merlin_mdm.mdm.tasks.addition import LSB_ID, MSB_ID

    operands, mask = [1, 2, 3, 4, 5, 6], 12  # addition with 3 digits: 7 prompt tokens, 4 answer positions
    x = torch.tensor([[LSB_ID, *operands] + [mask] * 4, [MSB_ID, *operands] + [mask] * 4])
    masked = x == mask
    picked = make_sampler("addition_oracle").select(StepState(x, masked, None, None, 0, 2, None, prompt_len=7))
    assert picked[:, 7:].tolist() == [[True, True, False, False], [False, False, True, True]]
    later = masked & ~picked
    rest = make_sampler("addition_oracle").select(StepState(x, later, None, None, 1, 2, None, prompt_len=7))
    assert torch.equal(rest, later)
    with pytest.raises(MdmError, match="addition task"):
        make_sampler("addition_oracle").select(StepState(x[:, 1:], masked[:, 1:], None, None, 0, 2, None, 6))


def test_generate_rejects_a_zero_budget(model) -> None:
    with pytest.raises(MdmError, match="budget"):
        _run(model, "iid", 0)


def test_greedy_temperature_is_deterministic_without_a_seed(model) -> None:
    prompts = TASK.sample(3, torch.Generator().manual_seed(0))[:, : TASK.prompt_len]
    outs = [generate(model, prompts, TASK.answer_len, make_sampler("top_prob"), 4, torch.Generator().manual_seed(s),
                     temperature=0.0).tokens for s in (1, 2)]
    assert torch.equal(outs[0], outs[1])
