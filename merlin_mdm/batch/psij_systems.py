"""Slurm, LSF and PBS on top of PSI/J (psij-python): its templates write the directives, its executors
name the submit, status and cancel commands. Where PSI/J falls short we adapt thinly (docs/design.md):

* the script body is ours (PSI/J's runs its own launcher script from ``~/.psij``; ours runs the
  request's command, writes the output and exit code into the study's workspace);
* states go through our tables, because PSI/J reports a walltime kill (Slurm ``TO``) as FAILED and
  asserts on states it does not list;
* its templates never render the job name (they read ``job.name``, which PSI/J's Job lacks), so we add it;
* LSF reads ``#BSUB`` lines only from a script on standard input, so we submit ``bsub < script``.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from merlin_mdm.batch.base import (
    Allocation,
    AllocationRequest,
    BatchSystem,
    JobState,
    UnsupportedRequest,
    deadline_from_env,
    int_from_env,
    translate_state,
)

__all__ = ["LsfBatchSystem", "PbsBatchSystem", "PsijBatchSystem", "SlurmBatchSystem"]

P, R, C, F, X, T = (JobState.PENDING, JobState.RUNNING, JobState.COMPLETED, JobState.FAILED,
                    JobState.CANCELLED, JobState.TIMEOUT)


class PsijBatchSystem(BatchSystem):
    """A batch system whose directives and commands come from a PSI/J executor."""

    executor_name: ClassVar[str]
    directive: ClassVar[str]  # the directive prefix, e.g. "#SBATCH"
    name_option: ClassVar[str]  # the option naming the job, e.g. "--job-name="

    @cached_property
    def executor(self) -> Any:
        """The PSI/J executor (built on first use: its constructor starts a polling thread)."""
        from psij import JobExecutor

        return JobExecutor.get_instance(self.executor_name)

    def psij_job(self, req: AllocationRequest) -> Any:
        """The PSI/J job describing ``req``'s resources and attributes."""
        from psij import Job, JobAttributes, JobSpec, ResourceSpecV1

        custom: dict[str, object] = {f"{self.executor_name}.{k}": v for k, v in self.custom_attributes(req)}
        walltime = self.granted_walltime(req)
        attrs = JobAttributes(duration=timedelta(seconds=walltime) if walltime else timedelta(minutes=10),
                              queue_name=req.queue, account=req.bank, reservation_id=req.reservation,
                              custom_attributes=custom or None)
        spec = JobSpec(executable="/bin/true", name=req.name, directory=req.workdir, inherit_environment=True,
                       resources=ResourceSpecV1(node_count=req.nodes, processes_per_node=self.processes_per_node(req),
                                                exclusive_node_use=req.exclusive),
                       attributes=attrs)
        return Job(spec)

    def processes_per_node(self, req: AllocationRequest) -> int:
        """PSI/J's processes per node: one (a worker per node), unless the scheduler sizes nodes by it."""
        return 1

    def custom_attributes(self, req: AllocationRequest) -> list[tuple[str, str]]:
        """Scheduler options PSI/J has no field for (rendered by its template as long options with a value);
        flags and short options are written by :meth:`raw_directives`."""
        return [("qos", req.qos), *_valued(req.options)] if req.qos else _valued(req.options)

    def raw_directives(self, req: AllocationRequest) -> list[str]:
        """The options PSI/J's templates cannot write: long flags (``--exclusive``) and short options."""
        return [f"{self.directive} {_option_text(k, v)}" for k, v in req.options if not _is_valued(k, v)
                and not (k == "exclusive" and not v and req.exclusive)]  # PSI/J writes that one already

    def directives(self, req: AllocationRequest) -> list[str]:
        from psij.executors.batch.batch_scheduler_executor import _attrs_to_mustache
        from psij.executors.batch.template_function_library import ALL

        job = self.psij_job(req)
        context: dict[str, object] = {
            "job": job, "custom_attributes": _attrs_to_mustache(job), "env": [],
            "psij": {"lib": ALL, "launch_command": [], "script_dir": str(req.workdir)},
        }
        if req.walltime:
            context["formatted_job_duration"] = self.executor._format_duration(job.spec.attributes.duration)
        out = io.StringIO()
        self.executor.generate_submit_script(job, context, out)
        lines = [line.strip() for line in out.getvalue().splitlines()]
        kept = [line for line in lines if line.startswith(self.directive) and not self.dropped(req, line)]
        return ["#!/bin/bash", f"{self.directive} {self.name_option}{req.name}", *kept, *self.raw_directives(req)]

    def dropped(self, req: AllocationRequest, line: str) -> bool:
        """Whether a directive of PSI/J's is left out (it always asks for a walltime, 10 min by default; without
        one Slurm leaves the queue's default)."""
        return False

    def submit_command(self, script: Path) -> list[str]:
        return [str(a) for a in self.executor.get_submit_command(None, script)]

    def parse_job_id(self, out: str) -> str:
        return str(self.executor.job_id_from_submit_output(out))

    def status_command(self, ids: Sequence[str]) -> list[str]:
        return [str(a) for a in self.executor.get_status_command(list(ids))]

    def cancel_command(self, ids: Sequence[str]) -> list[str]:
        return [*self.executor.get_cancel_command(ids[0]), *ids[1:]]


