"""LSF, PBS and Flux cannot be installed here: fake `bsub`/`qsub`/`flux` (and their status and cancel
commands) on PATH record their arguments and standard input, and answer as the real ones do. The
scripts `merlin-mdm launch` submits and the command lines it runs are checked against those records.
None of this proves the schedulers accept them: see docs/cluster.md."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from merlin_mdm.batch import JobState, get_batch_system
from tests.integration.launching import merlin

FAKES = {
    "bsub": 'cat > "$LOG.stdin"; echo "Job <5150> is submitted to queue <pbatch>."',
    "bjobs": "echo '" + json.dumps({"COMMAND": "bjobs", "JOBS": 2, "RECORDS": [
        {"JOBID": "5150", "STAT": "RUN", "EXIT_REASON": "", "KILL_REASON": "", "SUSPEND_REASON": ""},
        {"JOBID": "5151", "STAT": "EXIT", "EXIT_REASON": "TERM_RUNLIMIT: job killed after reaching LSF run time "
         "limit", "KILL_REASON": "", "SUSPEND_REASON": ""}]}) + "'",
    "bkill": 'echo "Job <$1> is being terminated"',
    "qsub": 'cp "$1" "$LOG.script"; echo "77.pbs-server"',
    "qstat": """echo '{"Jobs":{"77.pbs-server":{"job_state":"F","Exit_status":-29}}}'""",
    "qdel": "true",
    "flux": 'case "$1" in batch) cp "$2" "$LOG.script"; echo "fABC123";; jobs) echo "fABC123 RUN ";; esac',
}


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bin/ of recording fakes, first on PATH; each call appends `name args` to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nLOG={tmp_path}/{name}\necho "{name} $*" >> {tmp_path}/calls.log\n{body}\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def _spec(tmp_path: Path, batch: str) -> Path:
    spec = tmp_path / "study.yaml"
    spec.write_text(textwrap.dedent(f"""
        description: {{name: cluster, description: one step}}
        batch: {batch}
        env: {{variables: {{OUTPUT_PATH: ./out}}}}
        merlin:
          resources:
            workers:
              sim: {{args: -l INFO, steps: [all], nodes: 2}}
        study:
          - name: step
            description: one task
            run: {{cmd: "$(LAUNCHER) echo hi", procs: 4}}
    """), encoding="utf-8")
    return spec


def _as_if_queued(spec: Path, cwd: Path) -> None:
    """A workspace that `launch` takes for one queued on Redis (the fakes need no broker): a dry run's, recorded
    on the celery backend (`launch` leaves a dry run's own workspace alone)."""
    assert merlin("run", spec.name, "--dry", cwd=cwd).returncode == 0
    (max((cwd / "out").glob("cluster_*")) / "merlin_info" / "backend").write_text("celery\n", encoding="utf-8")


def _queued_then_launched(tmp_path: Path, batch: str) -> str:
    spec = _spec(tmp_path, batch)
    _as_if_queued(spec, tmp_path)
    out = merlin("launch", spec.name, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_lsf_launch_pipes_the_script_to_bsub(fake_bin: Path) -> None:
    out = _queued_then_launched(fake_bin, '{type: lsf, bank: b1, queue: pbatch, walltime: "01:30:00"}')
    assert out.startswith("5150\tcluster.sim\tlsf\tworkers: sim")
    assert (fake_bin / "calls.log").read_text() == "bsub \n"  # the script came on stdin: #BSUB lines are read
    script = (fake_bin / "bsub.stdin").read_text().splitlines()
    for line in ("#BSUB -J cluster.sim", "#BSUB -nnodes 2", "#BSUB -W 1:30", '#BSUB -q "pbatch"', '#BSUB -P "b1"'):
        assert line in script, script
    assert any("run-workers" in line and "--worker sim --until-done" in line for line in script)
    states = get_batch_system("lsf").status(["5150", "5151"])
    assert states == {"5150": JobState.RUNNING, "5151": JobState.TIMEOUT}
    get_batch_system("lsf").cancel(["5150"])
    assert (fake_bin / "calls.log").read_text().splitlines()[-2:] == [
        "bjobs -o JOBID STAT EXIT_REASON KILL_REASON SUSPEND_REASON -json -a 5150 5151", "bkill 5150"]


def test_pbs_launch_submits_with_qsub(fake_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERLIN_MDM_CORES_PER_NODE", "36")  # whole nodes: PBS must be told their cores
    out = _queued_then_launched(fake_bin, '{type: pbs, bank: b1, queue: workq, walltime: "00:20:00"}')
    assert out.startswith("77.pbs-server\tcluster.sim\tpbs")
    calls = (fake_bin / "calls.log").read_text().splitlines()
    assert calls[0].startswith("qsub ") and calls[0].endswith("/merlin_info/batch/cluster.sim.sh")
    script = (fake_bin / "qsub.script").read_text().splitlines()
    for line in ("#PBS -N cluster.sim", "#PBS -l select=2:ncpus=36:mpiprocs=36", "#PBS -l walltime=0:20:0",
                 "#PBS -q workq", "#PBS -A b1"):
        assert line in script, script
    assert get_batch_system("pbs").status(["77.pbs-server"]) == {"77.pbs-server": JobState.TIMEOUT}
    get_batch_system("pbs").cancel(["77.pbs-server"])
    assert (fake_bin / "calls.log").read_text().splitlines()[-2:] == [
        "qstat -f -F json -x 77.pbs-server", "qdel 77.pbs-server"]


def test_flux_launch_submits_with_flux_batch(fake_bin: Path) -> None:
    out = _queued_then_launched(fake_bin, '{type: flux, bank: b1, queue: pdebug, walltime: "00:10:00"}')
    assert out.startswith("fABC123\tcluster.sim\tflux")
    script = (fake_bin / "flux.script").read_text().splitlines()
    for line in ("#flux: -N 2", "#flux: --job-name=cluster.sim", "#flux: -t 600s", "#flux: --queue=pdebug",
                 "#flux: --bank=b1"):
        assert line in script, script
    assert get_batch_system("flux").status(["fABC123"]) == {"fABC123": JobState.RUNNING}
    assert (fake_bin / "calls.log").read_text().splitlines()[-1] == (
        "flux jobs --no-header --format={id.f58} {state} {result} fABC123")


def test_launch_json_and_records(fake_bin: Path) -> None:
    spec = _spec(fake_bin, "{type: lsf}")
    _as_if_queued(spec, fake_bin)
    out = merlin("launch", spec.name, "--json", "--nodes", "3", cwd=fake_bin)
    assert json.loads(out.stdout) == [{"job_id": "5150", "system": "lsf", "name": "cluster.sim", "workers": ["sim"]}]
    assert "#BSUB -nnodes 3" in (fake_bin / "bsub.stdin").read_text()
    records = next((fake_bin / "out").glob("cluster_*")) / "merlin_info" / "batch" / "jobs.jsonl"
    assert json.loads(records.read_text())["job_id"] == "5150"


def test_dry_prints_the_script_and_submits_nothing(fake_bin: Path) -> None:
    spec = _spec(fake_bin, '{type: slurm, walltime: "00:30:00", launch_pre: module load mpi}')
    out = merlin("launch", spec.name, "--dry", cwd=fake_bin)
    assert out.returncode == 0, out.stderr
    assert "WORKSPACE stands for its workspace" in out.stderr  # nothing queued yet
    lines = out.stdout.splitlines()
    assert lines[:3] == ["# --- cluster.sim: slurm batch script for worker(s) sim", "#!/bin/bash",
                         "#SBATCH --job-name=cluster.sim"]
    assert "#SBATCH --nodes=2" in lines and "#SBATCH --time=0:30:0" in lines and "module load mpi" in lines
    assert not (fake_bin / "calls.log").exists()


def test_launch_without_a_queued_study_says_how_to_queue_it(fake_bin: Path) -> None:
    spec = _spec(fake_bin, "{type: lsf}")
    out = merlin("launch", spec.name, cwd=fake_bin)
    assert out.returncode == 2
    expected = f"Error: no queued study for {spec.name}: queue it first with `merlin-mdm run {spec.name}`"
    assert out.stderr.strip() == expected
    assert not (fake_bin / "calls.log").exists()


def test_launch_refuses_a_bad_walltime_and_serves_no_local_study(fake_bin: Path) -> None:
    spec = _spec(fake_bin, "{type: lsf}")
    _as_if_queued(spec, fake_bin)
    for bad in ("abc", "-5", "1:2:3:4:5", ""):
        out = merlin("launch", spec.name, "--walltime", bad, cwd=fake_bin)
        assert out.returncode == 2 and "is not a time: use [[HH:]MM:]SS" in out.stderr, (bad, out.stderr)
    spec.write_text(spec.read_text().replace('"$(LAUNCHER) echo hi", procs: 4', '"echo hi"'))
    assert merlin("run", spec.name, "--local", cwd=fake_bin).returncode == 0  # a newer workspace, finished
    for cut in (max((fake_bin / "out").glob("cluster_*")), min((fake_bin / "out").glob("cluster_*"))):
        (cut / "merlin_info" / "backend").write_text("local\n", encoding="utf-8")  # the first: a dry run again
    out = merlin("launch", spec.name, cwd=fake_bin)  # neither a dry run nor a local study is served by workers
    assert out.returncode == 2 and "no queued study for study.yaml" in out.stderr, out
    assert not (fake_bin / "calls.log").exists()  # nothing was submitted


def test_launch_walltime_zero_asks_for_no_limit_as_the_spec_s_walltime_zero(tmp_path: Path) -> None:
    spec = _spec(tmp_path, '{type: lsf, walltime: "01:30:00"}')
    given = merlin("launch", spec.name, "--dry", cwd=tmp_path)
    unlimited = merlin("launch", spec.name, "--dry", "--walltime", "0", cwd=tmp_path)
    assert given.returncode == 0 and unlimited.returncode == 0, (given.stderr, unlimited.stderr)
    assert "#BSUB -W 1:30" in given.stdout.splitlines() and "unset MERLIN_MDM_ALLOC_END" not in given.stdout
    assert "#BSUB -W" not in unlimited.stdout and "unset MERLIN_MDM_ALLOC_END" in unlimited.stdout.splitlines()


def test_pbs_without_the_nodes_cores_is_refused_naming_the_batch_block(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "{type: pbs, walltime: \"00:20:00\"}")
    out = merlin("launch", spec.name, "--dry", cwd=tmp_path, env={"MERLIN_MDM_CORES_PER_NODE": ""})
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().endswith("give `merlin-mdm launch --cores-per-node C` (or set MERLIN_MDM_CORES_PER_NODE)"
                                       f" (the request comes from {spec.name}:3: batch)"), out.stderr


def test_a_worker_groups_own_batch_type_is_the_system_its_allocation_goes_to(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "{type: slurm, walltime: \"01:00:00\"}")
    spec.write_text(spec.read_text().replace("nodes: 2}", "nodes: 2, batch: {type: lsf}}"), encoding="utf-8")
    out = merlin("launch", spec.name, "--dry", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[:3] == ["# --- cluster.sim: lsf batch script for worker(s) sim", "#!/bin/bash",
                                           "#BSUB -J cluster.sim"]


def test_the_flux_relays_carry_the_cold_stop_signal_across_flux_exec(tmp_path: Path) -> None:
    """A stand-in `flux exec` that passes on SIGINT and SIGTERM only (as flux-exec.c does): the worker must still
    get SIGUSR2 when run-workers sends it to the local process."""
    import shlex
    import signal
    import subprocess
    import sys

    from merlin_mdm.launchers.per_node import per_node_prefix

    fake = tmp_path / "flux"
    # handlers first: the remote side must not inherit the SIGINT a background shell job starts with ignored
    fake.write_text(f"#!{sys.executable}\nimport signal, subprocess, sys\nprocs = []\n"
                    "for s in (signal.SIGINT, signal.SIGTERM):\n"
                    "    signal.signal(s, lambda n, f: procs[0].send_signal(n))\n"
                    "procs.append(subprocess.Popen(sys.argv[4:]))\nsys.exit(procs[0].wait())\n")
    fake.chmod(0o755)
    worker = ("import signal, sys, time\nsignal.signal(signal.SIGUSR2, lambda *a: (print('USR2', flush=True), "
              "sys.exit(3)))\nprint('ready', flush=True)\ntime.sleep(30)\n")
    argv = [*shlex.split(per_node_prefix("flux", 2)), sys.executable, "-c", worker]
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGUSR2)
    assert proc.stdout.readline() == "USR2\n"
    assert proc.wait(timeout=10) == 3
