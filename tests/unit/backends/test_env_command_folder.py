"""The folder appended to the tasks' PATH so they find `merlin-mdm`: absolute, and only ever made below an existing
home folder."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from merlin_mdm.backends.execution import command_folder


@pytest.fixture
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installation's bin/ holding `python` and `merlin-mdm`, as the running interpreter's."""
    folder = tmp_path / "inst" / "bin"
    folder.mkdir(parents=True)
    for name in ("python", "merlin-mdm"):
        (folder / name).write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(folder / "python"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    command_folder.cache_clear()
    yield folder
    command_folder.cache_clear()


def test_an_existing_home_gets_the_link_folder(bindir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = Path(command_folder())
    assert folder.parent == tmp_path / "home" / ".merlin-mdm" / "bin"
    assert os.readlink(folder / "merlin-mdm") == str(bindir / "merlin-mdm")


@pytest.mark.parametrize("home", ["relhome", "", "missing/h"])
def test_a_relative_empty_or_missing_home_creates_nothing_and_links_from_a_private_temporary_folder(
        bindir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: str) -> None:
    # HOME=relhome made ./relhome/.merlin-mdm and a relative PATH entry (tasks got "command not found"); HOME= made
    # /.merlin-mdm; HOME=/nonexistent/h made that whole tree
    monkeypatch.setenv("HOME", str(tmp_path / home) if home.startswith("missing") else home)
    existed = os.path.lexists("/.merlin-mdm")
    folder = Path(command_folder())
    private = tmp_path / "tmp" / f"merlin-mdm-{os.getuid()}"
    assert folder.parent == private / "bin"
    assert os.readlink(folder / "merlin-mdm") == str(bindir / "merlin-mdm")
    assert private.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inst", "tmp"]
    assert os.path.lexists("/.merlin-mdm") == existed


def test_a_temporary_folder_others_may_write_is_not_used(bindir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "relhome")
    private = tmp_path / "tmp" / f"merlin-mdm-{os.getuid()}"
    private.mkdir()
    private.chmod(0o777)  # another user could put their own `merlin-mdm` on the tasks' PATH
    assert command_folder() == str(bindir)
    assert list(private.iterdir()) == []
