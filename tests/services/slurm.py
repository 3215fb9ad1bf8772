"""A single-node SLURM cluster for tests: munged, slurmctld and slurmd in a private folder, on free ports.

It needs root, as a real cluster's daemons do. Commands reach it through `SLURM_CONF` (set in `os.environ` by
`cluster()`), so `sbatch`, `squeue`, `scancel` and submitit are used exactly as on a real cluster.
"""

from __future__ import annotations

import atexit
import functools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services.processes import daemon, free_port, require, wait_for

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")
CONF = """\
ClusterName=polydefect
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
KillWait={kill_wait}
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@dataclass(frozen=True)
class SlurmCluster:
    """The running cluster: its folder (slurm.conf, daemon logs, job spool) and its SIGTERM-to-SIGKILL delay."""

    root: Path
    kill_wait_s: int


def _memory_mb() -> int:
    """Most of this machine's memory, so `--mem` requests of a few GB fit on the one node."""
    lines = Path("/proc/meminfo").read_text().splitlines()
    total_kb = next(int(line.split()[1]) for line in lines if line.startswith("MemTotal"))
    return total_kb * 3 // 4 // 1024


def _start_munge(root: Path) -> Path:
    """munged as the `munge` user with its own key and socket; returns the socket path."""
    folder = root / "munge"
    folder.mkdir()
    folder.chmod(0o755)  # clients of every user reach the socket in it; the key stays private
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    user = pwd.getpwnam("munge")
    for path in (folder, key):
        os.chown(path, user.pw_uid, user.pw_gid)
    socket_path = folder / "munge.socket"
    args = ["munged", "--foreground", f"--key-file={key}", f"--socket={socket_path}"]
    args += [f"--pid-file={folder / 'munged.pid'}", f"--seed-file={folder / 'seed'}", f"--log-file={folder / 'log'}"]
    daemon(args, root / "munged.out", user="munge")
    wait_for(socket_path.exists, "munged", 30, [root / "munged.out", folder / "log"])
    return socket_path


def _drain(env: dict[str, str], timeout: float) -> None:
    """Cancel what is left and wait for the queue to empty: a job step whose slurmd is gone would hang forever."""
    subprocess.run(["scancel", "--partition=debug"], env=env, capture_output=True)
    wait_for(lambda: not _squeue(env, "%i"), "the SLURM queue to empty", timeout)


def _squeue(env: dict[str, str], fmt: str) -> str:
    return subprocess.run(["squeue", "-h", "-o", fmt], env=env, capture_output=True, text=True).stdout.strip()


def _node_idle(env: dict[str, str]) -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() == "idle"


@functools.cache
def cluster(kill_wait_s: int = 5) -> SlurmCluster:
    """Start (once per process) a one-node cluster with this machine's CPUs; sets SLURM_CONF in os.environ.

    Args:
        kill_wait_s: seconds between the SIGTERM and the SIGKILL of a cancelled job (SLURM's KillWait).
    """
    require(*BINARIES, root=True)
    root = Path(tempfile.mkdtemp(prefix="polydefect-slurm-"))
    atexit.register(shutil.rmtree, root, True)  # registered first, so it runs after the daemons stopped
    root.chmod(0o755)  # munged, running as `munge`, must reach its folder inside
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    values = dict(
        host=socket.gethostname().split(".")[0],
        ctld_port=free_port(),
        slurmd_port=free_port(),
        munge_socket=_start_munge(root),
        root=root,
        kill_wait=kill_wait_s,
        cpus=os.cpu_count(),
        memory_mb=_memory_mb(),
    )
    conf = root / "slurm.conf"
    conf.write_text(CONF.format(**values))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemon(["slurmctld", "-D", "-c", "-f", str(conf)], root / "slurmctld.out", env)
    daemon(["slurmd", "-D", "-f", str(conf)], root / "slurmd.out", env)
    logs = [root / name for name in ("slurmctld.out", "slurmctld.log", "slurmd.out", "slurmd.log")]
    wait_for(lambda: _node_idle(env), "SLURM node", 60, logs)
    atexit.register(_drain, env, kill_wait_s + 30)  # runs before the daemons stop (atexit is last-in, first-out)
    os.environ["SLURM_CONF"] = str(conf)
    return SlurmCluster(root, kill_wait_s)
