"""The blocks, sudoku, arith and addition tasks: seeded generation, shapes and the validity/scoring rules."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from merlin_mdm.errors import MdmError  # noqa: E402
from merlin_mdm.mdm.tasks import TASKS, make_task  # noqa: E402
from merlin_mdm.mdm.tasks.addition import LSB_ID, MSB_ID, column_sum  # noqa: E402
from merlin_mdm.mdm.tasks.blocks import COUP_ID, IND_ID  # noqa: E402

pytestmark = pytest.mark.torch


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("name", "knobs"), [("blocks", {}), ("sudoku", {"n": 4}), ("sudoku", {"n": 6, "blanks": 9}),
                                             ("sudoku", {"n": 9, "blanks": 30}), ("arith", {}),
                                             ("arith", {"n_ops": 3, "ops": "+-*"}), ("addition", {}),
                                             ("addition", {"digits": 3, "p_chain": 0.0, "direction": "lsb"})])
def test_samples_are_seeded_valid_and_mask_free(name, knobs) -> None:
    task = make_task(name, **knobs)
    x = task.sample(64, gen())
    assert x.shape == (64, task.seq_len) and x.dtype == torch.long
    assert torch.equal(x, task.sample(64, gen()))
    assert not torch.equal(x, task.sample(64, gen(1)))
    assert (x != task.mask_id).all() and (x >= 0).all() and (x < task.vocab_size).all()
    assert task.score(x).all()
    assert make_task(name, **task.knobs()).knobs() == task.knobs()


def test_blocks_layout_and_validity_rule() -> None:
    task = make_task("blocks", nb=2, bl=3)
    assert (task.vocab_size, task.mask_id, task.prompt_len, task.answer_len) == (13, 12, 2, 6)
    x = torch.tensor([[COUP_ID, IND_ID, 4, 4, 4, 1, 2, 3],
                      [COUP_ID, IND_ID, 4, 4, 5, 1, 2, 3],  # coupled block broken
                      [IND_ID, IND_ID, 4, 4, 5, 1, 2, 3],  # same digits, block declared independent
                      [IND_ID, COUP_ID, 0, 1, 2, 7, 7, 7],
                      [IND_ID, COUP_ID, 0, 1, 2, 7, 7, 12]])  # a mask left in the answer
    assert task.score(x).tolist() == [True, False, True, True, False]


def test_blocks_coupled_fraction_follows_p_coupled() -> None:
    x = make_task("blocks", nb=4, p_coupled=0.25).sample(2000, gen())
    frac = (x[:, :4] == COUP_ID).float().mean().item()
    assert 0.22 < frac < 0.28


def test_sudoku_validity_and_givens() -> None:
    task = make_task("sudoku", n=4, blanks=6)
    x = task.sample(50, gen())
    puzzle = x[:, :16]
    assert ((puzzle == task.blank_id).sum(-1) == 6).all()
    swapped = x.clone()
    swapped[:, 16], swapped[:, 17] = x[:, 17], x[:, 16]  # two cells of a row exchanged: columns break
    assert not task.score(swapped).any()
    relabelled = x.clone()
    relabelled[:, 16:] = (x[:, 16:] + 1) % 4  # still a valid Sudoku, but contradicts the givens
    assert not task.score(relabelled).any()
    relabelled[:, :16] = task.blank_id  # with no givens it is a valid completion
    assert task.score(relabelled).all()


def test_sudoku_knob_errors() -> None:
    with pytest.raises(MdmError, match="blanks"):
        make_task("sudoku", n=4, blanks=17)
    with pytest.raises(MdmError, match="n must be"):
        make_task("sudoku", n=5)


def test_arith_scoring_exact_final_answer() -> None:
    task = make_task("arith", n_ops=2, max_value=9)
    x = task.sample(20, gen())
    text = task.decode(x[0, task.prompt_len :])
    assert "####" in text
    wrong = x.clone()
    answer_start = task.prompt_len + text.index("####") + 5
    digit = int(task.decode(wrong[0, answer_start : answer_start + 1]))
    wrong[0, answer_start] = task.encode_char(str((digit + 1) % 10))
    assert task.score(wrong).tolist() == [False] + [True] * 19
    chain_broken = x.clone()
    chain_broken[1, task.prompt_len] = task.encode_char("9")  # only the chain of thought changes: still correct
    assert task.score(chain_broken)[1]


def _number(digits: list[int]) -> int:
    return int("".join(map(str, digits)))


@pytest.mark.parametrize("direction", ["lsb", "msb", "mixed"])
def test_addition_answers_are_the_sum_in_the_prompts_direction(direction) -> None:
    task = make_task("addition", digits=6, direction=direction)
    x = task.sample(300, gen(3))
    lsb = x[:, 0] == LSB_ID
    assert ((x[:, 0] == LSB_ID) | (x[:, 0] == MSB_ID)).all()
    assert {"lsb": {True}, "msb": {False}, "mixed": {True, False}}[direction] == set(lsb.tolist())
    for row, low_first in zip(x.tolist(), lsb.tolist(), strict=True):
        answer = row[13:][::-1] if low_first else row[13:]
        assert _number(answer) == _number(row[1:7]) + _number(row[7:13])


def test_addition_columns_chain_carries_with_p_chain() -> None:
    x = make_task("addition", digits=8, p_chain=1.0).sample(50, gen())
    assert ((x[:, 1:9] + x[:, 9:17]) == 9).all()  # every column passes its carry on
    x = make_task("addition", digits=8, p_chain=0.5).sample(4000, gen())
    frac = ((x[:, 1:9] + x[:, 9:17]) == 9).float().mean().item()
    assert 0.5 < frac < 0.6  # p_chain plus the uniform columns that happen to sum to 9 (0.5 * 0.1)


def test_addition_scoring_rule() -> None:
    task = make_task("addition", digits=4, direction="mixed")
    a, b = [9, 9, 9, 9], [0, 0, 0, 1]  # 9999 + 1 = 10000
    x = torch.tensor([[LSB_ID, *a, *b, 0, 0, 0, 0, 1], [MSB_ID, *a, *b, 1, 0, 0, 0, 0],
                      [LSB_ID, *a, *b, 1, 0, 0, 0, 0],  # the right digits in the wrong direction
                      [MSB_ID, *a, *b, 0, 9, 9, 9, 9],  # the carry chain missed
                      [MSB_ID, *a, *b, 1, 0, 0, 0, task.mask_id]])
    assert task.score(x).tolist() == [True, True, False, False, False]
    assert column_sum(torch.tensor([a]), torch.tensor([b])).tolist() == [[1, 0, 0, 0, 0]]
    assert task.render(x[0]) == "lsb 9999+0001 = 00001"


def test_addition_knob_errors() -> None:
    with pytest.raises(MdmError, match="direction must be one of lsb, msb, mixed"):
        make_task("addition", direction="up")
    with pytest.raises(MdmError, match="p_chain"):
        make_task("addition", p_chain=1.5)
    with pytest.raises(MdmError, match="digits"):
        make_task("addition", digits=0)


def test_unknown_task_and_knob() -> None:
    assert {"blocks", "sudoku", "arith", "addition"} <= set(TASKS)
    with pytest.raises(MdmError, match="arith, blocks"):
        make_task("nope")
    with pytest.raises(MdmError, match="valid knobs: nb, bl, p_coupled"):
        make_task("blocks", size=3)