def _is_valued(key: str, value: str) -> bool:
    """A long option whose value PSI/J's template writes as is (it quotes a value with spaces twice)."""
    return bool(value) and not key.startswith("-") and shlex.quote(value) == value


def _valued(options: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in options if _is_valued(k, v)]


def _option_text(key: str, value: str) -> str:
    """``-p big``, ``--exclusive``, ``--comment="two words"``: a short option, a long flag, a spaced value."""
    if key.startswith("-"):
        return f"{key} {shlex.quote(value)}" if value else key
    return f'--{key}="{value}"' if value else f"--{key}"


SLURM_STATES = {
    "PD": P, "CF": P, "RD": P, "RF": P, "RH": P, "RQ": P, "RS": P, "RV": P, "S": P, "ST": P,
    "R": R, "CG": R, "SO": R, "SI": R, "SE": R,
    "CD": C, "F": F, "NF": F, "OOM": F, "BF": F, "CA": X, "PR": X, "TO": T, "DL": T,
}  # fmt: skip


class SlurmBatchSystem(PsijBatchSystem):
    """Slurm: sbatch, squeue, scancel."""

    name = "slurm"
    title = "Slurm"
    executor_name = "slurm"
    directive = "#SBATCH"
    name_option = "--job-name="
    job_id_var = "SLURM_JOB_ID"

    def dropped(self, req: AllocationRequest, line: str) -> bool:
        return req.walltime is None and line.startswith("#SBATCH --time=")

    @classmethod
    def detect(cls, env: Mapping[str, str]) -> Allocation | None:
        return _slurm_detect(env)

    def end_time(self, job_id: str) -> float | None:
        res = self._runner(["squeue", "-h", "-j", job_id, "-o", "%e"])
        try:  # squeue prints the end as local time, e.g. 2026-12-02T05:17:03
            return datetime.fromisoformat(res.stdout.strip()).timestamp() if res.rc == 0 else None
        except ValueError:  # "N/A", "Unknown", or the job is gone
            return None

    def parse_status(self, out: str) -> dict[str, JobState]:
        rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
        return {row[0]: translate_state(SLURM_STATES, row[1]) for row in rows if len(row) >= 2}

    def status_command(self, ids: Sequence[str]) -> list[str]:
        """PSI/J's squeue line, with room for the whole reason: squeue cuts a field at 20 characters by default
        (``QOSMaxWallDurationPerJobLimit`` came out as ``QOSMaxWallDurationPe``)."""
        return [a.replace("Reason", "Reason:128") if "StateCompact" in a else a for a in super().status_command(ids)]

    def parse_reasons(self, out: str) -> dict[str, str]:
        """squeue's REASON column (``JobArrayID,StateCompact,Reason:128``); ``None`` is no reason."""
        rows = [line.split(None, 2) for line in out.splitlines()[1:] if line.strip()]
        return {row[0]: row[2].strip() for row in rows if len(row) == 3 and row[2].strip() not in ("None", "")}

    # squeue(1) JOB REASON CODES that no waiting cures: the request must change
    stuck_reasons: ClassVar[Mapping[str, str]] = {
        "PartitionTimeLimit": "a longer walltime than the partition allows",
        "BadConstraints": "constraints no node can satisfy",
        "InvalidAccount": "an account (bank) Slurm does not know",
        "InvalidQOS": "a QOS Slurm does not know, or one the account may not use",
        "QOSMaxNodePerJobLimit": "more nodes than the QOS allows a job",
        "QOSMaxWallDurationPerJobLimit": "a longer walltime than the QOS allows",
        "AssocMaxNodesPerJobLimit": "more nodes than the account allows a job",
        "AssocMaxWallDurationPerJobLimit": "a longer walltime than the account allows",
        "DependencyNeverSatisfied": "a dependency that can no longer be met",
    }
    # ... and those that also mean nodes are down or drained: cured when they come back (a maintenance)
    doubtful_reasons: ClassVar[Mapping[str, str]] = {
        "PartitionNodeLimit": "more nodes than the partition allows, or than it has up (nodes down or drained)",
        "PartitionConfig": "more nodes, cores or memory than the partition has up",  # Slurm's first word on it
    }


