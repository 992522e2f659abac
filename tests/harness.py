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

from cluster.common.security import Transport
from fusefs.client import KelpClient
from tools.local_cluster import REPO_ROOT, ClusterLayout, LocalCluster
from tools.mounts import unmount


def make_cluster(tmp_path: Path, volumes: int = 3, secure: bool = False,
                 **layout_kw) -> LocalCluster:
    """A cluster on free loopback ports; `secure`: with credentials made in its data dir (as
    `kelp up` does), so every node speaks mTLS and CURVE."""
    if secure:
        from cluster.common.certs import make_cluster_certs
        layout_kw["tls_dir"] = str(tmp_path / "cluster" / "tls")
        make_cluster_certs(layout_kw["tls_dir"])
    layout = ClusterLayout(data_dir=str(tmp_path / "cluster"), volumes=volumes,
                           master_port=0, master_grpc_port=0, master_zmq_port=0,
                           volume_port=0,
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
    return KelpClient(cluster.master_addr, cluster.gateway_addr,
                      transport=cluster.transport, **kw)


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

    def start(self, timeout: float = 20.0) -> Mount:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "mount.py"), str(self.mountpoint),
                 "--master", self.cluster.master_addr, "--gateway", self.cluster.gateway_addr,
                 *self.cluster_tls(), *self.extra], stdout=out, stderr=subprocess.STDOUT, env=env,
                stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mount did not come up:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def cluster_tls(self) -> list[str]:
        tls_dir = self.cluster.layout.tls_dir
        return ["--tls-dir", tls_dir] if tls_dir else []

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Unmount (fusermount -u, then the lazy forms as a last resort) and reap the process."""
        unmount(self.mountpoint)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


# ---------------------------------------------------------------- fault-injection helpers
# (used by tests/integration/test_faults.py and test_fuzz.py; nothing above depends on them)

def proc_wchar(pid: int) -> int:
    """Bytes process `pid` has written so far (0 once it is gone): how far a writer got."""
    try:
        with open(f"/proc/{pid}/io") as fh:
            for line in fh:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sha256_of(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def file_sha256(path) -> str:
    """sha256 of a file read in 1 MiB pieces (no whole-file buffer for big files)."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                return h.hexdigest()
            h.update(block)


class tmpfs:
    """`with tmpfs(dir, "64m"):` a tmpfs of that size mounted on dir (root only), always
    unmounted on exit (lazily if something still holds it)."""

    def __init__(self, path, size: str):
        self.path = Path(path)
        self.size = size

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs",
                        str(self.path)], check=True, capture_output=True, timeout=30)
        return self.path

    def __exit__(self, *exc) -> None:
        self.unmount()

    def unmount(self) -> None:
        if os.path.ismount(self.path) and subprocess.run(
                ["umount", str(self.path)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)


def can_mount_tmpfs() -> bool:
    return os.geteuid() == 0


class SyscallClock:
    """Times the calls a test makes through a mount: `clock.run("write", fn, *args)` returns
    fn's result or re-raises its OSError, and remembers the longest call per name."""

    def __init__(self):
        import threading
        self._lock = threading.Lock()
        self.longest: dict[str, float] = {}
        self.errors: list[tuple[str, int, float]] = []   # (what, errno, seconds)

    def run(self, what: str, fn, *args, **kw):
        started = time.monotonic()
        try:
            return fn(*args, **kw)
        except OSError as e:
            with self._lock:
                self.errors.append((what, e.errno, time.monotonic() - started))
            raise
        finally:
            took = time.monotonic() - started
            with self._lock:
                self.longest[what] = max(self.longest.get(what, 0.0), took)

    def worst(self) -> float:
        with self._lock:
            return max(self.longest.values(), default=0.0)


def volume_needles(address: str, timeout: float = 10.0,
                   transport: Transport | None = None) -> dict[int, dict[int, tuple]]:
    """Every live needle of the volume server at `address`: {volume id: {key: (cookie, size,
    crc32c)}}, straight from its Status and ListNeedles (as admin, over `transport`)."""
    from protos import volume_pb2, volume_pb2_grpc
    out: dict[int, dict[int, tuple]] = {}
    with (transport or Transport("admin")).channel(address, "volume") as ch:
        stub = volume_pb2_grpc.VolumeStub(ch)
        status = stub.Status(volume_pb2.StatusRequest(), timeout=timeout)
        for vol in status.volumes:
            listing = stub.ListNeedles(volume_pb2.VolumeRef(volume_id=vol.volume_id),
                                       timeout=timeout)
            out[vol.volume_id] = {n.key: (n.cookie, n.size, n.crc32c) for n in listing.needles}
    return out


def referenced_needles(cluster: LocalCluster, root: str = "/") -> set[tuple[int, int]]:
    """(volume id, key) of every needle some file's chunk list names, walking the namespace."""
    import posixpath
    import stat as statmod

    from cluster.common.fid import Fid
    client = client_for(cluster)
    found: set[tuple[int, int]] = set()
    try:
        todo = [root]
        while todo:
            path = todo.pop()
            for entry in client.listdir(path):
                child = posixpath.join(path, entry.name)
                if statmod.S_ISDIR(entry.attr.mode):
                    todo.append(child)
                elif statmod.S_ISREG(entry.attr.mode):
                    for c in client.chunks(entry.attr.ino).chunks:
                        fid = Fid.parse(c.fid)
                        found.add((fid.volume_id, fid.key))
    finally:
        client.close()
    return found


def fid_holders(cluster: LocalCluster, path: str) -> list[tuple[str, set[str]]]:
    """For each chunk of remote `path`: (fid, names of the live volume servers holding it)."""
    from cluster.common.fid import Fid
    from protos import master_pb2
    client = client_for(cluster)
    try:
        info = client.chunks(client.stat(path).ino)
        vids = sorted({Fid.parse(c.fid).volume_id for c in info.chunks})
        locs = client.master.call("LookupVolume", master_pb2.LookupRequest(volume_ids=vids))
        by_vid = {loc.volume_id: {r.name for r in loc.replicas} for loc in locs.locations}
        return [(c.fid, by_vid.get(Fid.parse(c.fid).volume_id, set())) for c in info.chunks]
    finally:
        client.close()
