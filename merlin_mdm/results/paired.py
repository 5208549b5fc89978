"""Paired comparison of evaluation runs: one line of runs against others, on the same examples, seed by seed.

A *line* is one method's runs, one metrics file per training seed (``ev/seed*/clone_T5.h5``). Two lines are
comparable when they hold the same training seeds and, seed by seed, the same evaluation examples (the same task
with the same knobs, evaluation seed and number of examples). Their outcomes then line up as ``(S, N)`` arrays, and
:func:`merlin_mdm.results.statistics.bootstrap_accuracy` resamples both with the same indices, so the difference
of their draws is the paired bootstrap of the difference: the same statistics the study report's verdicts use.

Whatever does not line up is refused with the two files that disagree, never compared unpaired in silence.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merlin_mdm.errors import UsageError
from merlin_mdm.results.metrics import Metrics, read_metrics
from merlin_mdm.results.statistics import bootstrap_accuracy, interval
from merlin_mdm.results.tables import task_label

__all__ = ["Difference", "Line", "compare_lines", "load_line", "split_label"]

_LABEL = re.compile(r"^([A-Za-z][\w .+-]*)=(.+)$")  # NAME=PATTERN; a path's own "=" never follows a bare name


@dataclass(frozen=True)
class Line:
    """One method's runs, one per training seed, in training-seed order.

    Attributes:
        label: the name shown for the line (``NAME`` of ``NAME=PATTERN``, else the pattern).
        files: the metrics files, one per training seed.
        train_seeds: the training seed of each file (``train_seed``, 0 when a file has none).
        examples: per file, what fixes its examples: (task with knobs, evaluation seed, number of examples).
        correct: (S, N) outcomes, 1 correct, 0 wrong, -1 where a run has fewer than N examples.
        nfe: (S, N) denoiser calls per example, -1 where a run has no such example.
    """

    label: str
    files: tuple[Path, ...]
    train_seeds: tuple[int, ...]
    examples: tuple[tuple[str, int, int], ...]
    correct: np.ndarray
    nfe: np.ndarray

    @property
    def accuracy(self) -> float:
        """Accuracy over every run's examples (fraction)."""
        return float(self.correct[self.correct >= 0].mean())

    @property
    def mean_nfe(self) -> float:
        """NFE @Avg: mean denoiser calls per example over every run."""
        return float(self.nfe[self.nfe >= 0].mean())

    @property
    def max_nfe(self) -> int:
        """NFE @Max: the most calls any example took."""
        return int(self.nfe.max())

    def draws(self) -> np.ndarray:
        """(N_BOOT,) bootstrap draws of the accuracy over seeds and examples (paired across comparable lines)."""
        return bootstrap_accuracy(self.correct)


@dataclass(frozen=True)
class Difference:
    """The first line minus another, in accuracy (fractions), with its paired 95% bootstrap interval."""

    other: Line
    value: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """``first better`` / ``first worse`` when the interval excludes 0, else ``no significant difference``."""
        if self.low > 0:
            return "first better"
        if self.high < 0:
            return "first worse"
        return "no significant difference"


def split_label(argument: str) -> tuple[str, str]:
    """``NAME=PATTERN`` -> (NAME, PATTERN); a bare pattern (or an existing file) is its own label."""
    found = _LABEL.match(argument)
    if found is None or Path(argument).exists():
        return argument, argument
    return found.group(1).strip(), found.group(2)


def load_line(argument: str) -> Line:
    """Read the metrics files of one line (``NAME=PATTERN`` or ``PATTERN``, a glob or one file).

    Raises:
        UsageError: nothing matches, two files share a training seed, or the files mix samplers or budgets.
        MetricsFileError: a file is missing, corrupt or not a metrics file (the message names it).
    """
    label, pattern = split_label(argument)
    paths = sorted(glob.glob(pattern)) or ([pattern] if Path(pattern).exists() else [])
    if not paths:
        raise UsageError(f"{label}: no file matches {pattern!r} (quote a glob so that the shell leaves it to us)")
    runs = sorted((read_metrics(path) for path in paths), key=_train_seed)
    _check_one_method(label, runs)
    width = max(run.n_examples for run in runs)
    return Line(
        label=label,
        files=tuple(run.path for run in runs),
        train_seeds=tuple(_train_seed(run) for run in runs),
        examples=tuple(_examples(run) for run in runs),
        correct=_padded([run.datasets["correct"] for run in runs], width),
        nfe=_padded([run.datasets["nfe"] for run in runs], width),
    )


def compare_lines(first: Line, others: Sequence[Line]) -> tuple[Difference, ...]:
    """The first line minus each other line, paired over training seeds and examples.

    Raises:
        UsageError: a line holds other training seeds than the first, or other examples for one of them.
    """
    base = first.draws()
    out = []
    for other in others:
        _check_comparable(first, other)
        low, high = interval(base - other.draws())
        out.append(Difference(other, first.accuracy - other.accuracy, low, high))
    return tuple(out)


def _train_seed(run: Metrics) -> int:
    return int(run.attrs.get("train_seed", 0))


def _examples(run: Metrics) -> tuple[str, int, int]:
    return (task_label(run.attrs), int(run.attrs["seed"]), run.n_examples)


def _check_one_method(label: str, runs: Sequence[Metrics]) -> None:
    seen: dict[int, Path] = {}
    first = runs[0]
    for run in runs:
        seed = _train_seed(run)
        if seed in seen:
            raise UsageError(f"{label}: two files for training seed {seed}: {seen[seed]} and {run.path}; "
                             "give one file per training seed (a narrower pattern)")
        seen[seed] = run.path
        for key in ("sampler", "steps"):
            if run.attrs[key] != first.attrs[key]:
                raise UsageError(f"{label}: mixes runs of {key} {first.attrs[key]} ({first.path}) and "
                                 f"{run.attrs[key]} ({run.path}); a line is one method at one budget")


def _check_comparable(first: Line, other: Line) -> None:
    if first.train_seeds != other.train_seeds:
        raise UsageError(f"{other.label} has training seeds {_seeds(other)} and {first.label} {_seeds(first)}: "
                         "a paired comparison needs the same seeds on both sides")
    for mine, theirs, my_file, their_file in zip(first.examples, other.examples, first.files, other.files, strict=True):
        if mine != theirs:
            raise UsageError(f"{my_file} and {their_file} were evaluated on different examples "
                             f"({_describe(mine)} against {_describe(theirs)}): evaluate both with the same "
                             "task, --seed and --n-examples")


def _seeds(line: Line) -> str:
    return ", ".join(str(seed) for seed in line.train_seeds)


def _describe(examples: tuple[str, int, int]) -> str:
    task, seed, count = examples
    return f"{task}, evaluation seed {seed}, {count} examples"


def _padded(arrays: Sequence[np.ndarray], width: int) -> np.ndarray:
    out = np.full((len(arrays), width), -1, dtype=np.int64)  # (S, N)
    for row, values in enumerate(arrays):
        out[row, : values.shape[0]] = values.astype(np.int64)
    return out

