"""Batch systems without a scheduler: scripts, state tables, commands through a recording runner."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from merlin_mdm._shell import ShellResult
from merlin_mdm.batch import (
    BATCH_SYSTEMS,
    TERMINAL_STATES,
    Allocation,
    AllocationRequest,
    JobState,
    UnsupportedRequest,
    detect_allocation,
    get_batch_system,
)
from merlin_mdm.errors import BatchError


class Recorder:
    """A runner that answers from a table and remembers what it was asked."""

    def __init__(self, answers: dict[str, ShellResult]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, cmd: Sequence[str]) -> ShellResult:
        self.calls.append(list(cmd))
        key = next((k for k in self.answers if k in " ".join(cmd)), None)
        return self.answers[key] if key else ShellResult(0, "", "")


def _req(tmp_path: Path, **kw: object) -> AllocationRequest:
    base: dict[str, object] = {"name": "study-w1", "command": "merlin-mdm run-workers s.yaml", "workdir": tmp_path,
                               "nodes": 2, "walltime": 5400, "queue": "pbatch", "bank": "b1", "cores_per_node": 36}
    return AllocationRequest(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "expected"), [
    ("slurm", ["#SBATCH --nodes=2", "#SBATCH --time=1:30:0", '#SBATCH --partition="pbatch"',
               '#SBATCH --account="b1"', "#SBATCH --exclusive", "#SBATCH --job-name=study-w1"]),
    ("lsf", ["#BSUB -J study-w1", "#BSUB -nnodes 2", "#BSUB -W 1:30", '#BSUB -q "pbatch"', '#BSUB -P "b1"']),
    ("pbs", ["#PBS -N study-w1", "#PBS -l select=2:ncpus=36:mpiprocs=36", "#PBS -l walltime=1:30:0",
             "#PBS -q pbatch", "#PBS -A b1"]),
    ("flux", ["#flux: -N 2", "#flux: -t 5400s", "#flux: --queue=pbatch", "#flux: --bank=b1", "#flux: --exclusive"]),
])  # fmt: skip
def test_script_directives(tmp_path: Path, name: str, expected: list[str]) -> None:
    system = get_batch_system(name)
    lines = system.script(_req(tmp_path)).splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in expected:
        assert line in lines, (line, lines)
    assert "merlin-mdm run-workers s.yaml" in lines
    assert "export MERLIN_MDM_ALLOC_END=$(( $(date +%s) + 5400 ))" in lines
    assert f'export MERLIN_MDM_EXIT_CODE_FILE={tmp_path}/"${{{system.job_id_var}}}.ec"' in lines
    assert 'trap \'echo "$?" >"$MERLIN_MDM_EXIT_CODE_FILE"\' EXIT' in lines


@pytest.mark.parametrize("writes", [True, False])
def test_a_launch_pre_that_ends_the_script_leaves_its_exit_code(tmp_path: Path, writes: bool) -> None:
    """`status` judges a job the scheduler forgot by its .ec: a failing launch_pre left none (shown `unknown`)."""
    import subprocess

    system = get_batch_system("slurm")
    script = tmp_path / "job.sh"
    script.write_text(system.script(_req(tmp_path, launch_pre="echo pre; exit 3", command="echo never",
                                         writes_exit_code=writes)))
    done = subprocess.run(["bash", str(script)], env={"SLURM_JOB_ID": "77", "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 3
    assert (tmp_path / "77.ec").read_text() == "3\n"
    assert (tmp_path / "study-w1.77.out").read_text() == "pre\n"
    script.write_text(system.script(_req(tmp_path, command="exit 5")))
    assert subprocess.run(["bash", str(script)], env={"SLURM_JOB_ID": "78"}, check=False).returncode == 5
    assert (tmp_path / "78.ec").read_text() == "5\n"


@pytest.mark.parametrize("name", ["slurm", "lsf", "pbs", "flux", "local"])
def test_a_command_that_writes_its_exit_code_is_execed(tmp_path: Path, name: str) -> None:
    """So that a signal to the batch shell (Slurm's --signal=B:USR1@T) reaches run-workers, not the shell."""
    system = get_batch_system(name)
    lines = system.script(_req(tmp_path, command="cd /s\nmerlin-mdm run-workers s.yaml",
                               writes_exit_code=True)).splitlines()
    job = f"${{{system.job_id_var}}}"
    assert lines[-4:] == [f'export MERLIN_MDM_EXIT_CODE_FILE={tmp_path}/"{job}.ec"',
                          'trap \'echo "$?" >"$MERLIN_MDM_EXIT_CODE_FILE"\' EXIT', "cd /s",
                          "exec merlin-mdm run-workers s.yaml"]


def test_slurm_leaves_the_walltime_to_the_queue_when_none_is_given(tmp_path: Path) -> None:
    script = get_batch_system("slurm").script(_req(tmp_path, walltime=None))
    assert "--time" not in script and "unset MERLIN_MDM_ALLOC_END" in script


def test_launch_pre_runs_before_the_command_and_options_become_directives(tmp_path: Path) -> None:
    req = _req(tmp_path, launch_pre="module load mpi\nsource env.sh", qos="debug", options=(("mem", "0"),))
    script = get_batch_system("slurm").script(req)
    assert script.index("module load mpi\nsource env.sh") < script.index("merlin-mdm run-workers")
    assert '#SBATCH --qos="debug"' in script and '#SBATCH --mem="0"' in script


def test_submit_writes_the_script_and_reads_the_job_id(tmp_path: Path) -> None:
    runner = Recorder({"sbatch": ShellResult(0, "Submitted batch job 4242\n", "")})
    system = get_batch_system("slurm", runner)
    assert system.submit(_req(tmp_path / "batch")) == "4242"
    script = tmp_path / "batch" / "study-w1.sh"
    assert runner.calls == [["sbatch", str(script)]]
    assert script.read_text().startswith("#!/bin/bash\n")


def test_a_refused_submission_is_a_batch_error_with_the_schedulers_words(tmp_path: Path) -> None:
    runner = Recorder({"sbatch": ShellResult(1, "", "sbatch: error: invalid partition specified: nope\n")})
    with pytest.raises(BatchError, match=r"slurm: sbatch .* failed \(exit 1\): .*invalid partition"):
        get_batch_system("slurm", runner).submit(_req(tmp_path))


def test_a_missing_scheduler_command_says_so(tmp_path: Path) -> None:
    runner = Recorder({"bsub": ShellResult(127, "", "not found")})
    with pytest.raises(BatchError, match="is not on PATH"):
        get_batch_system("lsf", runner).submit(_req(tmp_path))


SQUEUE = """JOBID               ST                  REASON
10                  R                   None
11                  PD                  Priority
12                  TO                  TimeLimit
13                  CA                  None
14                  CD                  None
15                  F                   NonZeroExitCode
16                  XX                  None
"""


def test_slurm_states_keep_timeout_apart_from_failure() -> None:
    runner = Recorder({"squeue": ShellResult(0, SQUEUE, "")})
    states = get_batch_system("slurm", runner).status([str(i) for i in range(10, 17)])
    assert states == {"10": JobState.RUNNING, "11": JobState.PENDING, "12": JobState.TIMEOUT,
                      "13": JobState.CANCELLED, "14": JobState.COMPLETED, "15": JobState.FAILED,
                      "16": JobState.UNKNOWN}
    assert JobState.TIMEOUT in TERMINAL_STATES and JobState.TIMEOUT is not JobState.FAILED


def test_slurm_gives_the_reason_a_pending_job_waits_and_which_reasons_no_waiting_cures() -> None:
    out = SQUEUE + "17                  PD                  ReqNodeNotAvail,_UnavailableNodes:n[1-2]\n" \
        "18                  PD                  PartitionNodeLimit\n"
    runner = Recorder({"squeue": ShellResult(0, out, "")})
    system = get_batch_system("slurm", runner)
    reasons: dict[str, str] = {}
    system.status([str(i) for i in range(10, 19)], None, reasons)
    assert reasons == {"11": "Priority", "17": "ReqNodeNotAvail,_UnavailableNodes:n[1-2]", "18": "PartitionNodeLimit"}
    assert [r for r in reasons.values() if r in system.doubtful_reasons] == ["PartitionNodeLimit"]  # or nodes down
    assert "QOSMaxWallDurationPerJobLimit" in system.stuck_reasons  # 29 characters: squeue is asked for up to 128
    assert "JobArrayID,StateCompact,Reason:128" in system.status_command(["1"])


def test_a_job_the_scheduler_forgot_is_judged_by_its_exit_code_file(tmp_path: Path) -> None:
    (tmp_path / "20.ec").write_text("0\n")
    (tmp_path / "21.ec").write_text("3\n")
    (tmp_path / "23.ec").write_text("143\n")  # run-workers (or its workers) stopped by SIGTERM: `scancel`
    runner = Recorder({"squeue": ShellResult(0, "JOBID ST REASON\n", "")})
    states = get_batch_system("slurm", runner).status(["20", "21", "22", "23"], tmp_path)
    assert states == {"20": JobState.COMPLETED, "21": JobState.FAILED, "22": JobState.UNKNOWN,
                      "23": JobState.CANCELLED}


def test_lsf_states_from_bjobs_json() -> None:
    records = [{"JOBID": "1", "STAT": "RUN"}, {"JOBID": "2", "STAT": "EXIT", "EXIT_REASON": "TERM_RUNLIMIT: job "
                "killed after reaching LSF run time limit", "KILL_REASON": ""},
               {"JOBID": "3", "STAT": "EXIT", "EXIT_REASON": "TERM_OWNER: job killed by owner", "KILL_REASON": ""},
               {"JOBID": "4", "STAT": "EXIT", "EXIT_REASON": "", "KILL_REASON": ""}, {"JOBID": "5", "STAT": "DONE"},
               {"JOBID": "6", "ERROR": "Job <6> is not found"}]
    runner = Recorder({"bjobs": ShellResult(255, json.dumps({"RECORDS": records}), "")})
    states = get_batch_system("lsf", runner).status(["1", "2", "3", "4", "5"])
    assert states == {"1": JobState.RUNNING, "2": JobState.TIMEOUT, "3": JobState.CANCELLED, "4": JobState.FAILED,
                      "5": JobState.COMPLETED}


def test_pbs_states_from_qstat_json() -> None:
    jobs = {"1.srv": {"job_state": "Q"}, "2.srv": {"job_state": "F", "Exit_status": -29},
            "3.srv": {"job_state": "F", "Exit_status": 271}, "4.srv": {"job_state": "F", "Exit_status": 0},
            "5.srv": {"job_state": "F", "Exit_status": 1}}
    runner = Recorder({"qstat": ShellResult(0, json.dumps({"Jobs": jobs}), "")})
    states = get_batch_system("pbs", runner).status(list(jobs))
    assert list(states.values()) == [JobState.PENDING, JobState.TIMEOUT, JobState.CANCELLED, JobState.COMPLETED,
                                     JobState.FAILED]


def test_flux_states_from_flux_jobs() -> None:
    out = "fA RUN \nfB SCHED \nfC INACTIVE TIMEOUT\nfD INACTIVE CANCELED\nfE INACTIVE COMPLETED\n"
    runner = Recorder({"flux jobs": ShellResult(0, out, "")})
    assert get_batch_system("flux", runner).status(["fA", "fB", "fC", "fD", "fE"]) == {
        "fA": JobState.RUNNING, "fB": JobState.PENDING, "fC": JobState.TIMEOUT, "fD": JobState.CANCELLED,
        "fE": JobState.COMPLETED}


@pytest.mark.parametrize(("name", "cmd"), [
    ("slurm", ["scancel", "-Q", "1", "2"]), ("lsf", ["bkill", "1", "2"]), ("pbs", ["qdel", "1", "2"]),
    ("flux", ["flux", "cancel", "1", "2"]), ("local", ["kill", "-TERM", "--", "-1", "-2"]),
])  # fmt: skip
def test_cancel_commands(name: str, cmd: list[str]) -> None:
    runner = Recorder({})
    get_batch_system(name, runner).cancel(["1", "2", "1"])
    assert runner.calls == [cmd]


def test_unknown_batch_type_lists_the_known_ones() -> None:
    with pytest.raises(BatchError, match=r"unknown batch type 'sge' \(known: flux, local, lsf, pbs, slurm\)"):
        get_batch_system("sge")
    assert all(cls.name == name for name, cls in BATCH_SYSTEMS.items())


def test_a_request_is_validated() -> None:
    with pytest.raises(BatchError, match="nodes must be at least 1"):
        AllocationRequest("a", "true", Path("."), nodes=0)
    with pytest.raises(BatchError, match="one word"):
        AllocationRequest("a b", "true", Path("."))


@pytest.mark.parametrize(("env", "expected"), [
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "4", "SLURM_CPUS_ON_NODE": "36", "MERLIN_MDM_ALLOC_END": "100"},
     Allocation("slurm", "7", 4, 36, 100.0)),
    ({"LSB_JOBID": "8", "LSB_MCPU_HOSTS": "launch 1 n1 40 n2 40"}, Allocation("lsf", "8", 2, 40, None)),
    ({"LSB_JOBID": "8", "LSB_MCPU_HOSTS": "n1 16"}, Allocation("lsf", "8", 1, 16, None)),
    ({"PBS_JOBID": "9.srv", "PBS_NUM_NODES": "3", "NCPUS": "64"}, Allocation("pbs", "9.srv", 3, 64, None)),
    ({"FLUX_JOB_ID": "fX", "FLUX_JOB_NNODES": "2"}, Allocation("flux", "fX", 2, None, None)),
    ({"MERLIN_MDM_BATCH": "local", "MERLIN_MDM_JOB_ID": "123"}, Allocation("local", "123", 1, None, None)),
    ({"HOME": "/root"}, None),
])  # fmt: skip
def test_detect_allocation(env: dict[str, str], expected: Allocation | None) -> None:
    assert detect_allocation(env) == expected


