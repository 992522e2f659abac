"""KelpOperations called directly (no kernel): the errno boundary, the caches, the write
buffer of a FileHandle (against a fake gateway), then every operation against a real cluster
(tests/harness.py: master, volume servers and gateway as processes)."""
from __future__ import annotations

import errno
import io
import os
import stat
import time

import crc32c
import grpc
import pytest

from cluster.common.errors import FsError
from fusefs.attrcache import AttrCache
from fusefs.errno_boundary import errno_boundary
from fusefs.filehandle import FileHandle
from fusefs.kernelsize import KernelSizes
from fusefs.operations import KelpOperations
from fusefs.operations_base import check_path
from fusefs.options import MountOptions
from protos import master_pb2

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
        def op():
            raise exc
        with pytest.raises(OSError) as info:
            op()
        assert info.value.errno == want, exc


@pytest.mark.timeout(10)
def test_name_too_long_is_checked_locally():
    check_path("/a/" + "x" * 255)
    with pytest.raises(OSError) as info:
        check_path("/a/" + "x" * 256)
    assert info.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError):
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
    """A rename of one file used to scan every cached path; 20,000 cached names made each
    invalidate_tree take milliseconds."""
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

    def mutate(self, op, request):
        assert op == "write_inline"
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


# ---------------------------------------------------------------- against a real cluster


@pytest.fixture
def ops(cluster):
    from tests.harness import client_for
    client = client_for(cluster)
    yield KelpOperations(client, MountOptions(mountpoint="/unused", attr_ttl=1.0))
    client.close()


def _errno(fn, *args):
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


@pytest.mark.timeout(90)
def test_namespace_operations(ops):
    ops.mkdir("/d", 0o755)
    assert stat.S_ISDIR(ops.getattr("/d")["st_mode"])
    fh = ops.create("/d/f", 0o644, os.O_WRONLY | os.O_CREAT)
    assert ops.write("/d/f", b"data", 0, fh) == 4
    assert ops.getattr("/d/f")["st_size"] == 4      # the open handle's size
    ops.release("/d/f", fh)
    st = ops.getattr("/d/f")
    assert st["st_size"] == 4
    assert st["st_blocks"] == 1
    assert {entry[0] for entry in ops.readdir("/d")} == {".", "..", "f"}
    assert _errno(ops.rmdir, "/d") == errno.ENOTEMPTY
    assert _errno(ops.rename, "/d", "/d/sub") == errno.EINVAL
    assert _errno(ops.mkdir, "/d/" + "n" * 256, 0o755) == errno.ENAMETOOLONG
    assert _errno(ops.getattr, "/nope") == errno.ENOENT
    assert _errno(ops.create, "/d/f", 0o644, os.O_WRONLY | os.O_CREAT | os.O_EXCL) == errno.EEXIST
    ops.symlink("/d/l", "f")
    assert ops.readlink("/d/l") == "f"
    ops.link("/d/h", "/d/f")
    assert ops.getattr("/d/f")["st_nlink"] == 2
    ops.chmod("/d/f", 0o600)
    assert stat.S_IMODE(ops.getattr("/d/f")["st_mode"]) == 0o600
    ops.utimens("/d/f", (1_000_000_000, 2_000_000_000))
    assert ops.getattr("/d/f")["st_mtime"] == 2_000_000_000
    ops.rename("/d/h", "/d/g")
    assert ops.getattr("/d/g")["st_ino"] == ops.getattr("/d/f")["st_ino"]
    ops.truncate("/d/f", 2)
    assert ops.getattr("/d/f")["st_size"] == 2
    ops.unlink("/d/l")
    ops.unlink("/d/f")
    assert ops.getattr("/d/g")["st_nlink"] == 1
    ops.unlink("/d/g")
    ops.rmdir("/d")
    assert _errno(ops.getattr, "/d") == errno.ENOENT
    assert ops.statfs("/")["f_namemax"] == 255


@pytest.mark.timeout(90)
def test_read_write_and_xattrs(ops):
    fh = ops.create("/big", 0o644, os.O_RDWR | os.O_CREAT)
    blob = os.urandom(300_000)
    for off in range(0, len(blob), 65536):
        ops.write("/big", blob[off:off + 65536], off, fh)
    assert ops.read("/big", 1000, 5000, fh) == blob[5000:6000]   # commits first
    ops.write("/big", b"X" * 10, 10, fh)
    ops.flush("/big", fh)
    ops.release("/big", fh)
    fh = ops.open("/big", os.O_RDONLY)
    data = ops.read("/big", len(blob) + 10, 0, fh)
    assert data == blob[:10] + b"X" * 10 + blob[20:]
    ops.release("/big", fh)

    fh = ops.open("/big", os.O_WRONLY | os.O_TRUNC)
    assert ops.getattr("/big", fh)["st_size"] == 0
    ops.release("/big", fh)

    assert _errno(ops.getxattr, "/big", "user.a") == errno.ENODATA
    ops.setxattr("/big", "user.a", b"v1", 0)
    assert ops.getxattr("/big", "user.a") == b"v1"
    assert "user.a" in ops.listxattr("/big")
    ops.removexattr("/big", "user.a")
    assert _errno(ops.getxattr, "/big", "user.a") == errno.ENODATA


