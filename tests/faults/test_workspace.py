"""Workspaces are created race-free; `status` never invents a study."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from merlin_mdm.spec import load_spec
from merlin_mdm.study.workspace import create_workspace

from .conftest import CLI, merlin, spec_file

ONE_STEP = """
    description: {name: one, description: x}
    env: {variables: {OUTPUT_PATH: ./out}}
    study:
      - name: a
        run: {cmd: "true"}
"""


def test_sixteen_concurrent_creations_with_the_same_timestamp_all_succeed(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, ONE_STEP)
    loaded = load_spec(spec)
    now = dt.datetime(2026, 1, 1, 12, 0, 0)
    with ThreadPoolExecutor(16) as pool:
        roots = list(pool.map(lambda _: create_workspace(loaded, now=now)[0].root, range(16)))
    assert len(set(roots)) == 16
    assert all((r / "merlin_info" / "plan.json").is_file() for r in roots)


def test_status_of_a_workspace_without_its_database_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, ONE_STEP)
    assert merlin("run", str(spec), "--local", cwd=tmp_path).returncode == 0
    ws = next((tmp_path / "out").glob("one_*"))
    for path in (ws / "merlin_info").glob("status.db*"):
        path.unlink()
    result = merlin("status", str(ws), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: no status database in ") and "Traceback" not in result.stderr
    assert not (ws / "merlin_info" / "status.db").exists()


FAILING = """
    description: {{name: {name}, description: x}}
    env: {{variables: {{OUTPUT_PATH: "{out}"}}}}
    study:
      - name: a
        run: {{cmd: "{cmd}"}}
"""


def test_uri_characters_in_the_workspace_path_keep_its_database_inside_it(tmp_path: Path) -> None:
    """SQLite opens the status database by URI: an unescaped ? or # cut the path there (the database landed
    outside the workspace, shared by the studies beside it), and a %20 was decoded."""
    for name, cmd, code, state in (("good", "true", 0, "finished"), ("bad", "exit 1", 1, "failed")):
        spec = spec_file(tmp_path, FAILING.format(name=name, out="./o?m#x%20y", cmd=cmd), name=f"{name}.yaml")
        result = merlin("run", str(spec), "--local", cwd=tmp_path)
        assert result.returncode == code, result.stderr
        ws = next((tmp_path / "o?m#x%20y").glob(f"{name}_*"))
        assert (ws / "merlin_info" / "status.db").is_file()
        status = merlin("status", str(ws), "--json", cwd=tmp_path)
        assert f'"state": "{state}"' in status.stdout, status
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "good.yaml", "o?m#x%20y"]


def test_an_output_path_too_long_for_the_database_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    out = tmp_path / ("a" * 200) / ("b" * 200) / "c"
    spec = spec_file(tmp_path, FAILING.format(name="long", out=out, cmd="true"))
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 2 and "SQLite opens at most 504: choose a shorter OUTPUT_PATH" in result.stderr, \
        result.stderr
    assert not out.exists()


def _as_owner() -> list[str]:
    """The command prefix that makes root obey file permissions (without CAP_DAC_OVERRIDE), as any user does."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    prefix = [setpriv or "setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    if setpriv is None or subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("root cannot drop CAP_DAC_OVERRIDE here (no setpriv or no CAP_SETPCAP)")
    return prefix


@pytest.mark.parametrize(("umask", "made", "code", "message"), [
    ("777", True, 1, "Error: cannot write the workspace "),  # the workspace folder was left as d---------
    ("277", False, 2, "cannot create a workspace under "),  # OUTPUT_PATH was made (dr-x------) and left
])
def test_a_umask_without_owner_write_leaves_nothing_behind(tmp_path: Path, umask: str, made: bool, code: int,
                                                           message: str) -> None:
    spec = spec_file(tmp_path, ONE_STEP)
    out = tmp_path / "out"
    if made:
        out.mkdir()
    command = [*_as_owner(), "sh", "-c", f'umask {umask} && exec "$@"', "sh", *CLI, "run", str(spec), "--local"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == code and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert (list(out.iterdir()) if made else out.exists()) in ([], False)


def test_a_workspace_folder_whose_name_is_not_utf8_is_refused_in_one_line(tmp_path: Path) -> None:
    latin = Path(os.fsdecode(os.fsencode(tmp_path) + b"/lat\xe9in"))  # a Latin-1 name
    latin.mkdir()
    spec = spec_file(latin, ONE_STEP)
    result = merlin("run", str(spec), "--local", cwd=latin)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"Error: the workspace folder {tmp_path}/lat\\xe9in/out (OUTPUT_PATH, or the "
                                    "current folder) has a name that is not UTF-8"), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert sorted(p.name for p in latin.iterdir()) == ["spec.yaml"]


SPECROOT = """
    description: {{name: specroot, description: x}}
    env: {{variables: {{OUTPUT_PATH: "{out}"}}}}
    study:
      - name: a
        run: {{cmd: "ls $(SPECROOT)/spec.yaml > listed.txt"}}
"""


def test_a_spec_in_a_folder_whose_name_is_not_utf8_runs_with_its_bytes(tmp_path: Path) -> None:
    # the spec copy and the task's script name the spec's folder: writing them failed with UnicodeEncodeError
    raw = os.fsencode(tmp_path) + b"/lat\xe9in"
    latin = Path(os.fsdecode(raw))
    latin.mkdir()
    spec = spec_file(latin, SPECROOT.format(out=tmp_path / "out"))
    result = merlin("run", str(spec), "--local", cwd=latin)
    assert result.returncode == 0, result.stderr
    (ws,) = (tmp_path / "out").glob("specroot_*")
    assert (ws / "a" / "listed.txt").read_bytes() == raw + b"/spec.yaml\n"
    assert merlin("status", str(ws), cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("kept", ["one_20260101-120000.rejected-samples.csv", "one_20260101-120000.generate.err"])
def test_a_failed_runs_kept_files_reserve_their_workspace_name(tmp_path: Path, kept: str) -> None:
    """A run failing on its samples keeps them beside its removed workspace; a later run in the same second took
    that very name, so the rejected file seemed to be the new study's."""
    spec = spec_file(tmp_path, ONE_STEP)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / kept).write_text("1,2\n")
    ws, _ = create_workspace(load_spec(spec), now=dt.datetime(2026, 1, 1, 12, 0, 0))
    assert ws.root.name == "one_20260101-120000.1"
    assert {p.name for p in (tmp_path / "out").iterdir()} == {kept, ws.root.name}
