"""Planning allocations and the workers inside them: pure functions of the spec and the environment."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from merlin_mdm.backends.celery.allocations import LaunchOptions, allocation_requests, scheduler_name
from merlin_mdm.backends.celery.in_allocation import allocation_commands, launcher_for, unit_fits, unit_misfit
from merlin_mdm.backends.celery.workers import worker_commands
from merlin_mdm.batch import Allocation
from merlin_mdm.errors import UsageError
from merlin_mdm.spec import BatchConfig, load_spec_text
from merlin_mdm.study.plan import UnitKey

SPEC = """
description: {name: big, description: two worker groups}
batch: {type: slurm, bank: b1, queue: pbatch, walltime: "02:00:00", nodes: 4, launch_pre: module load x,
        qos: standby, slurm_args: --mem=0 --signal=USR1@60}
study:
  - name: sim
    description: simulate
    run: {cmd: "$(LAUNCHER) sim", task_queue: sims, walltime: "00:10:00", procs: 8}
  - name: post
    description: post-process
    run: {cmd: post, depends: [sim], task_queue: posts}
merlin:
  resources:
    workers:
      simworkers: {args: -l INFO, steps: [sim], nodes: 2}
      postworkers: {args: --concurrency 3, steps: [post], batch: {type: slurm, walltime: "00:30:00", queue: pdebug}}
