"""One runner per study: an exclusive ``flock`` on ``merlin_info/runner.lock``, held for the runner's life.

The lock file also names its holder (pid, host, command, start time), so that a refused ``restart`` can say
who holds the study and ``status`` can tell a live runner from a dead one: the kernel drops the lock when the
last process holding it dies, whatever killed it. The descriptor is inherited by the runner's forked worker
processes on purpose: until every one of them is gone the study counts as running, so a restart can never
race an orphan. Task shells do not inherit it (subprocesses close their descriptors).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from merlin_mdm.errors import WorkspaceError

__all__ = ["LOCK_FILE", "LockHolder", "WorkspaceLock", "lock_holder"]

LOCK_FILE = "runner.lock"
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_TRIES = 10  # a non-waiting acquire retries for about half a second: `status` may hold the lock briefly


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a workspace's lock."""

    pid: int
    host: str
    command: str
    since: float

    def __str__(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since)) if self.since else "?"
        return f"`merlin-mdm {self.command}` (pid {self.pid} on {self.host}, since {when})"

    def gone(self) -> bool:
        """Whether the holder is a process of this host that no longer exists: the lock is still held by the task
        processes it started, which end within seconds of it (a SIGKILLed runner)."""
        if self.host != os.uname().nodename or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def stopped(self) -> bool:
        """Whether the holder is a process of this host that a signal stopped (SIGSTOP, Ctrl-Z: state T in
        /proc): it holds the study but runs nothing until it is continued."""
        if self.host != os.uname().nodename:
            return False
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        return stat[stat.rfind(")") + 1 :].split()[:1] == ["T"]

    @classmethod
    def read(cls, path: Path) -> LockHolder | None:
        """The holder recorded in ``path`` (None when the file is missing or empty)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        return cls(int(data.get("pid", 0)), str(data.get("host", "?")), str(data.get("command", "?")),
                   float(data.get("since", 0.0)))


class _Unlockable(WorkspaceError):
    """The file system refused the lock itself (not because another process holds it)."""


class WorkspaceLock:
    """The runner lock of the workspace whose provenance directory is ``info``."""

    def __init__(self, info: Path, command: str, record: bool = True):
        self.path = Path(info) / LOCK_FILE
        self.command = command
        self.record = record  # False: a look (status) keeps the last runner's name in the file
        self.fd: int | None = None
        self.retaken: list[int] = []  # descriptors of the files taken again after the first was deleted (keep)
        self.folder_fd: int | None = None  # merlin_info/ itself, locked too where the file system allows it

    def acquire(self, wait: bool = False, tries: int = _TRIES) -> None:
        """Take the lock; WorkspaceError naming the holder when another runner has it and ``wait`` is False.

        The folder merlin_info/ is locked first (a folder lock holds on every machine of a local file system, on
        NFS only on the machine that took it; one the file system refuses is skipped): a task that deletes the
        lock file cannot let a second runner, or a `status` that takes the study for dead, in beside this one. A
        look (``record`` False: `status`) never makes the file: a file that is gone says nothing of the runner."""
        folder = self._lock_folder(wait, tries)
        try:
            self._lock_file(wait, tries)
        except BaseException:
            if folder is not None:
                os.close(folder)
            raise
        self.folder_fd = folder

    def _lock_folder(self, wait: bool, tries: int) -> int | None:
        try:
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return None
        try:
            self._lock(fd, wait, tries)
        except _Unlockable:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _lock_file(self, wait: bool, tries: int) -> None:
        for _ in range(_TRIES):
            fd = self._open()
            try:
                self._lock(fd, wait, tries)
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path) is not False:
                break
            os.close(fd)  # deleted or replaced between the open and the lock: a lock on it would hold nothing
        else:
            raise WorkspaceError(f"the workspace lock {self.path} keeps being deleted or replaced; find what does it "
                                 "(a task of the study?)")
        self.fd = fd
        self._write_holder(fd)

    def keep(self) -> str | None:
        """Take the lock again when its file was deleted or replaced while it was held (a task's `rm` in
        $(MERLIN_INFO)): a second runner would otherwise take a new file at once and run the study beside this one.
        Returns what happened, for the user; None when nothing did. The first descriptor stays open (the runner's
        forked workers hold it too), and a folder that is gone is for the runner's own move check.

        Raises:
            WorkspaceError: another process took the new file first: it holds the study now.
        """
        if self.fd is None or _same_file(self.retaken[-1] if self.retaken else self.fd, self.path) is not False:
            return None
        try:
            fd = self._open()
        except WorkspaceError:
            return None
        try:
            self._lock(fd, False, _TRIES)  # about half a second: a `status` may hold the new file briefly
        except WorkspaceError:
            os.close(fd)
            holder = LockHolder.read(self.path)
            raise WorkspaceError(f"{self.path} was deleted while this runner held it (by a task?), and "
                                 f"{holder or 'another process'} took the study since: this runner starts nothing "
                                 "more; keep the study's tasks away from merlin_info/") from None
        self.retaken.append(fd)
        self._write_holder(fd)
        return f"{self.path} was deleted while this runner held it (by a task?): taken again"

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | (os.O_CREAT if self.record else 0), 0o644)
        except FileNotFoundError:
            if self.record:
                raise WorkspaceError(f"cannot open the workspace lock {self.path}: its folder is gone") from None
            raise WorkspaceError(f"the workspace lock {self.path} is gone (deleted?): whether a runner holds the "
                                 "study cannot be told") from None
        except OSError as exc:
            raise WorkspaceError(f"cannot open the workspace lock {self.path}: {exc.strerror}") from None

    def _write_holder(self, fd: int) -> None:
        if self.record:
            holder = {"pid": os.getpid(), "host": os.uname().nodename, "command": self.command, "since": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)

    def _lock(self, fd: int, wait: bool, tries: int) -> None:
        if wait:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # interruptible: a signal handler that raises ends the wait
            except OSError as exc:
                raise _Unlockable(f"cannot lock {self.path}: {exc.strerror}") from None
            return
        for attempt in range(tries):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in _BUSY:
                    raise _Unlockable(f"cannot lock {self.path}: {exc.strerror}") from None
                if attempt + 1 < tries:
                    time.sleep(0.05)
        holder = LockHolder.read(self.path)
        who = str(holder) if holder else "another process"
        if holder is not None and holder.gone():
            who = f"the task processes of {holder}, which is gone (they end within seconds)"
        raise WorkspaceError(f"the study in {self.path.parent.parent} is in use by {who}; wait for it to end, "
                             "or pass --wait to start when it does")

    def release(self) -> None:
        """Give the lock up (it stays held while forked children still hold the descriptor)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        while self.retaken:
            os.close(self.retaken.pop())
        if self.folder_fd is not None:
            os.close(self.folder_fd)
            self.folder_fd = None

    def __enter__(self) -> WorkspaceLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool | None:
    """Whether ``path`` names the file open as ``fd``; None when that cannot be told (a passing error of a parallel
    file system)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _folder_held(info: Path) -> bool:
    """Whether a runner holds the folder ``info`` locked (False where the file system does not lock folders)."""
    try:
        fd = os.open(info, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in _BUSY
    finally:
        os.close(fd)
    return False


def lock_holder(info: Path, missing_is_held: bool = True) -> tuple[bool, LockHolder | None]:
    """(whether a live process holds the lock of ``info``, the holder recorded in the file). A lock file that is
    gone while no runner holds the folder counts as held unless ``missing_is_held`` is False (what to say, not
    whether to take the study: a file system without folder locks cannot tell)."""
    path = Path(info) / LOCK_FILE
    holder = LockHolder.read(path)
    if _folder_held(Path(info)):
        return True, holder
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # deleted (by a task?): a runner may hold it still, so the study is not taken
        return missing_is_held, None  # for a dead runner's (`restart`, which makes it, resumes one whose runner died)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _BUSY:
            return True, holder
        raise WorkspaceError(f"cannot read the workspace lock {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return False, holder
