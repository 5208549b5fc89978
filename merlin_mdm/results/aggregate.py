"""Aggregate a study's metrics files into one results file, a CSV, a Table 1 Markdown table and a plot.

Serial, or with MPI: every rank reads a contiguous shard of the sorted file list, rank 0 gathers the
rows in list order and alone writes every output. Both paths build the same rows in the same order and
so write byte-identical tables.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from merlin_mdm.errors import ResultsError
from merlin_mdm.results.collect import Discovery, Problem, Row, discover_all
from merlin_mdm.results.guarded import load_guarded
from merlin_mdm.results.mpi_gather import ROOT, broadcast_discovery, gather_loaded
from merlin_mdm.results.outputs import check_outputs, earlier_runs, output_lock, replaceable, staged_writes
from merlin_mdm.results.plots import plot_accuracy_vs_nfe
from merlin_mdm.results.report import render_report
from merlin_mdm.results.results_file import write_results
from merlin_mdm.results.results_runs import expand_results_files
from merlin_mdm.results.tables import (
    GroupKey,
    RunTable,
    SummaryRow,
    bootstrap_groups,
    build_table,
    method_label,
    split_duplicates,
    summarize_runs,
    table_csv,
    task_label,
)

__all__ = ["SKIPPED_KINDS", "AggregateOutputs", "AggregateReport", "aggregate", "default_outputs"]

SKIPPED_KINDS = frozenset({"not_metrics", "results_file", "duplicate"})
"""Problem kinds that lose no run (files that are clearly not metrics files, a run read twice): listed, but not
failures (``--strict``)."""

PROGRESS_MIN_FILES = 20
"""Show a progress bar from this many files on."""


@dataclass(frozen=True)
class AggregateOutputs:
    """Where the aggregation writes; None skips that output.

    Attributes:
        results: the HDF5 (NetCDF-4) results file.
        csv: the run table as CSV.
        markdown: the report (Table 1 per task and the equal-compute verdicts) as Markdown.
        plot: accuracy against mean NFE, PNG (and the same as SVG beside it).
        title: the report's first heading.
        command: the command that regenerates the study, printed at the top of the report.
        notes: Markdown appended to the report under "Notes".
    """

    results: Path
    csv: Path | None
    markdown: Path | None
    plot: Path | None
    title: str = "Results"
    command: str = ""
    notes: str = ""


@dataclass(frozen=True)
class AggregateReport:
    """What an aggregation produced (rank 0 only).

    Attributes:
        outputs: the files written.
        n_files: files examined (plus expected files found missing).
        table: the run table and its problems.
        summary: the Table 1 rows.
        replaced_runs: the runs of the earlier results file this one replaced (None: there was none).
    """

    outputs: AggregateOutputs
    n_files: int
    table: RunTable
    summary: tuple[SummaryRow, ...]
    replaced_runs: int | None = None

    @property
    def mixed_denoisers(self) -> tuple[str, ...]:
        """Lines that average runs of one training (and evaluation) seed made with different denoisers
        (checkpoint_id): studies of two denoiser sizes pooled into one aggregation, say. Each is said once."""
        seen: dict[tuple[str, ...], set[str]] = {}
        for row in self.table.rows():
            if not isinstance(row.get("checkpoint_id"), str) or not row["checkpoint_id"]:
                continue
            key = (task_label(row), method_label(row), str(row.get("steps")), str(row.get("train_seed")),
                   str(row.get("seed")))
            seen.setdefault(key, set()).add(str(row["checkpoint_id"]))
        return tuple(f"{method} at T={steps} on {task}: train_seed {seed} holds runs of {len(ids)} denoisers "
                     f"({', '.join(sorted(ids))}), averaged as one; aggregate such studies separately"
                     for (task, method, steps, seed, _), ids in sorted(seen.items()) if len(ids) > 1)

    @property
    def repeated_evaluations(self) -> tuple[str, ...]:
        """Lines where one training seed holds runs of one denoiser on several example sets (another --seed or
        --n-examples: a pilot beside the real evaluation, say). Each set is bootstrapped as a seed of its own,
        though they share the denoiser's training, so the seeds count and the interval overstate what was
        replicated. Each is said once (two denoisers under one seed: :attr:`mixed_denoisers`)."""
        seen: dict[tuple[str, ...], tuple[set[tuple[str, str]], set[str]]] = {}
        for row in self.table.rows():
            if row.get("train_seed") is None:
                continue
            key = (task_label(row), method_label(row), str(row.get("steps")), str(row.get("train_seed")))
            sets, ids = seen.setdefault(key, (set(), set()))
            sets.add((str(row.get("seed")), str(row.get("n_examples"))))
            ids.add(str(row.get("checkpoint_id") or ""))
        return tuple(f"{method} at T={steps} on {task}: train_seed {seed} holds runs on {len(sets)} example sets ("
                     + ", ".join(f"--seed {s} --n-examples {n}" for s, n in sorted(sets)) + "), each counted as a "
                     "seed of its own though one denoiser made them; aggregate them separately"
                     for (task, method, steps, seed), (sets, ids) in sorted(seen.items())
                     if len(sets) > 1 and len(ids) == 1)

    @property
    def failures(self) -> tuple[Problem, ...]:
        """Problems that mean a run's result is lost (missing, incomplete, corrupt, truncated, invalid ...)."""
        return tuple(p for p in self.table.problems if p.kind not in SKIPPED_KINDS)


