"""Network faults between hosts: every node on a host of its own (a network namespace,
tests/netns.py), all of them with the cluster's credentials (mTLS and CURVE), and faults made
by pulling a host's cable rather than by signalling a process.

The difference matters: a SIGKILLed process resets its connections and a SIGSTOPped one keeps
accepting them, but a host that drops off the network does neither. Its peers' packets go
unanswered, TCP retransmits into the void, and only timeouts tell anyone anything. These tests
hold the cluster to docs/reliability.md in that case:

* a write whose close() returned 0 has every chunk on as many servers as it asked for, even
  when a replica's host vanished in the middle of it; otherwise it failed with EIO;
* a mount cut off from its master fails calls in bounded time with an errno, and when the
  network is back it takes a new session by itself and shows what changed meanwhile.

Layout (six hosts): h0 master, h1..h3 volume servers, h4 gateway, h5 the mount.
"""
from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import netns
from tests.harness import file_sha256, proc_wchar, sha256_of, wait_until
from tests.integration.mountutil import needs_fuse
from tools.local_cluster import pid_alive

pytestmark = [pytest.mark.faults, pytest.mark.mount, needs_fuse]

MiB = 1 << 20
BIG_MIB = 128            # the file written through the cut (under 2 s at full speed)
DEAD_AFTER_S = 2.0       # the master's --dead-after: a silent host is dead this soon
LEASE_S = 2.0            # the master's --session-lease in the partition test
# How long a call through a mount cut off from its master may take: the mount's 30 s of
# retries plus one RPC timeout, with slack (the bound test_faults.py holds mounts to).
SYSCALL_BOUND_S = 50.0
# How long the whole write may take with one replica gone silent: a chunk waits for the
# gateway's answer at most the client's 60 s (a replica write gives up after 5 s + 1 s/MB,
# and is tried again elsewhere), plus slack; the bound test_faults.py holds writes to.
WRITE_BOUND_S = 75.0
# What a call may fail with while the master is unreachable: EIO once the retries are spent,
# ETIMEDOUT when one lookup's deadline passes first.
UNREACHABLE_ERRNOS = (errno.EIO, errno.ETIMEDOUT)


@pytest.fixture
def net(request, tmp_path):
    """Six hosts on one switch (skipped where namespaces cannot be made); everything it
    started is stopped and deleted at teardown."""
    return netns.network_for(request, tmp_path, hosts=6)


# ---------------------------------------------------------------- helpers


def make_source(path: Path, mib: int) -> str:
    """A local file of `mib` MiB of random bytes; its sha256."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        for _ in range(mib):
            block = random.randbytes(MiB)
            fh.write(block)
            h.update(block)
    return h.hexdigest()


def log_count(proc: netns.Proc, text: str) -> int:
    return proc.log_tail(100000).count(text)


# A create and a write of one byte, in a process of its own so that a call that hangs is
# killed at the bound instead of hanging the test; prints the errno name, or "ok".
CREATE = """
import errno, os, sys
try:
    fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, b"x")
    os.close(fd)
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
"""


def timed_create(path: Path, bound: float) -> tuple[str, float]:
    """(errno name or "ok", seconds) of a create through a mount; AssertionError past bound."""
    started = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-c", CREATE, str(path)], capture_output=True,
                             text=True, timeout=bound)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"create of {path} still blocked after {bound:.0f}s") from None
    return out.stdout.strip() or out.stderr.strip(), time.monotonic() - started


# ---------------------------------------------------------------- the harness itself

REACH = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
except OSError:
    sys.exit(1)
"""
LISTEN = """
import socket, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    s.accept()[0].close()
"""


def reaches(src: netns.Host, dst: netns.Host, port: int = 5555, wait: float = 1.0) -> bool:
    return src.python("-c", REACH, dst.ip, str(port), str(wait)).returncode == 0


def root_network() -> str:
    """The root namespace's links, addresses and routes, to show the harness left them be."""
    return "\n".join(netns.run(["ip", "-o", *cmd]).stdout for cmd in
                     (["link", "show"], ["addr", "show"], ["route", "show", "table", "all"]))


