"""Samples: reading .npy/.csv/.tab files and Merlin's hierarchical sample directories."""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, cast

from merlin_mdm.errors import SpecError, SpecIssue, UsageError, WorkspaceError

if TYPE_CHECKING:  # `status` reads plans (and their samples) without loading the spec model
    import numpy as np

    from merlin_mdm.spec import Spec

__all__ = ["PARSED_MIN_ROWS", "SAMPLE_SUFFIXES", "SampleSet", "check_samples_file", "checked_samples", "checked_shape",
           "hierarchy_sizes", "keep_parsed", "parsed_path", "read_samples", "sample_count", "sample_path"]

SAMPLE_SUFFIXES = (".npy", ".csv", ".tab")
_log = logging.getLogger(__name__)
_RAGGED = re.compile(r"number of columns changed from \d+ to \d+")  # numpy's loadtxt, on a ragged table


def hierarchy_sizes(n_samples: int, level_max_dirs: int) -> tuple[int, ...]:
    """Samples per directory at each level, Merlin's layout (10,000 samples, 25 per level -> (625, 25, 1)).

    A single sample has no levels: it runs in the step's own folder, as in Merlin.
    """
    if n_samples <= 1:
        return ()
    sizes = [1]
    while sizes[0] < n_samples:
        sizes.insert(0, sizes[0] * level_max_dirs)
    if len(sizes) > 1:
        del sizes[0]
    return tuple(sizes)


def sample_path(index: int, sizes: tuple[int, ...], digits: int) -> str:
    """The relative directory of sample ``index``, e.g. ``00/03/17``."""
    parts = []
    rest = index
    for size in sizes:
        parts.append(f"{rest // size:0{digits}d}")
        rest %= size
    return "/".join(parts)


def _bad(path: Path, message: str) -> SpecError:
    return SpecError([SpecIssue(str(path), 0, 0, "merlin.samples.file", message)])


def read_samples(path: Path, column_labels: Sequence[str] = ()) -> np.ndarray:
    """Load a samples file as a 2-D array (one row per sample); .npy is memory-mapped.

    A CSV/tab first row that repeats ``column_labels`` (in its first columns) is a header and is skipped. Columns
    past those ``column_labels`` names are kept but not checked: Merlin ignores them (:func:`checked_shape`).
    """
    import numpy as np  # imported here: `merlin-mdm status` and --help never need it

    suffix = path.suffix.lower()
    if suffix not in SAMPLE_SUFFIXES:
        raise _bad(path, f"unsupported samples file type '{suffix}' (use one of {', '.join(SAMPLE_SUFFIXES)})")
    if path.exists() and not path.is_file():  # a pipe never ends until its writer closes, /dev/zero never does
        what = "a folder" if path.is_dir() else "not a regular file (a pipe or a device, such as /dev/zero)"
        raise _bad(path, f"the samples file is {what}: write the samples to a file and name that")
    try:
        if suffix == ".npy":
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with warnings.catch_warnings():
                # numpy warns (rather than fails) on an empty file and on comment lines; both are handled here.
                warnings.simplefilter("ignore", UserWarning)
                delimiter = "," if suffix == ".csv" else None
                # utf-8-sig: a CSV saved by Excel starts with a byte-order mark, which became part of the first value
                data = np.loadtxt(path, delimiter=delimiter, dtype=str, ndmin=2, comments="#", encoding="utf-8-sig")
            if column_labels and data.shape[0] and _is_header(data[0], column_labels):
                data = data[1:]
    except FileNotFoundError:
        raise _bad(path, "samples file not found") from None
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty or cut .npy (click would say "Aborted.")
        raise _bad(path, f"cannot read samples: {_unreadable(path, exc)}") from None
    if data.ndim == 1:
        data = data.reshape(-1, 1)
    if data.ndim != 2:
        raise _bad(path, f"samples must be a 2-D table (one row per sample), got shape {data.shape}")
    if data.shape[0] == 0:
        raise _bad(path, "the samples file holds no samples")
    _check_values(path, data[:, :len(column_labels)] if column_labels else data)
    return cast("np.ndarray", data)