def default_outputs(
    out: Path, csv: Path | None = None, markdown: Path | None = None, plot: Path | None = None,
    title: str = "Results", command: str = "", notes: str = "",
) -> AggregateOutputs:
    """Outputs beside ``out`` unless given: ``results.h5`` -> ``results.csv``, ``results.md``, ``results.png``."""
    return AggregateOutputs(
        results=out,
        csv=csv if csv is not None else out.with_suffix(".csv"),
        markdown=markdown if markdown is not None else out.with_suffix(".md"),
        plot=plot if plot is not None else out.with_suffix(".png"),
        title=title,
        command=command,
        notes=notes,
    )


Source = str | os.PathLike[str]
"""A glob pattern or a workspace directory."""


def aggregate(
    source: Source | Sequence[Source], outputs: AggregateOutputs, *, comm: Any = None, progress: bool = True
) -> AggregateReport | None:
    """Collect every metrics file of ``source`` (globs or workspace directories) and write the outputs.

    Args:
        source: a glob pattern or a workspace directory, or several of them pooled into one table (runs of
            several studies: their lines and training seeds are matched by the runs' attributes, not paths). A
            results file named by its path is read as the runs it holds (its study's workspace may be gone).
        outputs: where to write.
        comm: an mpi4py communicator to read in parallel, or None to read serially.
        progress: show a rich progress bar on stderr when there are many files.

    Returns:
        The report on rank 0 (always, serially); None on the other MPI ranks.

    Raises:
        ResultsError: nothing matches, no file is usable, or an output cannot be written (rank 0 only).
    """
    sources = [os.fspath(one) for one in ([source] if isinstance(source, str | os.PathLike) else source)]
    text = sources[0] if len(sources) == 1 else shlex.join(sources)
    with contextlib.ExitStack() as held:

        def find() -> Discovery:  # rank 0 only: the lock is held until every output is in place
            held.enter_context(output_lock(outputs.results))
            return _discover_checked(sources, outputs)

        if comm is None:
            discovery = find()
            with _progress(len(discovery.files), progress) as advance:
                loaded: list[Row | Problem] | None = load_guarded(discovery, discovery.files, advance)
        else:
            found = broadcast_discovery(comm, find)
            if found is None:
                return None
            discovery = found
            shown = progress and comm.Get_rank() == ROOT
            with _progress(len(discovery.files) // comm.Get_size() + 1, shown) as advance:
                loaded = gather_loaded(comm, discovery, advance)
        if loaded is None:
            return None
        return _finish(text, discovery, loaded, outputs)


def _named(outputs: AggregateOutputs) -> list[tuple[str, Path]]:
    """Every file the aggregation writes (the plot's SVG too), with the option that names it."""
    named = [(option, path) for option, path in zip(("--out", "--csv", "--markdown", "--plot"), _as_tuple(outputs),
                                                    strict=True) if path is not None]
    if outputs.plot is not None:
        named.append(("--plot (its SVG)", outputs.plot.with_suffix(".svg")))
    return named


def _discover_checked(sources: Sequence[Source], outputs: AggregateOutputs) -> Discovery:
    """The files to read; earlier outputs are left out, and an output that would replace an input is refused."""
    named = _named(outputs)
    discovery = discover_all(sources, exclude=[path for _, path in named if replaceable(path)])
    check_outputs(named, discovery)
    return discovery


def _as_tuple(outputs: AggregateOutputs) -> tuple[Path | None, ...]:
    return (outputs.results, outputs.csv, outputs.markdown, outputs.plot)


def _finish(
    source: str, discovery: Discovery, loaded: list[Row | Problem], outputs: AggregateOutputs
) -> AggregateReport:
    loaded = expand_results_files(discovery, loaded)
    rows, duplicates = split_duplicates([item for item in loaded if isinstance(item, dict)])
    problems = [item for item in loaded if isinstance(item, Problem)] + list(discovery.problems) + duplicates
    table = build_table(rows, problems)
    if not rows:
        raise ResultsError(_nothing_usable(source, table.problems))
    draws = bootstrap_groups(table)
    summary = summarize_runs(table, draws)
    replaced = earlier_runs(outputs.results)  # under the output lock: no other aggregation writes it meanwhile
    _write_outputs(outputs, source, table, summary, draws)
    return AggregateReport(outputs, len(discovery.files) + len(discovery.problems), table, summary, replaced)


def _write_outputs(outputs: AggregateOutputs, source: str, table: RunTable, summary: tuple[SummaryRow, ...],
                   draws: dict[GroupKey, Any]) -> None:
    """Every output to its temporary, then all renamed into place together (:mod:`merlin_mdm.results.outputs`)."""
    for path in _as_tuple(outputs):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    with staged_writes() as stage:
        write_results(outputs.results, table, summary, source, staging=stage.temporary(outputs.results))
        if outputs.csv is not None:
            _write_text(stage.temporary(outputs.csv), outputs.csv, table_csv(table))
        if outputs.plot is not None:
            plot_accuracy_vs_nfe(summary, stage.temporary(outputs.plot),
                                 svg=stage.temporary(outputs.plot.with_suffix(".svg")))
        if outputs.markdown is not None:
            figure = _relative(outputs.plot, outputs.markdown.parent) if outputs.plot is not None else ""
            _write_text(stage.temporary(outputs.markdown), outputs.markdown,
                        render_report(summary, table, draws, outputs.title, outputs.command, figure, outputs.notes))
        stage.commit()


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def _nothing_usable(source: str, problems: tuple[Problem, ...]) -> str:
    head = f"no usable metrics file in {source} ({len(problems)} file(s) examined, none usable)"
    listed = [f"  {p.path}: {p.kind}: {p.message}" for p in problems[:20]]
    if len(problems) > 20:
        listed.append(f"  ... and {len(problems) - 20} more")
    return "\n".join([head, *listed])


def _write_text(tmp: Path, final: Path, text: str) -> None:
    try:
        tmp.write_text(text, encoding="utf-8")
    except OSError as err:
        raise ResultsError(f"{final}: cannot write: {err}") from err


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    if not enabled or total < PROGRESS_MIN_FILES:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("reading metrics files", total=total)
        yield lambda: bar.advance(task)
