"""The contract every task backend satisfies: one test class, run against `local` and against `celery`
(a real redis-server and real Celery worker processes)."""

from __future__ import annotations

import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from merlin_mdm.backends import RunOptions, get_backend
from merlin_mdm.spec import load_spec
from merlin_mdm.status.model import StudySnapshot
from merlin_mdm.study.workspace import Workspace, create_workspace
from tests.integration.conftest import RedisFixture, WorkerPool, redis_server  # noqa: F401 - fixture

TERMINAL = ("finished", "failed", "stopped")


@dataclass
class Outcome:
    """What a study left behind, whichever backend ran it."""

    ws: Path
    snapshot: StudySnapshot

    @property
    def state(self) -> str:
        return self.snapshot.state

    def counts(self) -> dict[str, dict[str, int]]:
        return {s.step: {k: v for k, v in s.counts.items() if v} for s in self.snapshot.steps}

    def step(self, name: str):  # type: ignore[no-untyped-def]
        return next(s for s in self.snapshot.steps if s.step == name)


Runner = Callable[..., Outcome]


@pytest.fixture(scope="module")
def celery_workers(redis_server: RedisFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:  # noqa: F811
    pool = WorkerPool(redis_server.app_yaml)
    pool.start("contract", queues="merlin,contract_side", concurrency=2,
               log_dir=tmp_path_factory.mktemp("workers"))
    yield pool
    pool.stop_all()


@pytest.fixture(params=["local", "celery"])
def run_study(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runner:
    """run_study(spec_text, batch_size=...) -> Outcome, with the backend of this parametrisation."""
    name = request.param
    if name == "celery":
        pytest.importorskip("celery")
        request.applymarker(pytest.mark.celery)
        pool: WorkerPool = request.getfixturevalue("celery_workers")
        monkeypatch.setenv("MERLIN_MDM_CONFIG", str(pool.app_yaml))

    def run(text: str, batch_size: int = 10, timeout: float = 90) -> Outcome:
        spec = tmp_path / "spec.yaml"
        spec.write_text(HEAD + textwrap.dedent(text), encoding="utf-8")
        ws, plan = create_workspace(load_spec(spec, {}), batch_size=batch_size)
        backend = get_backend(name)
        report = backend.launch(ws, plan, RunOptions(workers=2))
        if name == "local":
            return Outcome(ws.root, report.snapshot)
        assert report.state == "queued"
        return Outcome(ws.root, _wait_done(backend, ws, timeout))

    return run


def _wait_done(backend, ws: Workspace, timeout: float) -> StudySnapshot:  # type: ignore[no-untyped-def]
    store = backend.status_store(ws)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = store.snapshot()
            if snap.state in TERMINAL:
                return snap
            time.sleep(0.1)
        raise AssertionError(f"study not done after {timeout} s: {store.snapshot()}")
    finally:
        store.close()


def _runs(ws: Path) -> list[str]:
    return (ws / "runs.log").read_text().split("\n")[:-1]


HEAD = """description: {name: contract, description: backend contract}
env: {variables: {OUTPUT_PATH: ./out}}
"""


class TestBackendContract:
    def test_linear_chain_runs_every_step_in_order(self, run_study: Runner) -> None:
        out = run_study("""
        study:
          - name: step_1
            run: {cmd: "echo one > one.txt"}
          - name: step_2
            run: {cmd: "cat $(step_1.workspace)/one.txt > two.txt; echo two >> two.txt", depends: [step_1]}
          - name: step_3
            run: {cmd: "cat $(step_2.workspace)/two.txt > three.txt", depends: [step_2]}
        """)
        assert out.state == "finished"
        assert (out.ws / "step_3" / "three.txt").read_text() == "one\ntwo\n"
        assert out.counts() == {f"step_{i}": {"finished": 1} for i in (1, 2, 3)}

    def test_diamond_waits_for_both_branches(self, run_study: Runner) -> None:
        out = run_study("""
        study:
          - name: top
            run: {cmd: "sleep 0.2"}
          - name: left
            run: {cmd: "test -f $(top.workspace)/MERLIN_FINISHED && sleep 0.3", depends: [top]}
          - name: right
            run: {cmd: "test -f $(top.workspace)/MERLIN_FINISHED", depends: [top], task_queue: contract_side}
          - name: bottom
            run:
              cmd: "test -f $(left.workspace)/MERLIN_FINISHED && test -f $(right.workspace)/MERLIN_FINISHED"
              depends: [left, right]
        """)
        assert out.state == "finished", out.snapshot
        assert out.counts()["bottom"] == {"finished": 1}

    def test_funnel_after_1000_samples_every_task_exactly_once(self, run_study: Runner, tmp_path: Path) -> None:
        np.save(tmp_path / "samples.npy", np.arange(1000).reshape(-1, 1))
        out = run_study("""
        merlin:
          samples: {file: samples.npy, column_labels: [V]}
        study:
          - name: make
            run: {cmd: "echo $(V) > v.txt; echo make $(MERLIN_SAMPLE_ID) >> $(OUTPUT_PATH)/../runs.log"}
          - name: square
            run:
              cmd: >-
                test -f $(make.workspace)/$(MERLIN_SAMPLE_PATH)/MERLIN_FINISHED
                && echo square $(V) >> $(OUTPUT_PATH)/../runs.log
              depends: [make]
          - name: funnel
            run:
              cmd: >-
                cat $(square.workspace)/$(MERLIN_GLOB_PATH)/MERLIN_FINISHED | wc -l > n.txt;
                echo funnel >> $(OUTPUT_PATH)/../runs.log
              depends: [square]
        """.replace("$(OUTPUT_PATH)/..", str(tmp_path)), batch_size=50)
        assert out.state == "finished", out.snapshot
        assert out.counts() == {"make": {"finished": 1000}, "square": {"finished": 1000}, "funnel": {"finished": 1}}
        lines = (tmp_path / "runs.log").read_text().splitlines()
        assert Counter(lines).most_common(1)[0][1] == 1 and len(lines) == 2001
        assert lines[-1] == "funnel"

    def test_exit_codes_restart_retry_soft_fail(self, run_study: Runner) -> None:
        out = run_study("""
        study:
          - name: restarts
            run:
              cmd: "echo cmd >> log; exit $(MERLIN_RESTART)"
              restart: "echo restart >> log; n=$(grep -c restart log); [ $n -ge 2 ] && exit 0; exit $(MERLIN_RESTART)"
          - name: retries
            run:
              cmd: "echo x >> log; [ $(wc -l < log) -ge 3 ] || exit $(MERLIN_RETRY)"
              retry_delay: 0
              max_retries: 5
          - name: gives_up
            run: {cmd: "echo x >> log; exit $(MERLIN_RETRY)", retry_delay: 0, max_retries: 2}
          - name: soft
            run: {cmd: "exit $(MERLIN_SOFT_FAIL)"}
          - name: after_soft
            run: {cmd: "echo runs anyway", depends: [soft]}
        """)
        assert out.state == "failed"
        assert (out.ws / "restarts" / "log").read_text().split() == ["cmd", "restart", "restart"]
        assert (out.ws / "retries" / "log").read_text().count("x") == 3
        assert (out.ws / "gives_up" / "log").read_text().count("x") == 3
        c = out.counts()
        assert c["restarts"] == {"finished": 1} and c["retries"] == {"finished": 1}
        assert c["gives_up"] == {"failed": 1} and c["soft"] == {"failed": 1} and c["after_soft"] == {"finished": 1}
        assert out.step("restarts").restarts == 2 and out.step("retries").restarts == 2

    def test_hard_fail_stops_the_study(self, run_study: Runner) -> None:
        out = run_study("""
        study:
          - name: boom
            run: {cmd: "exit $(MERLIN_HARD_FAIL)"}
          - name: later
            run: {cmd: "echo never", depends: [boom]}
          - name: slow_sibling
            run: {cmd: "sleep 1"}
          - name: after_sibling
            run: {cmd: "echo never", depends: [slow_sibling]}
        """)
        assert out.state == "failed" and "MERLIN_HARD_FAIL" in out.snapshot.message
        c = out.counts()
        assert c["boom"] == {"failed": 1} and c["later"] == {"not_run": 1} and c["after_sibling"] == {"not_run": 1}

    def test_stop_workers_ends_the_study_as_stopped(self, run_study: Runner) -> None:
        out = run_study("""
        study:
          - name: first
            run: {cmd: "exit $(MERLIN_STOP_WORKERS)"}
          - name: second
            run: {cmd: "echo never", depends: [first]}
        """)
        assert out.state == "stopped"
        assert out.counts() == {"first": {"finished": 1}, "second": {"not_run": 1}}

    def test_failed_tasks_do_not_block_dependants_and_funnels_run_over_what_exists(
            self, run_study: Runner, tmp_path: Path) -> None:
        np.save(tmp_path / "samples.npy", np.arange(12).reshape(-1, 1))
        out = run_study("""
        global.parameters:
          X: {values: [ok, bad], label: X.%%}
        merlin:
          samples: {file: samples.npy, column_labels: [V]}
        study:
          - name: first
            run: {cmd: "test $(X) = ok"}
          - name: second
            run: {cmd: "echo fine", depends: [first]}
          - name: per_sample
            run: {cmd: "[ $(V) -ne 7 ] && touch ok"}
          - name: aligned
            run: {cmd: "test -e $(per_sample.workspace)/$(MERLIN_SAMPLE_PATH)/ok || exit $(MERLIN_SOFT_FAIL)",
                  depends: [per_sample]}
          - name: funnel
            run: {cmd: "ls $(aligned.workspace)/$(MERLIN_GLOB_PATH)/MERLIN_FINISHED | wc -l > n", depends: [aligned]}
        """, batch_size=4)
        assert out.state == "failed"  # some tasks failed, and the study went on (Merlin's semantics)
        c = out.counts()
        assert c["first"] == {"finished": 1, "failed": 1} and c["second"] == {"finished": 2}
        assert c["per_sample"] == {"finished": 11, "failed": 1}
        assert c["aligned"] == {"finished": 11, "failed": 1} and c["funnel"] == {"finished": 1}
        assert (out.ws / "funnel" / "n").read_text().strip() == "11"
        (failed,) = out.step("aligned").failures
        assert failed[1].state == "failed" and failed[1].rc == 101 and failed[1].reason == "soft fail"
