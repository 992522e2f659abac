"""Real clusters for tests: master, volume servers and gateway as separate processes on free
loopback ports (tools.local_cluster, the same runner `kelp up` uses), and a FUSE mount of them.

Teardown always stops every process it started (by pid) and unmounts, even when the test
failed; on failure the tail of each node's log is printed to help the reader.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fusefs.client import KelpClient
from tools.local_cluster import REPO_ROOT, ClusterLayout, LocalCluster


def make_cluster(tmp_path: Path, volumes: int = 3, **layout_kw) -> LocalCluster:
    layout = ClusterLayout(data_dir=str(tmp_path / "cluster"), volumes=volumes,
                           master_port=0, master_grpc_port=0, volume_port=0,
                           volume_grpc_port=0, gateway_port=0, gateway_http_port=0,
                           heartbeat_interval=layout_kw.pop("heartbeat_interval", 0.5),
                           **layout_kw)
    cluster = LocalCluster(layout)
    cluster.plan()
    return cluster


def dump_logs(cluster: LocalCluster) -> None:
    for name in cluster.nodes:
        sys.stderr.write(f"\n----- log of {name} -----\n{cluster.log_tail(name, 40)}\n")


def client_for(cluster: LocalCluster, **kw) -> KelpClient:
    return KelpClient(cluster.master_addr, cluster.gateway_addr, **kw)


def kelp(*args: str, check: bool = False, timeout: float = 120,
         input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run the real `kelp` CLI as a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"
    result = subprocess.run([sys.executable, "-m", "tools.cli", *args], capture_output=True,
                            timeout=timeout, env=env, cwd=str(REPO_ROOT), input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"kelp {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout.decode()}\n{result.stderr.decode()}")
    return result


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Mount:
    """`python mount.py` against a cluster, in the foreground as a child process."""

    def __init__(self, cluster: LocalCluster, mountpoint: Path, *extra: str):
        self.cluster = cluster
        self.mountpoint = Path(mountpoint)
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None
        self.log = self.mountpoint.parent / f"{self.mountpoint.name}.mount.log"

    def start(self, timeout: float = 20.0) -> "Mount":
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "mount.py"), str(self.mountpoint),
                 "--master", self.cluster.master_addr, "--gateway", self.cluster.gateway_addr,
                 *self.extra], stdout=out, stderr=subprocess.STDOUT, env=env,
                stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mount did not come up:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Unmount (fusermount -u, then umount -l as a last resort) and reap the process."""
        if os.path.ismount(self.mountpoint):
            for cmd in (["fusermount", "-u", str(self.mountpoint)],
                        ["fusermount", "-uz", str(self.mountpoint)],
                        ["umount", "-l", str(self.mountpoint)]):
                if subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0:
                    break
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
