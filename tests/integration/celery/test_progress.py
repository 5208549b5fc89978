"""Progress per sample on Celery: a worker reports the done-markers of the unit it runs, and `status` counts
them before the unit ends, once each, even when the unit is redelivered after its worker died."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import pytest

from merlin_mdm.backends import RunOptions, get_backend
from merlin_mdm.spec import load_spec
from merlin_mdm.status.model import StudySnapshot
from merlin_mdm.studies import BACKEND_FILE
from merlin_mdm.study.workspace import create_workspace
from tests.integration.celery.helpers import merlin
from tests.integration.conftest import WorkerPool, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.celery]


def _launch(tmp_path: Path, n: int, cmd: str) -> tuple[object, object]:
    """One unit of ``n`` samples (batch size n) running ``cmd``, queued on the broker of ``celery_config`` in a
    queue of its own (named after the test's folder), so that a failed test leaves nothing for the next one."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        description: {{name: progress, description: progress per sample}}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        merlin:
          samples:
            generate: {{cmd: "seq 0 {n - 1} > $(MERLIN_INFO)/samples.csv"}}
            file: $(MERLIN_INFO)/samples.csv
            column_labels: [V]
        study:
          - name: work
            run: {{cmd: "{cmd}", task_queue: {tmp_path.name}}}
    """), encoding="utf-8")
    ws, plan = create_workspace(load_spec(spec, {}), batch_size=n)
    (ws.info / BACKEND_FILE).write_text("celery\n", encoding="utf-8")  # as `run` records it, for `status`
    assert plan.n_units(0) == 1
    backend = get_backend("celery")
    assert backend.launch(ws, plan, RunOptions()).state == "queued"
    return backend, ws


def _work(snap: StudySnapshot) -> dict[str, int]:
    (step,) = snap.steps
    return {k: v for k, v in step.counts.items() if v}


def _markers(ws) -> int:  # type: ignore[no-untyped-def]
    return len(list((ws.root / "work").rglob("MERLIN_FINISHED")))


@pytest.mark.parametrize("before", ["sleep 0.3; ", ""], ids=["slower-than-a-tick", "quick"])
def test_status_counts_the_samples_of_a_running_unit_before_it_ends(
        worker_pool: WorkerPool, tmp_path: Path, celery_config: Path, before: str) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    # Samples 0-2 take longer than a progress tick (each is reported as it ends), or end at once (reported
    # together by the progress timer, not when the slow sample ends); sample 3 waits for `hold`.
    cmd = f"{before}if [ $(V) = 3 ]; then while [ -f {hold} ]; do sleep 0.05; done; fi"
    backend, ws = _launch(tmp_path, 4, cmd)
    store = backend.status_store(ws)  # type: ignore[attr-defined]
    try:
        worker_pool.start("w", tmp_path.name, concurrency=1, log_dir=tmp_path)
        wait_until(lambda: _work(store.snapshot()).get("finished") == 3, 60,
                   f"three finished samples of the running unit in status ({_work(store.snapshot())})")
        assert _work(store.snapshot()) == {"running": 1, "finished": 3}
        shown = merlin("status", str(ws.root), "--json", cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        (step,) = json.loads(shown.stdout)["steps"]
        assert (step["counts"]["running"], step["counts"]["finished"]) == (1, 3), step
        hold.unlink()
        wait_until(lambda: store.snapshot().state == "finished", 60, "the study to finish")
        assert _work(store.snapshot()) == {"finished": 4}
    finally:
        store.close()


def test_a_unit_redelivered_after_its_worker_died_counts_each_sample_once(
        worker_pool: WorkerPool, tmp_path: Path, celery_config: Path) -> None:
    n = 6
    cmd = f"echo $(V) >> {tmp_path}/starts.log; sleep 0.5; echo $(V) >> {tmp_path}/runs.log"
    backend, ws = _launch(tmp_path, n, cmd)
    store = backend.status_store(ws)  # type: ignore[attr-defined]
    seen: list[dict[str, int]] = []

    def counts() -> dict[str, int]:
        """The step's counts, checked: every sample counted once, finished never above the done-markers."""
        seen.append(_work(store.snapshot()))
        assert sum(seen[-1].values()) == n, seen
        assert seen[-1].get("finished", 0) <= _markers(ws), seen
        return seen[-1]

    try:
        victim = worker_pool.start("victim", tmp_path.name, concurrency=1, log_dir=tmp_path)
        wait_until(lambda: counts().get("finished", 0) >= 2, 60, "two samples of the running unit counted")
        (child,) = worker_pool.children(victim)
        os.kill(child, signal.SIGKILL)  # its unit goes back to the queue, its running task dies with it
        assert counts().get("finished", 0) < n, seen  # the unit had not ended
        worker_pool.start("rescuer", tmp_path.name, concurrency=1, log_dir=tmp_path)
        wait_until(lambda: counts() == {"finished": n} and store.snapshot().state == "finished", 60,
                   "the study to finish")
    finally:
        store.close()
    runs = (tmp_path / "runs.log").read_text().split()
    assert sorted(runs) == [str(i) for i in range(n)], runs  # each task ended once: the killed one died