def _is_header(first: np.ndarray, column_labels: Sequence[str]) -> bool:
    """Whether a text file's first row names the columns: its first cells are ``column_labels`` (the file may have
    more columns, which Merlin ignores)."""
    return len(first) >= len(column_labels) and [c.strip() for c in first[:len(column_labels)]] == list(column_labels)


def _unreadable(path: Path, exc: Exception) -> str:
    """Why ``path`` could not be read, in the user's terms where numpy's message speaks of its own API."""
    if path.suffix.lower() != ".npy":
        return _ragged(path, str(exc)) or str(exc)
    try:
        with path.open("rb") as head:
            magic = head.read(6)
    except OSError:
        return str(exc)
    if magic != b"\x93NUMPY":
        return "not a NumPy .npy file (numpy.save writes them)" if magic else "the file is empty"
    if isinstance(exc, EOFError) or "EOF" in str(exc):
        return f"the file is cut short ({exc})"
    if "Python objects" in str(exc) or "pickle" in str(exc):
        return "it holds Python objects (dtype object), which are never loaded since they could run code"
    return str(exc)


def _ragged(path: Path, error: str) -> str:
    """numpy's "the number of columns changed" as the file's first line whose number of values is not that of
    most lines ('' for other errors): numpy counts rows without comments and blank lines, names the second of two
    lines that differ (the first may be the odd one), and suggests its own `usecols`."""
    if not _RAGGED.search(error):
        return ""
    csv = path.suffix.lower() == ".csv"
    counts: dict[int, int] = {}  # line number -> values
    quoted = False
    with path.open(encoding="utf-8-sig", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0]
            if text.strip():
                counts[number] = len(text.split(",") if csv else text.split())
                quoted = quoted or (csv and '"' in text)
    usual = Counter(counts.values()).most_common(1)[0][0] if counts else 0
    odd = next((number for number, count in counts.items() if count != usual), None)
    if odd is None:
        return ""
    said = f"line {odd} has {counts[odd]} value(s) where most lines have {usual}"
    return f"{said}; {QUOTES_SPLIT}" if quoted else said


QUOTES_SPLIT = ("the CSV reader splits at every comma, inside quotes too (as Merlin's does): write the value "
                "without a comma, or save the samples as a .tab or .npy file")


def _check_quotes(path: Path, data: np.ndarray, labelled: int) -> None:
    """Refuse a CSV value quoted around a comma, which the reader split into halves (``"x`` and `` y"`` of
    ``"x, y"``) that would reach the tasks so: a cell of the first ``labelled`` columns that opens a quote without
    closing it, with a cell after it in its row that closes one without opening it. Checked when a study is made
    or validated, not when its tasks read their rows (a study made before keeps running)."""
    import numpy as np

    if path.suffix.lower() != ".csv" or data.dtype.kind != "U" or data.shape[1] < 2 or not labelled:
        return
    if b'"' not in path.read_bytes():  # the byte scan: 1M rows in ms
        return
    stripped = np.char.strip(data)
    opens, closes = np.char.startswith(stripped, '"'), np.char.endswith(stripped, '"')
    opens_only, closes_only = opens & ~closes, closes & ~opens
    # a cell that closes one further right in the row: a reversed running OR, shifted one column to the left
    later = np.zeros_like(closes_only)
    later[:, :-1] = np.logical_or.accumulate(closes_only[:, ::-1], axis=1)[:, ::-1][:, 1:]
    split = np.argwhere((opens_only & later)[:, :labelled])
    if len(split):
        row, col = (int(v) for v in split[0])
        raise _bad(path, f"row {row + 1}, column {col + 1} holds {_shown(data[row, col])}, the first part of a "
                         f"quoted value with a comma in it: {QUOTES_SPLIT}")