def test_seconds_left() -> None:
    assert Allocation("slurm", "1", 1, 1, 1000.0).seconds_left(400.0) == 600.0
    assert Allocation("slurm", "1", 1, 1, None).seconds_left(400.0) is None


def test_unreadable_status_output_is_a_batch_error() -> None:
    runner = Recorder({"bjobs": ShellResult(0, "bjobs: LSF is down, try later", "")})
    with pytest.raises(BatchError, match="lsf: cannot read job states from 'bjobs: LSF is down"):
        get_batch_system("lsf", runner).status(["1"])


def test_slurm_end_time_from_squeue() -> None:
    from datetime import datetime

    runner = Recorder({"squeue -h -j 5": ShellResult(0, "2026-12-02T05:17:03\n", ""),
                       "squeue -h -j 6": ShellResult(0, "N/A\n", ""),
                       "squeue -h -j 7": ShellResult(1, "", "slurm_load_jobs error: Invalid job id specified")})
    slurm = get_batch_system("slurm", runner)
    assert slurm.end_time("5") == datetime(2026, 12, 2, 5, 17, 3).timestamp()
    assert slurm.end_time("6") is None and slurm.end_time("7") is None
    assert get_batch_system("lsf", runner).end_time("5") is None  # not asked: LSF exports nothing we read


