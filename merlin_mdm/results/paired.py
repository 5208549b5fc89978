"""Paired comparison of evaluation runs: one line of runs against others, on the same examples, seed by seed.

A *line* is one method's runs, one metrics file per training seed (``ev/seed*/clone_T5.h5``): one sampler with
the same knobs, budget and temperature, on one task and one evaluation seed. (A learned order's ``policy.*``
attributes may differ between seeds: each seed's policy is trained on its own.) A learned line may hold several
files for one training seed when they record different ``policy.seed`` values: policies trained with several
seeds on one denoiser. Two lines are comparable when they hold the same training seeds and, seed by seed, the
same evaluation examples (the same task attributes, evaluation seed and number of examples). Their outcomes then
line up as ``(S, N)`` arrays, and :func:`merlin_mdm.results.statistics.bootstrap_accuracy` resamples both with
the same seed and example indices (the policy seeds of one training seed resampled within it), so the difference
of their draws is the paired bootstrap of the difference, as in the study report's verdicts.

Accuracy and NFE @Avg are pooled over every example of every run (the report averages per-run figures; the two
agree when every run has the same number of examples). No correction is made for comparing one line with many.
Whatever does not line up is refused, naming what disagrees; nothing is compared unpaired in silence.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from merlin_mdm.errors import UsageError
from merlin_mdm.results.guarded import read_metrics_guarded
from merlin_mdm.results.metrics import Metrics
from merlin_mdm.results.statistics import bootstrap_accuracy, interval
from merlin_mdm.results.tables import method_label, task_label

__all__ = ["Difference", "Line", "LineSummary", "PairedComparison", "compare_lines", "load_line", "split_label"]

_LABEL = re.compile(r"^([A-Za-z][\w .+-]*)=(.+)$")  # NAME=PATTERN


@dataclass(frozen=True)
class Line:
    """One method's runs, one per training seed (or per training and policy seed), in training-seed order.

    Attributes:
        label: the name shown for the line (``NAME`` of ``NAME=PATTERN``, else the pattern).
        files: the metrics files, one per training seed (several per training seed: one per policy seed).
        train_seeds: the training seed of each file (repeated where a seed holds several policy seeds).
        examples: per file, what fixes its examples: (task attributes, evaluation seed, number of examples).
        task: the task with its knobs, for display.
        correct: (S, N) outcomes, 1 correct, 0 wrong, -1 where a run has fewer than N examples.
        nfe: (S, N) denoiser calls per example, -1 where a run has no such example.
    """

    label: str
    files: tuple[Path, ...]
    train_seeds: tuple[int, ...]
    examples: tuple[tuple[Any, ...], ...]
    task: str
    correct: np.ndarray
    nfe: np.ndarray
    denoisers: tuple[str | None, ...] = ()  # per file, the checkpoint_id of the denoiser it was evaluated with


@dataclass(frozen=True)
class LineSummary:
    """A line's figures: accuracy (fraction) with its 95% bootstrap interval, NFE @Avg and @Max."""

    line: Line
    n_examples: int
    accuracy: float
    low: float
    high: float
    mean_nfe: float
    max_nfe: int


@dataclass(frozen=True)
class Difference:
    """The first line minus another, in accuracy (fractions), with its paired 95% bootstrap interval."""

    other: LineSummary
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


@dataclass(frozen=True)
class PairedComparison:
    """The first line's figures and its difference from each other line."""

    first: LineSummary
    differences: tuple[Difference, ...]


def split_label(argument: str) -> tuple[str, str]:
    """``NAME=PATTERN`` -> (NAME, PATTERN); an argument that itself names files is its own label.

    Raises:
        UsageError: both readings name files (``tau=*.h5`` with a file ``tau=0.9.h5`` beside others).
    """
    found = _LABEL.match(argument)
    if found is None:
        return argument, argument
    whole = _matches(argument)
    if whole and _matches(found.group(2)):
        raise UsageError(f"{argument!r} names files both as a pattern and as {found.group(1)!r}={found.group(2)!r}; "
                         "write NAME=PATTERN with a NAME that is not part of a file name")
    return (argument, argument) if whole else (found.group(1).strip(), found.group(2))