def _as_floats(data: np.ndarray) -> np.ndarray:
    """``data`` as floats (ValueError when a value is no number), with the same rules (Python's ``float``) for
    every dtype. Numbers are not cast: a complex one keeps its imaginary part (rendered ``(1+2j)`` in a task, as
    in Merlin). Text wider than 256 characters goes through Python strings: numpy's own cast buffers 128 values of
    the widest width, 500 MB for a single 1 MB value."""
    import numpy as np

    if data.dtype.kind in "biufc":
        return data
    if data.dtype.kind == "U" and data.dtype.itemsize > 4 * 256:
        return data.astype(object).astype(float)
    return np.asarray(data, dtype=float)


def _check_values(path: Path, data: np.ndarray) -> None:
    """Refuse NaN/inf values, and a first row of names over numeric rows (a header not named as the columns)."""
    import numpy as np

    try:
        numbers = _as_floats(data)
    except ValueError:
        if data.shape[0] > 1 and _numeric(data[1:]) and not _numeric(data[:1]):
            raise _bad(path, f"the first row {[_shown(v) for v in data[0]]} looks like a header: make it repeat "
                             "merlin.samples.column_labels exactly, or remove it") from None
        return
    bad = np.argwhere(~np.isfinite(numbers))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        raise _bad(path, f"{len(bad)} value(s) are not finite numbers, the first in row {row + 1}, column "
                         f"{col + 1}: {_shown(data[row, col])}")


def _shown(value: object, most: int = 40) -> str:
    """A value as an error message shows it: cut after ``most`` characters (a cell may hold megabytes)."""
    text = str(value)
    return text if len(text) <= most else f"{text[:most]}... ({len(text)} characters)"


def _numeric(block: np.ndarray) -> bool:
    try:
        _as_floats(block)
    except ValueError:
        return False
    return True


def sample_count(path: Path, column_labels: Sequence[str] = ()) -> tuple[int, int]:
    """(rows, columns) of a samples file without loading a .npy into memory."""
    data = read_samples(path, column_labels)
    return int(data.shape[0]), int(data.shape[1])


def _marks(spec: Spec, key: str) -> tuple[int, int]:
    # Imported here: loading a plan (every `status`) must not load the YAML parser.
    from merlin_mdm.spec.issues import value_mark
    from merlin_mdm.spec.loader import MarkedDict

    merlin = spec.raw.get("merlin")
    node = merlin.get("samples") if isinstance(merlin, MarkedDict) else None
    return value_mark(node, key)


def checked_shape(spec: Spec, path: Path, given: str = "") -> tuple[int, int]:
    """(rows, columns) of ``path`` read as ``spec``'s samples; a located SpecError when it does not fit.

    ``given`` names a file the command line gave instead of the spec's (``--samplesfile s.csv``): its problems
    are then usage errors that name it, since no line of the spec is wrong.
    """
    data = checked_samples(spec, path, given)
    return int(data.shape[0]), int(data.shape[1])


def checked_samples(spec: Spec, path: Path, given: str = "") -> np.ndarray:
    """The table :func:`checked_shape` checks (a .npy memory-mapped), for a caller that keeps it."""
    cfg = spec.samples
    labels = cfg.column_labels if cfg is not None else ()
    try:
        data = read_samples(path, labels)
        _check_quotes(path, data, len(labels))
        rows, columns = int(data.shape[0]), int(data.shape[1])
    except SpecError as exc:
        if given:
            raise UsageError("; ".join(f"{given}: {issue.message}" for issue in exc.issues)) from None
        line, col = _marks(spec, "file")
        raise SpecError([SpecIssue(str(spec.path), line, col, "merlin.samples.file", f"{path}: {issue.message}")
                         for issue in exc.issues]) from None
    if columns != len(labels):
        _wrong_columns(spec, path, columns, given)
    from merlin_mdm.spec.limits import SAMPLES_REMEDY, size_problem  # here: `status` reads samples without the spec

    # each sample is a folder and a script of every step that uses it: refused before any is made
    problem = size_problem(0, rows, f"{path}: its {rows:,} samples (one task each, for every step that uses them)",
                           SAMPLES_REMEDY)
    if problem:
        if given:
            raise UsageError(f"{given}: {problem}")
        line, col = _marks(spec, "file")
        raise SpecError([SpecIssue(str(spec.path), line, col, "merlin.samples.file", problem)])
    return data


