"""KelpOperations called directly (no kernel) against a real cluster (tests/harness.py:
master, volume servers and gateway as processes): the namespace operations and their errnos,
reads, writes and xattrs, unlinked open files, directory prefetch, and direct_io while the
kernel holds another size."""
from __future__ import annotations

import errno
import io
import os
import stat
import time

import pytest

from cluster.common.errors import FsError
from fusefs.operations import KelpOperations
from fusefs.options import MountOptions
from protos import master_pb2
from tests.errnos import raises_errno
from tests.harness import client_for


@pytest.fixture
def ops(cluster):
    client = client_for(cluster)
    yield KelpOperations(client, MountOptions(mountpoint="/unused", attr_ttl=1.0))
    client.close()


def _errno(fn, *args):
    """The errno fn(*args) fails with."""
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    raise AssertionError(f"{fn.__name__}{args} did not fail")


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
    with raises_errno(errno.EIO):
        ops.flush("/k", fh)
    ops.release("/k", fh)
    cluster.start_node("g0")
    assert _open_and_read(ops, "/k") == (True, b"old!")  # the old content, nothing past it
    time.sleep(1.1)                                     # past attr_ttl: getattr asks again
    assert ops.getattr("/k")["st_size"] == 4            # what the kernel now holds
    assert _open_and_read(ops, "/k") == (False, b"old!")

    # 2. Another client shrinks the file while this mount's answer is still cached.
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
