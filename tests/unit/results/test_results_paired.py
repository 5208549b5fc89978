"""`merlin-mdm compare`: paired comparison of lines of real metrics files, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from merlin_mdm.cli.main import cli
from merlin_mdm.errors import UsageError
from merlin_mdm.results.metrics import MetricsFileError, summarize, write_metrics
from merlin_mdm.results.paired import compare_lines, load_line, split_label
from merlin_mdm.results.statistics import interval


def write_run(path: Path, correct: np.ndarray, nfe: np.ndarray | int = 2, **attrs: Any) -> Path:
    """One metrics file with these outcomes; ``attrs`` override the defaults (train seed 0, eval seed 7)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    calls = np.full(correct.shape, nfe) if np.ndim(nfe) == 0 else np.asarray(nfe)
    base = {"task": "sudoku", "task.n": 4, "sampler": "eb", "sampler.gamma": 0.1, "steps": 4, "seed": 7,
            "train_seed": 0, **summarize(correct, calls)}
    base.update(attrs)
    return write_metrics(path, base, {"correct": correct, "nfe": calls, "wall_time": np.zeros(correct.shape)})


def outcomes(n: int, wrong: int, offset: int = 0) -> np.ndarray:
    """n outcomes, all correct except ``wrong`` of them starting at ``offset``."""
    correct = np.ones(n, dtype=bool)
    correct[offset:offset + wrong] = False
    return correct


@pytest.fixture
def two_lines(tmp_path: Path) -> tuple[str, str]:
    """Line A right on every example of seeds 0 and 1; line B wrong on 20 of 400 per seed, with 3 calls."""
    for seed in (0, 1):
        write_run(tmp_path / f"s{seed}" / "a.h5", outcomes(400, 0), train_seed=seed, sampler="learned")
        write_run(tmp_path / f"s{seed}" / "b.h5", outcomes(400, 20, offset=10 * seed), nfe=3, train_seed=seed)
    return str(tmp_path / "s*" / "a.h5"), str(tmp_path / "s*" / "b.h5")


def test_a_paired_difference_of_five_points_is_measured_and_significant(two_lines: tuple[str, str]) -> None:
    first, other = (load_line(pattern) for pattern in two_lines)
    assert first.train_seeds == other.train_seeds == (0, 1)
    assert other.correct.shape == (2, 400) and other.accuracy == pytest.approx(0.95)
    assert (other.mean_nfe, other.max_nfe) == (3.0, 3)
    (difference,) = compare_lines(first, [other])
    assert difference.value == pytest.approx(0.05)
    assert 0 < difference.low < 0.05 < difference.high < 0.1
    assert difference.verdict == "first better"
    (reverse,) = compare_lines(other, [first])
    assert reverse.verdict == "first worse" and reverse.high < 0


def test_pairing_narrows_the_interval_of_lines_that_differ_on_few_examples(tmp_path: Path) -> None:
    # both right on half of the examples and wrong on the same others, except 12 of 400 that only A gets right:
    # unpaired intervals of 50% accuracies overlap widely; the paired one excludes 0
    shared = np.arange(400) % 2 == 0
    gains = shared.copy()
    gains[1:25:2] = True
    write_run(tmp_path / "a.h5", gains)
    write_run(tmp_path / "b.h5", shared)
    first, other = load_line(str(tmp_path / "a.h5")), load_line(str(tmp_path / "b.h5"))
    (difference,) = compare_lines(first, [other])
    assert difference.value == pytest.approx(0.03)
    assert difference.low > 0
    assert interval(first.draws())[0] < interval(other.draws())[1]  # each line's own interval overlaps the other


def test_identical_lines_differ_by_exactly_nothing(tmp_path: Path) -> None:
    write_run(tmp_path / "a.h5", outcomes(50, 10))
    line = load_line(str(tmp_path / "a.h5"))
    (difference,) = compare_lines(line, [line])
    assert (difference.value, difference.low, difference.high) == (0.0, 0.0, 0.0)
    assert difference.verdict == "no significant difference"