def _wrong_columns(spec: Spec, path: Path, columns: int, given: str) -> None:
    """Fewer columns than column_labels is refused: Merlin would leave the last labels' $(NAME) unfilled in the
    commands. More are used as Merlin uses them: the first ones, with a warning naming those ignored."""
    labels = spec.samples.column_labels if spec.samples is not None else ()
    line, col = _marks(spec, "column_labels")
    if columns > len(labels):
        ignored = f"column {columns}" if columns == len(labels) + 1 else f"columns {len(labels) + 1}-{columns}"
        where = f"{given}" if given else f"{spec.path}: merlin.samples.file {path}"
        _log.warning(f"{where}: {columns} columns, but merlin.samples.column_labels ({spec.path}:{line}:{col}) "
                     f"names {len(labels)} ({', '.join(labels)}): {ignored} ignored, as Merlin does")
        return
    if given:
        raise UsageError(f"{given}: {columns} column(s), but merlin.samples.column_labels "
                         f"({spec.path}:{line}:{col}) names {len(labels)}: {', '.join(labels)}")
    raise SpecError([SpecIssue(str(spec.path), line, col, "merlin.samples.column_labels",
                               f"{len(labels)} column label(s) for {columns} column(s) in {path}")])


def check_samples_file(spec: Spec, tokens: Mapping[str, str]) -> list[SpecIssue]:
    """At validate time: the samples file, when it exists already, is readable and fits column_labels. Returns
    the portability notes on it (what runs here but Merlin 1.13 refuses)."""
    if spec.samples is None:
        return []
    from merlin_mdm.spec.tokens import substitute

    text = substitute(spec.samples.file, dict(tokens))
    path = Path(text).expanduser()
    path = path if path.is_absolute() else spec.root / path
    if "$(" in text or not path.exists():
        return []  # generated at run time (merlin.samples.generate), or given with --samplesfile
    rows, _ = checked_shape(spec, path)
    from merlin_mdm.spec.limits import SAMPLES_REMEDY, planned_instances, planned_tasks, size_problem

    instances = planned_instances(spec)
    what = f"the steps' parameter combinations times the {rows:,} samples of {path}"
    problem = size_problem(instances, planned_tasks(spec, rows), what, f"{SAMPLES_REMEDY}, or fewer parameter values")
    if problem:
        line, col = _marks(spec, "file")
        raise SpecError([SpecIssue(str(spec.path), line, col, "merlin.samples.file", problem)])
    return _samples_notes(spec, path)


def _samples_notes(spec: Spec, path: Path) -> list[SpecIssue]:
    """A 1-D .npy runs here as one column; Merlin 1.13 refuses it ("fewer than the required minimum dimensions")."""
    import numpy as np

    if path.suffix.lower() != ".npy" or np.load(path, mmap_mode="r", allow_pickle=False).ndim != 1:
        return []
    line, col = _marks(spec, "file")
    return [SpecIssue(str(spec.path), line, col, "merlin.samples.file",
                      f"{path} is a 1-D array: it runs here as one column, but Merlin 1.13 refuses it (\"fewer than "
                      "the required minimum dimensions (1 < 2)\"); save it as a column, e.g. "
                      "np.save(path, values.reshape(-1, 1)), to keep the spec portable", "note")]


# A text table of this many samples is kept parsed beside its copy in merlin_info/ (:func:`keep_parsed`): 1M
# rows of CSV took 3-9 s to parse and 260 MB in every worker process that read them. Smaller ones are parsed.
PARSED_MIN_ROWS = 10_000


def parsed_path(copy: Path) -> Path:
    """Where the parsed rows of the text samples file ``copy`` are kept. Named after the copy's size and mtime:
    rows kept for a copy that changed since are never read (the copy is the truth; this only saves parsing it)."""
    stat = copy.stat()
    return copy.with_name(f".{copy.name}.rows-{stat.st_size}-{stat.st_mtime_ns}.npy")