def _directives(name: str, req: AllocationRequest) -> list[str]:
    return [line for line in get_batch_system(name).script(req).splitlines()
            if line.startswith(("#BSUB", "#PBS", "#flux", "export MERLIN_MDM_ALLOC_END"))]


def test_pbs_asks_for_every_core_of_each_node(tmp_path: Path) -> None:
    # select=N:ncpus=1 made the job's NCPUS 1 (workers of concurrency 1) and its cgroups one core a node
    assert "#PBS -l select=2:ncpus=36:mpiprocs=36" in _directives("pbs", _req(tmp_path))
    with pytest.raises(UnsupportedRequest, match=r"allocation 'study-w1': PBS needs each node's cores .* "
                                                 r"`merlin-mdm launch --cores-per-node C`") as err:
        get_batch_system("pbs").script(_req(tmp_path, cores_per_node=None))
    assert err.value.exit_code == 2


@pytest.mark.parametrize(("walltime", "directive", "seconds"), [
    (5445, "#BSUB -W 1:31", 5460),  # 01:30:45 was -W 1:30, 45 s before the deadline the workers planned on
    (30, "#BSUB -W 0:1", 60),  # was -W 0:0
    (5400, "#BSUB -W 1:30", 5400),
])  # fmt: skip
def test_lsf_walltime_rounds_up_to_whole_minutes(tmp_path: Path, walltime: int, directive: str, seconds: int) -> None:
    lines = _directives("lsf", _req(tmp_path, walltime=walltime))
    assert directive in lines and f"export MERLIN_MDM_ALLOC_END=$(( $(date +%s) + {seconds} ))" in lines


