"""The gateway and its client, in one process: a GatewayNode against a fake master servicer and
fake volume servicers on real gRPC servers (port 0), driven through GatewayClient and through
raw ZMQ frames."""
from __future__ import annotations

import errno
import json
import socket
import threading
import time
import urllib.request

import crc32c
import grpc
import pytest
import zmq

from cluster.common import rpc
from cluster.common.errors import FsError
from cluster.common.fid import Fid
from cluster.gateway.options import GatewayOptions
from cluster.gateway.server import GatewayNode
from fusefs.gateway_client import GatewayClient
from protos import gateway_pb2, master_pb2, master_pb2_grpc, volume_pb2, volume_pb2_grpc

# ---------------------------------------------------------------- fakes

class FakeVolume(volume_pb2_grpc.VolumeServicer):
    """Stores needles in a dict; `fail` makes every write fail with that status code;
    `gate` (an Event) holds writes until set."""

    def __init__(self, name: str):
        self.name = name
        self.needles: dict[tuple[int, int, int], bytes] = {}
        self.fail: grpc.StatusCode | None = None
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.calls = 0

    def WriteNeedle(self, request, context):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                self.gate.wait(10)
            if self.fail is not None:
                context.abort(self.fail, f"{self.name} told to fail")
            if crc32c.crc32c(request.data) != request.crc32c:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "EINVAL: crc mismatch")
            with self.lock:
                self.needles[(request.volume_id, request.key, request.cookie)] = request.data
            return volume_pb2.WriteResponse(size=len(request.data))
        finally:
            with self.lock:
                self.active -= 1


class FakeMaster(master_pb2_grpc.MasterServicer):
    """Assign hands out fids on `volumes` (vid -> list of Location), preferring the lowest vid
    that has the wanted replica count and is not avoided; CommitChunks records its calls."""

    def __init__(self):
        self.volumes: dict[int, list[master_pb2.Location]] = {}
        self.assign_calls: list[master_pb2.AssignRequest] = []
        self.commits: list[master_pb2.CommitRequest] = []
        self.heartbeats: list[master_pb2.GatewayHeartbeat] = []
        self.next_key = 1
        self.lock = threading.Lock()
        self.commit_unavailable = 0  # answer UNAVAILABLE this many times first

    def Assign(self, request, context):
        with self.lock:
            self.assign_calls.append(master_pb2.AssignRequest().FromString(
                request.SerializeToString()))
            want = request.replication or 1
            for vid in sorted(self.volumes):
                replicas = self.volumes[vid]
                if len(replicas) == want and vid not in request.avoid_volumes:
                    out = []
                    for _ in range(request.count):
                        fid = Fid(vid, self.next_key, Fid.new_cookie())
                        self.next_key += 1
                        out.append(master_pb2.Assignment(fid=str(fid), replicas=replicas))
                    return master_pb2.AssignResponse(assignments=out)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "ENOSPC: no writable volume")

    def CommitChunks(self, request, context):
        with self.lock:
            if self.commit_unavailable:
                self.commit_unavailable -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
            self.commits.append(master_pb2.CommitRequest.FromString(request.SerializeToString()))
        return master_pb2.Attr(ino=request.ino, size=request.size, mode=0o100644, nlink=1,
                               mtime_ns=request.mtime_ns or time.time_ns())

    def SendGatewayHeartbeat(self, request, context):
        with self.lock:
            self.heartbeats.append(request)
        return master_pb2.Empty()


class Cluster:
    def __init__(self, volume_count: int = 3, **gateway_opts):
        self.servers = []
        self.master = FakeMaster()
        server, _ = rpc.make_server(8)
        master_pb2_grpc.add_MasterServicer_to_server(self.master, server)
        self.master_address = f"127.0.0.1:{rpc.bind(server, '127.0.0.1', 0)}"
        server.start()
        self.servers.append(server)
        self.volumes: list[FakeVolume] = []
        self.locations: list[master_pb2.Location] = []
        for i in range(volume_count):
            vol = FakeVolume(f"v{i}")
            server, _ = rpc.make_server(8)
            volume_pb2_grpc.add_VolumeServicer_to_server(vol, server)
            port = rpc.bind(server, "127.0.0.1", 0)
            server.start()
            self.servers.append(server)
            self.volumes.append(vol)
            self.locations.append(master_pb2.Location(server_id=i + 1, name=f"v{i}",
                                                      grpc_address=f"127.0.0.1:{port}"))
        opts = GatewayOptions(port=0, http_port=0, name="gw-test", master=self.master_address,
                              workers=4, assign_batch=4, write_retries=2)
        for key, value in gateway_opts.items():
            setattr(opts, key, value)
        self.node = GatewayNode(opts).start()
        self.address = f"127.0.0.1:{self.node.port}"
        self.clients: list[GatewayClient] = []

    def client(self, **kw) -> GatewayClient:
        c = GatewayClient(self.address, **kw)
        self.clients.append(c)
        return c

    def stored(self, chunk: master_pb2.Chunk, volume: FakeVolume) -> bytes | None:
        fid = Fid.parse(chunk.fid)
        return volume.needles.get((fid.volume_id, fid.key, fid.cookie))

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.node.stop()
        for s in self.servers:
            s.stop(0)


