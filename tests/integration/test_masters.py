"""Several masters over one PostgreSQL database (docs/scaling.md): one leader, chosen by an
advisory lock and replaced when it dies; callback breaks between masters, so a change made
through one master is seen at once through another; `kelp up --masters 3 --meta ...`.

Every test runs real masters, volume servers, a gateway and FUSE mounts against a real
PostgreSQL server (the `pg_dsn` fixture, tests/conftest.py)."""
from __future__ import annotations

import errno
import json
import os
import signal
import stat
import threading
import time

import grpc
import pytest

from fusefs.master_client import check_reachable
from protos import master_pb2, master_pb2_grpc
from tests.harness import Mount, dump_logs, file_sha256, kelp, make_cluster, sha256_of

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def masters(tmp_path, pg_dsn, request):
    """Three masters over one database, two volume servers and a gateway given them all."""
    cluster = make_cluster(tmp_path, volumes=2, masters=3, meta=pg_dsn,
                           extra_master_args=["--session-lease", "3"])
    mounts: list[Mount] = []
    cluster.mounts = mounts
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        for m in mounts:
            m.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            dump_logs(cluster)
        cluster.stop()


def mount(cluster, tmp_path, name: str, *extra: str) -> Mount:
    m = Mount(cluster, tmp_path / name, *extra)
    cluster.mounts.append(m)
    return m.start()


def status(cluster, name: str) -> master_pb2.ClusterStatusResponse:
    return check_reachable(cluster.nodes[name].grpc_address, transport=cluster.transport)


def leader_of(cluster) -> str:
    """The name of the leading master, as the live masters agree on it ("" if they do not)."""
    by_address = {cluster.nodes[n].grpc_address: n for n in cluster.master_names()}
    seen = {status(cluster, n).leader for n in cluster.master_names() if cluster.running(n)}
    return by_address.get(seen.pop(), "") if len(seen) == 1 else ""