def test_lsf_asks_for_nodes_not_slots(tmp_path: Path) -> None:
    assert _directives("lsf", _req(tmp_path))[2:4] == ["#BSUB -env all", "#BSUB -nnodes 2"]  # and no -n 2
    slots = _req(tmp_path, options=(("-n", "80"), ("-R", "span[ptile=40]")))
    lines = _directives("lsf", slots)  # LSF without CSM: the spec's lsf_args say how slots make nodes
    assert "#BSUB -nnodes 2" not in lines and "#BSUB -n 2" not in lines
    assert lines[-4:-1] == ["#BSUB -n 80", "#BSUB -R 'span[ptile=40]'", "#BSUB -x"]


@pytest.mark.parametrize(("name", "key", "message"), [
    ("lsf", "qos", r"qos 'standby': LSF has no qos option; remove `qos` from the batch block \(an LSF service"),
    ("pbs", "qos", r"qos 'standby': PBS has no qos option; remove `qos` from the batch block"),
    ("flux", "qos", r"qos 'standby': Flux has no qos option; remove `qos` from the batch block"),
    ("flux", "reservation", r"reservation 'standby': Flux has no reservation option"),
])  # fmt: skip
def test_settings_a_scheduler_has_no_option_for_are_refused(tmp_path: Path, name: str, key: str,
                                                             message: str) -> None:
    with pytest.raises(UnsupportedRequest, match=message):
        get_batch_system(name).script(_req(tmp_path, **{key: "standby"}))


