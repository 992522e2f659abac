"""Gateway logic called directly, with stubs for its peers: the volume WriteRequest encoding,
call_master's retries, and the Assigner's fid batches."""
from __future__ import annotations

import errno
import threading
import time

import grpc
import pytest

from cluster.common.errors import FsError
from cluster.common.fid import Fid
from cluster.gateway.assigner import Assigner
from cluster.gateway.mastercall import call_master
from cluster.gateway.writer import encode_write_request
from protos import master_pb2, volume_pb2


@pytest.mark.timeout(10)
def test_encode_write_request_matches_protobuf():
    fid = Fid(3, 0x1234, 0xDEADBEEF)
    data = memoryview(b"y" * 300)
    parsed = volume_pb2.WriteRequest.FromString(encode_write_request(fid, data, 99))
    assert (parsed.volume_id, parsed.key, parsed.cookie, parsed.crc32c) == (3, 0x1234,
                                                                           0xDEADBEEF, 99)
    assert parsed.data == bytes(data)


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "connection refused"


@pytest.mark.timeout(10)
def test_call_master_retries_unavailable_then_gives_eio():
    calls = []

    def flaky(request, timeout):
        calls.append(request)
        if len(calls) < 3:
            raise _Unavailable()
        return "ok"

    assert call_master(flaky, "req", what="test", patience=5) == "ok"

    def down(request, timeout):
        raise _Unavailable()

    started = time.monotonic()
    with pytest.raises(FsError) as exc:
        call_master(down, "req", what="test", patience=0.3)
    assert exc.value.errno == errno.EIO
    assert "unavailable" in exc.value.message
    assert time.monotonic() - started < 2


class _StubMaster:
    def __init__(self):
        self.requests = []
        self.key = 0

    def Assign(self, request, timeout=None):
        self.requests.append(request)
        out = []
        for _ in range(request.count):
            self.key += 1
            vid = 1 if 1 not in request.avoid_volumes and self.key % 2 else 2
            out.append(master_pb2.Assignment(fid=str(Fid(vid, self.key, 1)),
                                             replicas=[master_pb2.Location(name="v")]))
        return master_pb2.AssignResponse(assignments=out)


@pytest.mark.timeout(10)
def test_assigner_batches_avoids_and_expires():
    stub = _StubMaster()
    assigner = Assigner(stub, batch=4, ttl=0.2)
    fids = [assigner.next().fid for _ in range(4)]
    assert len(set(fids)) == 4
    assert len(stub.requests) == 1
    assigner.next()
    assert len(stub.requests) == 2
    assert assigner.cached() == 3
    assigner.avoid(1)  # cached: keys 6 (vol 2), 7 (vol 1), 8 (vol 2) -> 7 is dropped
    assert assigner.cached() == 2
    assert [Fid.parse(assigner.next().fid).key for _ in range(2)] == [6, 8]
    assert len(stub.requests) == 2
    assigner.next()  # cache empty: the next Assign names the avoided volume
    assert list(stub.requests[-1].avoid_volumes) == [1]
    time.sleep(0.3)
    before = len(stub.requests)
    assigner.next()  # the cached fids expired
    assert len(stub.requests) == before + 1
    assert list(stub.requests[-1].avoid_volumes) == []  # the avoidance expired too


class _AvoidDuringAssign(_StubMaster):
    """Another writer avoids volume 1 (it just filled up) while this Assign is answered."""

    def __init__(self):
        super().__init__()
        self.assigner = None

    def Assign(self, request, timeout=None):
        reply = super().Assign(request, timeout)
        if len(self.requests) == 1:
            reply = master_pb2.AssignResponse(assignments=[
                master_pb2.Assignment(fid=str(Fid(1, 100 + i, 1)),
                                      replicas=[master_pb2.Location(name="v")])
                for i in range(request.count)])
            self.assigner.avoid(1)
        return reply


@pytest.mark.timeout(10)
def test_assigner_asks_again_when_a_batch_is_avoided_on_arrival():
    """A volume can fill up while another chunk's Assign is answered with fids on it (a
    1 GiB write does it): the assigner asks again, avoiding that volume, instead of failing
    the write with ENOSPC on a cluster with room."""
    stub = _AvoidDuringAssign()
    assigner = stub.assigner = Assigner(stub, batch=4)
    fid = Fid.parse(assigner.next().fid)
    assert fid.volume_id == 2
    assert len(stub.requests) == 2
    assert list(stub.requests[1].avoid_volumes) == [1]


@pytest.mark.timeout(10)
def test_assigner_is_thread_safe():
    stub = _StubMaster()
    assigner = Assigner(stub, batch=8)
    got, lock = [], threading.Lock()

    def take():
        for _ in range(50):
            fid = assigner.next().fid
            with lock:
                got.append(fid)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == 400