def test_one_leader_and_only_it_places_chunks(masters):
    leader = leader_of(masters)
    assert leader, "the masters do not agree on a leader"
    st = status(masters, leader)
    assert sorted(st.masters) == sorted(masters.nodes[n].grpc_address
                                        for n in masters.master_names())
    follower = next(n for n in masters.master_names() if n != leader)
    channel = masters.transport.channel(masters.nodes[follower].grpc_address, "master")
    try:
        with pytest.raises(grpc.RpcError) as e:
            master_pb2_grpc.MasterStub(channel).Assign(master_pb2.AssignRequest(count=1),
                                                       timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not the leader" in e.value.details()
        assert masters.nodes[leader].grpc_address in e.value.details()
    finally:
        channel.close()
    # Every master knows every volume server (each heartbeats to all of them).
    for n in masters.master_names():
        assert sorted(s.name for s in status(masters, n).servers if s.alive) == ["v0", "v1"]


def test_a_change_through_one_master_is_seen_at_once_through_another(masters, tmp_path):
    """Mount a talks to m0 only, mount b to m1 only; both cache with callbacks. Every change
    made through a is seen by b's next call, inline and chunked files alike."""
    a = mount(masters, tmp_path, "a", "--master", masters.nodes["m0"].grpc_address).mountpoint
    b = mount(masters, tmp_path, "b", "--master", masters.nodes["m1"].grpc_address).mountpoint
    (a / "small").write_bytes(b"one")
    big = os.urandom(300_000)
    (a / "big").write_bytes(big)
    assert (b / "small").read_bytes() == b"one"           # b now holds callbacks on both
    assert (b / "big").read_bytes() == big
    assert sorted(os.listdir(b)) == ["big", "small"]
    (a / "small").write_bytes(b"two, longer")
    big2 = os.urandom(200_000)
    (a / "big").write_bytes(big2)
    assert (b / "small").read_bytes() == b"two, longer"
    assert (b / "big").read_bytes() == big2
    os.chmod(a / "small", 0o600)
    assert stat.S_IMODE(os.stat(b / "small").st_mode) == 0o600
    os.rename(a / "small", a / "moved")
    assert sorted(os.listdir(b)) == ["big", "moved"]
    with pytest.raises(FileNotFoundError):
        os.stat(b / "small")
    os.mkdir(b / "dir")
    (b / "dir" / "x").write_text("from b")
    assert (a / "dir" / "x").read_text() == "from b"
    os.unlink(b / "moved")
    assert sorted(os.listdir(a)) == ["big", "dir"]


def test_leader_killed_mid_copy_fails_over_within_10s_and_loses_nothing(masters, tmp_path):
    """A mount given every master copies files while the leader is SIGKILLed. A new leader
    is chosen within 10 s; the copy goes on (a file in flight may fail with a clear error,
    never hang); every file whose close() returned is there, byte for byte."""
    old = leader_of(masters)
    addresses = [masters.nodes[n].grpc_address for n in masters.master_names()]
    # The mount talks to the leader first, so killing it takes its master away too.
    order = [masters.nodes[old].grpc_address] + [x for x in addresses
                                                 if x != masters.nodes[old].grpc_address]
    mnt = mount(masters, tmp_path, "mnt", "--master", ",".join(order)).mountpoint
    os.mkdir(mnt / "copy")
    done: dict[str, str] = {}
    failures: list[str] = []
    stop = threading.Event()

    def copy() -> None:
        i = 0
        while not stop.is_set() and i < 2000:
            data = os.urandom(1000 + (i % 7) * 30_000)
            path = mnt / "copy" / f"f{i:04d}"
            try:
                with open(path, "wb") as fh:
                    fh.write(data)
                done[path.name] = sha256_of(data)
            except OSError as e:
                failures.append(f"{path.name}: {errno.errorcode.get(e.errno or 0)} {e}")
            i += 1

    writer = threading.Thread(target=copy)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while len(done) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(done) >= 30, f"the copy did not start: {failures[:3]}"
        before = len(done)
        masters.procs[old].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        new = old   # the others name it until its row goes stale
        while new in ("", old) and time.monotonic() - killed < 15:
            time.sleep(0.1)
            try:
                new = leader_of(masters)
            except Exception:
                new = ""
        failover_s = time.monotonic() - killed
        assert new, "no new leader"
        assert new != old
        assert failover_s < 10, f"failover took {failover_s:.1f}s"
        # The copy goes on through another master.
        deadline = time.monotonic() + 40
        while len(done) < before + 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(done) >= before + 40, f"the copy stalled after the failover: {failures}"
    finally:
        stop.set()
        writer.join(60)
    assert not writer.is_alive(), "the copy hung"
    # Only a file in flight when the master died may fail, and only with a clear error.
    assert len(failures) <= 3, failures
    assert all(f.split()[1] in ("EIO", "ENOTCONN", "EAGAIN", "ETIMEDOUT") for f in failures)
    for name, digest in done.items():
        assert file_sha256(mnt / "copy" / name) == digest, name
    # A second mount, on the new leader alone, sees the same files.
    other = mount(masters, tmp_path, "other", "--master",
                  masters.nodes[new].grpc_address).mountpoint
    assert set(done) <= set(os.listdir(other / "copy"))


def test_kelp_up_with_three_masters_and_status_shows_the_leader(tmp_path, pg_dsn):
    data = tmp_path / "data"
    try:
        up = kelp("up", "--data", str(data), "--ephemeral-ports", "--insecure", "--volumes",
                  "1", "--masters", "3", "--meta", pg_dsn, timeout=120)
        assert up.returncode == 0, up.stderr.decode()
        nodes = json.loads((data / "cluster.json").read_text())["nodes"]
        addresses = sorted(n["grpc_address"] for n in nodes.values() if n["kind"] == "master")
        assert len(addresses) == 3
        st = kelp("status", "--master", addresses[1], check=True).stdout.decode()
        assert all(a in st for a in addresses), st
        assert "master (leader)" in st
        assert "leader: 127.0.0.1:" in st
        refused = kelp("up", "--data", str(tmp_path / "d2"), "--masters", "2", timeout=60)
        assert refused.returncode != 0
        assert "--meta" in refused.stderr.decode()
        assert "Traceback" not in refused.stderr.decode()
    finally:
        kelp("down", "--data", str(data), timeout=60)
