"""Fault injection with real processes: a real `merlin-mdm` runner is killed, signalled, starved of disk or
given hostile input, and then the study's recorded state is compared with its done-markers on disk."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import wait_until as wait_for
from tests.integration.local.conftest import CLI, merlin, status_json

TAG = "MERLIN_MDM_FAULT_TAG"

# 30 samples in units of 5, each task sleeping a little, then a funnel: long enough to be interrupted,
# short enough to finish. A task that finds its own done-marker records the violation.
SAMPLED_STUDY = """
    description: {name: faults, description: interrupted again and again}
    env: {variables: {OUTPUT_PATH: ./out, NAP: "0.3"}}
    merlin:
      samples:
        generate: {cmd: "seq 0 29 > $(MERLIN_INFO)/samples.csv"}
        file: $(MERLIN_INFO)/samples.csv
        column_labels: [X]
    study:
      - name: work
        run:
          cmd: |
            if [ -f MERLIN_FINISHED ]; then touch STARTED_AFTER_DONE; fi
            echo "run $(X)" >> runs.log
            sleep $(NAP)
      - name: funnel
        run:
          cmd: |
            if [ -f MERLIN_FINISHED ]; then touch STARTED_AFTER_DONE; fi
            echo run >> runs.log
          depends: [work_*]
"""


@dataclass
class Runner:
    """A `merlin-mdm` process started by a test, tagged so that every process of its study can be found."""

    proc: subprocess.Popen[str]
    tag: str

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Runner]]:
    """``start(*args)`` runs merlin-mdm in the background; leftovers are killed at the end of the test."""
    runners: list[Runner] = []

    def launch(*args: str, env: dict[str, str] | None = None) -> Runner:
        tag = uuid.uuid4().hex
        env = {**os.environ, **(env or {}), TAG: tag}
        proc = subprocess.Popen([*CLI, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        runners.append(Runner(proc, tag))
        return runners[-1]

    yield launch
    for runner in runners:  # everything a runner started holds its pipes: kill it all before reading them
        for pid in tagged_processes(runner.tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if runner.proc.poll() is None:
            runner.proc.kill()
        runner.proc.communicate()


def handles_sigterm(pid: int, signum: int = signal.SIGTERM) -> bool:
    """Whether process ``pid`` has installed a handler of ``signum`` (its caught-signals mask says so)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(mask & (1 << (signum - 1)))


def tagged_processes(tag: str) -> list[int]:
    """Live (not zombie) processes whose environment carries ``tag``: every process a runner started."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def spec_file(tmp_path: Path, text: str = SAMPLED_STUDY, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def the_workspace(tmp_path: Path) -> Path:
    (ws,) = [p.parent.parent for p in (tmp_path / "out").glob("*/merlin_info/plan.json")]
    return ws


def markers(ws: Path) -> dict[str, int]:
    """Done-markers on disk per step."""
    out: dict[str, int] = {}
    for marker in ws.rglob("MERLIN_FINISHED"):
        step = marker.relative_to(ws).parts[0]
        out[step] = out.get(step, 0) + 1
    return out


def assert_status_matches_disk(ws: Path) -> dict[str, Any]:
    """`status` counts agree with the done-markers, and nothing is recorded as running once the runner is gone."""
    snap = status_json(ws)
    finished = {s["step"]: s["counts"]["finished"] for s in snap["steps"] if s["counts"]["finished"]}
    assert finished == markers(ws), json.dumps(snap, indent=1)
    assert all(not s["counts"]["running"] for s in snap["steps"]), json.dumps(snap, indent=1)
    assert not list(ws.rglob("STARTED_AFTER_DONE")), "a task started after its done-marker existed"
    return snap


def wait_until_some_done(ws_parent: Path, at_least: int = 2, timeout: float = 60) -> Path:
    """The workspace under ``ws_parent`` once ``at_least`` work tasks have their done-marker."""
    wait_for(lambda: sum(len(list(w.rglob("MERLIN_FINISHED"))) for w in ws_parent.glob("*/work")) >= at_least,
             timeout, f"{at_least} finished tasks")
    return next(p.parent.parent for p in ws_parent.glob("*/merlin_info/plan.json"))


__all__ = ["CLI", "Runner", "assert_status_matches_disk", "handles_sigterm", "markers", "merlin", "spec_file", "start",
           "status_json", "tagged_processes", "the_workspace", "wait_for", "wait_until_some_done"]