def test_a_refused_submission_says_the_schedulers_reason_not_its_help_hint(tmp_path: Path) -> None:
    """`slurm_args: --bogus-flag=3` was reported as `failed (exit 255): Try "sbatch --help" for more information`,
    the line that said what was wrong dropped (an outside probe on Slurm)."""
    err = "sbatch: unrecognized option '--bogus-flag=3'\nTry \"sbatch --help\" for more information\n"
    runner = Recorder({"sbatch": ShellResult(255, "", err)})
    with pytest.raises(BatchError, match=r"failed \(exit 255\): sbatch: unrecognized option '--bogus-flag=3'$"):
        get_batch_system("slurm", runner).submit(_req(tmp_path))


@pytest.mark.parametrize("field", ["queue", "bank", "qos", "reservation"])
def test_a_queue_or_bank_no_scheduler_can_name_is_refused_before_submitting(tmp_path: Path, field: str) -> None:
    """`queue: "de bug;x"` became `--partition="'de bug;x'"` (quoted twice), and a bank with a quote broke sbatch's
    parsing (an outside probe on Slurm)."""
    runner = Recorder({})
    with pytest.raises(BatchError, match=rf"{field} 'de bug;x' is no name a scheduler takes"):
        get_batch_system("slurm", runner).submit(_req(tmp_path, **{field: "de bug;x"}))
    assert runner.calls == []
    assert "#SBATCH" in get_batch_system("slurm", runner).script(_req(tmp_path, **{field: "pbatch,pdebug"}))