@pytest.mark.timeout(60)
def test_hosts_reach_each_other_until_cut_or_partitioned(tmp_path):
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    before = root_network()
    with netns.Network(tmp_path / "net", hosts=3) as net:
        a, b, c = net.hosts
        made = {h.ns for h in net.hosts} | {net.switch}
        assert made <= set(netns.run(["ip", "netns", "list"]).stdout.split())
        assert root_network() == before, "the harness changed the root namespace's network"
        listeners = [h.popen([sys.executable, "-c", LISTEN, h.ip, "5555"]) for h in net.hosts]
        wait_until(lambda: reaches(b, a) and reaches(a, b), timeout=10,
                   what=f"{a} and {b} to reach each other")
        assert reaches(c, a)
        b.cut()
        assert not reaches(b, a)
        assert not reaches(a, b)
        assert reaches(c, a)
        b.restore()
        wait_until(lambda: reaches(b, a), timeout=10, what=f"{b} to reach {a} again")
        net.partition(a, c)
        assert not reaches(c, a)
        assert not reaches(a, c)
        assert reaches(b, a)
        assert reaches(b, c)
        net.heal(a, c)
        wait_until(lambda: reaches(c, a), timeout=10, what=f"{c} to reach {a} again")
    assert not any(pid_alive(p.pid) for p in listeners)
    assert not made & set(netns.run(["ip", "netns", "list"]).stdout.split())
    assert root_network() == before


# ---------------------------------------------------------------- a replica's host vanishes


