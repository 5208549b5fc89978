"""`merlin-mdm compare`: paired comparison of lines of real metrics files, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from merlin_mdm.cli.main import cli
from merlin_mdm.errors import UsageError
from merlin_mdm.results.metrics import MetricsFileError, summarize, write_metrics
from merlin_mdm.results.paired import compare_lines, load_line, split_label


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
    result = compare_lines(first, [other])
    assert (result.first.accuracy, result.first.n_examples) == (1.0, 800)
    (difference,) = result.differences
    assert difference.other.accuracy == pytest.approx(0.95)
    assert (difference.other.mean_nfe, difference.other.max_nfe) == (3.0, 3)
    assert difference.value == pytest.approx(0.05)
    assert 0 < difference.low < 0.05 < difference.high < 0.1
    assert difference.verdict == "first better"
    (reverse,) = compare_lines(other, [first]).differences
    assert reverse.verdict == "first worse" and reverse.high < 0


def test_pairing_finds_a_difference_that_unpaired_intervals_miss(tmp_path: Path) -> None:
    # both right on the same half of the examples, except 12 of 400 that only A gets right
    shared = np.arange(400) % 2 == 0
    gains = shared.copy()
    gains[1:25:2] = True
    write_run(tmp_path / "a.h5", gains)
    write_run(tmp_path / "b.h5", shared)
    first, other = load_line(str(tmp_path / "a.h5")), load_line(str(tmp_path / "b.h5"))
    (difference,) = compare_lines(first, [other]).differences
    assert difference.value == pytest.approx(0.03)
    assert difference.low > 0
    rng = np.random.default_rng(5)  # independent resamples of each line: the unpaired interval holds 0
    unpaired = [gains[rng.integers(0, 400, 400)].mean() - shared[rng.integers(0, 400, 400)].mean()
                for _ in range(1000)]
    assert np.percentile(unpaired, 2.5) < 0 < np.percentile(unpaired, 97.5)


def test_identical_lines_differ_by_exactly_nothing(tmp_path: Path) -> None:
    write_run(tmp_path / "a.h5", outcomes(50, 10))
    write_run(tmp_path / "b.h5", outcomes(50, 10))
    (difference,) = compare_lines(load_line(str(tmp_path / "a.h5")), [load_line(str(tmp_path / "b.h5"))]).differences
    assert (difference.value, difference.low, difference.high) == (0.0, 0.0, 0.0)
    assert difference.verdict == "no significant difference"


def test_a_line_compared_with_its_own_files_or_a_folder_is_refused(tmp_path: Path) -> None:
    write_run(tmp_path / "a.h5", outcomes(50, 10))
    line = load_line(str(tmp_path / "a.h5"))
    with pytest.raises(UsageError, match=r"share .*a\.h5: a line compared with itself"):
        compare_lines(line, [load_line(f"again={tmp_path / 'a.h5'}")])
    with pytest.raises(MetricsFileError, match="a folder, not a metrics file"):
        load_line(str(tmp_path))


def test_runs_are_ordered_by_training_seed_not_by_file_name(tmp_path: Path) -> None:
    # a: seed 2 wrong everywhere, seed 10 right; b's names sort the other way round, with the same outcomes
    write_run(tmp_path / "a" / "s2.h5", outcomes(40, 40), train_seed=2)
    write_run(tmp_path / "a" / "s10.h5", outcomes(40, 0), train_seed=10)
    write_run(tmp_path / "b" / "x002.h5", outcomes(40, 40), train_seed=2)
    write_run(tmp_path / "b" / "x010.h5", outcomes(40, 0), train_seed=10)
    first, other = load_line(str(tmp_path / "a" / "*.h5")), load_line(str(tmp_path / "b" / "*.h5"))
    assert first.train_seeds == other.train_seeds == (2, 10)
    assert first.files[0].name == "s2.h5" and (first.correct == other.correct).all()
    (difference,) = compare_lines(first, [other]).differences
    assert (difference.low, difference.high) == (0.0, 0.0)


def test_runs_of_unequal_length_are_padded_not_truncated(tmp_path: Path) -> None:
    write_run(tmp_path / "s0.h5", outcomes(10, 5), train_seed=0)
    write_run(tmp_path / "s1.h5", outcomes(30, 0), train_seed=1)
    line = load_line(str(tmp_path / "s*.h5"))
    assert line.correct.shape == (2, 30) and (line.correct[0, 10:] == -1).all()
    summary = compare_lines(line, []).first
    assert summary.accuracy == pytest.approx(35 / 40) and summary.n_examples == 40
    assert summary.mean_nfe == 2.0


def test_a_label_names_a_line_and_a_file_name_with_an_equals_sign_stays_a_path(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert split_label("learned=ev/s*/clone.h5") == ("learned", "ev/s*/clone.h5")
    assert split_label("ev/s*/clone.h5") == ("ev/s*/clone.h5", "ev/s*/clone.h5")
    odd = write_run(tmp_path / "tau=0.9.h5", outcomes(5, 1))
    assert split_label(str(odd)) == (str(odd), str(odd))
    assert load_line(f"thr={odd}").label == "thr"
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "0.9.h5", outcomes(5, 1))
    with pytest.raises(UsageError, match="both as a pattern and as 'tau'"):
        split_label("tau=0.9.h5")


@pytest.mark.parametrize(("case", "message"), [
    ("nothing", "no file matches"),
    ("same seed twice", "both record train_seed 0"),
    ("no seeds", "neither records a train_seed"),
    ("two budgets", "mixes budget 4"),
    ("two knob values", r"mixes method eb \(gamma=0.1\)"),
    ("two evaluation seeds", "mixes evaluation seed 7"),
    ("a seed that is no number", "has train_seed 'abc', not an integer"),
])
def test_a_line_that_is_not_one_method_per_seed_is_refused(tmp_path: Path, case: str, message: str) -> None:
    seconds: dict[str, dict[str, Any]] = {
        "same seed twice": {}, "no seeds": {}, "two budgets": {"train_seed": 1, "steps": 8},
        "two knob values": {"train_seed": 1, "sampler.gamma": 1.0},
        "two evaluation seeds": {"train_seed": 1, "seed": 8},
        "a seed that is no number": {"train_seed": "abc"},
    }
    second = seconds.get(case, {})
    if case != "nothing":
        write_run(tmp_path / "x1.h5", outcomes(5, 1))
        write_run(tmp_path / "x2.h5", outcomes(5, 1), **second)
    if case == "no seeds":
        for name in ("x1.h5", "x2.h5"):
            with h5py.File(tmp_path / name, "a") as handle:
                del handle.attrs["train_seed"]
    with pytest.raises(UsageError, match=message):
        load_line(str(tmp_path / "x*.h5"))


def test_a_learned_line_may_hold_policies_trained_with_other_seeds(tmp_path: Path) -> None:
    write_run(tmp_path / "p0.h5", outcomes(5, 1), sampler="learned", train_seed=0, **{"policy.seed": 10})
    write_run(tmp_path / "p1.h5", outcomes(5, 1), sampler="learned", train_seed=1, **{"policy.seed": 11})
    assert load_line(str(tmp_path / "p*.h5")).train_seeds == (0, 1)


def test_a_line_of_policies_of_other_recipes_or_budgets_is_refused(tmp_path: Path) -> None:
    """compare pooled a T=2 and a T=3 policy (or two stages, or two iteration counts) as policy seeds of one line,
    where aggregate shows them as two lines."""
    write_run(tmp_path / "b2.h5", outcomes(5, 1), sampler="learned", train_seed=0, method="learned (T=2, tau=0.1)",
              **{"policy.seed": 0, "policy.budget": 2})
    write_run(tmp_path / "b3.h5", outcomes(5, 1), sampler="learned", train_seed=0, method="learned (T=3, tau=0.1)",
              **{"policy.seed": 1, "policy.budget": 3})
    with pytest.raises(UsageError, match=r"mixes method learned \(T=2, tau=0.1\)"):
        load_line(str(tmp_path / "b*.h5"))


def test_several_policy_seeds_per_training_seed_are_one_line_paired_with_a_baseline(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_run(tmp_path / f"s{seed}" / "base.h5", outcomes(400, 40, offset=5 * seed), train_seed=seed)
        for policy in (10, 20):  # two policy seeds on each denoiser, each wrong on 20 of base's 40 mistakes
            write_run(tmp_path / f"s{seed}" / f"p{policy}.h5", outcomes(400, 20, offset=5 * seed + policy),
                      sampler="learned", train_seed=seed, **{"policy.seed": seed + policy})
    learned = load_line(str(tmp_path / "s*" / "p*.h5"))
    assert learned.train_seeds == (0, 0, 1, 1) and learned.correct.shape == (4, 400)
    (difference,) = compare_lines(learned, [load_line(str(tmp_path / "s*" / "base.h5"))]).differences
    assert difference.value == pytest.approx(0.05) and 0 < difference.low < 0.05 < difference.high
    write_run(tmp_path / "s1" / "p30.h5", outcomes(400, 20), sampler="learned", train_seed=1, **{"policy.seed": 21})
    with pytest.raises(UsageError, match=r"both record train_seed 1 and policy\.seed 21"):
        load_line(str(tmp_path / "s*" / "p*.h5"))
    write_run(tmp_path / "s1" / "p30.h5", outcomes(300, 20), sampler="learned", train_seed=1, **{"policy.seed": 31})
    with pytest.raises(UsageError, match="hold train_seed 1 on different examples"):
        load_line(str(tmp_path / "s*" / "p*.h5"))


@pytest.mark.parametrize(("attrs", "message"), [
    ({"train_seed": 1}, "training seeds 1 and line .* 0"),
    ({"seed": 8}, "evaluation seed 7, 20 examples against .* evaluation seed 8"),
    ({"task.n": 9}, "different examples"),
    ({"n": 30}, "20 examples against .* 30 examples"),
])
def test_lines_on_other_seeds_or_examples_are_not_compared(tmp_path: Path, attrs: dict[str, Any],
                                                           message: str) -> None:
    write_run(tmp_path / "a.h5", outcomes(20, 1))
    count = attrs.pop("n", 20)
    write_run(tmp_path / "b.h5", outcomes(count, 1), **attrs)
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
    assert "2, 800" in result.output
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
    assert other["max_nfe"] == 3 and len(other["files"]) == 2 and other["n_examples"] == 800
    missing = CliRunner().invoke(cli, ["compare", two_lines[0], str(tmp_path / "nope*.h5")])
    assert missing.exit_code == 2
    assert "no file matches" in missing.output and "Traceback" not in missing.output


def test_labels_are_shown_as_written_not_as_markup(tmp_path: Path) -> None:
    for name in ("s[a]", "s[b]", "q[/b]"):
        write_run(tmp_path / name / "x.h5", outcomes(10, 1))
    arguments = [f"{tmp_path}/s[a]/x.h5", f"{tmp_path}/s[b]/x.h5", f"{tmp_path}/q[/b]/x.h5"]  # files, not globs
    result = CliRunner().invoke(cli, ["compare", *arguments], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "s[a]/x.h5" in result.output and "s[b]/x.h5" in result.output and "q[/b]/x.h5" in result.output


def test_runs_of_one_seed_from_different_denoisers_are_not_paired_unless_asked(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_run(tmp_path / f"s{seed}" / "a.h5", outcomes(100, 5), train_seed=seed, checkpoint_id=f"small{seed}")
        write_run(tmp_path / f"s{seed}" / "b.h5", outcomes(100, 9), train_seed=seed, sampler="top_prob",
                  checkpoint_id=f"big{seed}" if seed else "small0")
    first, other = load_line(str(tmp_path / "s*" / "a.h5")), load_line(str(tmp_path / "s*" / "b.h5"))
    with pytest.raises(UsageError, match="both record train_seed 1 but were evaluated with different denoisers "
                                         r"\(checkpoint_id small1 and big1\)"):
        compare_lines(first, [other])
    assert compare_lines(first, [other], other_denoisers=True).differences[0].value == pytest.approx(0.04)
    result = CliRunner().invoke(cli, ["compare", "--other-denoisers", str(tmp_path / "s*" / "a.h5"),
                                      str(tmp_path / "s*" / "b.h5")])
    assert result.exit_code == 0, result.output


def test_two_lines_under_one_name_are_refused(two_lines: tuple[str, str]) -> None:
    """`compare A=x A=y` printed two lines named A (an outside probe); one pattern given twice is the same."""
    for arguments in ([f"A={two_lines[0]}", f"A={two_lines[1]}"], [two_lines[0], two_lines[1], two_lines[1]]):
        result = CliRunner().invoke(cli, ["compare", *arguments])
        assert result.exit_code == 2 and "two lines are named" in result.output, result.output
    named = CliRunner().invoke(cli, ["compare", f"A={two_lines[0]}", f"B={two_lines[1]}", f"C={two_lines[1]}"])
    assert named.exit_code == 0, named.output