@pytest.fixture
def cluster():
    c = Cluster()
    # volume 1 on v0, volume 2 on v1 (replication 1); volume 10 on v1+v2 (replication 2)
    c.master.volumes = {1: [c.locations[0]], 2: [c.locations[1]],
                        10: [c.locations[1], c.locations[2]]}
    yield c
    c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- round trips

@pytest.mark.timeout(30)
def test_ping(cluster):
    assert cluster.client().ping() == "gw-test"


@pytest.mark.timeout(30)
def test_stream_write_then_commit(cluster):
    client = cluster.client()
    stream = client.open_stream(ino=42)
    parts = [b"a" * 1000, b"b" * 70_000, bytearray(b"c" * 5)]
    offset = 0
    for part in parts:
        stream.write(offset, part)
        offset += len(part)
    attr = stream.commit(size=offset, mtime_ns=123)
    assert attr.ino == 42
    assert attr.size == offset
    assert attr.mtime_ns == 123
    [commit] = cluster.master.commits
    assert commit.ino == 42
    assert commit.size == offset
    assert [c.file_offset for c in commit.chunks] == [0, 1000, 71_000]
    for chunk, part in zip(commit.chunks, parts, strict=True):
        assert chunk.length == chunk.needle_size == len(part)
        assert chunk.needle_offset == 0
        assert chunk.crc32c == crc32c.crc32c(bytes(part))
        assert cluster.stored(chunk, cluster.volumes[0]) == bytes(part)
    # A committed stream starts over.
    assert stream.chunks() == []
    stream.write(0, b"again")
    stream.commit(size=offset)
    assert [c.length for c in cluster.master.commits[1].chunks] == [5]


@pytest.mark.timeout(30)
def test_small_file_is_one_round_trip(cluster):
    client = cluster.client()
    attr = client.write_small(ino=7, file_offset=0, data=b"hello", size=5, mtime_ns=9)
    assert attr.ino == 7
    assert attr.size == 5
    [commit] = cluster.master.commits
    [chunk] = commit.chunks
    assert cluster.stored(chunk, cluster.volumes[0]) == b"hello"
    stats = cluster.node.handler.stats
    assert stats["chunks_written"] == 1
    assert stats["commits"] == 1
    assert next(client._ids) == 2  # exactly one request went out
    # An empty small file commits without writing a chunk.
    attr = client.write_small(ino=8, file_offset=0, data=b"", size=0)
    assert attr.size == 0
    assert list(cluster.master.commits[1].chunks) == []


@pytest.mark.timeout(30)
def test_replicated_write_lands_on_every_replica(cluster):
    stream = cluster.client().open_stream(ino=5, replication=2)
    stream.write(0, b"x" * 4096)
    stream.commit(size=4096)
    [chunk] = cluster.master.commits[0].chunks
    assert Fid.parse(chunk.fid).volume_id == 10
    assert cluster.stored(chunk, cluster.volumes[1]) == b"x" * 4096
    assert cluster.stored(chunk, cluster.volumes[2]) == b"x" * 4096


@pytest.mark.timeout(30)
def test_replica_failure_retries_on_another_volume(cluster):
    cluster.volumes[0].fail = grpc.StatusCode.UNAVAILABLE  # volume 1's only replica
    stream = cluster.client().open_stream(ino=5)
    stream.write(0, b"data")
    stream.commit(size=4)
    [chunk] = cluster.master.commits[0].chunks
    assert Fid.parse(chunk.fid).volume_id == 2
    assert cluster.stored(chunk, cluster.volumes[1]) == b"data"
    assert 1 in cluster.master.assign_calls[-1].avoid_volumes
    assert cluster.node.writer.replica_failures == 1


@pytest.mark.timeout(30)
def test_one_bad_replica_of_a_replicated_volume_fails_the_chunk(cluster):
    cluster.volumes[2].fail = grpc.StatusCode.UNAVAILABLE
    client = cluster.client()
    with pytest.raises(FsError) as exc:
        client.write_small(ino=5, file_offset=0, data=b"zz", size=2, replication=2)
    # No other volume has two replicas: never acknowledged as under-replicated.
    assert exc.value.errno == errno.EIO
    assert "replica v2" in exc.value.message
    assert cluster.master.commits == []