@pytest.mark.timeout(150)
def test_volume_host_cut_mid_write(net, tmp_path):
    h = net.hosts
    cluster = net.start_cluster(h[0], h[1:4], h[4], master_args=(
        "--replication", "2", "--dead-after", str(DEAD_AFTER_S)))
    mnt = net.mount(h[5], cluster.master.grpc, tmp_path / "mnt").mountpoint
    # A first file makes the master grow a volume for replication 2; its replica set is the
    # one the big file's first chunks go to, so cutting one of its servers hits the stream.
    (mnt / "warm").write_bytes(random.randbytes(5 * MiB))
    warm = cluster.replicas("/warm")
    assert warm, "the warm-up file has no chunks"
    assert all(len(holders) == 2 for _, holders in warm), warm
    victim = next(v for v in cluster.volumes if v.name in warm[0][1])
    src = tmp_path / "big.src"
    digest = make_source(src, BIG_MIB)

    started = time.monotonic()
    dd = subprocess.Popen(["dd", f"if={src}", f"of={mnt / 'big'}", "bs=1M"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: proc_wchar(dd.pid) >= BIG_MIB * MiB // 4 or dd.poll() is not None,
                   timeout=60, interval=0.01, what="dd to be a quarter through")
        cut_after = proc_wchar(dd.pid)
        victim.host.cut()
        rc = dd.wait(timeout=WRITE_BOUND_S + 30)
        took = time.monotonic() - started
        stderr = dd.stderr.read().decode(errors="replace")
        assert 0 < cut_after < BIG_MIB * MiB, "dd finished before the cut; make it bigger"
        print(f"\n{victim.name} cut after {cut_after >> 20} MiB: dd rc={rc} in {took:.1f}s "
              f"{stderr.strip()}")
        assert took < WRITE_BOUND_S, f"the write stalled {took:.0f}s on the lost replica"
        if rc == 0:
            # Acknowledged while the victim was away: every chunk is on two servers (the
            # victim's disk is read from inside its own namespace), and the chunks written
            # after the cut, the most of them, on the two that stayed.
            chunks = cluster.replicas("/big")
            short = [(fid, holders) for fid, holders in chunks if len(holders) < 2]
            assert not short, f"close() returned 0 with chunks on one server: {short}"
            after_cut = [fid for fid, holders in chunks if victim.name not in holders]
            assert len(after_cut) >= len(chunks) // 2, (len(after_cut), len(chunks))
        else:
            assert "Input/output error" in stderr, stderr
    finally:
        victim.host.restore()
        if dd.poll() is None:
            dd.kill()
            dd.wait()

    cluster.alive()
    if rc != 0:   # not acknowledged: nothing of it was committed; write it again now
        assert (mnt / "big").stat().st_size == 0
        subprocess.run(["dd", f"if={src}", f"of={mnt / 'big'}", "bs=1M"], check=True,
                       capture_output=True, timeout=60)
    repair = cluster.kelp("fsck", "--repair", "--orphan-min-age", "0")
    assert repair.returncode == 0, repair.stdout.decode() + repair.stderr.decode()
    check = cluster.kelp("fsck", "--no-orphans")
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    chunks = cluster.replicas("/big")
    assert len(chunks) >= BIG_MIB // 4
    assert all(len(holders) == 2 for _, holders in chunks), chunks
    # The bytes, from the volume servers to a fresh client, and through the mount.
    out = tmp_path / "big.out"
    cluster.kelp("download", "/big", "-o", str(out), check=True)
    assert file_sha256(out) == digest
    assert file_sha256(mnt / "big") == digest


# ---------------------------------------------------------------- a mount loses its master


def replace_remotely(cluster: netns.Cluster, tmp_path: Path, name: str,
                     data: bytes) -> float:
    """Another client (`kelp upload` on the master's host) replaces /name; seconds it took."""
    local = tmp_path / "upload" / name
    local.parent.mkdir(exist_ok=True)
    local.write_bytes(data)
    started = time.monotonic()
    up = cluster.kelp("upload", "-p", str(local), "--to", "/")
    assert up.returncode == 0, up.stderr.decode()
    return time.monotonic() - started


@pytest.mark.timeout(120)
def test_mount_partitioned_from_master(net, tmp_path):
    h = net.hosts
    cluster = net.start_cluster(h[0], h[1:4], h[4], master_args=(
        "--session-lease", str(LEASE_S)))
    client = h[5]
    mount = net.mount(client, cluster.master.grpc, tmp_path / "mnt", "--log-level", "info")
    mnt = mount.mountpoint
    # Two files the mount reads, so holds under callbacks (attributes, chunk list, the
    # kernel's pages). Each is replaced by bytes of the same size, so only dropped caches can
    # tell old from new.
    old = {name: random.randbytes(MiB) for name in ("early", "late")}
    new = {name: random.randbytes(MiB) for name in old}
    for name, data in old.items():
        (mnt / name).write_bytes(data)
        assert (mnt / name).read_bytes() == data
    sessions = log_count(mount, "opened with the master")
    assert sessions == 1, mount.log_tail()

    client.cut()
    try:
        # While the session lives: the master breaks the cut mount's callback, hears no
        # acknowledgement, and ends the session when its lease runs out. A vanished mount
        # holds a change up for one lease, no longer.
        took = replace_remotely(cluster, tmp_path, "early", new["early"])
        assert took < LEASE_S + 10, f"the upload waited {took:.1f}s for the cut mount"
        # A create through the cut-off mount fails with an errno, in bounded time.
        outcome, seconds = timed_create(mnt / "during-cut", SYSCALL_BOUND_S)
        print(f"\ncreate while cut: {outcome} after {seconds:.1f}s; upload took {took:.1f}s")
        assert outcome in {errno.errorcode[e] for e in UNREACHABLE_ERRNOS}, outcome
        assert mount.running(), mount.log_tail()
        # After the session ended: no break is sent for this one, so only the mount's own
        # "my session is gone, drop everything" can keep it from serving the old bytes.
        replace_remotely(cluster, tmp_path, "late", new["late"])
    finally:
        client.restore()

    # By itself: the next renewal is refused, the mount drops every cache and opens its
    # session again.
    wait_until(lambda: log_count(mount, "opened with the master") > sessions, timeout=30,
               interval=0.2, what="the mount to open a new session")
    assert "the master forgot it; dropping every cache" in mount.log_tail(100000)
    for name, data in new.items():
        assert (mnt / name).read_bytes() == data, f"{name}: the mount served its old cache"
    # The failed create left nothing behind, and writing works again.
    assert not (mnt / "during-cut").exists()
    data = random.randbytes(3 * MiB + 5)
    (mnt / "after").write_bytes(data)
    out = tmp_path / "after.out"
    cluster.kelp("download", "/after", "-o", str(out), check=True)
    assert sha256_of(out.read_bytes()) == sha256_of(data)
    assert "after" in os.listdir(mnt)