"""


def _spec(text: str = SPEC):  # type: ignore[no-untyped-def]
    return load_spec_text(text, "/s/big.yaml").spec


def test_one_allocation_per_worker_group_with_the_workers_batch_over_the_specs() -> None:
    planned = allocation_requests(_spec(), Path("/s/big.yaml"), Path("/ws"), LaunchOptions(config_source="/a.yaml"))
    assert [names for names, _ in planned] == [("simworkers",), ("postworkers",)]
    sim, post = (req for _, req in planned)
    assert (sim.name, sim.nodes, sim.walltime, sim.queue, sim.bank, sim.qos) == (
        "big.simworkers", 2, 7200, "pbatch", "b1", "standby")
    assert (post.name, post.nodes, post.walltime, post.queue) == ("big.postworkers", 4, 1800, "pdebug")
    assert sim.options == (("mem", "0"), ("signal", "USR1@60"))
    assert sim.launch_pre == "module load x"
    # Slurm's --signal=[B:]SIG@T early warning: run-workers winds down on it (the script execs run-workers)
    assert sim.env == (("MERLIN_MDM_CONFIG", "/a.yaml"), ("MERLIN_MDM_SIGNAL", "USR1")) and sim.writes_exit_code
    assert sim.workdir == Path("/ws/merlin_info/batch")
    assert sim.command.startswith("cd /s\n")
    assert sim.command.endswith("run-workers /s/big.yaml --worker simworkers --until-done /ws")


def test_command_line_overrides_and_one_allocation_for_all() -> None:
    opts = LaunchOptions(nodes=8, walltime="45:00", queue="pbig", bank="b2", together=True)
    [(names, req)] = allocation_requests(_spec(), Path("/s/big.yaml"), Path("/ws"), opts)
    assert names == ("simworkers", "postworkers")
    assert (req.name, req.nodes, req.walltime, req.queue, req.bank) == ("big.all", 8, 2700, "pbig", "b2")
    assert "--worker simworkers --worker postworkers" in req.command


def test_lsf_srun_is_lsf_with_another_launcher() -> None:
    assert scheduler_name("lsf-srun") == "lsf" and scheduler_name("slurm") == "slurm"


SLURM = Allocation("slurm", "77", 4, 36, None)


def test_inside_an_allocation_each_worker_runs_once_per_node_with_the_nodes_cores() -> None:
    spec = _spec()
    sim, post = allocation_commands(spec, worker_commands(spec), SLURM)
    assert sim.argv[:7] == ("srun", "--overlap", "-N", "2", "-n", "2", "--ntasks-per-node=1")
    assert "simworkers.77@%h" in sim.argv and sim.argv[-2:] == ("-c", "36")
    assert post.argv[:4] == ("srun", "--overlap", "-N", "4")
    assert post.argv.count("--concurrency") == 1 and "-c" not in post.argv  # the worker's own choice stands


def test_launcher_follows_the_allocation_unless_the_spec_names_one_for_it() -> None:
    lsf = Allocation("lsf", "9", 1, 40, None)
    # on LSF none, as Merlin: a worker under a jsrun holding every core and GPU nested the steps' own jsrun under it
    assert launcher_for(BatchConfig(type="lsf-srun"), lsf) == "plain"
    assert launcher_for(BatchConfig(type="lsf"), lsf) == "plain"
    assert launcher_for(BatchConfig(type="lsf", extra={"launcher": "jsrun"}), lsf) == "plain"
    assert launcher_for(BatchConfig(type="slurm", extra={"launcher": "mpiexec"}), SLURM) == "mpiexec"
    assert launcher_for(BatchConfig(), Allocation("local", "1", 1, None, None)) == "plain"


def test_unknown_worker_group_is_named() -> None:
    with pytest.raises(UsageError, match=r"no worker\(s\) nope .*workers: simworkers, postworkers"):
        worker_commands(_spec(), only=["nope"])


class _Plan:
    """Just what unit_fits reads of a plan."""

    class _Inst:
        walltime = "00:10:00"
        name = "long"

    instances = (_Inst(),)

    def unit_samples(self, key: UnitKey) -> range:
        return range(3)


@pytest.mark.parametrize(("env", "now", "fits"), [
    ({}, 0.0, True),  # no allocation deadline
    ({"MERLIN_MDM_ALLOC_END": "5000", "MERLIN_MDM_WALLTIME_MARGIN": "600"}, 2600.0, True),  # 3 x 600 s to 4400
    ({"MERLIN_MDM_ALLOC_END": "5000", "MERLIN_MDM_WALLTIME_MARGIN": "600"}, 2600.5, False),
    ({"MERLIN_MDM_ALLOC_END": "5000"}, 3140.0, True),  # the default margin, 60 s
    ({"MERLIN_MDM_ALLOC_END": "5000"}, 3140.5, False),
])  # fmt: skip
def test_a_unit_fits_when_its_tasks_walltime_ends_before_the_margin(env: dict[str, str], now: float,
                                                                     fits: bool) -> None:
    assert unit_fits(_Plan(), UnitKey(0, 0), env, now) is fits  # type: ignore[arg-type]


def test_a_unit_that_does_not_fit_says_what_it_needs_and_what_is_left() -> None:
    env = {"MERLIN_MDM_ALLOC_END": "5000", "MERLIN_MDM_WALLTIME_MARGIN": "600"}
    assert unit_misfit(_Plan(), UnitKey(0, 0), env, 3000.0) == (  # type: ignore[arg-type]
        "unit 0:0 of long may need 1800 s (walltime x 3 task(s)), and this allocation has 1400 s left before its "
        "walltime margin (600 s): given back for the next allocation")


def test_flux_path_goes_first_on_path_before_launch_pre() -> None:
    text = SPEC.replace("type: slurm, bank: b1", "type: flux, flux_path: /opt/flux/bin, bank: b1")
    [(_, req), _] = allocation_requests(_spec(text), Path("/s/big.yaml"), Path("/ws"), LaunchOptions())
    assert req.launch_pre == 'export PATH=/opt/flux/bin:"$PATH"\nmodule load x'


def test_worker_launch_replaces_the_per_node_line() -> None:
    custom = "type: slurm, worker_launch: srun -N 2 -n 2 --exclusive, bank: b1"
    spec = _spec(SPEC.replace("type: slurm, bank: b1", custom))
    sim, _ = allocation_commands(spec, worker_commands(spec), SLURM)
    assert sim.argv[:6] == ("srun", "-N", "2", "-n", "2", "--exclusive")


def test_batch_options_keep_every_option_as_written() -> None:
    from merlin_mdm.backends.celery.allocations import _options
    from merlin_mdm.batch import get_batch_system
    from merlin_mdm.batch.base import AllocationRequest
    from merlin_mdm.errors import BatchError

    text = "--signal=B:USR1@100 -p nosuch --mem 0 --exclusive --comment 'two words'"
    assert _options(text) == (("signal", "B:USR1@100"), ("-p", "nosuch"), ("mem", "0"), ("exclusive", ""),
                              ("comment", "two words"))
    assert _options({"signal": "B:USR1@100", "exclusive": True}) == (("signal", "B:USR1@100"), ("exclusive", ""))
    with pytest.raises(BatchError, match="'stray' is no option"):
        _options("stray --mem=0")
    script = get_batch_system("slurm").script(AllocationRequest("s", "true", Path("/w"), options=_options(text)))
    lines = script.splitlines()
    for line in ('#SBATCH --signal="B:USR1@100"', "#SBATCH -p nosuch", '#SBATCH --mem="0"', "#SBATCH --exclusive",
                 '#SBATCH --comment="two words"'):
        assert line in lines, (line, lines)
    assert not [line for line in lines if "''" in line]


def test_the_variables_a_study_was_run_with_name_its_workers_and_reach_them() -> None:
    text = SPEC.replace("simworkers:", "$(GROUP):").replace("task_queue: sims", "task_queue: $(Q)") + \
        "env: {variables: {GROUP: simworkers, Q: sims}}\n"
    spec = load_spec_text(text, "/s/big.yaml", {"GROUP": "g7", "Q": "q7"}).spec
    opts = LaunchOptions(variables=("GROUP=g7", "Q=q7"))
    planned = allocation_requests(spec, Path("/s/big.yaml"), Path("/ws"), opts)
    names = [names for names, _ in planned]
    assert names == [("g7",), ("postworkers",)]
    assert "--worker g7 --vars GROUP=g7 --vars Q=q7 --until-done /ws" in planned[0][1].command


def test_launch_warns_of_steps_whose_units_cannot_fit_in_the_allocation() -> None:
    from types import SimpleNamespace

    from merlin_mdm.backends.celery.allocations import units_beyond_walltime

    sim = SimpleNamespace(index=0, step="sim", task_queue="sims", walltime="00:10:00")
    post = SimpleNamespace(index=1, step="post", task_queue="posts", walltime=None)
    plan = SimpleNamespace(instances=(sim, post), unit_samples=lambda key: range(1))
    planned = allocation_requests(_spec(), Path("/s/big.yaml"), Path("/ws"), LaunchOptions(walltime="00:05:00"))
    lines = units_beyond_walltime(_spec(), plan, planned, 60.0)  # type: ignore[arg-type]
    assert lines == ["step sim: a unit may need 600 s (walltime x tasks per unit), more than allocation "
                     "big.simworkers has (300 s less the 60 s margin): its workers would give such units back at "
                     "once; raise the walltime (--walltime, batch.walltime) or queue the study in smaller units "
                     "(run --batch-size)"]
    roomy = allocation_requests(_spec(), Path("/s/big.yaml"), Path("/ws"), LaunchOptions(walltime="00:20:00"))
    assert units_beyond_walltime(_spec(), plan, roomy, 60.0) == []  # type: ignore[arg-type]


def test_launch_refuses_a_step_wanting_more_nodes_than_the_allocation_that_would_run_it() -> None:
    from types import SimpleNamespace

    from merlin_mdm.backends.celery.allocations import steps_beyond_nodes

    spec = _spec(SPEC.replace("procs: 8}", "procs: 8, nodes: 3}"))
    sim = SimpleNamespace(index=0, step="sim", task_queue="sims")
    post = SimpleNamespace(index=1, step="post", task_queue="posts")
    plan = SimpleNamespace(instances=(sim, post))
    planned = allocation_requests(spec, Path("/s/big.yaml"), Path("/ws"), LaunchOptions())
    assert steps_beyond_nodes(spec, plan, planned) == [  # type: ignore[arg-type]
        "/s/big.yaml:8: step sim asks for 3 nodes, allocation big.simworkers has 2: its tasks' launcher cannot "
        "place them; give the allocation more nodes (--nodes, the batch block's nodes, or its worker group's) or "
        "the step fewer"]
    roomy = allocation_requests(spec, Path("/s/big.yaml"), Path("/ws"), LaunchOptions(nodes=3))
    assert steps_beyond_nodes(spec, plan, roomy) == []  # type: ignore[arg-type]
    together = allocation_requests(spec, Path("/s/big.yaml"), Path("/ws"), LaunchOptions(together=True))
    assert steps_beyond_nodes(spec, plan, together) == []  # type: ignore[arg-type]  # the batch block's 4 nodes


def test_an_ended_allocation_keeps_the_state_first_seen_after_the_scheduler_forgets_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from merlin_mdm.backends.celery import allocations
    from merlin_mdm.backends.celery.allocations import AllocationRecord, allocation_states
    from merlin_mdm.batch import JobState

    (tmp_path / "merlin_info" / "batch").mkdir(parents=True)
    seen = {"1": JobState.CANCELLED, "2": JobState.RUNNING}
    asked: list[list[str]] = []

    def status(ids: list[str], workdir: Path, reasons: object = None) -> dict[str, JobState]:
        asked.append(list(ids))
        return {i: seen[i] for i in ids}

    monkeypatch.setattr(allocations, "get_batch_system", lambda name: SimpleNamespace(status=status))
    records = [AllocationRecord(j, "slurm", "s.w", ("w",), 1, 0.0) for j in ("1", "2")]
    assert allocation_states(tmp_path, records) == {"1": JobState.CANCELLED, "2": JobState.RUNNING}
    seen.update({"1": JobState.FAILED, "2": JobState.TIMEOUT})  # forgotten: only its .ec (143) is left
    assert allocation_states(tmp_path, records) == {"1": JobState.CANCELLED, "2": JobState.TIMEOUT}
    seen["2"] = JobState.COMPLETED
    assert allocation_states(tmp_path, records) == {"1": JobState.CANCELLED, "2": JobState.TIMEOUT}
    assert asked == [["1", "2"], ["2"]]  # an ended job is not asked about again


@pytest.mark.parametrize("batch_type", ["lsf", "lsf-srun"])
def test_on_lsf_workers_start_on_the_launch_node_without_a_launcher(batch_type: str) -> None:
    spec = _spec(SPEC.replace("type: slurm, bank: b1", f"type: {batch_type}, launch_args: --smpiargs=off, bank: b1")
                 .replace("{type: slurm, walltime", f"{{type: {batch_type}, walltime"))
    sim, post = allocation_commands(spec, worker_commands(spec), Allocation("lsf", "9", 4, 40, None))
    assert sim.argv[:3] == (sys.executable, "-m", "celery") and sim.argv[-2:] == ("-c", "40")
    assert post.argv[:3] == (sys.executable, "-m", "celery")


def test_on_flux_workers_start_through_flux_exec_holding_no_node() -> None:
    spec = _spec(SPEC.replace("type: slurm, bank: b1", "type: flux, bank: b1")
                 .replace("{type: slurm, walltime", "{type: flux, walltime"))
    sim, _ = allocation_commands(spec, worker_commands(spec), Allocation("flux", "f1", 4, None, None))
    exec_at = sim.argv.index("flux")
    assert sim.argv[:2] == ("sh", "-c") and sim.argv[exec_at:exec_at + 4] == ("flux", "exec", "-r", "0-1")
    assert sim.argv[exec_at + 4:exec_at + 6] == ("sh", "-c") and "--exclusive" not in sim.argv


def test_lsf_early_warning_is_the_signal_run_workers_winds_down_on() -> None:
    text = SPEC.replace("type: slurm, bank: b1", "type: lsf, bank: b1").replace(
        "qos: standby, slurm_args: --mem=0 --signal=USR1@60", 'lsf_args: "-wa USR1 -wt 2"')
    [(_, sim), _] = allocation_requests(_spec(text), Path("/s/big.yaml"), Path("/ws"), LaunchOptions())
    assert sim.options == (("-wa", "USR1"), ("-wt", "2")) and sim.env == (("MERLIN_MDM_SIGNAL", "USR1"),)


def test_a_worker_groups_own_batch_type_picks_its_batch_system() -> None:
    text = SPEC.replace("{type: slurm, walltime", "{type: lsf, walltime")
    [(_, sim), (_, post)] = allocation_requests(_spec(text), Path("/s/big.yaml"), Path("/ws"), LaunchOptions())
    assert (sim.system, post.system) == ("slurm", "lsf")


def test_a_scheduler_that_cannot_be_asked_is_said_and_ended_jobs_read_their_exit_codes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """slurmctld down: a job whose .ec held 0 was shown `unknown`, and nothing said the scheduler was unreachable."""
    from types import SimpleNamespace

    from merlin_mdm.backends.celery import allocations
    from merlin_mdm.backends.celery.allocations import AllocationRecord, allocation_states
    from merlin_mdm.batch import JobState
    from merlin_mdm.errors import BatchError

    batch = tmp_path / "merlin_info" / "batch"
    batch.mkdir(parents=True)
    (batch / "19.ec").write_text("0\n")
    (batch / "20.ec").write_text("143\n")

    def status(ids: list[str], workdir: Path, reasons: object = None) -> dict[str, JobState]:
        raise BatchError("slurm: squeue --noheader failed (exit 1): Unable to contact slurm controller")

    monkeypatch.setattr(allocations, "get_batch_system", lambda name: SimpleNamespace(status=status))
    records = [AllocationRecord(j, "slurm", "s.w", ("w",), 1, 0.0) for j in ("18", "19", "20")]
    notes: list[str] = []
    states = allocation_states(tmp_path, records, notes)
    assert states == {"18": JobState.UNKNOWN, "19": JobState.COMPLETED, "20": JobState.CANCELLED}  # 128+SIGTERM
    assert len(notes) == 1 and "Unable to contact slurm controller" in notes[0] and "exit code files" in notes[0]


def test_a_study_waiting_for_workers_says_how_its_allocations_stand(tmp_path: Path) -> None:
    """Its queued line said to `launch` even while an allocation waited to start (a second one only queues beside
    it); with every allocation ended it says to `launch` again."""
    import json

    from merlin_mdm.backends.celery.allocations import AllocationRecord, write_record
    from merlin_mdm.cli.status import _allocations_say

    assert _allocations_say(tmp_path) is None  # `launch` asked for none: `run-workers` is the hint
    for job in ("7", "8"):
        write_record(tmp_path, AllocationRecord(job, "slurm", "s.w", ("w",), 1, 0.0))
    (tmp_path / "merlin_info" / "batch" / "final_states.json").write_text(json.dumps({"7": "cancelled",
                                                                                     "8": "timeout"}))
    assert _allocations_say(tmp_path) == ("its allocations have ended: `merlin-mdm launch SPEC` asks for more (or "
                                          "`merlin-mdm run-workers SPEC`)")


def test_the_longest_unit_counts_the_samples_a_unit_holds_not_the_batch_size() -> None:
    """Three samples in units of up to 100: a unit runs 3 tasks, not 100 (the visibility warning and the derived
    visibility timeout took 100 x the walltime)."""
    from merlin_mdm.backends.celery.backend import longest_unit_seconds
    from tests.unit.study.plans import plan_of

    head = """
    description: {name: v, description: d}
    merlin: {samples: {generate: {cmd: make}, file: s.npy, column_labels: [X]}}
    study:
      - {name: sim, description: s, run: {cmd: echo $(X), walltime: "00:00:10"}}
      - {name: post, description: p, run: {cmd: echo all, depends: [sim_*], walltime: "00:00:20"}}
    """
    assert longest_unit_seconds(plan_of(textwrap.dedent(head), samples=3, batch_size=100)) == 30.0
    assert longest_unit_seconds(plan_of(textwrap.dedent(head), samples=250, batch_size=100)) == 1000.0


def test_launch_can_ask_again_for_one_worker_group_only() -> None:
    """A group whose allocation ended (or never got one) gets another without a second one for every group."""
    planned = allocation_requests(_spec(), Path("/s/big.yaml"), Path("/ws"), LaunchOptions(workers=("postworkers",)))
    assert [(names, req.name) for names, req in planned] == [(("postworkers",), "big.postworkers")]
    with pytest.raises(UsageError, match=r"no worker\(s\) nosuch for /s/big.yaml \(workers: simworkers, postworkers"):
        allocation_requests(_spec(), Path("/s/big.yaml"), Path("/ws"), LaunchOptions(workers=("nosuch",)))


def test_launch_fails_only_for_reasons_no_waiting_cures_and_waits_for_none_on_lsf(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from merlin_mdm.backends.celery import allocations
    from merlin_mdm.backends.celery.allocations import AllocationRecord, AllocationRow, write_record
    from merlin_mdm.batch import JobState
    from merlin_mdm.cli import batch
    from merlin_mdm.errors import BatchError

    def row(job: str, reason: str, sure: bool) -> AllocationRow:
        return AllocationRow(job, "slurm", "s.w", JobState.PENDING, (), reason, "why", sure)

    monkeypatch.setattr(allocations, "stuck_allocations", lambda ws, jobs: [row("5", "PartitionNodeLimit", False)])
    batch._refuse_stuck(tmp_path, {"5"})  # nodes down or drained say the same: a warning
    assert "warning: job 5 (s.w) is pending (PartitionNodeLimit): Slurm may never start it" in capsys.readouterr().err
    monkeypatch.setattr(allocations, "stuck_allocations", lambda ws, jobs: [row("6", "PartitionTimeLimit", True)])
    with pytest.raises(BatchError, match=r"job 6 \(s.w\) is pending \(PartitionTimeLimit\): Slurm will not start it"):
        batch._refuse_stuck(tmp_path, {"6"})
    monkeypatch.undo()

    write_record(tmp_path, AllocationRecord("7", "lsf", "s.w", ("w",), 1, 0.0))
    monkeypatch.setattr(allocations, "allocation_rows", lambda *a: pytest.fail("LSF gives no reasons: not asked"))
    assert allocations.stuck_allocations(tmp_path, {"7"}) == []


def test_a_time_limit_in_the_batch_args_is_refused_where_it_is_read() -> None:
    """`slurm_args: --time=1:00` beside `walltime: 5:00`: Slurm killed the job at one minute while its workers
    planned their stop for five (an outside probe). validate refuses it, through a variable too; launch refuses
    one it reads itself."""
    from merlin_mdm.backends.celery import allocations
    from merlin_mdm.errors import BatchError, SpecError

    with pytest.raises(SpecError, match="--time sets what `walltime:` sets"):
        _spec(SPEC.replace("--mem=0 --signal=USR1@60", "--mem=0 --time=1:00"))
    text = SPEC.replace("--mem=0 --signal=USR1@60", "$(ARGS)").replace(
        "description: {name: big, description: two worker groups}",
        "description: {name: big, description: two worker groups}\nenv: {variables: {ARGS: -N 3}}")
    with pytest.raises(SpecError, match="-N sets what `nodes:` sets"):
        _spec(text)
    with pytest.raises(BatchError, match="-t sets what `walltime:` sets"):
        allocations._options("--mem=0 -t 5", "slurm_args")
    assert allocations._options("--mem=0 -t 5", "lsf_args") == (("mem", "0"), ("-t", "5"))  # not LSF's option


def test_a_study_name_its_job_output_cannot_hold_is_said_at_validate_and_refused_at_launch() -> None:
    """A 234-byte name (validate's limit for the workspace) was queued, then `launch` failed in `File name too long`
    writing NAME.GROUP.sh (an outside probe on Slurm)."""
    from merlin_mdm.errors import BatchError

    text = SPEC.replace("name: big,", f"name: {'L' * 230},")
    loaded = load_spec_text(text, "/s/big.yaml")
    assert any("job output NAME.postworkers.12345678901234567890.out" in w.message and "use at most 218 bytes"
               in w.message for w in loaded.warnings), loaded.warnings
    with pytest.raises(BatchError, match=r"shorten the study's description\.name or the worker group's name"):
        allocation_requests(loaded.spec, Path("/s/big.yaml"), Path("/ws"), LaunchOptions())
    assert allocation_requests(_spec(SPEC.replace("name: big,", f"name: {'L' * 218},")), Path("/s/big.yaml"),
                               Path("/ws"), LaunchOptions())


def test_an_early_warning_that_comes_before_the_work_could_start_is_warned_of(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--signal=B:USR1@90` with `launch --walltime 1:30`: the workers wound down as they started, without a word
    (an outside probe on Slurm)."""
    from merlin_mdm.cli.batch import _check_allocations_fit

    text = SPEC.replace("--signal=USR1@60", "--signal=B:USR1@90")
    for walltime, said in (("1:30", "so the workers wind down as they start"),
                           ("2:30", "so the workers wind down before half of it is used"), ("10:00", None)):
        planned = allocation_requests(_spec(text), Path("/s/big.yaml"), Path("/ws"), LaunchOptions(walltime=walltime))
        _check_allocations_fit(_spec(text), None, planned)
        err = capsys.readouterr().err
        assert (said in err) if said else err == "", (walltime, err)


def test_a_time_limit_in_the_batch_args_is_taken_where_no_walltime_is_given() -> None:
    """Without a walltime no --time is written and the workers read the job's end from the scheduler: a --time in
    slurm_args is then the only one, as before (the review of the refusal above); -N2 and -t2:00:00 count."""
    from merlin_mdm.backends.celery import allocations
    from merlin_mdm.errors import BatchError, SpecError

    text = SPEC.replace('walltime: "02:00:00", ', "").replace("--mem=0 --signal=USR1@60", "-t2:00:00")
    text = text.replace('{type: slurm, walltime: "00:30:00", queue: pdebug}', "{type: slurm, queue: pdebug}")
    planned = allocation_requests(_spec(text), Path("/s/big.yaml"), Path("/ws"), LaunchOptions())
    assert planned[0][1].options == (("-t2:00:00", ""),) and planned[0][1].walltime is None
    with pytest.raises(BatchError, match="-t2:00:00 sets what `walltime:` sets"):
        allocation_requests(_spec(text), Path("/s/big.yaml"), Path("/ws"), LaunchOptions(walltime="1:00:00"))
    with pytest.raises(SpecError, match="-N2 sets what `nodes:` sets"):
        _spec(text.replace("-t2:00:00", "-N2"))
    assert allocations._options("-t 5", "slurm_args", walltime=False) == (("-t", "5"),)