LSF_STATES = {"PEND": P, "PROV": P, "PSUSP": P, "WAIT": P, "RUN": R, "USUSP": R, "SSUSP": R, "UNKWN": R,
              "ZOMBI": R, "DONE": C, "EXIT": F}


class LsfBatchSystem(PsijBatchSystem):
    """IBM Spectrum LSF: bsub, bjobs, bkill. Untested on a real LSF (none can be installed here)."""

    name = "lsf"
    lacks = (("qos", " (an LSF service class goes in lsf_args, e.g. `-sla NAME`)"),)  # PSI/J wrote `#BSUB -qos`
    executor_name = "lsf"
    directive = "#BSUB"
    name_option = "-J "
    job_id_var = "LSB_JOBID"
    status_ok_codes = (0, 255)  # bjobs exits 255 when one of the ids is unknown
    cancel_ok_codes = (0, 255)  # bkill exits 255 for a job already finished

    @classmethod
    def detect(cls, env: Mapping[str, str]) -> Allocation | None:
        return _lsf_detect(env)

    def granted_walltime(self, req: AllocationRequest) -> int | None:
        """Rounded up to whole minutes (at least one): ``bsub -W`` counts minutes, and PSI/J's rounding down
        (``01:30:45`` -> ``-W 1:30``, ``30`` -> ``-W 0:0``) ended the job before the deadline the workers planned on."""
        return None if req.walltime is None else max(60, -(-req.walltime // 60) * 60)

    def dropped(self, req: AllocationRequest, line: str) -> bool:
        """PSI/J writes both ``-nnodes N`` (CSM machines: whole nodes) and ``-n N`` (slots elsewhere: N cores, maybe
        on one node). We keep ``-nnodes``; where lsf_args say how slots make nodes (``-n``, ``-R "span[...]"``:
        LSF without CSM), theirs alone."""
        return line.startswith("#BSUB -n ") or (_lsf_slots(req) and line.startswith("#BSUB -nnodes "))

    def raw_directives(self, req: AllocationRequest) -> list[str]:
        exclusive = ["#BSUB -x"] if req.exclusive and _lsf_slots(req) and ("-x", "") not in req.options else []
        return [*super().raw_directives(req), *exclusive]  # -nnodes gives whole nodes already

    def submit_command(self, script: Path) -> list[str]:
        return ["/bin/sh", "-c", f"exec bsub < {shlex.quote(str(script.absolute()))}"]

    def parse_status(self, out: str) -> dict[str, JobState]:
        records = json.loads(out or "{}").get("RECORDS", [])
        return {str(r["JOBID"]): _lsf_state(r) for r in records if "ERROR" not in r and "JOBID" in r}


def _lsf_slots(req: AllocationRequest) -> bool:
    """Whether the request's lsf_args size the job in slots (``-n``, ``-R``) rather than CSM's ``-nnodes``."""
    return any(key in ("-n", "-R") for key, _ in req.options)


def _lsf_state(record: dict[str, Any]) -> JobState:
    state = translate_state(LSF_STATES, str(record.get("STAT", "")))
    if state is JobState.FAILED:
        reason = f"{record.get('EXIT_REASON', '')} {record.get('KILL_REASON', '')}"
        if re.search(r"RUNLIMIT|run limit", reason, re.IGNORECASE):
            return JobState.TIMEOUT
        if re.search(r"TERM_OWNER|killed by owner|bkill", reason, re.IGNORECASE):
            return JobState.CANCELLED
    return state


PBS_STATES = {"Q": P, "H": P, "W": P, "T": P, "M": P, "S": P, "U": P, "R": R, "E": R, "B": R}
PBS_KILLED_BY_QDEL = (265, 271)  # 256 + SIGKILL / SIGTERM
PBS_WALLTIME_EXCEEDED = -29  # JOB_EXEC_KILL_WALLTIME


class PbsBatchSystem(PsijBatchSystem):
    """PBS Pro: qsub, qstat, qdel. Untested on a real PBS (none can be installed here)."""

    name = "pbs"
    lacks = (("qos", ""),)
    executor_name = "pbs"
    directive = "#PBS"
    name_option = "-N "
    job_id_var = "PBS_JOBID"
    status_ok_codes = (0, 35, 153)  # qstat: some ids unknown or finished too long ago

    @classmethod
    def detect(cls, env: Mapping[str, str]) -> Allocation | None:
        return _pbs_detect(env)

    def custom_attributes(self, req: AllocationRequest) -> list[tuple[str, str]]:
        return _valued(req.options)  # PBS has no qos option

    def processes_per_node(self, req: AllocationRequest) -> int:
        """Every core of each node: PSI/J writes ``select=N:ncpus=P:mpiprocs=P``, and with P=1 the job's NCPUS was 1
        (one worker process) and PBS's cgroups held each node's steps to one core."""
        if req.cores_per_node is None:
            raise UnsupportedRequest(f"allocation '{req.name}': PBS needs each node's cores to ask for whole nodes "
                                     "(select=N:ncpus=C): give `merlin-mdm launch --cores-per-node C` (or set "
                                     "MERLIN_MDM_CORES_PER_NODE)")
        return req.cores_per_node

    def parse_status(self, out: str) -> dict[str, JobState]:
        jobs = json.loads(out or "{}").get("Jobs", {})
        return {str(i): _pbs_state(j) for i, j in jobs.items()}


def _pbs_state(job: dict[str, Any]) -> JobState:
    native = str(job.get("job_state", ""))
    if native not in ("F", "X"):
        return translate_state(PBS_STATES, native)
    code = int(job.get("Exit_status", 0))
    if code == PBS_WALLTIME_EXCEEDED:
        return JobState.TIMEOUT
    if code in PBS_KILLED_BY_QDEL:
        return JobState.CANCELLED
    return JobState.COMPLETED if code == 0 else JobState.FAILED


def _slurm_detect(env: Mapping[str, str]) -> Allocation | None:
    if "SLURM_JOB_ID" not in env:
        return None
    return Allocation("slurm", env["SLURM_JOB_ID"], int_from_env(env, "SLURM_JOB_NUM_NODES", "SLURM_NNODES") or 1,
                      int_from_env(env, "SLURM_CPUS_ON_NODE", "SLURM_JOB_CPUS_PER_NODE"), deadline_from_env(env))


def _lsf_detect(env: Mapping[str, str]) -> Allocation | None:
    if "LSB_JOBID" not in env:
        return None
    # "launchnode 1 node1 40 node2 40": on machines with a launch node it comes first with one slot
    words = env.get("LSB_MCPU_HOSTS", "").split()
    pairs = [(words[i], int(words[i + 1])) for i in range(0, len(words) - 1, 2) if words[i + 1].isdigit()]
    compute = pairs[1:] if len(pairs) > 1 and pairs[0][1] == 1 else pairs
    return Allocation("lsf", env["LSB_JOBID"], len(compute) or 1, compute[-1][1] if compute else None,
                      deadline_from_env(env))


def _pbs_detect(env: Mapping[str, str]) -> Allocation | None:
    if "PBS_JOBID" not in env:
        return None
    nodes = int_from_env(env, "PBS_NUM_NODES")
    if nodes is None and env.get("PBS_NODEFILE"):
        try:
            nodes = len(set(Path(env["PBS_NODEFILE"]).read_text(encoding="utf-8").split()))
        except OSError:
            nodes = None
    cores = int_from_env(env, "NCPUS", "PBS_NUM_PPN")
    return Allocation("pbs", env["PBS_JOBID"], nodes or 1, cores, deadline_from_env(env))

