"""The file systems the benchmarks run on, behind one small interface.

A target's `setup(work)` returns a directory to run workloads in; `cold()` empties every cache
between the data and the next read (the kernel's page cache, which also holds the servers'
files, and for FUSE mounts the mount process's own caches by remounting); `abort()` unsticks a
workload that hangs in the file system (kills the mount process, so blocked system calls fail);
`teardown()` stops everything `setup` started, by pid.

    local        a directory on the local disk (the upper bound: no network, no FUSE)
    passthrough  `python -m bench.passthrough` of a directory on the local disk: a fusepy file
                 system that only repeats each call on the disk, mounted with KelpFS's kernel
                 options (the ceiling of any fusepy file system on this machine)
    seaweedfs    `weed mount` of a one-node SeaweedFS (bench/seaweed.py), replication 000
    juicefs      `juicefs mount` of a JuiceFS volume with SQLite metadata and its data in a local
                 directory (bench/juicefs.py), JuiceFS's defaults otherwise
    kelpfs       `python mount.py` of a KelpFS cluster with one volume server, replication 1
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.juicefs import JuiceFS, juicefs_version
from bench.seaweed import SeaweedFS, weed_version
from tools.local_cluster import REPO_ROOT, ClusterLayout, LocalCluster
from tools.mounts import unmount


def host_facts() -> dict:
    """The machine a run measured: date, cores, CPU model, memory, kernel, Python."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                        if line.startswith("model name")), "")
    except OSError:
        cpu = ""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem / (1 << 30), 1),
            "kernel": platform.release(), "python": platform.python_version()}


