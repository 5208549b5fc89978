"""The guards around what an aggregation writes.

- **No output replaces an input.** An output path that is one of the files the aggregation reads, or an existing
  per-run metrics file anywhere, is refused before anything is read or written. An earlier results file, CSV,
  report or plot (what an aggregation writes) may be replaced, and is never read as an input.
- **One aggregation at a time per results file.** An exclusive lock (``flock``) on ``.<out name>.lock`` beside
  the results file, holding the owner's pid, is taken before the files are listed and kept until every output is
  in place; a second aggregation to the same results file is refused at once, naming that pid.
- **The outputs change together.** Each is written to a temporary beside it (``.<name>.<pid>.<hex>.part``,
  which no discovery lists) and all are renamed at the end, one after the other, with the stop signals held back
  meanwhile: a SIGTERM never leaves the results file of one aggregation beside the report of another.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from merlin_mdm.errors import ResultsError, UsageError
from merlin_mdm.results.collect import Discovery
from merlin_mdm.results.metrics import RESULTS_FILE_KIND, has_hdf5_signature, is_temporary_name, open_h5
from merlin_mdm.signals import STOP_SIGNALS

__all__ = ["StagedWrites", "check_outputs", "earlier_runs", "output_lock", "replaceable", "staged_writes"]

NamedOutput = tuple[str, Path]
"""An output path and the option that names it (``--out``, ``--csv``, ...), for messages."""

_NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP}  # file systems without flock (some Lustre mounts)


def replaceable(path: Path) -> bool:
    """Whether an output may be written over ``path``: it does not exist, it is a results file, or it is neither
    an HDF5 file nor named like a metrics file (a CSV, report or plot).

    Such a path is also never read as an input; any other file at an output path is refused if it is an input.
    """
    if not path.is_file():
        return True
    if path.name.endswith(".h5") or is_temporary_name(path.name) or has_hdf5_signature(path):
        return _file_kind(path) == RESULTS_FILE_KIND
    return True


def earlier_runs(path: Path) -> int | None:
    """The runs an earlier results file at ``path`` holds (what writing replaces, said to the user); None when
    there is none."""
    if not path.is_file() or _file_kind(path) != RESULTS_FILE_KIND:
        return None
    runs = np.asarray((_root_attrs(path) or {}).get("n_runs", 0)).reshape(-1)  # stored as a 1-element array
    return int(runs[0]) if runs.size == 1 and np.issubdtype(runs.dtype, np.integer) else 0


def check_outputs(outputs: Sequence[NamedOutput], discovery: Discovery) -> None:
    """Refuse an output path that is an input of this aggregation or an existing per-run metrics file.

    Raises:
        UsageError: one line naming the path, what it is and what to do; nothing has been written.
    """
    inputs = {os.path.realpath(discovery.resolve(name)): name for name in discovery.files}
    _refuse_shared(outputs)
    for option, path in outputs:
        shown = inputs.get(os.path.realpath(path))
        if shown is not None:
            raise UsageError(f"{path}: {option} names an input of this aggregation ({shown}), which writing would "
                             "replace: name another path (nothing was written)")
        if path.is_file() and has_hdf5_signature(path) and _file_kind(path) is None and _has_schema_version(path):
            raise UsageError(f"{path}: {option} names a per-run metrics file, which writing would replace: name "
                             "another path (nothing was written)")
        if option == "--plot" and path.suffix.lower() != ".png":
            raise UsageError(f"{path}: {option}: the figure is written as PNG, with an SVG beside it; name a .png "
                             "file (nothing was written)")


def _refuse_shared(outputs: Sequence[NamedOutput]) -> None:
    """Two outputs named one path: the last written replaced the other (`--csv r.h5` left no results file)."""
    seen: dict[str, str] = {}
    for option, path in outputs:
        first = seen.setdefault(os.path.realpath(path), option)
        if first != option:
            raise UsageError(f"{path}: {first} and {option} name the same file, and one would replace the other: "
                             "name two paths (nothing was written)")


def _root_attrs(path: Path) -> dict[str, object] | None:
    try:
        with open_h5(path, "r") as handle:
            return dict(handle.attrs.items())
    except (OSError, KeyError, ValueError, RuntimeError):
        return None


def _file_kind(path: Path) -> str | None:
    attrs = _root_attrs(path) or {}
    kind = attrs.get("file_kind")
    return kind.decode("utf-8") if isinstance(kind, bytes) else kind if isinstance(kind, str) else None


def _has_schema_version(path: Path) -> bool:
    return "schema_version" in (_root_attrs(path) or {})


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the exclusive lock of results file ``out`` (its folder is created) until the block ends.

    Raises:
        ResultsError: another process holds it (its pid named), or the lock file cannot be created.
    """
    lock = out.parent / f".{out.name}.lock"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = _locked(lock, out)
    except OSError as err:
        raise ResultsError(f"{out}: cannot take the lock {lock}: {err}") from err
    if fd is None:  # no flock on this file system: unguarded, as before locks
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still holding it: a waiter that opened it sees the file gone and retries
        os.close(fd)


def _locked(lock: Path, out: Path) -> int | None:
    """An open, flock-ed descriptor of ``lock`` with this pid in it; None where flock is not supported."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if err.errno in _NO_FLOCK:
                return None
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise ResultsError(f"{out}: another aggregate{who} is writing it now: wait for it to finish, or "
                               "name another --out") from None
        if _same_file(fd, lock):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)  # its holder removed it between our open and our lock: take the new one


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class StagedWrites:
    """Temporaries of the outputs, renamed onto their final names together by :meth:`commit`."""

    def __init__(self) -> None:
        self._pairs: list[tuple[Path, Path]] = []

    def temporary(self, final: Path) -> Path:
        """A new temporary in ``final``'s folder that :meth:`commit` renames to ``final``."""
        tmp = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
        self._pairs.append((tmp, final))
        return tmp

    def commit(self) -> None:
        """Rename every temporary into place, the stop signals held back until the last rename is done.

        Raises:
            ResultsError: a rename failed.
        """
        with _stop_signals_held():
            for tmp, final in self._pairs:
                try:
                    os.replace(tmp, final)
                except OSError as err:
                    raise ResultsError(f"{final}: cannot write: {err}") from err
        self._pairs.clear()

    def discard(self) -> None:
        """Remove every temporary not yet renamed."""
        for tmp, _ in self._pairs:
            tmp.unlink(missing_ok=True)
        self._pairs.clear()


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """The stop signals wait for the end of the block: noted by handlers of their own in the main thread and
    sent again after it, so the handlers in place then (the command's) run. Blocking them with the thread's
    signal mask is not enough when another thread runs: a signal sent to the process goes to a thread that
    does not block it, and Python then runs its handler in the main thread at once (the CI saw two of five
    files renamed). Elsewhere than the main thread, the mask is what can be done."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return
    noted: list[int] = []
    previous = {signum: signal.signal(signum, lambda n, _frame: noted.append(n)) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if noted:
            signal.raise_signal(noted[0])  # handled now, by the handler the command had


@contextlib.contextmanager
def staged_writes() -> Iterator[StagedWrites]:
    """A :class:`StagedWrites` whose temporaries are removed however the block ends (committed or not)."""
    stage = StagedWrites()
    try:
        yield stage
    finally:
        stage.discard()
