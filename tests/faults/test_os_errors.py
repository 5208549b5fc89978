"""OS errors are task failures: recorded with the errno message and the task's log path, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import assert_status_matches_disk, merlin, spec_file, status_json

STUDY = """
    description: {{name: oserr, description: an OS error}}
    env: {{variables: {{OUTPUT_PATH: ./out}}}}
    batch: {{shell: {shell}}}
    global.parameters:
      P: {{values: [{value}], label: P.%%}}
    study:
      - name: work
        run: {{cmd: "echo $(P)"}}
      - name: after
        run: {{cmd: "echo after", depends: [work_*]}}
"""


def _failure(ws: Path) -> dict[str, object]:
    (step,) = [s for s in status_json(ws)["steps"] if s["step"] == "work"]
    assert step["counts"] == {**step["counts"], "failed": 1}
    return step["failures"][0]


@pytest.mark.parametrize(("what", "shell", "value", "reason"), [
    ("missing shell", "/nonexistent/bash", "a", "OS error ENOENT (No such file or directory): /nonexistent/bash"),
    ("shell not executable", "SPEC", "a", "OS error EACCES (Permission denied)"),
])
def test_an_os_error_fails_the_task_with_its_message(tmp_path: Path, what: str, shell: str, value: str,
                                                     reason: str) -> None:
    spec = spec_file(tmp_path, STUDY.format(shell=shell, value=value))
    if shell == "SPEC":  # execve refuses a file without an execute bit, even to root
        spec.write_text(spec.read_text().replace("shell: SPEC", f"shell: {spec}"))
    result = merlin("run", str(spec), "--local", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "died" not in result.stderr, result.stderr
    ws = next((tmp_path / "out").glob("oserr_*"))
    failure = _failure(ws)
    assert str(failure["reason"]).startswith(reason), failure
    assert str(failure["log"]).endswith(".err") and "/work/" in str(failure["log"])
    assert_status_matches_disk(ws)


FILL = """
    description: {name: full, description: a full disk}
    env: {variables: {OUTPUT_PATH: ./out}}
    global.parameters:
      P: {values: [a, b], label: P.%%}
    study:
      - name: fill
        run: {cmd: "echo $(P); i=0; while touch f$i 2>/dev/null; do i=$((i+1)); done; exit 0"}
"""


def test_a_full_disk_fails_tasks_and_a_missing_done_marker_means_not_done(tmp_path: Path) -> None:
    # A tmpfs with few inodes, mounted in a private mount namespace: the first task uses every inode up,
    # so its done-marker cannot be written; the second cannot even create its directory.
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "-Urm", "true"], capture_output=True, check=False)
    if unshare is None or probe.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace: {probe.stderr.decode().strip()}")
    spec = spec_file(tmp_path, FILL)
    (tmp_path / "out").mkdir()
    script = (f"mount -t tmpfs -o size=16m,nr_inodes=96 tmpfs out && cd {tmp_path} && "
              f"{sys.executable} -m merlin_mdm.cli.main run {spec} --local --workers 1 --batch-size 1; "
              f"echo $? > rc; {sys.executable} -m merlin_mdm.cli.main status out/full_* --json > status.json; "
              "find out -name MERLIN_FINISHED | wc -l > markers")
    done = subprocess.run([unshare or "unshare", "-Urm", "sh", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, check=False, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "rc").read_text().strip() == "1", done.stderr
    snap = json.loads((tmp_path / "status.json").read_text())
    (step,) = snap["steps"]
    assert step["counts"]["failed"] == 2 and step["counts"]["finished"] == 0
    assert int((tmp_path / "markers").read_text()) == 0
    reasons = sorted(f["reason"] for f in step["failures"])
    assert any("done-marker could not be written" in r and "ENOSPC" in r for r in reasons), reasons
    assert all("ENOSPC" in r for r in reasons), reasons
