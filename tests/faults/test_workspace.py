"""Workspaces are created race-free; `status` never invents a study."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from merlin_mdm.spec import load_spec
from merlin_mdm.study.workspace import create_workspace

from .conftest import merlin, spec_file

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