def keep_parsed(copy: Path, rows: np.ndarray) -> None:
    """Keep ``rows``, the labelled columns parsed from the text file ``copy``, for its tasks to memory-map
    (:meth:`SampleSet.rows`); nothing for a .npy (mapped already) or a small table. As bytes when ASCII (numpy's
    text takes 4 bytes a character). A file system that refuses the write only costs the parsing."""
    import numpy as np

    if copy.suffix.lower() == ".npy" or rows.shape[0] < PARSED_MIN_ROWS or rows.dtype.kind != "U":
        return
    try:
        packed = rows.astype("S")
    except UnicodeEncodeError:
        packed = rows
    try:
        target = parsed_path(copy)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            with partial.open("wb") as out:
                np.save(out, packed, allow_pickle=False)
            os.replace(partial, target)  # whole or absent: a reader never maps half of it
        finally:
            partial.unlink(missing_ok=True)
    except OSError as exc:
        _log.debug("samples of %s kept unparsed: %s", copy, exc)


@dataclass(frozen=True)
class SampleSet:
    """The samples of a study: where they are and how their directories are laid out."""

    file: str  # absolute path of the copy in merlin_info/
    count: int  # number of samples (rows)
    column_labels: tuple[str, ...]
    level_max_dirs: int = 25
    _cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        """Directory sizes per level."""
        return hierarchy_sizes(self.count, self.level_max_dirs)

    @property
    def digits(self) -> int:
        """Zero padding of directory names."""
        return len(str(self.level_max_dirs))

    def path(self, index: int) -> str:
        """Relative directory of sample ``index``."""
        return sample_path(index, self.sizes, self.digits)

    def glob(self) -> str:
        """A glob matching every sample directory (MERLIN_GLOB_PATH)."""
        return "".join("*/" for _ in self.sizes)  # Merlin's form: one `*/` per level

    def rows(self) -> np.ndarray:
        """The sample table (cached per process); WorkspaceError when the study's copy is gone or no longer holds
        the samples it was made with (a truncated copy fed a task an empty value and marked it done)."""
        if "rows" not in self._cache:
            kept = self._kept_rows()
            if kept is not None:
                self._cache["rows"], self._cache["kept"] = kept, kept.dtype.kind == "S"
                return kept
            try:
                data = read_samples(Path(self.file), self.column_labels)
            except SpecError as exc:
                raise self._changed(exc.issues[0].message if exc.issues else str(exc)) from None
            if data.ndim != 2 or data.shape[0] != self.count or data.shape[1] < len(self.column_labels):
                shape = "x".join(map(str, data.shape))
                raise self._changed(f"it holds {shape} values where the study was made with {self.count} samples "
                                    f"of {len(self.column_labels)} columns")
            # the columns the labels name: Merlin fills its labels from a wider file's first columns
            self._cache["rows"] = data[:, :len(self.column_labels)]
        return cast("np.ndarray", self._cache["rows"])

    def values(self, index: int) -> list[str]:
        """Sample ``index``'s values as its tasks see them: ``str`` of each, as Merlin fills them (kept rows are
        text packed as ASCII bytes, unpacked here; a .npy of bytes shows them as Merlin does, ``b'...'``)."""
        row = self.rows()[index]
        return [v.decode() for v in row] if self._cache.get("kept") else [str(v) for v in row]

    def _kept_rows(self) -> np.ndarray | None:
        """The rows :func:`keep_parsed` kept for this copy as it is now, memory-mapped (None: parse the copy)."""
        import numpy as np

        copy = Path(self.file)
        if copy.suffix.lower() == ".npy" or self.count < PARSED_MIN_ROWS:
            return None
        try:
            data = np.load(parsed_path(copy), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None
        return data if data.shape == (self.count, len(self.column_labels)) else None

    def _changed(self, why: str) -> WorkspaceError:
        return WorkspaceError(f"the study's samples file {self.file} changed since the study was made ({why}): put "
                              "back the samples it was made with (its tasks read them by row), or run the spec again "
                              "for a new study")