def drop_page_cache() -> bool:
    """Write back dirty pages, then drop the page cache, dentries and inodes (needs root).
    Returns False when this process may not (then reads after it may be warm)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


class Target:
    name = ""

    def setup(self, work: Path) -> Path:
        raise NotImplementedError

    def cold(self) -> None:
        drop_page_cache()

    def abort(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def version(self) -> str:
        return ""


class LocalTarget(Target):
    name = "local"

    def setup(self, work: Path) -> Path:
        path = work / "local"
        path.mkdir(parents=True, exist_ok=True)
        return path


class SeaweedTarget(Target):
    name = "seaweedfs"

    def __init__(self):
        self.fs: SeaweedFS | None = None

    def setup(self, work: Path) -> Path:
        self.fs = SeaweedFS(work / "seaweedfs")
        return self.fs.start()

    def cold(self) -> None:
        # A new `weed mount` with an empty chunk cache dir (SeaweedFS.mount makes a fresh one).
        self.fs.remount()
        drop_page_cache()

    def abort(self) -> None:
        proc = self.fs.procs.get("mount") if self.fs else None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if self.fs:
            unmount(self.fs.mountpoint)

    def teardown(self) -> None:
        if self.fs:
            self.fs.stop()

    def version(self) -> str:
        return weed_version()


class JuiceFSTarget(Target):
    """`juicefs mount` of a volume formatted in the run's temp dir, set up the way KelpFS runs
    by default: `juicefs format --storage file --bucket DIR sqlite3://DIR/meta.db`, so the
    metadata is one SQLite file and the data blocks are files in a local directory, both on the
    work dir's disk, and no server process besides the mount.

    JuiceFS's defaults (1.4) otherwise, as they bear on the numbers: kernel attribute, entry
    and dir-entry caches of 1 s (--attr-cache, --entry-cache, --dir-entry-cache; KelpFS's
    --attr-ttl is 1 s too), --buffer-size 300 MiB, 4 MiB blocks, one block prefetched on
    sequential reads (--prefetch 1), --writeback off: close() and fsync() return after the
    file's new blocks are in the bucket (each written to a temp file and renamed, without
    fsync) and its slices are committed to SQLite (WAL journal; no fsync per commit was seen),
    so neither call puts anything on the disk by itself; written blocks are also kept in the
    local cache dir. Deleted files go to the trash for a day (--trash-days 1), so a delete
    frees no block during the run. `cold()` remounts with a new, empty --cache-dir and drops
    the page cache, so the next read goes to the bucket files on disk.
    """
    name = "juicefs"

    def __init__(self):
        self.fs: JuiceFS | None = None

    def setup(self, work: Path) -> Path:
        self.fs = JuiceFS(work / "juicefs")
        return self.fs.start()

    def cold(self) -> None:
        self.fs.remount()
        drop_page_cache()

    def abort(self) -> None:
        if self.fs:
            self.fs.kill()

    def teardown(self) -> None:
        if self.fs:
            self.fs.stop()

    def version(self) -> str:
        return juicefs_version()


class FuseProcessTarget(Target):
    """A target served by one FUSE process of ours (`command()`, run from the repository root
    with its output in `log`): mount() starts it and waits for the mount, unmount() unmounts
    and waits for exactly that process, by pid."""
    label = ""

    def __init__(self):
        self.mountpoint: Path | None = None
        self.log: Path | None = None
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def mount(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=str(REPO_ROOT), start_new_session=True)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
                self.unmount()
                raise RuntimeError(f"{self.label} mount did not come up:\n{tail}")
            time.sleep(0.05)

    def unmount(self) -> None:
        if self.mountpoint is not None:
            unmount(self.mountpoint)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                if self.mountpoint is not None:
                    unmount(self.mountpoint)  # its process is gone: the lazy forms now work
            self.proc = None

    def cold(self) -> None:
        # Remount: whatever the mount process caches lives in that process.
        self.unmount()
        self.mount()
        drop_page_cache()

    def abort(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.mountpoint is not None:
            unmount(self.mountpoint)

    def teardown(self) -> None:
        self.unmount()


class PassthroughTarget(FuseProcessTarget):
    """bench/passthrough.py mounting work/passthrough/backing at work/passthrough/mnt."""
    name = "passthrough"
    label = "passthrough"

    def __init__(self):
        super().__init__()
        self.backing: Path | None = None

    def setup(self, work: Path) -> Path:
        root = work / "passthrough"
        self.backing = root / "backing"
        self.mountpoint = root / "mnt"
        self.log = root / "mount.log"
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.mount()
        return self.mountpoint

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.passthrough", str(self.backing),
                str(self.mountpoint)]

    def version(self) -> str:
        try:
            return f"fusepy {importlib.metadata.version('fusepy')}"
        except importlib.metadata.PackageNotFoundError:
            return "unknown"


class ClusterMount(FuseProcessTarget):
    """A mount of a running LocalCluster (bench/masters.py, bench/scale.py), given `master`
    (one address or a list; default: the cluster's)."""
    label = "KelpFS"

    def __init__(self, cluster: LocalCluster, where: Path, master: str = ""):
        super().__init__()
        self.cluster, self.master = cluster, master or cluster.master_addr
        self.mountpoint = where
        self.log = where.with_suffix(".log")
        where.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        tls = self.cluster.layout.tls_dir
        return [sys.executable, str(REPO_ROOT / "mount.py"), str(self.mountpoint),
                "--master", self.master, "--gateway", self.cluster.gateway_addr,
                *(["--tls-dir", tls] if tls else [])]


class KelpTarget(FuseProcessTarget):
    name = "kelpfs"
    label = "KelpFS"
    REPLICATION = 1
    SECURE = False      # mTLS and CURVE between every process (docs/security.md)

    def __init__(self, mount: bool = True):
        super().__init__()
        self.want_mount = mount
        self.mount_error = ""   # set when the cluster runs but the mount failed
        self.cluster: LocalCluster | None = None

    def setup(self, work: Path) -> Path | None:
        """Start the cluster (an error raises) and mount it; when only the mount fails, the
        cluster stays up for the client-library workload, `mount_error` says why, and the
        result is None."""
        root = work / self.name
        layout = ClusterLayout(data_dir=str(root / "cluster"), volumes=1, master_port=0,
                               master_grpc_port=0, master_zmq_port=0, volume_port=0,
                               volume_grpc_port=0, gateway_port=0, gateway_http_port=0,
                               extra_master_args=["--replication", str(self.REPLICATION)])
        if self.SECURE:
            from cluster.common.certs import make_cluster_certs
            layout.tls_dir = str(root / "cluster" / "tls")
            make_cluster_certs(layout.tls_dir)
        self.cluster = LocalCluster(layout)
        self.cluster.plan()
        self.mountpoint = root / "mnt"
        self.log = root / "mount.log"
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        try:
            self.cluster.start(timeout=60)
        except BaseException:
            self.teardown()
            raise
        if not self.want_mount:
            return None
        try:
            self.mount()
        except Exception as e:
            self.mount_error = str(e)
            return None
        return self.mountpoint

    @property
    def master_addr(self) -> str:
        return self.cluster.master_addr

    @property
    def gateway_addr(self) -> str:
        return self.cluster.gateway_addr

    def command(self) -> list[str]:
        return [sys.executable, str(REPO_ROOT / "mount.py"), str(self.mountpoint),
                "--master", self.master_addr, "--gateway", self.gateway_addr,
                "--replication", str(self.REPLICATION),
                *(["--tls-dir", self.cluster.layout.tls_dir] if self.SECURE else [])]

    def teardown(self) -> None:
        try:
            self.unmount()
        finally:
            if self.cluster is not None:
                self.cluster.stop()

    def version(self) -> str:
        try:
            rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=REPO_ROOT, capture_output=True, text=True,
                                   timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        return f"{rev}{'+dirty' if dirty else ''}" if rev else "unknown"


class KelpSecureTarget(KelpTarget):
    """The same cluster and mount as KelpTarget, with the credentials `kelp up` makes: what
    TLS and CURVE cost, beside the plain one in the same run."""
    name = "kelpfs-tls"
    label = "KelpFS (TLS)"
    SECURE = True


TARGETS = {"local": LocalTarget, "passthrough": PassthroughTarget, "seaweedfs": SeaweedTarget,
           "juicefs": JuiceFSTarget, "kelpfs": KelpTarget, "kelpfs-tls": KelpSecureTarget}