def test_runs_of_unequal_length_are_padded_not_truncated(tmp_path: Path) -> None:
    write_run(tmp_path / "s0.h5", outcomes(10, 5), train_seed=0)
    write_run(tmp_path / "s1.h5", outcomes(30, 0), train_seed=1)
    line = load_line(str(tmp_path / "s*.h5"))
    assert line.correct.shape == (2, 30) and (line.correct[0, 10:] == -1).all()
    assert line.accuracy == pytest.approx(35 / 40)
    assert line.mean_nfe == 2.0


def test_a_label_names_a_line_and_a_path_with_an_equals_sign_is_still_a_path(tmp_path: Path) -> None:
    assert split_label("learned=ev/s*/clone.h5") == ("learned", "ev/s*/clone.h5")
    assert split_label("ev/s*/clone.h5") == ("ev/s*/clone.h5", "ev/s*/clone.h5")
    odd = write_run(tmp_path / "tau=0.9.h5", outcomes(5, 1))
    assert split_label(str(odd)) == (str(odd), str(odd))
    assert load_line(f"thr={odd}").label == "thr"


@pytest.mark.parametrize(("case", "message"), [
    ("nothing", "no file matches"),
    ("same seed twice", "two files for training seed 0"),
    ("two budgets", "mixes runs of steps 4"),
])
def test_a_line_that_is_not_one_method_per_seed_is_refused(tmp_path: Path, case: str, message: str) -> None:
    if case == "same seed twice":
        write_run(tmp_path / "x1.h5", outcomes(5, 1))
        write_run(tmp_path / "x2.h5", outcomes(5, 1))
    elif case == "two budgets":
        write_run(tmp_path / "x1.h5", outcomes(5, 1), train_seed=0)
        write_run(tmp_path / "x2.h5", outcomes(5, 1), train_seed=1, steps=8)
    with pytest.raises(UsageError, match=message):
        load_line(str(tmp_path / "x*.h5"))


@pytest.mark.parametrize(("attrs", "message"), [
    ({"train_seed": 1}, "has training seeds 1 and .* 0"),
    ({"seed": 8}, "evaluation seed 7, 20 examples against .* evaluation seed 8"),
    ({"task.n": 9}, "different examples"),
])
def test_lines_on_other_seeds_or_examples_are_not_compared(tmp_path: Path, attrs: dict[str, Any],
                                                           message: str) -> None:
    write_run(tmp_path / "a.h5", outcomes(20, 1))
    write_run(tmp_path / "b.h5", outcomes(20, 1), **attrs)
    with pytest.raises(UsageError, match=message):
        compare_lines(load_line(str(tmp_path / "a.h5")), [load_line(str(tmp_path / "b.h5"))])


def test_a_corrupt_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.h5").write_bytes(b"not HDF5\n" * 20)
    with pytest.raises(MetricsFileError, match=r"bad\.h5"):
        load_line(str(tmp_path / "*.h5"))


def test_the_command_prints_each_line_and_the_paired_difference(two_lines: tuple[str, str]) -> None:
    result = CliRunner().invoke(cli, ["compare", f"learned={two_lines[0]}", two_lines[1]],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "learned" in result.output and "100.0%" in result.output and "95.0%" in result.output
    assert "+5.0 [" in result.output and "first better" in result.output
    assert "Training seeds 0, 1; sudoku (n=4), evaluation seed 7" in result.output


def test_the_command_writes_json_and_refuses_bad_use_with_exit_code_2(two_lines: tuple[str, str],
                                                                      tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["compare", "--json", *two_lines])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["first"]["train_seeds"] == [0, 1] and payload["first"]["accuracy"] == 1.0
    (other,) = payload["others"]
    assert other["first_minus_this"] == pytest.approx(0.05) and other["verdict"] == "first better"
    assert other["max_nfe"] == 3 and len(other["files"]) == 2
    missing = CliRunner().invoke(cli, ["compare", two_lines[0], str(tmp_path / "nope*.h5")])
    assert missing.exit_code == 2
    assert "no file matches" in missing.output and "Traceback" not in missing.output