@pytest.mark.timeout(30)
def test_all_replicas_failing_is_eio_at_commit(cluster):
    for vol in cluster.volumes:
        vol.fail = grpc.StatusCode.INTERNAL
    cluster.master.volumes = {1: [cluster.locations[0]], 2: [cluster.locations[1]],
                              3: [cluster.locations[2]], 4: [cluster.locations[0]]}
    stream = cluster.client().open_stream(ino=5)
    stream.write(0, b"data")
    with pytest.raises(FsError) as exc:
        stream.commit(size=4)
    assert exc.value.errno == errno.EIO
    assert "replica v" in exc.value.message
    assert "INTERNAL" in exc.value.message
    assert cluster.master.commits == []
    # The failure sticks to the stream until it is aborted.
    with pytest.raises(FsError):
        stream.write(4, b"more")
    stream.abort()
    for vol in cluster.volumes:
        vol.fail = None
    stream.write(0, b"ok")
    stream.commit(size=2)
    assert len(cluster.master.commits) == 1


@pytest.mark.timeout(30)
def test_out_of_space_is_enospc(cluster):
    for vol in cluster.volumes:
        vol.fail = grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(FsError) as exc:
        cluster.client().write_small(ino=5, file_offset=0, data=b"d", size=1)
    assert exc.value.errno == errno.ENOSPC
    cluster.master.volumes = {}
    with pytest.raises(FsError) as exc:
        cluster.client().write_small(ino=5, file_offset=0, data=b"d", size=1)
    assert exc.value.errno == errno.ENOSPC


@pytest.mark.timeout(30)
def test_commit_rides_out_a_short_master_outage(cluster):
    cluster.master.commit_unavailable = 2
    attr = cluster.client().write_small(ino=3, file_offset=0, data=b"abc", size=3)
    assert attr.size == 3
    assert len(cluster.master.commits) == 1


# ---------------------------------------------------------------- malformed input

def _raw_request(**body) -> bytes:
    return gateway_pb2.Request(request_id=77, **body).SerializeToString()


def _write_header(data: bytes, **fields) -> bytes:
    write = dict(ino=1, file_offset=0, length=len(data), crc32c=crc32c.crc32c(data))
    write.update(fields)
    return _raw_request(write=gateway_pb2.Write(**write))


@pytest.mark.timeout(60)
def test_malformed_frames_get_einval_and_the_gateway_keeps_serving(caplog):
    cluster = Cluster(max_chunk=1024)
    cluster.master.volumes = {1: [cluster.locations[0]]}
    good = _write_header(b"abc")
    cases = [
        ("empty frame", [b""], 0),
        ("garbage", [b"\xff\xff\xff\xff\x0f garbage"], 0),
        ("truncated", [good[:-3], b"abc"], 0),
        ("no body", [gateway_pb2.Request(request_id=77).SerializeToString()], 77),
        ("unknown body", [_raw_request() + b"\x7a\x00"], 77),   # field 15, empty
        ("write without payload", [good], 77),
        ("write with 3 frames", [good, b"abc", b"more"], 77),
        ("length != payload", [good, b"abcd"], 77),
        ("length over max_chunk", [_write_header(b"x" * 2000), b"x" * 2000], 77),
        ("ino 0", [_write_header(b"abc", ino=0), b"abc"], 77),
        ("replication 9", [_write_header(b"abc", replication=9), b"abc"], 77),
        ("bad crc", [_write_header(b"abc", crc32c=1), b"abc"], 77),
        ("empty write", [_write_header(b""), b""], 77),
        ("commit ino 0", [_raw_request(commit=gateway_pb2.Commit(ino=0))], 77),
        ("commit bad chunk", [_raw_request(commit=gateway_pb2.Commit(
            ino=3, chunks=[master_pb2.Chunk(fid="", length=1)]))], 77),
        ("ping with payload", [_raw_request(ping=gateway_pb2.Ping()), b"x"], 77),
    ]
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 5000)
    dealer.connect(f"tcp://{cluster.address}")
    try:
        for name, frames, rid in cases:
            dealer.send_multipart(frames)
            reply = gateway_pb2.Reply.FromString(dealer.recv())
            assert reply.WhichOneof("body") == "error", name
            assert reply.error.errno_name == "EINVAL", (name, reply)
            assert reply.request_id == rid, name
        dealer.send_multipart([_raw_request(ping=gateway_pb2.Ping())])
        assert gateway_pb2.Reply.FromString(dealer.recv()).pong.name == "gw-test"
        assert cluster.client().write_small(ino=2, file_offset=0, data=b"ok", size=2).size == 2
        assert cluster.volumes[0].calls == 1  # nothing malformed reached a volume
        assert cluster.node.handler.stats["malformed"] == len(cases) - 1  # crc: in the writer
    finally:
        dealer.close(0)
        ctx.term()
        cluster.close()