@pytest.mark.timeout(90)
def test_unlinked_open_file_stays_usable(ops):
    fh = ops.create("/u", 0o644, os.O_RDWR | os.O_CREAT)
    ops.write("/u", b"before", 0, fh)
    ops.flush("/u", fh)
    ops.unlink("/u")
    assert _errno(ops.getattr, "/u") == errno.ENOENT
    ops.write(None, b"after!", 6, fh)
    assert ops.read(None, 100, 0, fh) == b"beforeafter!"
    assert ops.getattr(None, fh)["st_size"] == 12
    ops.release(None, fh)


@pytest.mark.timeout(90)
def test_a_walk_through_a_directory_lists_it_once_and_new_names_still_ask_the_master(ops):
    """stat of 200 names in one directory: the first few ask the master, then one listing
    answers the rest (DirPrefetcher). A name that appears after the listing is still found
    at once: "no such name" is never concluded from a listing."""
    ops.mkdir("/walk", 0o755)
    for i in range(200):
        ops.release(f"/walk/f{i}", ops.create(f"/walk/f{i}", 0o644, os.O_WRONLY | os.O_CREAT))
    ops.cache.clear()                       # as after a remount
    calls = []
    real_call = ops.master.call

    def counting_call(method, request, **kw):
        calls.append(method)
        return real_call(method, request, **kw)

    ops.master.call = counting_call
    for i in range(200):
        assert ops.getattr(f"/walk/f{i}")["st_size"] == 0
    assert calls.count("GetAttr") <= 10, calls.count("GetAttr")
    assert ops.prefetch.listings == 1
    # Another client adds a name after the listing: found at once, not "no such name".
    ops.master.call = real_call
    ops.client.master.call("Create", master_pb2.CreateRequest(path="/walk/late", mode=0o644))
    assert ops.getattr("/walk/late")["st_size"] == 0


@pytest.mark.timeout(60)
def test_readdir_head_returns_one_page_and_says_whether_there_is_more(ops):
    ops.mkdir("/head", 0o755)
    for i in range(12):
        ops.mkdir(f"/head/d{i:02d}", 0o755)
    entries, more = ops.master.readdir_head("/head", 5)
    assert [e.name for e in entries] == [f"d{i:02d}" for i in range(5)]
    assert more
    entries, more = ops.master.readdir_head("/head", 100)
    assert len(entries) == 12
    assert not more
    assert all(stat.S_ISDIR(e.attr.mode) for e in entries)
    with pytest.raises(FsError) as info:
        ops.master.readdir_head("/nope", 5)
    assert info.value.errno == errno.ENOENT


def _open_and_read(ops, path: str) -> tuple[bool, bytes]:
    """(opened with direct_io?, the whole file as one read returns it)"""
    fh = ops.open(path, os.O_RDONLY)
    try:
        return ops.direct_io(fh), ops.read(path, 1 << 20, 0, fh)
    finally:
        ops.release(path, fh)


@pytest.mark.timeout(90)
def test_open_is_direct_io_while_the_kernel_holds_another_size(cluster, ops):
    """A write() lost with EIO, or a change by another client, leaves the kernel with a size
    other than the file's: the next open bypasses the page cache (fusefs/kernelsize.py)."""
    fh = ops.create("/k", 0o644, os.O_WRONLY | os.O_CREAT)
    ops.write("/k", b"old!", 0, fh)
    ops.release("/k", fh)
    assert ops.getattr("/k")["st_size"] == 4
    assert _open_and_read(ops, "/k") == (False, b"old!")  # the usual case: page cache

    # 1. A write the kernel saw succeed, lost when the gateway went away.
    fh = ops.open("/k", os.O_WRONLY)
    ops.write("/k", b"n" * 100_000, 0, fh)
    cluster.kill("g0")
    with pytest.raises(OSError) as info:
        ops.flush("/k", fh)
    assert info.value.errno == errno.EIO
    ops.release("/k", fh)
    cluster.start_node("g0")
    assert _open_and_read(ops, "/k") == (True, b"old!")  # the old content, nothing past it
    time.sleep(1.1)                                     # past attr_ttl: getattr asks again
    assert ops.getattr("/k")["st_size"] == 4            # what the kernel now holds
    assert _open_and_read(ops, "/k") == (False, b"old!")

    # 2. Another client shrinks the file while this mount's answer is still cached.
    from tests.harness import client_for
    other = client_for(cluster)
    try:
        fh = ops.open("/k", os.O_WRONLY)
        ops.write("/k", b"x" * 50_000, 0, fh)
        ops.release("/k", fh)
        assert ops.getattr("/k")["st_size"] == 50_000
        other.master.call("SetAttr", master_pb2.SetAttrRequest(path="/k", size=10))
    finally:
        other.close()
    assert _open_and_read(ops, "/k") == (True, b"x" * 10)

    # 3. ... or grows it: the kernel would stop reading at the size it was told.
    assert ops.getattr("/k")["st_size"] == 10           # told (from the open's answer)
    other = client_for(cluster)
    try:
        other.upload(io.BytesIO(b"y" * 70_000), "/k")
    finally:
        other.close()
    assert _open_and_read(ops, "/k") == (True, b"y" * 70_000)
