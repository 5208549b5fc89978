"""Finding a workspace from a path inside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from merlin_mdm.errors import NoWorkspace
from merlin_mdm.study.layout import Workspace


def test_a_workspace_is_found_from_a_folder_inside_it(tmp_path: Path) -> None:
    (tmp_path / "ws" / "merlin_info").mkdir(parents=True)
    (tmp_path / "ws" / "merlin_info" / "plan.json").write_text("{}")
    (tmp_path / "ws" / "step" / "X.1").mkdir(parents=True)
    assert Workspace.find(tmp_path / "ws" / "step" / "X.1").root == (tmp_path / "ws").resolve()
    with pytest.raises(NoWorkspace, match="is not inside a merlin-mdm workspace"):
        Workspace.find(tmp_path)
    (tmp_path / "ws" / "merlin_info" / "backend").write_text("celery\n")  # written when a study starts
    (tmp_path / "ws" / "merlin_info" / "plan.json").unlink()
    with pytest.raises(NoWorkspace, match=r"ws/merlin_info/plan.json is missing \(deleted\?\), so no command can read "
                                          r"or restart the study in .*: put the file back from a copy"):
        Workspace.find(tmp_path / "ws" / "step" / "X.1")


def test_a_workspace_whose_making_never_ended_is_named_as_such(tmp_path: Path) -> None:
    """A run SIGKILLed while it generated the samples leaves merlin_info/ without a plan: it was called no
    workspace at all, and nothing said it could be deleted."""
    (tmp_path / "ws" / "merlin_info").mkdir(parents=True)
    with pytest.raises(NoWorkspace, match="is not inside a merlin-mdm workspace"):  # Merlin's own: never deleted
        Workspace.find(tmp_path / "ws")
    (tmp_path / "ws" / "merlin_info" / ".being-made").touch()
    with pytest.raises(NoWorkspace, match=r"ws is a workspace still being made \(merlin_info/ has no plan.json yet\).*"
                                          "if no `run` is making it, nothing of it ran: delete it"):
        Workspace.find(tmp_path / "ws")


def test_a_folder_of_workspaces_names_them(tmp_path: Path) -> None:
    """`status studies/` said only "not inside a workspace" (an outside probe): the workspaces it holds are named."""
    import os

    for age, name in enumerate(("new_1", "old_2", "older_3")):
        (tmp_path / "studies" / name / "merlin_info").mkdir(parents=True)
        (tmp_path / "studies" / name / "merlin_info" / "plan.json").write_text("{}")
        os.utime(tmp_path / "studies" / name, (1e9 - age, 1e9 - age))
    (tmp_path / "studies" / "notes").mkdir()
    with pytest.raises(NoWorkspace, match=r"it holds 3 workspace\(s\), newest first: new_1, old_2, older_3: name one"):
        Workspace.find(tmp_path / "studies")
    with pytest.raises(NoWorkspace, match=r"workspace \(no merlin_info/plan.json found\)$"):
        Workspace.find(tmp_path / "studies" / "notes")
