"""The volume server over a real gRPC server on port 0, with a fake master in this file."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial

import grpc
import pytest

from cluster.common import blocks, rpc
from cluster.volume import needle as fmt
from cluster.volume.heartbeat import load_server_id
from cluster.volume.options import VolumeOptions
from cluster.volume.server import VolumeNode
from protos import master_pb2, master_pb2_grpc, volume_pb2, volume_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeMaster(master_pb2_grpc.MasterServicer):
    """Just the cluster RPCs a volume server calls; records what it receives."""

    def __init__(self, size_limit: int = 0, first_id: int = 42):
        self.size_limit = size_limit
        self.next_id = first_id
        self.known: set[int] = set()
        self.registrations: list[master_pb2.RegisterRequest] = []
        self.heartbeats: list[master_pb2.Heartbeat] = []
        self.cond = threading.Condition()

    def RegisterVolumeServer(self, request, context):
        with self.cond:
            self.registrations.append(request)
            sid = request.server_id
            if not sid:
                sid, self.next_id = self.next_id, self.next_id + 1
            self.known.add(sid)
            self.cond.notify_all()
        return master_pb2.RegisterResponse(server_id=sid, heartbeat_interval_ms=50,
                                           volume_size_limit=self.size_limit,
                                           master_name="fake")

    def SendHeartbeat(self, request, context):
        with self.cond:
            self.heartbeats.append(request)
            self.cond.notify_all()
            return master_pb2.HeartbeatResponse(reregister=request.server_id not in self.known)

    def wait_for(self, predicate, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "fake master: condition not reached"


class MasterProcess:
    """A fake master on a gRPC server; restartable on the same port."""

    def __init__(self, fake: FakeMaster, port: int = 0):
        self.fake = fake
        self.server, _ = rpc.make_server(4)
        master_pb2_grpc.add_MasterServicer_to_server(fake, self.server)
        self.port = rpc.bind(self.server, "127.0.0.1", port)
        self.server.start()
        self.address = f"127.0.0.1:{self.port}"

    def stop(self):
        self.server.stop(0).wait()


def node_opts(tmp_path, master: str, name: str = "v1", **kw) -> VolumeOptions:
    return VolumeOptions(ip="127.0.0.1", port=0, grpc_port=0, name=name, master=master,
                         dir=str(tmp_path / name), min_free_bytes=0, **kw)


@pytest.fixture
def cluster(tmp_path):
    master = MasterProcess(FakeMaster())
    node = VolumeNode(node_opts(tmp_path, master.address)).start()
    ch = rpc.channel(node.grpc_address)
    yield master, node, volume_pb2_grpc.VolumeStub(ch)
    ch.close()
    node.stop()
    master.stop()


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), e.value.details()


def write_req(vid, key, cookie, data, crc=None):
    return volume_pb2.WriteRequest(volume_id=vid, key=key, cookie=cookie, data=data,
                                   crc32c=fmt.crc32c(data) if crc is None else crc)


@pytest.mark.timeout(30)
def test_round_trip_over_grpc(cluster):
    _master, node, stub = cluster
    st = stub.AllocateVolume(volume_pb2.AllocateRequest(volume_id=3, replication=2))
    assert st.volume_id == 3
    assert st.replication == 2
    assert not st.read_only
    data = os.urandom(4 << 20)
    assert stub.WriteNeedle(write_req(3, 0x1234, 0xCAFE, data)).size == len(data)
    r = stub.ReadNeedle(volume_pb2.ReadRequest(volume_id=3, key=0x1234, cookie=0xCAFE))
    assert r.data == data
    assert r.needle_size == len(data)
    assert r.needle_crc32c == fmt.crc32c(data)
    r = stub.ReadNeedle(volume_pb2.ReadRequest(volume_id=3, key=0x1234, cookie=0xCAFE,
                                               offset=1000, length=24))
    assert r.data == data[1000:1024]
    assert r.needle_size == len(data)
    lst = stub.ListNeedles(volume_pb2.VolumeRef(volume_id=3))
    assert [(n.key, n.cookie, n.size, n.crc32c) for n in lst.needles] == \
        [(0x1234, 0xCAFE, len(data), fmt.crc32c(data))]
    status = stub.Status(volume_pb2.StatusRequest())
    assert status.name == "v1"
    assert status.volumes[0].file_count == 1
    assert status.free_bytes > 0
    assert stub.DeleteNeedle(volume_pb2.DeleteRequest(volume_id=3, key=0x1234,
                                                      cookie=0xCAFE)).freed == len(data)
    assert stub.DeleteNeedle(volume_pb2.DeleteRequest(volume_id=3, key=0x1234,
                                                      cookie=0xCAFE)).freed == 0
    code, _ = code_of(lambda: stub.ReadNeedle(
        volume_pb2.ReadRequest(volume_id=3, key=0x1234, cookie=0xCAFE)))
    assert code == grpc.StatusCode.NOT_FOUND

    # HTTP: /status lists the volume, /metrics counts the bytes
    with urllib.request.urlopen(f"http://{node.http_address}/status", timeout=5) as resp:
        js = json.loads(resp.read())
    assert js["name"] == "v1"
    assert js["volumes"][0]["volume_id"] == 3
    with urllib.request.urlopen(f"http://{node.http_address}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'kelp_volume_bytes_written_total{node="v1"}' in text
    assert rpc.check_health(node.grpc_address)


@pytest.mark.timeout(30)
def test_whole_blocks_reads_answer_the_covering_blocks_with_their_crcs(cluster, tmp_path):
    """ReadRequest.whole_blocks: a range comes back as its covering 64 KiB blocks and their
    CRCs (checked on the server; the client checks them again). A damaged block is
    DATA_LOSS for the reads that cover it, while the needle's other blocks still read."""
    _master, _node, stub = cluster
    stub.AllocateVolume(volume_pb2.AllocateRequest(volume_id=4, replication=1))
    bs = blocks.BLOCK_SIZE
    data = os.urandom(4 * bs + 10)
    stub.WriteNeedle(write_req(4, 7, 9, data))

    def read(offset, length, whole_blocks=True):
        return stub.ReadNeedle(volume_pb2.ReadRequest(volume_id=4, key=7, cookie=9, offset=offset,
                                                      length=length, whole_blocks=whole_blocks))

    r = read(bs + 100, 4096)
    assert (r.data_offset, r.block_size, r.needle_size) == (bs, bs, len(data))
    assert r.data == data[bs:2 * bs]
    assert list(r.block_crc32c) == [fmt.crc32c(data[bs:2 * bs])]
    assert r.needle_crc32c == fmt.crc32c(data)
    r = read(4 * bs - 1, 0)                               # to the end: blocks 3 and 4 (short)
    assert r.data_offset == 3 * bs
    assert r.data == data[3 * bs:]
    assert list(r.block_crc32c) == blocks.crcs(data[3 * bs:])
    r = read(bs + 100, 4096, whole_blocks=False)          # the exact range, as before
    assert r.data == data[bs + 100:bs + 4196]
    assert r.data_offset == bs + 100
    assert not r.block_crc32c
    r = read(0, 0)                                        # a whole read has no block CRCs
    assert r.data == data
    assert not r.block_crc32c

    at = fmt.SUPERBLOCK_SIZE + fmt.NEEDLE_HEADER_SIZE + 2 * bs + 5
    with open(tmp_path / "v1" / "4.dat", "r+b") as fh:   # damage block 2 on disk (version 2
        fh.seek(at)                                       # caches nothing: seen at once)
        fh.write(bytes([data[2 * bs + 5] ^ 0xFF]))
    for offset, length in ((2 * bs, 10), (bs, 2 * bs), (0, 0)):
        code, details = code_of(partial(read, offset, length))
        assert code == grpc.StatusCode.DATA_LOSS
        assert "CRC mismatch" in details
    assert read(3 * bs, 10).data == data[3 * bs:4 * bs]