# ---------------------------------------------------------------- flow control, failures

@pytest.mark.timeout(30)
def test_credits_bound_writes_in_flight(cluster):
    gate = threading.Event()
    cluster.volumes[0].gate = gate
    client = cluster.client(credits=2)
    stream = client.open_stream(ino=9)
    done = threading.Event()

    def writer():
        for i in range(6):
            stream.write(i * 10, b"0123456789")
        done.set()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while cluster.volumes[0].active < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert not done.is_set()
    assert stream.in_flight() == 2
    assert cluster.volumes[0].active == 2
    gate.set()
    assert done.wait(10)
    stream.commit(size=60)
    assert [c.file_offset for c in cluster.master.commits[0].chunks] == [0, 10, 20, 30, 40, 50]
    assert cluster.volumes[0].max_active <= 2


@pytest.mark.timeout(30)
def test_unreachable_gateway_fails_after_the_connect_grace_not_the_timeout():
    """A write to a gateway that is down fails once nothing could be sent for connect_grace
    seconds, long before the (long) reply timeout."""
    client = GatewayClient(f"127.0.0.1:{_free_port()}", timeout=60.0, connect_grace=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(FsError) as exc:
            client.write_small(3, 0, b"abc", 3)
        assert exc.value.errno == errno.EIO
        assert "not reachable" in exc.value.message
        assert time.monotonic() - started < 5
    finally:
        client.close()


@pytest.mark.timeout(30)
def test_dead_gateway_is_eio_within_the_timeout():
    client = GatewayClient(f"127.0.0.1:{_free_port()}", timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(FsError) as exc:
            client.ping(timeout=0.5)
        assert exc.value.errno == errno.EIO
        assert "did not answer" in exc.value.message
        stream = client.open_stream(ino=3)
        stream.write(0, b"abc")
        with pytest.raises(FsError) as exc:
            stream.commit(size=3)
        assert exc.value.errno == errno.EIO
        assert time.monotonic() - started < 5
    finally:
        client.close()


@pytest.mark.timeout(30)
def test_gateway_dying_mid_stream_fails_the_writer_with_eio(cluster):
    gate = threading.Event()
    cluster.volumes[0].gate = gate
    client = cluster.client(timeout=20.0)
    stream = client.open_stream(ino=4)
    stream.write(0, b"pending")
    deadline = time.monotonic() + 5
    while cluster.volumes[0].active < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    threading.Timer(0.2, gate.set).start()
    cluster.node.stop()
    with pytest.raises(FsError) as exc:
        stream.commit(size=7)
    assert exc.value.errno == errno.EIO
    assert time.monotonic() - started < 10  # noticed as a lost connection, not the 20 s timeout


@pytest.mark.timeout(30)
def test_closed_client_fails_fast(cluster):
    client = cluster.client()
    client.close()
    with pytest.raises(FsError) as exc:
        client.ping()
    assert exc.value.errno == errno.EIO


# ---------------------------------------------------------------- heartbeats, status

@pytest.mark.timeout(30)
def test_heartbeat_and_http_status(cluster):
    deadline = time.monotonic() + 5
    while not cluster.master.heartbeats and time.monotonic() < deadline:
        time.sleep(0.05)
    beat = cluster.master.heartbeats[0]
    assert beat.name == "gw-test"
    assert beat.address == cluster.address
    assert beat.http_address == f"127.0.0.1:{cluster.node.http_port}"
    cluster.client().write_small(ino=2, file_offset=0, data=b"ok", size=2)
    base = f"http://127.0.0.1:{cluster.node.http_port}"
    status = json.load(urllib.request.urlopen(f"{base}/status", timeout=5))
    assert status["name"] == "gw-test"
    assert status["chunks_written"] == 1
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert 'kelp_gateway_chunks_written_total{gateway="gw-test"}' in metrics
    assert "kelp_gateway_commit_seconds" in metrics


@pytest.mark.timeout(30)
def test_two_gateways_in_one_process_and_master_down():
    opts = dict(port=0, http_port=0, master=f"127.0.0.1:{_free_port()}")
    a = GatewayNode(GatewayOptions(name="a", **opts)).start()
    b = GatewayNode(GatewayOptions(name="b", **opts)).start()
    try:
        with GatewayClient(f"127.0.0.1:{a.port}", timeout=5) as ca, \
                GatewayClient(f"127.0.0.1:{b.port}", timeout=5) as cb:
            assert ca.ping() == "a"
            assert cb.ping() == "b"
    finally:
        a.stop()
        b.stop()