def load_line(argument: str) -> Line:
    """Read the metrics files of one line (``NAME=PATTERN`` or ``PATTERN``: a glob, ``**`` allowed, or a file).

    Raises:
        UsageError: nothing matches, a file has no usable training seed, two files share one, or the files are
            not one method (sampler and knobs, budget, temperature) on one task and evaluation seed.
        MetricsFileError: a file is missing, corrupt or not a metrics file (the message names it).
    """
    label, pattern = split_label(argument)
    paths = _matches(pattern)
    if not paths:
        raise UsageError(f"{label}: no file matches {pattern!r} (quote a glob so that the shell leaves it to us)")
    runs = read_metrics_guarded(paths)  # a damaged file can make HDF5 loop for ever: read with a deadline
    keys = [(_train_seed(label, run), _policy_seed(run)) for run in runs]
    order = sorted(range(len(runs)), key=lambda i: (keys[i][0], keys[i][1] if keys[i][1] is not None else -1))
    runs, keys = [runs[i] for i in order], [keys[i] for i in order]
    _check_one_method(label, runs, keys)
    seeds = [seed for seed, _ in keys]
    width = max(run.n_examples for run in runs)
    return Line(
        label=label,
        files=tuple(run.path for run in runs),
        train_seeds=tuple(seeds),
        examples=tuple(_examples(run) for run in runs),
        task=task_label(runs[0].attrs),
        correct=_padded([run.datasets["correct"] for run in runs], width),
        nfe=_padded([run.datasets["nfe"] for run in runs], width),
        denoisers=tuple(_denoiser(run) for run in runs),
    )


def _denoiser(run: Metrics) -> str | None:
    value = run.attrs.get("checkpoint_id")
    return None if value is None else str(value)


def compare_lines(first: Line, others: Sequence[Line], other_denoisers: bool = False) -> PairedComparison:
    """The first line's figures and its difference from each other line, paired over seeds and examples.

    Args:
        first: the line the others are compared with.
        others: the other lines.
        other_denoisers: allow runs of one training seed that come from different denoisers (checkpoint_id),
            e.g. two denoiser sizes trained with the same seeds: then only the examples pair them.

    Raises:
        UsageError: a line holds other training seeds than the first, other examples for one of them, or (unless
            ``other_denoisers``) runs of one training seed evaluated with different denoisers.
    """
    for other in others:
        _check_comparable(first, other)
        if not other_denoisers:
            _check_same_denoisers(first, other)
    base_draws = bootstrap_accuracy(first.correct, clusters=first.train_seeds)
    differences = []
    for other in others:
        draws = bootstrap_accuracy(other.correct, clusters=other.train_seeds)
        summary = _summary(other, draws)
        low, high = interval(base_draws - draws)
        differences.append(Difference(summary, _pooled(first.correct) - summary.accuracy, low, high))
    return PairedComparison(_summary(first, base_draws), tuple(differences))


def _matches(pattern: str) -> list[str]:
    found = sorted(glob.glob(pattern, recursive=True))
    return found or ([pattern] if Path(pattern).is_file() else [])


def _summary(line: Line, draws: np.ndarray) -> LineSummary:
    low, high = interval(draws)
    seen = line.nfe >= 0
    return LineSummary(line, int(seen.sum()), _pooled(line.correct), low, high, float(line.nfe[seen].mean()),
                       int(line.nfe.max()))


def _pooled(correct: np.ndarray) -> float:
    return float(correct[correct >= 0].mean())


def _train_seed(label: str, run: Metrics) -> int:
    value = run.attrs.get("train_seed", 0)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise UsageError(f"{label}: {run.path} has train_seed {value!r}, not an integer")
    return int(value)


def _policy_seed(run: Metrics) -> int | None:
    value = run.attrs.get("policy.seed")
    return int(value) if isinstance(value, int | np.integer) and not isinstance(value, bool) else None


def _method(run: Metrics) -> tuple[str, Any, Any, str, Any]:
    """What must be equal along a line: the Table 1 method (a learned order's recipe, budget, stage and lineage
    included, its policy seed not: policy seeds are the line's runs), budget, temperature, task, evaluation seed."""
    attrs = run.attrs
    method = method_label({key: value for key, value in attrs.items() if key != "policy.seed"})
    return (method, attrs["steps"], attrs.get("temperature"), task_label(attrs), attrs["seed"])


