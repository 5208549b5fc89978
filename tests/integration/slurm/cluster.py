"""A one-node Slurm on localhost, everything (config, state, logs) under one directory.

The test suite starts it itself (CI installs the Debian packages: `apt-get install slurm-wlm`).
It uses `auth/none` (no munge daemon to run), free loopback ports, and `SelectType=cons_tres` so
that srun steps inside a job share the node's cores.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from merlin_mdm.server import free_port

CONF = """\
ClusterName=mdmtest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser={user}
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/none
CredType=cred/none
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/run/slurmctld.pid
SlurmdPidFile={base}/run/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


def slurm_missing() -> str | None:
    """Why a Slurm cannot be started here, or None."""
    if os.geteuid() != 0:
        return "the single-node Slurm runs its daemons as root"
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel") if not shutil.which(b)]
    return f"no {', '.join(missing)} (apt-get install slurm-wlm)" if missing else None


@dataclass
class SingleNodeSlurm:
    """slurmctld + slurmd on localhost."""

    base: Path

    @property
    def conf(self) -> Path:
        return self.base / "etc" / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60.0) -> None:
        for sub in ("etc", "state", "spool", "log", "run"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 * 9 // 10
        self.conf.write_text(CONF.format(user="root", ctld_port=free_port(), d_port=free_port(), base=self.base,
                                         cpus=os.cpu_count() or 1, mem=mem), encoding="utf-8")
        (self.base / "etc" / "cgroup.conf").write_text("# no cgroups\n", encoding="utf-8")
        env = {**os.environ, **self.env()}
        subprocess.run(["slurmctld", "-f", str(self.conf)], env=env, check=True)
        subprocess.run(["slurmd", "-f", str(self.conf), "-N", "localhost"], env=env, check=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, check=False)
            if out.stdout.strip().startswith("idle"):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"slurm not idle after {timeout} s:\n{self.log_tail()}")

    def cancel_all(self, timeout: float = 20.0) -> None:
        """Cancel every job and wait for them to end: a job left running keeps its workers on the session's shared
        Redis, where they took the next tests' messages from the default queue."""
        env = {**os.environ, **self.env()}
        subprocess.run(["scancel", "--me"], env=env, capture_output=True, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["squeue", "-h", "-t", "R,CG,PD"], env=env, capture_output=True, text=True,
                                 check=False)
            if out.returncode != 0 or not out.stdout.strip():
                break
            time.sleep(0.5)

    def stop(self) -> None:
        self.cancel_all()
        for name in ("slurmd", "slurmctld"):
            pid_file = self.base / "run" / f"{name}.pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted((self.base / "log").glob("*.log")))
