"""Where things are in a study workspace, and finding one. Light on imports: `status` starts here."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from merlin_mdm.errors import NoWorkspace, WorkspaceError
from merlin_mdm.study.lock import LOCK_FILE
from merlin_mdm.study.plan import StudyPlan

__all__ = ["MAKING_FILE", "PLAN_FILE", "SOURCE_FILE", "Workspace", "study_of"]

PLAN_FILE = "plan.json"
MAKING_FILE = ".being-made"  # in merlin_info/ from its making's first step to its plan: a run killed in between
SOURCE_FILE = "spec_path"  # in merlin_info/: the spec file the study was made from (`restart` says when it changed)


def study_of(name: str, folder: str) -> bool:
    """Whether a workspace folder named ``folder`` is one of study ``name``'s: ``<name>_<YYYYmmdd-HHMMSS>``, with
    a ``.N`` suffix when several started in one second. A prefix took `hello_big_20261207-115344` for one of
    `hello`'s (`status hello.yaml`, `purge --only-mine`)."""
    return re.fullmatch(rf"{re.escape(name)}_\d{{8}}-\d{{6}}(\.\d+)?", folder) is not None


@dataclass(frozen=True)
class Workspace:
    """A study workspace directory."""

    root: Path

    @property
    def info(self) -> Path:
        """The provenance directory, merlin_info/."""
        return self.root / "merlin_info"

    def spec_copy(self, kind: str) -> Path | None:
        """merlin_info/<stem>.<kind>.yaml (kind: orig, partial, expanded), named after the spec file (or, in
        workspaces made before the thirty-eighth session, after the study); None when there is none."""
        return next(iter(sorted(self.info.glob(f"*.{kind}.yaml"))), None)

    def edited_source(self) -> str | None:
        """The spec file this study was made from, when its text is no longer the workspace's copy of it (edited
        after `run`); None when it is the same, or gone, or the workspace predates the record."""
        try:
            source = (self.info / SOURCE_FILE).read_text(encoding="utf-8", errors="surrogateescape").rstrip("\n")
            now = Path(source).read_text(encoding="utf-8") if os.path.isfile(source) else None  # never a FIFO
        except (OSError, UnicodeDecodeError):
            return None
        if now is None:
            return None
        kept = self.spec_text("orig")
        return source if kept is not None and now != kept else None

    def may_record(self) -> bool:
        """Whether this user may write the study's records: merlin_info/ and, where they exist, its status database
        and runner lock (a group's shared folder under umask 002 is writable while the files in it are not)."""
        files = (self.status_path, self.info / LOCK_FILE)
        return os.access(self.info, os.W_OK) and all(os.access(f, os.W_OK) for f in files if f.exists())

    def spec_text(self, kind: str) -> str | None:
        """The text of :meth:`spec_copy` (None when there is none or it cannot be read)."""
        copy = self.spec_copy(kind)
        try:
            return copy.read_text(encoding="utf-8") if copy is not None else None
        except (OSError, UnicodeDecodeError):
            return None

    @property
    def plan_path(self) -> Path:
        """The JSON plan workers load."""
        return self.info / PLAN_FILE

    @property
    def batch(self) -> Path:
        """Batch scripts of the allocations `launch` submitted, their output and records."""
        return self.info / "batch"

    @property
    def status_path(self) -> Path:
        """The local status database."""
        return self.info / "status.db"

    def load_plan(self) -> StudyPlan:
        """Read the plan (WorkspaceError when this is not a workspace)."""
        try:
            return StudyPlan.from_json(self.plan_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NoWorkspace(f"{self.root} is not a merlin-mdm workspace (no merlin_info/{PLAN_FILE})") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise WorkspaceError(f"{self.plan_path} is corrupt ({exc}): without it the study's tasks cannot be told "
                                 "apart, so it cannot be resumed; put back a copy if you have one, or run the spec "
                                 f"again for a new study (merlin_info/ keeps the spec it ran with)") from None

    def check_in_place(self, plan: StudyPlan) -> None:
        """Refuse a workspace that was copied or moved: its plan's commands and task folders name the folder
        it was made in, so running (or reading the done-markers of) a copy would act on that folder instead.

        Raises:
            WorkspaceError: the plan was made for another folder.
        """
        made = Path(plan.workspace)
        if not self.made_elsewhere(made):
            return
        where = "which still exists" if made.exists() else "which is gone: move this one back there"
        raise WorkspaceError(f"{self.root} was made as {made} ({where}); its tasks' commands and folders name that "
                             "path, so a copied or moved workspace cannot run or be read task by task here. Use "
                             "the original, or `merlin-mdm run` the spec again for a new workspace")

    def made_elsewhere(self, made: Path | str) -> bool:
        """Whether ``made`` (the folder the study was made in, as its plan or status store records it) is not
        this folder: the workspace was copied or moved."""
        try:
            return not (Path(made).exists() and os.path.samefile(made, self.root))
        except OSError:
            return True

    @classmethod
    def find(cls, path: Path | str) -> Workspace:
        """The workspace at ``path`` (or the one holding it)."""
        start = Path(path).resolve()
        for candidate in (start, *start.parents):
            if (candidate / "merlin_info" / PLAN_FILE).exists():
                return cls(candidate)
        half = next((c for c in (start, *start.parents) if (c / "merlin_info" / MAKING_FILE).exists()), None)
        if half is not None:  # a run generating the samples, or one killed (SIGKILL) doing so
            raise NoWorkspace(f"{half} is a workspace still being made (merlin_info/ has no {PLAN_FILE} yet): its "
                              "`run` is generating or reading the samples, or was killed doing so; if no `run` is "
                              "making it, nothing of it ran: delete it and run the spec again")
        kept = next((c for c in (start, *start.parents) if (c / "merlin_info" / "backend").is_file()), None)
        if kept is not None:  # a study of merlin-mdm (not Merlin's) lost its plan: by hand, a task, a scratch purge
            raise NoWorkspace(f"{kept}/merlin_info/{PLAN_FILE} is missing (deleted?), so no command can read or "
                              f"restart the study in {kept}: put the file back from a copy, or `merlin-mdm run` its "
                              "spec (merlin_info/*.expanded.yaml holds it as it ran) for a new workspace")
        raise NoWorkspace(f"{path} is not inside a merlin-mdm workspace (no merlin_info/{PLAN_FILE} found)"
                          + _held_workspaces(start))


def _held_workspaces(folder: Path, shown: int = 5) -> str:
    """For a folder that holds workspaces (an OUTPUT_PATH such as `studies/`): which, newest first, to name one."""
    try:
        found = sorted((c for c in folder.iterdir() if (c / "merlin_info" / PLAN_FILE).is_file()),
                       key=lambda c: c.stat().st_mtime, reverse=True)
    except OSError:
        return ""
    if not found:
        return ""
    names = ", ".join(c.name for c in found[:shown]) + (f" and {len(found) - shown} more" if len(found) > shown else "")
    return f"; it holds {len(found)} workspace(s), newest first: {names}: name one"
