"""KelpOperations' parts called directly (no kernel, no cluster): the errno boundary, the
caches, the write buffer of a FileHandle against a fake gateway, the kernel's sizes.
tests/integration/test_operations_cluster.py calls every operation against a real cluster."""
from __future__ import annotations

import errno
import os
import time

import crc32c
import grpc
import pytest

from cluster.common.errors import FsError
from fusefs.attrcache import AttrCache
from fusefs.errno_boundary import errno_boundary
from fusefs.filehandle import FileHandle
from fusefs.kernelsize import KernelSizes
from fusefs.operations_base import check_path
from protos import master_pb2
from tests.errnos import raises_errno

# ---------------------------------------------------------------- pure units


@pytest.mark.timeout(10)
def test_boundary_maps_every_failure_to_a_real_errno():
    class Rpc(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.NOT_FOUND

        def details(self):
            return "ENODATA: user.x"

    cases = [(FsError(errno.ENOTEMPTY, "d"), errno.ENOTEMPTY), (Rpc(), errno.ENODATA),
             (ValueError("bug"), errno.EIO), (KeyError("x"), errno.EIO),
             (OSError(errno.EXDEV, "x"), errno.EXDEV)]
    for exc, want in cases:
        @errno_boundary
        def op(exc=exc):
            raise exc
        with raises_errno(want):
            op()


@pytest.mark.timeout(10)
def test_name_too_long_is_checked_locally():
    check_path("/a/" + "x" * 255)
    with raises_errno(errno.ENAMETOOLONG):
        check_path("/a/" + "x" * 256)
    with raises_errno(errno.ENAMETOOLONG):
        check_path("/" + "é" * 128)  # 256 bytes in UTF-8


@pytest.mark.timeout(10)
def test_attr_cache_expires_and_invalidates():
    cache = AttrCache(ttl=0.2)
    a = master_pb2.Attr(ino=7, size=1)
    cache.put("/d/f", a)
    cache.put("/d/g", master_pb2.Attr(ino=8))
    assert cache.get("/d/f") is a
    cache.invalidate_ino(7)
    assert cache.get("/d/f") is None
    cache.put("/d/f", a)
    cache.invalidate_tree("/d")
    assert cache.get("/d/f") is None
    assert cache.get("/d/g") is None
    cache.put("/x", a)
    time.sleep(0.25)
    assert cache.get("/x") is None
    cache.put_xattr_absent("/x", "user.a")
    assert cache.xattr_absent("/x", "user.a")
    cache.drop_xattr("/x")
    assert not cache.xattr_absent("/x", "user.a")


@pytest.mark.timeout(10)
def test_attr_cache_subtree_invalidation_reaches_below_uncached_dirs_and_cleans_its_index():
    cache = AttrCache(ttl=5)
    cache.put("/a/b/c/f", master_pb2.Attr(ino=1))   # /a, /a/b, /a/b/c themselves not cached
    cache.put_absent("/a/b/new")
    cache.put_xattr_absent("/a/b/c/f", "security.capability")
    cache.put("/a2/g", master_pb2.Attr(ino=2))      # a sibling whose name extends /a
    cache.invalidate_tree("/a")
    assert cache.get("/a/b/c/f") is None
    assert not cache.is_absent("/a/b/new")
    assert not cache.xattr_absent("/a/b/c/f", "security.capability")
    assert cache.get("/a2/g") is not None
    cache.invalidate("/a2/g")
    assert cache._kids == {}  # nothing cached, nothing indexed


@pytest.mark.timeout(30)
def test_attr_cache_invalidation_cost_does_not_grow_with_the_cache():
    """A rename of one file must not scan every cached path: with 20,000 cached names a scan
    makes each invalidate_tree take milliseconds."""
    cache = AttrCache(ttl=60)
    for i in range(20_000):
        cache.put(f"/d/f{i}", master_pb2.Attr(ino=i + 10))
        cache.put_xattr_absent(f"/d/f{i}", "security.capability")
    t0 = time.perf_counter()
    for i in range(2_000):
        cache.invalidate_tree(f"/d/f{i}")
        cache.invalidate(f"/d/g{i}")
    per_call = (time.perf_counter() - t0) / 4_000
    assert per_call < 100e-6, f"{per_call * 1e6:.0f} us per invalidation"
    assert cache.get("/d/f1999") is None
    assert cache.get("/d/f2000") is not None


class FakeStream:
    def __init__(self, log, fail=False):
        self.log, self.fail = log, fail

    def write(self, offset, data):
        if self.fail:
            raise FsError(errno.EIO, "replica down")
        self.log.append(("write", offset, bytes(data)))

    def commit(self, size, mtime_ns=0, committer=None):
        # Stands in for the chunk writes and the commit alike, wherever the commit is sent.
        self.log.append(("commit", size))
        return master_pb2.Attr(ino=5, size=size)

    def abort(self):
        self.log.append(("abort",))


class FakeGateway:
    def __init__(self, fail=False):
        self.log, self.fail = [], fail

    def open_stream(self, ino, replication=0):
        return FakeStream(self.log, self.fail)

    def write_small(self, ino, offset, data, size, mtime_ns=0, replication=0, session=0):
        if self.fail:
            raise FsError(errno.EIO, "replica down")
        self.log.append(("small", offset, bytes(data), size))
        return master_pb2.Attr(ino=ino, size=size)


class FakeMaster:
    """The master as a FileHandle sees it; inline_max 0 (no inline files) unless a test
    sets it, with the inline bytes it was sent kept in `inline`."""

    def __init__(self, inline_max=0):
        self.inline_max = inline_max
        self.inline: dict[int, bytes] = {}
        self.log: list = []
        self.callers: list = []   # the caller each mutation was sent for

    @staticmethod
    def session_id() -> int:
        return 0   # no session (MasterClient.session_id)

    def call(self, method, request, timeout=None, retry=True):
        if method == "GetChunks":
            data = self.inline.get(request.ino)
            return master_pb2.FileChunks(
                attr=master_pb2.Attr(ino=request.ino, size=len(data or b""),
                                     inline=data is not None),
                inline_data=data or b"", inline_crc32c=crc32c.crc32c(data or b""))
        assert method == "GetAttrByIno"
        return master_pb2.Attr(ino=request.ino, size=3)

    def mutate(self, op, request, caller=None):
        assert op == "write_inline"
        self.callers.append(caller)
        end = request.offset + len(request.data)
        if end > self.inline_max:
            raise FsError(errno.EFBIG, "too big for inline")
        assert crc32c.crc32c(request.data) == request.crc32c
        body = bytearray(self.inline.get(request.ino, b""))
        body[request.offset:end] = request.data
        self.inline[request.ino] = bytes(body)
        self.log.append(("inline", request.offset, request.data))
        return master_pb2.Attr(ino=request.ino, size=len(body), inline=True)


class FakeClient:
    def __init__(self, fail=False, inline_max=0):
        self.gateway = FakeGateway(fail)
        self.master = FakeMaster(inline_max)


def _handle(client, chunk=4096, size=0):
    return FileHandle(1, 5, "/f", os.O_WRONLY, master_pb2.Attr(ino=5, size=size), client,
                      chunk_size=chunk)


@pytest.mark.timeout(10)
def test_small_file_is_one_round_trip():
    client = FakeClient()
    h = _handle(client)
    h.write(b"hello ", 0)
    h.write(b"world", 6)
    assert h.size == 11
    assert h.dirty
    h.commit()
    assert client.gateway.log == [("small", 0, b"hello world", 11)]
    assert not h.dirty


@pytest.mark.timeout(10)
def test_a_small_file_goes_inline_and_its_bytes_move_to_chunks_when_it_grows():
    client = FakeClient(inline_max=100)
    h = _handle(client)
    h.write(b"hello", 0)
    attr = h.commit()
    assert client.master.log == [("inline", 0, b"hello")]
    assert client.gateway.log == []
    assert attr.inline
    assert h.inline
    h.write(b"!" * 200, 5)                # past inline_max: the gateway takes the file
    h.commit()
    assert client.master.log[-1] == ("inline", 0, b"hello")  # nothing more inline
    # the master's inline bytes go first in the stream, the new bytes after them
    assert client.gateway.log[0] == ("write", 0, b"hello")
    assert client.gateway.log[1] == ("write", 5, b"!" * 200)
    assert client.gateway.log[-1][0] == "commit"
    assert not h.inline


@pytest.mark.timeout(10)
def test_full_chunks_stream_at_once_and_seeks_send_the_buffer():
    client = FakeClient()
    h = _handle(client)
    h.write(b"a" * 5000, 0)               # one full chunk goes at once
    assert client.gateway.log == [("write", 0, b"a" * 4096)]
    h.write(b"b" * 10, 100000)            # not contiguous: the 904-byte run goes first
    assert client.gateway.log[-1] == ("write", 4096, b"a" * 904)
    h.write(b"c", 100002)                 # inside the buffered run: patched in place
    h.commit()
    assert client.gateway.log[-2] == ("write", 100000, b"bbcbbbbbbb")
    assert client.gateway.log[-1] == ("commit", 100010)


@pytest.mark.timeout(10)
def test_append_writes_go_to_the_end():
    client = FakeClient()
    h = FileHandle(1, 5, "/f", os.O_WRONLY | os.O_APPEND, master_pb2.Attr(ino=5, size=3),
                   client)
    h.write(b"xy", 0)
    h.commit()
    assert client.gateway.log == [("small", 3, b"xy", 5)]


@pytest.mark.timeout(10)
def test_failed_write_is_eio_at_commit_and_pending_data_dropped():
    client = FakeClient(fail=True)
    h = _handle(client, size=3)
    h.write(b"zzz", 0)
    with pytest.raises(FsError) as info:
        h.commit()
    assert info.value.errno == errno.EIO
    assert not h.dirty
    assert h.size == 3


@pytest.mark.timeout(10)
def test_kernel_sizes_follow_answers_writes_and_renames_exactly():
    k = KernelSizes(max_entries=4)
    k.reported("/a", 100, k.token())
    assert not k.differs("/a", 100)
    assert k.differs("/a", 99)
    assert k.differs("/a", 101)
    k.grew("/a", 5000)                   # a write() the kernel saw succeed
    assert k.differs("/a", 100)          # ... and then lost: the file is still 100 bytes
    k.grew("/a", 10)                     # a write() inside the file: the size stays
    assert not k.differs("/a", 5000)
    token = k.token()
    k.grew("/a", 6000)                   # completes while a getattr computes its answer:
    k.reported("/a", 100, token)         # the kernel drops that answer, keeps 6000
    assert not k.differs("/a", 6000)
    k.reported("/a", 100, k.token())     # an answer no write() raced: the kernel holds 100
    assert not k.differs("/a", 100)
    token = k.token()
    k.grew("/other", 50)                 # a write() through another name races nothing here
    k.reported("/a", 70, token)
    assert not k.differs("/a", 70)
    assert not k.differs("/never", 0)    # never told anything: nothing to correct
    k.reported("/b", 3, k.token())       # a hard link: its own kernel inode, its own size
    k.grew("/a", 4)
    assert k.differs("/b", 70)
    assert not k.differs("/a", 70)
    k.renamed("/a", "/c")                # the kernel moves the inode with the name
    assert not k.differs("/c", 70)
    assert not k.differs("/a", 1)
    k.renamed("/x", "/b")                # an unknown name replaced /b: /b's inode is gone
    assert not k.differs("/b", 70)
    for i in range(10):                  # bounded
        k.reported(f"/n{i}", 1, k.token())
    assert len(k._told) <= 4