def _check_one_method(label: str, runs: Sequence[Metrics], keys: Sequence[tuple[int, int | None]]) -> None:
    """One method throughout, and one file per training seed, or per training and policy seed."""
    names = ("method", "budget", "temperature", "task", "evaluation seed")
    for index in range(1, len(runs)):
        before, run = runs[index - 1], runs[index]
        (seed, policy), (seed_before, policy_before) = keys[index], keys[index - 1]
        if seed == seed_before and (policy is None or policy_before is None or policy == policy_before):
            why = ("neither records a train_seed" if "train_seed" not in before.attrs and "train_seed" not in run.attrs
                   else f"both record train_seed {seed}" + ("" if policy is None or policy_before is None
                                                             else f" and policy.seed {policy}"))
            raise UsageError(f"{label}: {before.path} and {run.path}: {why}; a line holds one file per training "
                             "seed, or per training and policy seed (a narrower pattern)")
        if seed == seed_before and _examples(before) != _examples(run):
            raise UsageError(f"{label}: {before.path} and {run.path} hold train_seed {seed} on different examples "
                             f"({_describe(_examples(before))} against {_describe(_examples(run))})")
        for name, mine, theirs in zip(names, _method(before), _method(run), strict=True):
            if mine != theirs:
                raise UsageError(f"{label}: mixes {name} {mine} ({before.path}) and {theirs} ({run.path}); a line "
                                 "is one method at one budget on one task and evaluation seed")


def _examples(run: Metrics) -> tuple[Any, ...]:
    task = tuple(sorted((key, repr(value)) for key, value in run.attrs.items()
                        if key == "task" or key.startswith("task.")))
    return (task, run.attrs["seed"], run.n_examples)


def _check_comparable(first: Line, other: Line) -> None:
    if set(first.files) & set(other.files):
        shared = sorted(set(first.files) & set(other.files))[0]
        raise UsageError(f"lines {first.label!r} and {other.label!r} share {shared}: a line compared with "
                         "itself differs by nothing; give each line its own files")
    if _distinct(first) != _distinct(other):
        raise UsageError(f"line {other.label!r} has training seeds {_seeds(other)} and line {first.label!r} "
                         f"{_seeds(first)}: a paired comparison needs the same seeds on both sides")
    mine_by_seed = _by_seed(first)
    for seed, (theirs, their_file) in _by_seed(other).items():
        mine, my_file = mine_by_seed[seed]
        if mine != theirs:
            raise UsageError(f"{my_file} and {their_file} were evaluated on different examples "
                             f"({_describe(mine)} against {_describe(theirs)}): evaluate both with the same "
                             "task, --seed and --n-examples")


def _check_same_denoisers(first: Line, other: Line) -> None:
    """Pairing by training seed means pairing by trained denoiser: runs of one seed must come from one."""
    seen: dict[int, tuple[str, Path]] = {}
    for line in (first, other):
        for seed, denoiser, path in zip(line.train_seeds, line.denoisers, line.files, strict=False):
            if denoiser is None:
                continue
            known, where = seen.setdefault(seed, (denoiser, path))
            if known != denoiser:
                raise UsageError(f"{where} and {path} both record train_seed {seed} but were evaluated with different "
                                 f"denoisers (checkpoint_id {known} and {denoiser}), so pairing them by seed pairs "
                                 "different models; evaluate both with one checkpoint, or pass --other-denoisers "
                                 "to compare them anyway (paired by examples only)")


def _distinct(line: Line) -> tuple[int, ...]:
    return tuple(dict.fromkeys(line.train_seeds))


def _by_seed(line: Line) -> dict[int, tuple[tuple[Any, ...], Path]]:
    """Each training seed's examples and its first file (a line holds one method on one evaluation seed)."""
    out: dict[int, tuple[tuple[Any, ...], Path]] = {}
    for seed, examples, path in zip(line.train_seeds, line.examples, line.files, strict=True):
        out.setdefault(seed, (examples, path))
    return out


def _seeds(line: Line) -> str:
    return ", ".join(str(seed) for seed in _distinct(line))


def _describe(examples: tuple[Any, ...]) -> str:
    task, seed, count = examples
    knobs = ", ".join(f"{key}={value}" for key, value in task)
    return f"{knobs}, evaluation seed {seed}, {count} examples"


def _padded(arrays: Sequence[np.ndarray], width: int) -> np.ndarray:
    out = np.full((len(arrays), width), -1, dtype=np.int64)  # (S, N)
    for row, values in enumerate(arrays):
        out[row, : values.shape[0]] = values.astype(np.int64)
    return out
