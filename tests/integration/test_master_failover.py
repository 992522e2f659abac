"""Several masters over one PostgreSQL namespace, and clients that fail over between them.

Two masters share a private PostgreSQL server (tests/conftest.py's pg_dsn); two volume
servers, a gateway, a FUSE mount and the CLI are each given both masters
(`--master A,B`). The master the mount uses is SIGKILLed (by pid), and the mount must go on
with the other one: existing files read back with their sha256, new files are written, `ls`
works, each within a bounded time. The CLI with a list whose first master is dead works, and
a malformed list is refused in one line.

The processes are started here, one by one with their own flags; every one is
stopped by its pid at teardown, and the mount is unmounted (fusermount3 -u, then the lazy
forms).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.common import rpc
from fusefs.master_client import MasterClient
from tests.harness import file_sha256, kelp, sha256_of, wait_until
from tests.integration.mountutil import needs_fuse
from tools.local_cluster import REPO_ROOT, free_port
from tools.mounts import unmount

MiB = 1 << 20
# One system call through the mount across the failover: the dead master is found at the
# first failed call (or by the mutation channel within a second, or by the session within
# two), a few hundred milliseconds of back-off, then the other master answers.
FAILOVER_BOUND_S = 20.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Proc:
    """One node or mount process, its log, stopped by its pid."""

    def __init__(self, name: str, argv: list[str], log: Path):
        self.name = name
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=_env(),
                                         cwd=str(REPO_ROOT), start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 9)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class TwoMasters:
    """Two masters on one PostgreSQL database, volume servers and a gateway given both."""

    def __init__(self, base: Path, dsn: str, volumes: int = 2):
        self.base = base
        self.dsn = dsn
        self.procs: dict[str, Proc] = {}
        self.grpc: dict[str, str] = {}
        self.volumes = volumes
        self.gateway = ""

    @property
    def masters(self) -> str:
        return ",".join(self.grpc[n] for n in ("m1", "m2"))

    def _start(self, name: str, *args: str) -> Proc:
        (self.base / "logs").mkdir(parents=True, exist_ok=True)
        p = Proc(name, [sys.executable, "-m", "tools.cli", *args],
                 self.base / "logs" / f"{name}.log")
        self.procs[name] = p
        return p

    def start_master(self, name: str) -> None:
        grpc_port = free_port()
        self.grpc[name] = f"127.0.0.1:{grpc_port}"
        self._start(name, "master", "-ip", "127.0.0.1", "-p", str(free_port()),
                    "-gp", str(grpc_port), "-zp", str(free_port()), "-n", name,
                    "--data", str(self.base / name), "--meta", self.dsn,
                    "--heartbeat-interval", "0.5")
        wait_until(lambda: rpc.check_health(self.grpc[name]), timeout=30, interval=0.1,
                   what=f"master {name} to serve\n{self.procs[name].tail()}")

    def start(self) -> TwoMasters:
        # One after the other: the first creates the schema in the empty database.
        self.start_master("m1")
        self.start_master("m2")
        for i in range(self.volumes):
            self._start(f"v{i}", "volume", "-ip", "127.0.0.1", "-p", str(free_port()),
                        "-gp", str(free_port()), "-n", f"v{i}", "--master", self.masters,
                        "--dir", str(self.base / f"v{i}"), "--durability", "none",
                        "--min-free-bytes", "0")
        gw_port = free_port()
        self.gateway = f"127.0.0.1:{gw_port}"
        self._start("g0", "gateway", "-ip", "127.0.0.1", "-p", str(gw_port),
                    "--http-port", str(free_port()), "-n", "g0", "--master", self.masters)
        for m in ("m1", "m2"):   # every master hears every volume server and the gateway
            wait_until(lambda m=m: self._ready(self.grpc[m]), timeout=30, interval=0.2,
                       what=f"volume servers and the gateway at {m}\n{self.logs()}")
        return self

    def _ready(self, address: str) -> bool:
        st = self.status(address)
        return st is not None and sum(s.alive for s in st.servers) == self.volumes and \
            any(g.alive for g in st.gateways)

    def status(self, address: str):
        mc = MasterClient(address, timeout=2, retry_for=0)
        try:
            return mc.status()
        except Exception:
            return None
        finally:
            mc.close()

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def logs(self) -> str:
        return "\n".join(f"----- {n} -----\n{p.tail()}" for n, p in self.procs.items())

    def stop(self) -> None:
        for name in sorted(self.procs, key=lambda n: n.startswith("m")):   # masters last
            self.procs[name].stop()


@pytest.fixture
def two_masters(tmp_path, pg_dsn, request):
    cluster = TwoMasters(tmp_path / "cluster", pg_dsn)
    try:
        yield cluster.start()
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            sys.stderr.write(cluster.logs())
        cluster.stop()


class FailoverMount:
    """mount.py given both masters (no --gateway: it finds one through the master)."""

    def __init__(self, cluster: TwoMasters, mountpoint: Path, *extra: str):
        self.mountpoint = mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.proc = Proc("mount", [sys.executable, str(REPO_ROOT / "mount.py"),
                                   str(mountpoint), "--master", cluster.masters,
                                   "--log-level", "info", *extra],
                         mountpoint.parent / f"{mountpoint.name}.mount.log")
        deadline = time.monotonic() + 30
        while not os.path.ismount(mountpoint):
            if self.proc.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mount did not come up:\n{self.proc.tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        unmount(self.mountpoint)
        try:
            self.proc.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def failover_mount(tmp_path):
    made: list[FailoverMount] = []

    def make(cluster: TwoMasters, name: str = "mnt", *extra: str) -> FailoverMount:
        m = FailoverMount(cluster, tmp_path / name, *extra)
        made.append(m)
        return m

    yield make
    for m in made:
        m.stop()


def timed(what: str, fn, *args, bound: float = FAILOVER_BOUND_S):
    started = time.monotonic()
    result = fn(*args)
    took = time.monotonic() - started
    assert took < bound, f"{what} took {took:.1f} s"
    return result


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


# ---------------------------------------------------------------- the mount

@needs_fuse
@pytest.mark.mount
@pytest.mark.timeout(150)
def test_mount_goes_on_with_the_other_master_when_its_master_is_killed(two_masters,
                                                                        failover_mount):
    cluster = two_masters
    mnt = failover_mount(cluster).mountpoint
    files = {"small": random.randbytes(300), "medium": random.randbytes(200_000),
             "big": random.randbytes(5 * MiB + 11)}
    (mnt / "d").mkdir()
    for name, data in files.items():
        write(mnt / "d" / name, data)
    assert sorted(os.listdir(mnt / "d")) == sorted(files)
    time.sleep(1.2)   # past the kernel's attribute TTL: what follows asks the mount

    cluster.kill("m1")   # the first of the list: the one the mount uses
    killed_at = time.monotonic()
    # Straight away: reads of existing files, a listing, new writes, a rename, an unlink.
    assert sorted(timed("ls", os.listdir, mnt / "d")) == sorted(files)
    for name, data in files.items():
        assert timed(f"read {name}", file_sha256, mnt / "d" / name) == sha256_of(data), name
    new = {"after-small": random.randbytes(1000), "after-big": random.randbytes(6 * MiB)}
    for name, data in new.items():
        timed(f"write {name}", write, mnt / "d" / name, data)
    timed("rename", os.rename, mnt / "d" / "after-small", mnt / "d" / "renamed")
    timed("unlink", os.unlink, mnt / "d" / "medium")
    (mnt / "d2").mkdir()
    took = time.monotonic() - killed_at
    expect = {"small": files["small"], "big": files["big"], "renamed": new["after-small"],
              "after-big": new["after-big"]}
    assert sorted(os.listdir(mnt / "d")) == sorted(expect)
    for name, data in expect.items():
        assert file_sha256(mnt / "d" / name) == sha256_of(data), name
    log = (mnt.parent / "mnt.mount.log").read_text(errors="replace")
    assert "continuing with master" in log, log[-3000:]
    print(f"\nfailover: every call done {took:.1f} s after the kill")

    # The other master holds all of it: the CLI given the survivor alone sees the same.
    res = kelp("ls", "/d", "--master", cluster.grpc["m2"], check=True)
    assert sorted(res.stdout.decode().split()) == sorted(expect)
    out = mnt.parent / "big.out"
    kelp("download", "/d/after-big", "-o", str(out), "--master", cluster.grpc["m2"],
         check=True)
    assert file_sha256(out) == sha256_of(new["after-big"])


@needs_fuse
@pytest.mark.mount
@pytest.mark.timeout(150)
def test_writers_busy_across_the_failover_lose_nothing_acknowledged(two_masters,
                                                                     failover_mount):
    """Writers keep going while the mount's master dies: each close() that returned 0 holds
    its bytes afterwards; a write that failed failed with EIO (a mutation the dead master
    may have applied is not sent again), and the file system works on."""
    import threading
    cluster = two_masters
    mnt = failover_mount(cluster).mountpoint
    (mnt / "w").mkdir()
    acknowledged: dict[str, str] = {}
    failed: dict[str, int | None] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def writer(k: int) -> None:
        i = 0
        while not stop.is_set():
            name = f"w/{k}-{i}"
            data = random.randbytes(random.choice([100, 70_000, 4 * MiB + 5]))
            try:
                write(mnt / name, data)
                with lock:
                    acknowledged[name] = sha256_of(data)
            except OSError as e:
                with lock:
                    failed[name] = e.errno
            i += 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        cluster.kill("m1")
        time.sleep(6.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    import errno
    assert set(failed.values()) <= {errno.EIO}, failed
    print(f"\n{len(acknowledged)} files acknowledged, {len(failed)} failed ({failed})")
    assert len(acknowledged) >= 6
    names = set(os.listdir(mnt / "w"))
    assert {n.split("/")[1] for n in acknowledged} <= names
    for name, digest in acknowledged.items():
        assert file_sha256(mnt / name) == digest, name
    # Written after the failover, and through a fresh mount of the survivor alone.
    write(mnt / "w" / "last", b"last")
    res = kelp("ls", "/w", "--master", cluster.grpc["m2"], check=True)
    assert "last" in res.stdout.decode().split()


# ---------------------------------------------------------------- the CLI

@pytest.mark.timeout(120)
def test_cli_with_a_dead_first_master(two_masters, tmp_path):
    cluster = two_masters
    cluster.kill("m1")
    masters = cluster.masters    # m1 (dead) first
    src = tmp_path / "up.bin"
    data = random.randbytes(3 * MiB + 3)
    src.write_bytes(data)
    started = time.monotonic()
    kelp("upload", "-p", str(src), "--to", "/cli", "--master", masters, check=True)
    res = kelp("ls", "/cli", "--master", masters, check=True)
    assert res.stdout.decode().split() == ["up.bin"]
    out = tmp_path / "down.bin"
    kelp("download", "/cli/up.bin", "-o", str(out), "--master", masters, check=True)
    assert file_sha256(out) == sha256_of(data)
    st = kelp("status", "--master", masters, check=True).stdout.decode()
    assert "unreachable" in st, st
    assert cluster.grpc["m2"] in st, st
    kelp("rm", "/cli/up.bin", "--master", masters, check=True)
    assert kelp("ls", "/cli", "--master", masters, check=True).stdout.decode().split() == []
    print(f"\nCLI against a dead first master: 6 commands in "
          f"{time.monotonic() - started:.1f} s")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", ["127.0.0.1:1,,127.0.0.1:2", ",", "host-without-port",
                                 "127.0.0.1:99999", "127.0.0.1:1, 127.0.0.1:x"])
def test_a_malformed_master_list_is_refused_in_one_line(bad, tmp_path):
    res = kelp("ls", "/", "--master", bad)
    err = res.stderr.decode()
    assert res.returncode != 0
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("kelp: "), err
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "mount.py"), str(mnt),
                           "--master", bad], capture_output=True, env=_env(), timeout=30)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not os.path.ismount(mnt)


@pytest.mark.timeout(60)
def test_volume_server_and_gateway_refuse_a_malformed_master_list(tmp_path):
    for argv in (["volume", "-ip", "127.0.0.1", "-p", "0", "-gp", "0", "--dir",
                  str(tmp_path / "v"), "--master", "127.0.0.1:1,,127.0.0.1:2"],
                 ["gateway", "-ip", "127.0.0.1", "-p", "0", "--master", "a:1,b"]):
        res = kelp(*argv, timeout=30)
        err = res.stderr.decode()
        assert res.returncode != 0, err
        assert "Traceback" not in err, err
        assert "cannot start" in err, err
        assert "master" in err, err


@needs_fuse
@pytest.mark.mount
@pytest.mark.timeout(120)
def test_an_idle_mount_finds_the_other_master_by_itself(two_masters, failover_mount):
    """No operation through the mount: its session gets no answers, the client probes its
    master, moves, and the session is resumed on the other master."""
    cluster = two_masters
    m = failover_mount(cluster)
    write(m.mountpoint / "f", b"idle")
    log = m.proc.log
    cluster.kill("m1")
    killed_at = time.monotonic()
    wait_until(lambda: "resuming the session there" in log.read_text(errors="replace"),
               timeout=15, interval=0.1, what=f"the session to move\n{m.proc.tail()}")
    took = time.monotonic() - killed_at
    wait_until(lambda: log.read_text(errors="replace").count("opened with the master") >= 2,
               timeout=10, interval=0.1, what=f"the session to reopen\n{m.proc.tail()}")
    assert (m.mountpoint / "f").read_bytes() == b"idle"
    print(f"\nidle mount: session moved {took:.1f} s after the kill")
