"""Fault injection through a real mount: processes SIGKILLed or SIGSTOPped mid-write, a full
disk, bytes flipped on disk.

Every scenario writes files of known sha256 THROUGH THE MOUNT while the fault happens and then
holds the cluster to the promise of docs/reliability.md:

* a file whose close() (or fsync()) returned 0 reads back with its sha256, from any mount;
* a write that was not acknowledged failed with EIO (ENOSPC where a disk is full) and the file
  keeps its previous content; never wrong bytes;
* no system call blocks past the bound the user guide states (30 s of master retries plus one
  RPC timeout): each call is timed (tests.harness.SyscallClock).

One cluster (and mount) per scenario, because each needs its own shape: replication 2 on three
servers, a tmpfs data dir, a short dead_after. The big copy of scenario (a) is 256 MiB unless
KELP_FAULT_BIG_MIB says otherwise (1 GiB takes about a minute more).
"""
from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cluster.common.errors import FsError
from cluster.common.fid import Fid
from fusefs.master_client import MasterClient
from protos import master_pb2
from tests.errnos import raises_errno
from tests.harness import (
    Mount,
    SyscallClock,
    can_mount_tmpfs,
    fid_holders,
    kelp,
    proc_wchar,
    referenced_needles,
    sha256_of,
    tmpfs,
    volume_needles,
    wait_until,
)
from tests.integration.mountutil import needs_fuse

pytestmark = [pytest.mark.faults, pytest.mark.mount, needs_fuse]

MiB = 1 << 20
BIG_MIB = int(os.environ.get("KELP_FAULT_BIG_MIB", "256"))
# The bound for a call that needs the master: the mount retries it for 30 s (the user guide's
# promise), but a write whose commit fails after the gateway's 10 s patience then spends those
# 30 s re-reading the file's size (40 s seen; docs/reliability.md); plus 10 s of slack.
SYSCALL_BOUND_S = 50.0
# A write waits for the gateway's answer for at most the client's 60 s timeout.
GATEWAY_BOUND_S = 75.0
FAILURE_ERRNOS = (errno.EIO,)


# ---------------------------------------------------------------- helpers

def write_file(path: Path, data: bytes, clock: SyscallClock, block: int = MiB,
               fsync: bool = False, mode: str = "wb", progress=None) -> OSError | None:
    """Write `data` through the mount with timed open/write/fsync/close calls. Returns None
    when every call succeeded (the file is acknowledged), else the first OSError."""
    try:
        fd = clock.run("open", os.open, path, os.O_WRONLY | os.O_CREAT |
                       (os.O_TRUNC if mode == "wb" else 0), 0o644)
    except OSError as e:
        return e
    error = None
    try:
        view = memoryview(data)
        for at in range(0, len(data), block):
            piece = view[at:at + block]
            done = 0
            while done < len(piece):
                done += clock.run("write", os.write, fd, piece[done:])
            if progress is not None:
                progress(at + len(piece))
        if fsync:
            clock.run("fsync", os.fsync, fd)
    except OSError as e:
        error = e
    finally:
        try:
            clock.run("close", os.close, fd)
        except OSError as e:
            error = error or e
    return error


def read_file(path: Path, clock: SyscallClock | None = None) -> bytes:
    clock = clock or SyscallClock()
    fd = clock.run("open", os.open, path, os.O_RDONLY)
    try:
        out = bytearray()
        while True:
            block = clock.run("read", os.read, fd, 4 * MiB)
            if not block:
                return bytes(out)
            out += block
    finally:
        os.close(fd)


def assert_all_intact(mnt: Path, acknowledged: dict[str, str], clock=None) -> None:
    """Each acknowledged file (relative name -> sha256) reads back with its sha256."""
    for name, digest in acknowledged.items():
        data = read_file(mnt / name, clock)
        assert sha256_of(data) == digest, f"{name}: wrong bytes ({len(data)} bytes)"


def assert_failure_errno(err: OSError, allowed=FAILURE_ERRNOS) -> None:
    assert err.errno in allowed, f"unexpected errno {errno.errorcode.get(err.errno)}: {err}"