@pytest.mark.timeout(30)
def test_error_statuses(cluster, tmp_path):
    _master, node, stub = cluster
    stub.AllocateVolume(volume_pb2.AllocateRequest(volume_id=1, replication=1))
    stub.WriteNeedle(write_req(1, 7, 77, b"payload"))

    code, msg = code_of(lambda: stub.WriteNeedle(write_req(99, 7, 77, b"x")))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "99" in msg
    code, _ = code_of(lambda: stub.ReadNeedle(volume_pb2.ReadRequest(volume_id=99, key=7)))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = code_of(lambda: stub.ListNeedles(volume_pb2.VolumeRef(volume_id=99)))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = code_of(lambda: stub.ReadNeedle(volume_pb2.ReadRequest(volume_id=1, key=8,
                                                                     cookie=77)))
    assert code == grpc.StatusCode.NOT_FOUND
    code, msg = code_of(lambda: stub.ReadNeedle(volume_pb2.ReadRequest(volume_id=1, key=7,
                                                                       cookie=78)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "cookie" in msg
    code, _ = code_of(lambda: stub.DeleteNeedle(volume_pb2.DeleteRequest(volume_id=1, key=7,
                                                                         cookie=78)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, msg = code_of(lambda: stub.WriteNeedle(write_req(1, 9, 1, b"data", crc=12345)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert msg.startswith("EINVAL")
    code, _ = code_of(lambda: stub.AllocateVolume(volume_pb2.AllocateRequest(volume_id=2)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(lambda: stub.ReadNeedle(volume_pb2.ReadRequest(volume_id=1, key=7,
                                                                     cookie=77, offset=100)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    # corrupt the stored data: DATA_LOSS, never the bytes
    dat = os.path.join(node.opts.dir, "1.dat")
    with open(dat, "r+b") as fh:
        fh.seek(fmt.SUPERBLOCK_SIZE + fmt.NEEDLE_HEADER_SIZE + 2)
        fh.write(b"X")
    code, msg = code_of(lambda: stub.ReadNeedle(volume_pb2.ReadRequest(volume_id=1, key=7,
                                                                       cookie=77)))
    assert code == grpc.StatusCode.DATA_LOSS
    assert "CRC" in msg

    # a full volume: FAILED_PRECONDITION, and it reports read_only
    node.store.get(1).set_size_limit(200)
    code, _ = code_of(lambda: stub.WriteNeedle(write_req(1, 10, 1, b"y" * 500)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert stub.Status(volume_pb2.StatusRequest()).volumes[0].read_only

    with urllib.request.urlopen(f"http://{node.http_address}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'kelp_volume_errors_total{code="DATA_LOSS",method="ReadNeedle",node="v1"}' in text


@pytest.mark.timeout(30)
def test_registration_heartbeats_and_id_reuse(tmp_path):
    fake = FakeMaster(size_limit=1 << 20)
    master = MasterProcess(fake)
    opts = node_opts(tmp_path, master.address)
    node = VolumeNode(opts).start()
    try:
        assert node.heartbeater.registered.wait(10)
        reg = fake.registrations[0]
        assert reg.server_id == 0
        assert reg.name == "v1"
        assert reg.grpc_address == node.grpc_address
        assert reg.http_address == node.http_address
        assert load_server_id(opts.dir) == 42
        with rpc.channel(node.grpc_address) as ch:
            stub = volume_pb2_grpc.VolumeStub(ch)
            stub.AllocateVolume(volume_pb2.AllocateRequest(volume_id=5, replication=1))
            assert stub.Status(volume_pb2.StatusRequest()).server_id == 42
        fake.wait_for(lambda: any(h.volumes and h.volumes[0].volume_id == 5
                                  for h in fake.heartbeats))
        hb = next(h for h in fake.heartbeats if h.volumes)
        assert hb.server_id == 42
        assert hb.total_bytes >= hb.free_bytes > 0
        assert hb.max_volumes == opts.max_volumes
        assert hb.name == "v1"
        assert node.store.size_limit == 1 << 20         # the master's limit was applied
        n = len(fake.heartbeats)
        fake.wait_for(lambda: len(fake.heartbeats) >= n + 3)   # periodic, every 50 ms
    finally:
        node.stop()

    node = VolumeNode(opts).start()                     # restart: same id offered again
    try:
        fake.wait_for(lambda: len(fake.registrations) == 2)
        assert fake.registrations[1].server_id == 42
        assert fake.next_id == 43                       # no new id was handed out
        # the master forgets us (a restart): the next heartbeat asks to register again
        with fake.cond:
            fake.known.clear()
        fake.wait_for(lambda: len(fake.registrations) == 3)
        assert fake.registrations[2].server_id == 42
    finally:
        node.stop()
        master.stop()


@pytest.mark.timeout(30)
def test_serves_while_master_down_and_registers_later(tmp_path):
    probe = MasterProcess(FakeMaster())
    port = probe.port
    probe.stop()                                        # nothing listens there now
    node = VolumeNode(node_opts(tmp_path, f"127.0.0.1:{port}")).start()
    try:
        with rpc.channel(node.grpc_address) as ch:
            stub = volume_pb2_grpc.VolumeStub(ch)
            stub.AllocateVolume(volume_pb2.AllocateRequest(volume_id=1, replication=1))
            stub.WriteNeedle(write_req(1, 1, 1, b"no master needed"))
            assert stub.ReadNeedle(volume_pb2.ReadRequest(volume_id=1, key=1,
                                                          cookie=1)).data == b"no master needed"
        assert not node.heartbeater.registered.is_set()
        time.sleep(2.5)                                 # an outage long enough for backoffs to grow
        fake = FakeMaster(first_id=7)
        master = MasterProcess(fake, port)              # the master comes up
        try:
            fake.wait_for(lambda: any(h.volumes for h in fake.heartbeats), timeout=5)
            assert fake.registrations[0].server_id == 0
            assert node.server_id == 7
        finally:
            master.stop()
    finally:
        node.stop()
    assert node.wait(0)


@pytest.mark.timeout(30)
def test_two_nodes_in_one_process(tmp_path):
    master = MasterProcess(FakeMaster())
    a = VolumeNode(node_opts(tmp_path, master.address, "a")).start()
    b = VolumeNode(node_opts(tmp_path, master.address, "b")).start()
    try:
        assert a.grpc_port != b.grpc_port
        assert a.http_port != b.http_port
        master.fake.wait_for(lambda: len({r.name for r in master.fake.registrations}) == 2)
    finally:
        a.stop()
        b.stop()
        master.stop()


@pytest.mark.timeout(30)
def test_main_stops_cleanly_on_sigterm(tmp_path):
    code = ("import sys; from cluster.volume.options import VolumeOptions;"
            "from cluster.volume.server import main;"
            f"sys.exit(main(VolumeOptions(port=0, grpc_port=0, dir={str(tmp_path / 'v')!r},"
            "master='127.0.0.1:1', min_free_bytes=0)))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(tmp_path / "v") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)                                 # let it reach its wait loop
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
