"""Finding a study's metrics files and reading each into one flat table row, or a listed problem.

Nothing is dropped silently: every file that is found but is not a usable metrics file becomes a
:class:`Problem`, and in a workspace a run directory without its metrics file while its siblings have
one becomes a ``missing`` problem.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from merlin_mdm.errors import UsageError
from merlin_mdm.results.metrics import MetricsFileError, is_temporary_name, read_metrics

__all__ = ["Discovery", "Problem", "Row", "discover", "discover_all", "load_run"]

Row = dict[str, Any]
"""One run: the metrics file's attributes flattened to scalars, plus ``path`` and ``n_examples`` (and, from
:func:`load_run`, the per-example ``_correct`` and ``_nfe`` arrays, which the table keeps apart)."""


@dataclass(frozen=True, order=True)
class Problem:
    """A file that did not make it into the table, and why.

    Attributes:
        path: the file, as listed in the table's ``path`` column.
        kind: one of :data:`merlin_mdm.results.metrics.PROBLEM_KINDS`.
        message: what is wrong.
    """

    path: str
    kind: str
    message: str


@dataclass(frozen=True)
class Discovery:
    """The files to read and the problems already known from the directory listing.

    Attributes:
        root: directory that table paths are relative to (the workspace), or None for a glob.
        files: every candidate metrics file, sorted, as the strings the table will show.
        problems: expected files that are absent (``missing``).
        named: the listed files that a source names by their path (not a glob, not found by walking a
            workspace): an aggregated results file among them is read as the runs it holds
            (:mod:`merlin_mdm.results.results_runs`).
    """

    root: Path | None
    files: tuple[str, ...]
    problems: tuple[Problem, ...]
    named: frozenset[str] = frozenset()

    def resolve(self, name: str) -> Path:
        """The file system path of a listed file."""
        return self.root / name if self.root is not None else Path(name)


def discover(source: str | os.PathLike[str], exclude: Sequence[Path] = ()) -> Discovery:
    """List the metrics files of a glob or a workspace directory.

    A directory is searched recursively for ``*.h5`` files and leftover temporary files of interrupted
    writes; a glob is expanded (``**`` allowed). Files in ``exclude`` (the results file being written)
    are left out.

    Args:
        source: a glob pattern or a directory.
        exclude: paths never to list.

    Returns:
        The sorted candidates and the ``missing`` problems.

    Raises:
        UsageError: the source matches nothing at all, or only the outputs.
    """
    text = os.fspath(source)
    skip = {path.resolve() for path in exclude}
    if Path(text).is_dir():
        return _discover_workspace(Path(text), skip)
    matches = [name for name in glob.glob(text, recursive=True) if Path(name).is_file()]
    if not matches:
        raise UsageError(f"{text}: no such workspace directory, and the glob matches no file")
    files = sorted(name for name in matches if Path(name).resolve() not in skip)
    if not files:
        raise UsageError(f"{text}: the only file it names is an output of this aggregation ({sorted(matches)[0]}): "
                         "name the runs' metrics files, a workspace or a results file to read, or another --out")
    named = frozenset(files) if not glob.has_magic(text) else frozenset()
    return Discovery(root=None, files=tuple(files), problems=(), named=named)


def discover_all(sources: Sequence[str | os.PathLike[str]], exclude: Sequence[Path] = ()) -> Discovery:
    """List the metrics files of several globs or workspace directories as one set (one: :func:`discover`).

    With several sources the table paths are the file system paths (a workspace's prefixed by the
    directory as given), so runs of different studies never share a name; a file that two sources both
    name (by any path or link to it) is listed once, under the first name found.

    Args:
        sources: glob patterns or directories, at least one.
        exclude: paths never to list.

    Returns:
        The sorted candidates and the ``missing`` problems of every workspace.

    Raises:
        UsageError: no source is given, or one matches nothing at all.
    """
    if not sources:
        raise UsageError("no source given: name a workspace directory or a glob of metrics files")
    if len(sources) == 1:
        return discover(sources[0], exclude)
    files: dict[str, str] = {}
    problems: dict[str, Problem] = {}
    named: set[str] = set()
    for source in sources:
        found = discover(source, exclude)
        for name in found.files:
            path = found.resolve(name)
            shown = files.setdefault(os.path.realpath(path), path.as_posix())
            if name in found.named:
                named.add(shown)
        for problem in found.problems:
            shown = found.resolve(problem.path).as_posix()
            problems.setdefault(os.path.realpath(shown), replace(problem, path=shown))
    return Discovery(root=None, files=tuple(sorted(files.values())), problems=tuple(sorted(problems.values())),
                     named=frozenset(named))


def _discover_workspace(root: Path, skip: set[Path]) -> Discovery:
    found, unreadable = _walk_files(root)
    kept = sorted(path.relative_to(root).as_posix() for path in found if path.resolve() not in skip)
    blocked = {problem.path for problem in unreadable}
    missing = [p for p in _missing_siblings(root, kept, _run_depth(root))
               if Path(p.path).parent.as_posix() not in blocked]  # an unlisted folder is said once, as unreadable
    return Discovery(root=root, files=tuple(kept), problems=tuple(sorted([*unreadable, *missing])))


def _walk_files(root: Path) -> tuple[list[Path], list[Problem]]:
    """Candidate files below ``root`` and the folders that could not be listed (``unreadable`` problems).

    Linked folders are followed (a run directory that is a link to another file system), each real folder once,
    so a link loop ends.
    """
    found: list[Path] = []
    unreadable: list[Problem] = []

    def failed(err: OSError) -> None:
        shown = Path(err.filename).relative_to(root).as_posix() if err.filename else root.as_posix()
        why = f"cannot list this folder ({err.strerror or err}): the runs in it are not read"
        unreadable.append(Problem(shown, "unreadable", why))

    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, onerror=failed, followlinks=True):
        kept = []
        for name in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, name))
            if real not in seen:  # a link loop, or a second link to a folder already walked
                seen.add(real)
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            if (name.endswith(".h5") and not name.startswith(".")) or _is_temp_metrics(name):
                found.append(Path(dirpath, name))
    return found, unreadable


def _run_depth(root: Path) -> int:
    """Parts of a run's file path below ``root``: ``<step>/<run>/<file>`` from a workspace (or any folder),
    ``<run>/<file>`` from a step folder of a workspace (its siblings are run folders by construction)."""
    return 2 if (root.resolve().parent / "merlin_info").is_dir() else 3


def _is_temp_metrics(name: str) -> bool:
    return is_temporary_name(name) and ".h5." in name


def _final_name(name: str) -> str:
    """``metrics.h5`` for both ``metrics.h5`` and its temporary ``.metrics.h5.<pid>.<hex>.tmp``."""
    return name[1:].split(".h5.", 1)[0] + ".h5" if _is_temp_metrics(name) else name


def _missing_siblings(root: Path, files: Iterable[str], depth: int) -> list[Problem]:
    """Run directories lacking the metrics file that at least two of their siblings have."""
    having: dict[tuple[Path, str], set[str]] = {}
    for name in files:
        rel = Path(name)
        if len(rel.parts) < depth:  # a run directory sits at least at <step>/<run>/<file> (see _run_depth)
            continue
        key = (rel.parent.parent, _final_name(rel.name))
        having.setdefault(key, set()).add(rel.parent.name)
    problems = []
    for (parent, filename), dirs in sorted(having.items()):
        if len(dirs) < 2:
            continue
        for sibling in sorted(p.name for p in (root / parent).iterdir() if p.is_dir()):
            if sibling not in dirs:
                shown = (parent / sibling / filename).as_posix()
                why = f"no {filename} here while {len(dirs)} sibling runs have one"
                problems.append(Problem(shown, "missing", why))
    return problems


def load_run(path: Path, shown: str) -> Row | Problem:
    """Read one metrics file into a table row, or say why it cannot be.

    Args:
        path: where the file is.
        shown: the name the table uses for it.

    Returns:
        The row (attributes plus ``path`` and ``n_examples``) or the problem.
    """
    try:
        metrics = read_metrics(path)
    except MetricsFileError as err:
        return Problem(shown, err.kind, err.reason)
    row: Row = {"path": shown, "n_examples": metrics.n_examples}
    row.update(metrics.attrs)
    row["_correct"] = np.asarray(metrics.datasets["correct"], dtype=np.int8)
    row["_nfe"] = np.asarray(metrics.datasets["nfe"], dtype=np.int64)
    return row