def orphan_needles(cluster) -> set[tuple[int, int]]:
    """Live needles on the volume servers that no chunk list names (what fsck would reclaim)."""
    live = set()
    for name in cluster.volume_names():
        if cluster.running(name):
            for vid, needles in volume_needles(cluster.nodes[name].grpc_address).items():
                live |= {(vid, key) for key in needles}
    return live - referenced_needles(cluster)


def master_status(cluster) -> master_pb2.ClusterStatusResponse:
    mc = MasterClient(cluster.master_addr, timeout=5, retry_for=10)
    try:
        return mc.status()
    finally:
        mc.close()


def alive_names(cluster) -> set[str]:
    return {s.name for s in master_status(cluster).servers if s.alive}


def random_files(prefix: str, sizes) -> dict[str, bytes]:
    return {f"{prefix}{i}": random.randbytes(size) for i, size in enumerate(sizes)}


def make_source(path: Path, mib: int) -> str:
    """A local file of `mib` MiB random bytes; its sha256."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        block = os.urandom(16 * MiB)
        for i in range(0, mib, 16):
            # Cheap variety: each 16 MiB block differs by its first bytes.
            piece = i.to_bytes(8, "little") + block[8:min(16, mib - i) * MiB]
            fh.write(piece)
            h.update(piece)
    return h.hexdigest()


# ---------------------------------------------------------------- (a) volume server killed

@pytest.mark.timeout(180)
def test_a_volume_server_killed_mid_cp_with_replication_2(cluster_factory, mount_factory,
                                                          tmp_path):
    cluster = cluster_factory(volumes=3)
    mnt = mount_factory(cluster, "mnt", "--replication", "2").mountpoint
    clock = SyscallClock()
    acknowledged: dict[str, str] = {}
    for name, data in random_files("before", [0, 1, 70_000, 4 * MiB, 9 * MiB + 7]).items():
        assert write_file(mnt / name, data, clock) is None
        acknowledged[name] = sha256_of(data)
    src = tmp_path / "big.src"
    src_sha = make_source(src, BIG_MIB)
    # The victim holds replicas of what was committed before, so the reads below must fail
    # over; with replication 2 on 3 servers every server holds some.
    holders = [h for name in acknowledged for _, h in fid_holders(cluster, "/" + name)]
    assert holders, holders
    assert all(len(h) == 2 for h in holders), holders
    victim = max(cluster.volume_names(), key=lambda n: sum(n in h for h in holders))

    started = time.monotonic()
    cp = subprocess.Popen(["cp", str(src), str(mnt / "big")], stderr=subprocess.PIPE)
    try:
        wait_until(lambda: proc_wchar(cp.pid) >= BIG_MIB * MiB // 4 or cp.poll() is not None,
                   timeout=60, interval=0.02, what="cp to be a quarter through")
        killed_at = proc_wchar(cp.pid)
        cluster.kill(victim)
        rc = cp.wait(timeout=150)
    finally:
        if cp.poll() is None:
            cp.kill()
            cp.wait()
    took = time.monotonic() - started
    stderr = cp.stderr.read().decode(errors="replace")
    print(f"\n(a) cp of {BIG_MIB} MiB, {victim} SIGKILLed after {killed_at >> 20} MiB: "
          f"rc={rc} in {took:.1f}s {stderr.strip()}")
    assert killed_at < BIG_MIB * MiB, "the copy finished before the kill; make it bigger"
    if rc == 0:
        acknowledged["big"] = src_sha
    else:
        assert "Input/output error" in stderr, stderr
        print("(a) why, from the gateway's log:\n" + "\n".join(
            line for line in cluster.log_tail("g0", 200).splitlines()
            if "failed" in line)[-1500:])
        # Not acknowledged: the file holds its previous content (empty: cp truncated it),
        # never a mix of old, new and wrong bytes.
        data = read_file(mnt / "big")
        assert data == b"" or sha256_of(data) == src_sha
    # Reads fail over to the surviving replica, with no error to the reader, while the victim
    # stays dead (mount's caches are cold for these: fresh mount).
    fresh = mount_factory(cluster, "fresh")
    read_clock = SyscallClock()
    assert_all_intact(fresh.mountpoint, acknowledged, read_clock)
    assert not read_clock.errors
    assert_all_intact(mnt, acknowledged)
    assert clock.worst() < SYSCALL_BOUND_S, clock.longest


# ---------------------------------------------------------------- (b) gateway killed

@pytest.mark.timeout(150)
def test_b_gateway_killed_mid_stream(cluster_factory, mount_factory):
    cluster = cluster_factory(volumes=2)
    mnt = mount_factory(cluster).mountpoint
    clock = SyscallClock()
    old = random.randbytes(3 * MiB + 5)
    assert write_file(mnt / "precious", old, clock) is None
    acknowledged = {"precious": sha256_of(old)}
    for name, data in random_files("small", [10, 5000, 200_000]).items():
        assert write_file(mnt / name, data, clock) is None
        acknowledged[name] = sha256_of(data)
    assert not orphan_needles(cluster)

    new = random.randbytes(160 * MiB)
    written = [0]
    result: list = []

    def writer():
        # Overwrite in place (no O_TRUNC): a failure must leave exactly the old bytes.
        # 128 KiB writes, as cp makes them: one FUSE request each, so the failure is an EIO
        # of the write() itself (for larger writes see test_b2).
        result.append(write_file(mnt / "precious", new, clock, mode="r+b", block=128 << 10,
                                 progress=lambda n: written.__setitem__(0, n)))

    t = threading.Thread(target=writer)
    t.start()
    wait_until(lambda: written[0] >= 24 * MiB or not t.is_alive(), timeout=60, interval=0.01,
               what="the writer to be 24 MiB in")
    cluster.kill("g0")
    t.join(timeout=120)
    assert not t.is_alive()
    err = result[0]
    print(f"\n(b) gateway SIGKILLed after {written[0] >> 20} MiB: writer got {err!r}; "
          f"longest calls {clock.longest}")
    assert err is not None, "the write succeeded although the gateway died mid-stream"
    assert_failure_errno(err)
    assert clock.worst() < GATEWAY_BOUND_S, clock.longest
    # The file keeps its previous content, seen from this mount and a fresh one.
    assert_all_intact(mnt, acknowledged)
    # Chunks the gateway stored before it died are on the volumes but in no chunk list:
    # orphans, for fsck (below).
    orphans = orphan_needles(cluster)
    assert orphans, "expected the needles of the killed stream on the volumes"
    print(f"(b) {len(orphans)} orphaned needles left on the volumes")

    cluster.start_node("g0")
    cluster.wait_ready(timeout=30)
    again = random.randbytes(5 * MiB + 1)
    err = write_file(mnt / "after-restart", again, clock)  # the very next write, no retries
    assert err is None, f"the restarted gateway did not serve the next write: {err!r}"
    acknowledged["after-restart"] = sha256_of(again)
    assert write_file(mnt / "precious", new[:6 * MiB], clock) is None
    acknowledged["precious"] = sha256_of(new[:6 * MiB])
    fresh = mount_factory(cluster, "fresh")
    assert_all_intact(fresh.mountpoint, acknowledged)
    # Reclaimed later: fsck queues the orphans (no age guard here: nothing is in flight) and
    # the master's reaper deletes them; nothing else goes.
    res = kelp("fsck", "--repair", "--orphan-min-age", "0", "--master", cluster.master_addr)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
    wait_until(lambda: not orphan_needles(cluster), timeout=30, what="the orphans to be reaped")
    assert_all_intact(mount_factory(cluster, "after-fsck").mountpoint, acknowledged)


@pytest.mark.timeout(150)
def test_b2_gateway_restarted_mid_stream_never_commits_a_torn_file(cluster_factory,
                                                                   mount_factory):
    cluster = cluster_factory(volumes=2)
    mnt = mount_factory(cluster).mountpoint
    clock = SyscallClock()
    old = random.randbytes(1 * MiB)
    assert write_file(mnt / "f", old, clock) is None
    new = random.randbytes(64 * MiB)
    written = [0]
    result: list = []
    # 4 MiB writes, as dd bs=4M makes them; write_file retries short writes as dd and cp do.
    t = threading.Thread(target=lambda: result.append(write_file(
        mnt / "f", new, clock, mode="r+b", block=4 * MiB,
        progress=lambda n: written.__setitem__(0, n))))
    t.start()
    wait_until(lambda: written[0] >= 16 * MiB or not t.is_alive(), timeout=60, interval=0.005,
               what="the writer to be 16 MiB in")
    cluster.kill("g0")
    cluster.start_node("g0")     # back at once: the writer's next calls reach it
    t.join(timeout=GATEWAY_BOUND_S * 2)
    assert not t.is_alive()
    data = read_file(mnt / "f")
    print(f"\n(b2) writer got {result[0]!r}; file intact: {data == new}, old: {data == old}")
    if result[0] is None:
        assert data == new, "close() returned 0 but the file holds other bytes"
    else:
        assert_failure_errno(result[0])
        assert data == old


# ---------------------------------------------------------------- (c) master killed

@pytest.mark.timeout(120)
def test_c1_master_killed_and_restarted_while_the_mount_is_idle(cluster_factory, mount_factory):
    cluster = cluster_factory(volumes=2)
    mnt = mount_factory(cluster).mountpoint
    clock = SyscallClock()
    acknowledged = {}
    (mnt / "dir").mkdir()
    for name, data in random_files("dir/f", [1, 1000, 5 * MiB]).items():
        assert write_file(mnt / name, data, clock) is None
        acknowledged[name] = sha256_of(data)
    time.sleep(1.2)  # past the attribute TTL: what follows must ask the master
    cluster.kill("m0")
    cluster.start_node("m0")
    # Straight away, before the volume servers have re-registered: the mount rides it out.
    names = clock.run("listdir", os.listdir, mnt / "dir")
    assert sorted(names) == sorted(n.split("/")[1] for n in acknowledged)
    assert_all_intact(mnt, acknowledged, clock)
    data = random.randbytes(6 * MiB)
    assert write_file(mnt / "dir/new", data, clock) is None
    acknowledged["dir/new"] = sha256_of(data)
    assert_all_intact(mount_factory(cluster, "fresh").mountpoint, acknowledged)
    print(f"\n(c1) longest calls across the restart: {clock.longest}")
    assert not clock.errors
    assert clock.worst() < SYSCALL_BOUND_S


@pytest.mark.timeout(150)
def test_c2_master_killed_and_restarted_while_a_writer_is_busy(cluster_factory, mount_factory):
    cluster = cluster_factory(volumes=2)
    mnt = mount_factory(cluster).mountpoint
    clock = SyscallClock()
    acknowledged: dict[str, str] = {}
    failed: dict[str, OSError] = {}
    stop = threading.Event()
    (mnt / "w").mkdir()

    def writer():
        i = 0
        while not stop.is_set():
            size = random.choice([100, 64_000, 5 * MiB + 3])
            data = random.randbytes(size)
            name = f"w/{i}"
            err = write_file(mnt / name, data, clock)
            if err is None:
                acknowledged[name] = sha256_of(data)
            else:
                failed[name] = err
            clock.run("stat", os.stat, mnt / "w")
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(1.5)
        cluster.kill("m0")
        time.sleep(3.0)       # down for 3 s: well inside the 30 s the clients retry
        cluster.start_node("m0")
        cluster.wait_ready(timeout=30)
        time.sleep(2.0)
    finally:
        stop.set()
        t.join(timeout=120)
    assert not t.is_alive()
    print(f"\n(c2) {len(acknowledged)} files acknowledged, {len(failed)} failed "
          f"({ {n: e.errno for n, e in failed.items()} }); longest calls {clock.longest}")
    # A 3 s outage is inside the retry window: nothing may fail, not even with ENOSPC before
    # the volume servers' first heartbeats reach the new master (test_c5).
    assert not failed, failed
    assert clock.worst() < SYSCALL_BOUND_S, clock.longest
    assert len(acknowledged) >= 5
    # No committed metadata lost: every acknowledged name is listed and intact, also from a
    # fresh mount that knows nothing from before the restart.
    fresh = mount_factory(cluster, "fresh").mountpoint
    assert set(os.listdir(fresh / "w")) >= {n.split("/")[1] for n in acknowledged}
    assert_all_intact(fresh, acknowledged)


@pytest.mark.timeout(90)
def test_c5_write_right_after_a_master_restart_is_not_enospc(cluster_factory, mount_factory):
    cluster = cluster_factory(volumes=2)
    mnt = mount_factory(cluster).mountpoint
    clock = SyscallClock()
    assert write_file(mnt / "before", b"x" * 1000, clock) is None
    time.sleep(5.5)   # past the gateway's 5 s fid cache: the next write asks the master
    # The moment between a master's start and the volume servers' first heartbeats, which
    # every restart has, made 1.5 s long: the servers are stopped across the restart.
    volumes = cluster.volume_names()
    for name in volumes:
        cluster.signal(name, signal.SIGSTOP)
    try:
        cluster.kill("m0")
        cluster.start_node("m0")
        mc = MasterClient(cluster.master_addr, timeout=2, retry_for=20)
        mc.status()   # the master answers again
        mc.close()
        wake = threading.Timer(1.5, lambda: [cluster.signal(n, signal.SIGCONT) for n in volumes])
        wake.start()
        data = random.randbytes(100_000)
        err = write_file(mnt / "after", data, clock)
        wake.join()
    finally:
        for name in volumes:
            cluster.signal(name, signal.SIGCONT)
    # The servers are back 1.5 s later, well inside the gateway's 10 s patience: the write
    # should wait for them (EIO would be acceptable); "disk full" is wrong.
    assert err is None or err.errno == errno.EIO, f"{err!r}"
    if err is None:
        assert read_file(mnt / "after") == data


@pytest.mark.timeout(180)
def test_c3_master_down_past_the_retry_window_fails_in_bounded_time(cluster_factory,
                                                                    mount_factory):
    cluster = cluster_factory(volumes=2)
    mnt = mount_factory(cluster).mountpoint
    clock = SyscallClock()
    acknowledged: dict[str, str] = {}
    outcomes: list[tuple[str, int | None]] = []
    keep = random.randbytes(2 * MiB)
    assert write_file(mnt / "keep", keep, clock) is None
    acknowledged["keep"] = sha256_of(keep)
    stop = threading.Event()

    def busy():
        i = 0
        while not stop.is_set():
            data = random.randbytes(random.choice([300, 5 * MiB]))
            err = write_file(mnt / f"x{i}", data, clock)
            if err is None:
                acknowledged[f"x{i}"] = sha256_of(data)
            outcomes.append(("write", err.errno if err else None))
            try:
                clock.run("stat", os.stat, mnt / f"nothing-{i}")  # never cached
            except OSError as e:
                outcomes.append(("stat", e.errno))
            i += 1

    t = threading.Thread(target=busy)
    t.start()
    try:
        time.sleep(1.0)
        cluster.kill("m0")
        down_at = time.monotonic()
        # Until a call gives up: past the 30 s window, the calls in flight must fail, not hang.
        wait_until(lambda: any(e not in (None, errno.ENOENT) for _, e in outcomes),
                   timeout=SYSCALL_BOUND_S + 10, interval=0.2,
                   what="a call to fail while the master is down")
        down_for = time.monotonic() - down_at
        cluster.start_node("m0")
        cluster.wait_ready(timeout=30)
        time.sleep(1.0)
    finally:
        stop.set()
        t.join(timeout=120)
    assert not t.is_alive()
    errors = sorted({errno.errorcode[e] for what, e in outcomes if e not in (None, errno.ENOENT)})
    print(f"\n(c3) master down {down_for:.1f}s; errnos seen {errors}; "
          f"longest calls {clock.longest}")
    assert clock.worst() < SYSCALL_BOUND_S, clock.longest
    # EIO, nothing else: neither EAGAIN (test_c4) nor ENOSPC after the restart (test_c5).
    assert {e for _, e in outcomes if e not in (None, errno.ENOENT)} <= {errno.EIO}, outcomes
    # The mount works again once the master is back, and nothing acknowledged is lost.
    data = random.randbytes(1 * MiB)
    assert write_file(mnt / "after", data, clock) is None
    acknowledged["after"] = sha256_of(data)
    assert_all_intact(mount_factory(cluster, "fresh").mountpoint, acknowledged)


@pytest.mark.timeout(30)
def test_c4_master_unreachable_is_eio():
    from tools.local_cluster import free_port
    mc = MasterClient(f"127.0.0.1:{free_port()}", timeout=1.0, retry_for=0.5)
    try:
        with pytest.raises(FsError) as info:
            mc.call("GetAttr", master_pb2.PathRequest(path="/"))
        assert info.value.errno == errno.EIO, errno.errorcode[info.value.errno]
    finally:
        mc.close()


# ---------------------------------------------------------------- (d) disk full

MIN_FREE = 8 * MiB


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs root to mount a tmpfs")
@pytest.mark.timeout(150)
def test_d_volume_disk_full(cluster_factory, tmp_path):
    cluster = cluster_factory(volumes=2, start=False)
    small = cluster.nodes["v0"]
    config = tmp_path / "v0.toml"
    config.write_text(f"[volume]\nmin_free_bytes = {MIN_FREE}\n")
    small.args += ["--config", str(config)]
    mounts: list[Mount] = []

    def mount(name: str, *extra: str) -> Path:
        mounts.append(Mount(cluster, tmp_path / name, *extra))
        return mounts[-1].start().mountpoint

    with tmpfs(small.data, "64m"):
        try:
            cluster.start(timeout=40)
            _disk_full_scenario(cluster, mount, Path(small.data))
        finally:
            # The FUSE mounts, then v0, must let go of the tmpfs before it is unmounted.
            for m in mounts:
                m.stop()
            cluster.stop()


def _disk_full_scenario(cluster, mount, small_dir: Path) -> None:
    mnt = mount("rep2", "--replication", "2")
    clock = SyscallClock()
    acknowledged: dict[str, str] = {}
    first_error = None
    for i in range(40):  # 40 x 3 MiB = 120 MiB > the 56 MiB v0 can take
        data = random.randbytes(3 * MiB + i)
        err = write_file(mnt / f"r2-{i}", data, clock)
        if err is not None:
            first_error = err
            break
        acknowledged[f"r2-{i}"] = sha256_of(data)
    st = os.statvfs(small_dir)
    print(f"\n(d) replication 2: {len(acknowledged)} files stored, then {first_error!r}; "
          f"v0 has {st.f_bavail * st.f_frsize >> 20} MiB free; longest {clock.longest}")
    assert first_error is not None, "writes kept succeeding on a full disk"
    assert first_error.errno == errno.ENOSPC, first_error
    # The volume server kept its reserve: it refused before the disk itself was full.
    assert st.f_bavail * st.f_frsize >= MIN_FREE // 2
    # It keeps refusing writes it has no room for (replication 2 needs v0 too) ...
    err = write_file(mnt / "r2-again", random.randbytes(3 * MiB), clock)
    assert err is not None, "a write with no room left succeeded"
    assert err.errno == errno.ENOSPC, err
    assert cluster.running("v0")
    # ... while the other server keeps serving writes that need one copy only,
    mnt1 = mount("rep1", "--replication", "1")
    for i in range(6):
        data = random.randbytes(3 * MiB + 100 + i)
        err = write_file(mnt1 / f"r1-{i}", data, clock)
        assert err is None, f"a replication-1 write failed while v1 has room: {err!r}"
        acknowledged[f"r1-{i}"] = sha256_of(data)
    for name in [n for n in acknowledged if n.startswith("r1-")]:
        assert all(h == {"v1"} for _, h in fid_holders(cluster, "/" + name)), name
    # ... and nothing already written is harmed (a fresh mount: no cached bytes).
    assert_all_intact(mount("fresh"), acknowledged)
    assert clock.worst() < SYSCALL_BOUND_S, clock.longest


# ---------------------------------------------------------------- (e) corruption on disk

def flip_byte_in_dat(vdir: str, sample: bytes) -> bool:
    """Flip one byte inside the first copy of `sample` found in a .dat file of `vdir`."""
    for name in sorted(os.listdir(vdir)):
        if not name.endswith(".dat"):
            continue
        path = os.path.join(vdir, name)
        blob = Path(path).read_bytes()
        at = blob.find(sample)
        if at >= 0:
            with open(path, "r+b") as fh:
                fh.seek(at + len(sample) // 2)
                fh.write(bytes([blob[at + len(sample) // 2] ^ 0x5A]))
                fh.flush()
                os.fsync(fh.fileno())
            return True
    return False


@pytest.mark.timeout(120)
def test_e_needle_corrupted_on_disk(cluster_factory, mount_factory):
    cluster = cluster_factory(volumes=2)
    mnt = mount_factory(cluster, "writer", "--replication", "2").mountpoint
    clock = SyscallClock()
    # Two sets of files, because a volume server keeps needles it has verified in a cache:
    # "one" gets one damaged replica, "both" two, before anything reads them.
    files = {}
    for tag in ("one", "both"):
        files[f"{tag}-small"] = random.randbytes(300_000)
        files[f"{tag}-big"] = random.randbytes(9 * MiB + 11)   # needles of 4 + 4 + 1 MiB
    for name, data in files.items():
        assert write_file(mnt / name, data, clock) is None
        assert all(len(h) == 2 for _, h in fid_holders(cluster, "/" + name))
    middle = 4 * MiB + 2 * MiB                     # inside the second needle of "big"
    for name, data in files.items():
        at = 1000 if name.endswith("small") else middle
        for node in (("v0",) if name.startswith("one") else ("v0", "v1")):
            assert flip_byte_in_dat(cluster.nodes[node].data, data[at:at + 64]), (name, node)

    # One replica damaged: the reader gets the good one, without an error.
    m1 = mount_factory(cluster, "reader").mountpoint
    assert read_file(m1 / "one-small") == files["one-small"]
    assert read_file(m1 / "one-big") == files["one-big"]
    big = files["one-big"]
    with open(m1 / "one-big", "rb") as fh:        # a small range read inside the bad needle
        fh.seek(middle)
        assert fh.read(4096) == big[middle:middle + 4096]

    # Both replicas damaged: EIO, never the bad bytes; the intact needles still read.
    big = files["both-big"]
    with open(m1 / "both-big", "rb") as fh:
        assert fh.read(4096) == big[:4096]           # first needle is fine
        fh.seek(middle)
        with raises_errno(errno.EIO):
            fh.read(4096)
        fh.seek(8 * MiB)
        assert fh.read() == big[8 * MiB:]            # third needle is fine
    for name in ("both-small", "both-big"):
        with raises_errno(errno.EIO):
            read_file(m1 / name)
    # Through dd (the kernel's read-ahead path) too: whatever it copied before failing is right.
    out = subprocess.run(["dd", f"if={m1 / 'both-big'}", "bs=1M", "status=none"],
                         capture_output=True, timeout=60)
    assert out.returncode != 0
    assert b"Input/output error" in out.stderr
    assert big.startswith(out.stdout)


# ---------------------------------------------------------------- (f) partition (SIGSTOP)

DEAD_AFTER = 1.5
FID_CACHE_S = 5.5   # the gateway's assigner keeps fids 5 s (cluster/gateway/assigner.py)
GATEWAY_HEARTBEAT_S = 1.0  # how often the gateway learns from the master who is dead


@pytest.mark.timeout(150)
def test_f_volume_server_partitioned_then_rejoins(cluster_factory, mount_factory):
    cluster = cluster_factory(volumes=3, heartbeat_interval=0.3,
                              extra_master_args=["--dead-after", str(DEAD_AFTER)])
    mnt = mount_factory(cluster).mountpoint
    clock = SyscallClock()
    acknowledged: dict[str, str] = {}
    for name, data in random_files("pre", [100, 70_000, 5 * MiB] * 3).items():
        assert write_file(mnt / name, data, clock) is None
        acknowledged[name] = sha256_of(data)
    holders = [h for name in acknowledged for _, h in fid_holders(cluster, "/" + name)]
    victim = max(cluster.volume_names(), key=lambda n: sum(n in h for h in holders))
    address = cluster.nodes[victim].grpc_address
    before = volume_needles(address)
    assert any(before.values()), "the victim holds nothing: the test proves nothing"
    victim_vids = set(before)
    sid = {s.name: s.server_id for s in master_status(cluster).servers}

    cluster.signal(victim, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        wait_until(lambda: victim not in alive_names(cluster), timeout=DEAD_AFTER + 10,
                   interval=0.1, what=f"the master to mark {victim} dead")
        noticed = time.monotonic() - stopped_at
        # Past the gateway's 5 s fid cache (test_f2 is about the writes before that): writes
        # go to the live servers only.
        time.sleep(max(0.0, FID_CACHE_S - noticed))
        during: dict[str, str] = {}
        for name, data in random_files("during", [100, 70_000, 5 * MiB] * 3).items():
            assert write_file(mnt / name, data, clock) is None, name
            during[name] = sha256_of(data)
        write_time = clock.longest.get("close", 0.0)
        for name in during:
            for fid, _ in fid_holders(cluster, "/" + name):
                assert Fid.parse(fid).volume_id not in victim_vids, (name, fid)
        acknowledged.update(during)
        longest_during = dict(clock.longest)
    finally:
        cluster.signal(victim, signal.SIGCONT)
    wait_until(lambda: victim in alive_names(cluster), timeout=10, interval=0.1,
               what=f"{victim} to rejoin")
    print(f"\n(f) {victim} marked dead {noticed:.1f}s after SIGSTOP; longest calls while it "
          f"was stopped {longest_during} (close {write_time:.2f}s)")
    assert {s.name: s.server_id for s in master_status(cluster).servers} == sid
    # Rejoined without losing or duplicating needles: the same needles as before the stop,
    # replicas of one volume agree, and a key lives in one volume only.
    after = volume_needles(address)
    assert after == before
    per_server = {n: volume_needles(cluster.nodes[n].grpc_address)
                  for n in cluster.volume_names()}
    by_vid: dict[int, list[dict]] = {}
    for needles in per_server.values():
        for vid, keys in needles.items():
            by_vid.setdefault(vid, []).append(keys)
    key_home: dict[int, int] = {}
    for vid, copies in by_vid.items():
        assert all(c == copies[0] for c in copies), f"replicas of volume {vid} differ"
        for key in copies[0]:
            assert key_home.setdefault(key, vid) == vid, f"key {key:x} in two volumes"
    assert_all_intact(mount_factory(cluster, "fresh").mountpoint, acknowledged)
    assert clock.worst() < SYSCALL_BOUND_S, clock.longest


@pytest.mark.timeout(120)
def test_f2_writes_do_not_wait_on_a_server_the_master_marked_dead(cluster_factory,
                                                                   mount_factory):
    """A write must not wait TCP's own timeout (20-30 s) on a stopped server whose fids the
    gateway has cached: the gateway drops them when its heartbeat (every second) learns the
    server is dead, and a replica write gives up after 5 s + 1 s/MB."""
    cluster = cluster_factory(volumes=3, heartbeat_interval=0.3,
                              extra_master_args=["--dead-after", str(DEAD_AFTER)])
    mnt = mount_factory(cluster).mountpoint
    clock = SyscallClock()
    for name, data in random_files("pre", [100] * 6).items():
        assert write_file(mnt / name, data, clock) is None   # fills the gateway's fid cache
    victim = "v0"
    cluster.signal(victim, signal.SIGSTOP)
    try:
        wait_until(lambda: victim not in alive_names(cluster), timeout=DEAD_AFTER + 10,
                   interval=0.1, what=f"the master to mark {victim} dead")
        racing = SyscallClock()   # before the gateway heard: one bounded retry at most
        for name, data in random_files("racing", [100] * 6).items():
            assert write_file(mnt / name, data, racing) is None, name
        time.sleep(GATEWAY_HEARTBEAT_S * 2)
        late = SyscallClock()     # after: nothing waits on the stopped server
        for name, data in random_files("late", [100] * 6).items():
            assert write_file(mnt / name, data, late) is None, name
    finally:
        cluster.signal(victim, signal.SIGCONT)
    print(f"\n(f2) longest calls once {victim} was marked dead: {racing.longest}; "
          f"a heartbeat later: {late.longest}")
    assert racing.worst() < 10.0, racing.longest
    assert late.worst() < 2.0, late.longest
