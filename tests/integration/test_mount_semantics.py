"""POSIX semantics of a real mount that go beyond the everyday (test_mount_basic.py): large
trees with cp/diff/ls, a sparse file past 4 GiB, in-place overwrite that rewrites only the
changed range (checked against the master's chunk list), atomic rename under a concurrent
reader, fsync visible from a second mount, O_APPEND/ftruncate/utimens/chown/access, statfs,
and directory moves. Shell tools are used where a user would use them.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import subprocess
import termios
import threading
import time

import pytest

from fusefs.client import KelpClient
from fusefs.fuse_binding import LIBFUSE_MAJOR
from tests.errnos import raises_errno
from tests.harness import wait_until
from tests.integration.mountutil import (
    assert_clean_log,
    needs_fuse,
    sh,
    start_cluster_and_mount,
    stop_all,
)

pytestmark = [pytest.mark.mount, needs_fuse]

MiB = 1 << 20


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(cluster, mount point) shared by the module."""
    cluster, mount = start_cluster_and_mount(tmp_path_factory, "semantics")
    try:
        yield cluster, mount.mountpoint
    finally:
        stop_all(cluster, mount)
    assert_clean_log(mount)


@pytest.fixture
def mnt(env):
    return env[1]


@pytest.mark.timeout(240)
def test_cp_r_of_2000_small_files_diff_and_ls(mnt, tmp_path):
    src = tmp_path / "many"
    n = 0
    for d in range(20):
        sub = src / f"dir{d:02d}"
        sub.mkdir(parents=True)
        for i in range(100):
            # sizes 0..~2 KiB, every file with distinct content
            (sub / f"f{i:03d}.txt").write_bytes(f"{d}/{i}\n".encode() * (i % 37) * 7)
            n += 1
    assert n >= 2000
    sh(f"cp -r {src} {mnt}/many", timeout=200)
    sh(f"diff -r {src} {mnt}/many", timeout=120)
    listing = sh(f"ls -l {mnt}/many/dir07").stdout.splitlines()
    files = [line for line in listing if line.startswith("-")]
    assert len(files) == 100
    # ls -l shows each file's size
    sizes = {line.split()[-1]: int(line.split()[4]) for line in files}
    assert sizes == {p.name: p.stat().st_size for p in (src / "dir07").iterdir()}
    total = sh(f"find {mnt}/many -type f | wc -l").stdout.strip()
    assert int(total) == n


@pytest.mark.timeout(60)
def test_sparse_file_past_4_gib(mnt):
    f = mnt / "big-sparse.bin"
    off = 2 ** 32 + 12345
    sh(f"printf 'KelpFS!' | dd of={f} bs=1 seek={off} conv=notrunc status=none")
    assert os.stat(f).st_size == off + 7
    assert sh(f"stat -c %s {f}").stdout.strip() == str(off + 7)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert os.pread(fd, 7, off) == b"KelpFS!"
        assert os.pread(fd, 100, off - 50) == b"\0" * 50 + b"KelpFS!"
        # holes: at the start, across the 4 GiB line, just before the data
        assert os.pread(fd, 4096, 0) == b"\0" * 4096
        assert os.pread(fd, 8192, 2 ** 32 - 4096) == b"\0" * 8192
        assert os.pread(fd, 1000, 3 * 2 ** 30) == b"\0" * 1000
        assert os.pread(fd, 10, off + 7) == b""  # EOF
    finally:
        os.close(fd)
    # a second write below the first keeps both
    with open(f, "r+b") as fp:
        fp.seek(2 ** 32 - 3)
        fp.write(b"abcdef")
    with open(f, "rb") as fp:
        fp.seek(2 ** 32 - 3)
        assert fp.read(6) == b"abcdef"
        fp.seek(off)
        assert fp.read() == b"KelpFS!"
    os.unlink(f)


@pytest.mark.timeout(120)
def test_dd_notrunc_overwrite_rewrites_only_the_range(env, tmp_path):
    cluster, mnt = env
    local = tmp_path / "model.bin"
    original = os.urandom(20 * MiB)
    local.write_bytes(original)
    f = mnt / "twenty.bin"
    sh(f"cp {local} {f}")
    ino = os.stat(f).st_ino
    client = KelpClient(cluster.master_addr, cluster.gateway_addr)
    try:
        before = client.chunks(ino)
        assert before.attr.size == 20 * MiB
        old_fids = {c.fid for c in before.chunks}
        assert len(old_fids) >= 5  # 4 MiB chunks

        patch = tmp_path / "patch.bin"
        patch.write_bytes(os.urandom(100 * 1024))
        seek_kib = 7 * 1024 + 333  # inside the second chunk, not aligned to anything
        for target in (local, f):
            sh(f"dd if={patch} of={target} bs=1k seek={seek_kib} conv=notrunc status=none")
        expected = local.read_bytes()
        assert expected != original
        got = f.read_bytes()
        assert len(got) == 20 * MiB
        if got != expected:
            bad = next(i for i in range(len(got)) if got[i] != expected[i])
            pytest.fail(f"content differs from the local model at byte {bad}")
        # only [seek, seek + 100 KiB) changed
        lo, hi = seek_kib * 1024, seek_kib * 1024 + 100 * 1024
        assert got[:lo] == original[:lo]
        assert got[hi:] == original[hi:]

        after = client.chunks(ino)
        assert after.attr.size == 20 * MiB
        new = [c for c in after.chunks if c.fid not in old_fids]
        kept = {c.fid for c in after.chunks} & old_fids
        # The overwrite added a small piece; every old chunk is still referenced (the
        # patched one for its untouched head and tail).
        assert kept == old_fids, f"old chunks dropped: {old_fids - kept}"
        assert sum(c.length for c in new) <= 1 * MiB, \
            f"overwrite of 100 KiB wrote {sum(c.length for c in new)} bytes of new chunks"
        assert sum(c.length for c in after.chunks) == 20 * MiB  # no holes, no overlaps
    finally:
        client.close()
        os.unlink(f)


def _version(v: int) -> bytes:
    """Version v of the renamed file: its own byte and its own length, so a read that mixes
    two versions (or sees a truncated one) is detectable."""
    return bytes([v % 251 + 1]) * (150_000 + 97 * (v % 500))


def _whole_version(data: bytes) -> bool:
    if not data or data.count(data[0]) != len(data):
        return False
    return any(len(data) == 150_000 + 97 * (v % 500) for v in range(data[0] - 1, 100_000, 251))


def _rename_race(d, seconds: float, stop_on_enoent: bool) -> dict:
    """One thread renames new versions over d/current in a loop; two threads open and read it
    (os.open/os.read: Python's open() would also send an isatty ioctl). Returns counters and
    the problems seen."""
    target = d / "current"
    target.write_bytes(_version(0))
    stop = threading.Event()
    res = {"reads": 0, "renames": 0, "enoent": 0, "problems": []}

    def writer():
        v = 1
        try:
            while not stop.is_set():
                tmp = d / f"tmp{v}"
                tmp.write_bytes(_version(v))
                os.rename(tmp, target)
                res["renames"] += 1
                v += 1
        except Exception as e:
            res["problems"].append(f"writer: {e!r}")

    def reader():
        while not stop.is_set():
            try:
                fd = os.open(target, os.O_RDONLY)
            except FileNotFoundError:
                res["enoent"] += 1
                if stop_on_enoent:
                    return
                continue
            except OSError as e:
                res["problems"].append(f"open: {e!r}")
                return
            try:
                parts = []
                while chunk := os.read(fd, 65536):
                    parts.append(chunk)
                data = b"".join(parts)
            except OSError as e:
                res["problems"].append(f"read: {e!r}")
                return
            finally:
                os.close(fd)
            res["reads"] += 1
            if not _whole_version(data):
                res["problems"].append(f"torn read: {len(data)} bytes, "
                                       f"{len(set(data))} distinct values")
                return

    threads = [threading.Thread(target=writer), threading.Thread(target=reader),
               threading.Thread(target=reader)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not res["problems"] and not (
            stop_on_enoent and res["enoent"]):
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    return res


@pytest.mark.timeout(90)
def test_rename_over_existing_never_shows_a_mix(mnt):
    """Every read of a file replaced by rename in a loop sees one whole version."""
    d = mnt / "atomic-mix"
    d.mkdir()
    res = _rename_race(d, 5, stop_on_enoent=False)
    assert not res["problems"], res["problems"][:5]
    assert res["renames"] >= 10, res
    assert res["reads"] >= 10, res
    assert sorted(p.name for p in d.iterdir()) == ["current"]


@pytest.mark.xfail(strict=LIBFUSE_MAJOR < 3, reason=(
    "open() of a path that always exists fails with ENOENT when a rename over it races the "
    "open: libfuse's high-level API resolves FUSE_OPEN by node id to a path, and the node "
    "the kernel looked up was just unhashed by the rename (hard_remove), so fuse_lib_open "
    "answers -ENOENT without calling the driver. A local file system opens the old inode. "
    "On libfuse 2 it shows within seconds every time (strict); on libfuse 3 the window is "
    "narrower and 15 s of renames hit it in about one run of three, so there it is not strict"))
@pytest.mark.timeout(90)
def test_rename_over_existing_never_gives_enoent(mnt):
    d = mnt / "atomic-enoent"
    d.mkdir()
    res = _rename_race(d, 15, stop_on_enoent=True)  # stops at the first ENOENT
    assert not res["problems"], res["problems"][:5]
    assert res["enoent"] == 0, f"open gave ENOENT {res['enoent']} times during {res}"


@pytest.mark.timeout(90)
def test_fsync_makes_data_visible_to_a_second_mount(env, mount_factory):
    cluster, _ = env
    m1 = mount_factory(cluster, "m1").mountpoint
    m2 = mount_factory(cluster, "m2").mountpoint
    path1, path2 = m1 / "synced.bin", m2 / "synced.bin"
    data = os.urandom(5 * MiB + 17)
    fd = os.open(path1, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        assert os.fsync(fd) is None  # returns 0 (no exception)
        # still open in m1: the other mount sees the whole file already
        assert path2.read_bytes() == data
        os.write(fd, b"tail")
        os.fdatasync(fd)
        assert path2.read_bytes() == data + b"tail"
    finally:
        os.close(fd)
    os.unlink(path2)
    # the first mount trusts its cached name for up to attr_ttl (1 s by default)
    wait_until(lambda: not path1.exists(), timeout=5, what="unlink seen by the other mount")


@pytest.mark.timeout(60)
def test_append_ftruncate_utimens_chown(mnt):
    f = mnt / "attrs.txt"
    for line in (b"first\n", b"second\n"):
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, line)
        os.close(fd)
    assert f.read_bytes() == b"first\nsecond\n"

    fd = os.open(f, os.O_RDWR)
    try:
        os.ftruncate(fd, 3)
        assert os.fstat(fd).st_size == 3
        assert os.pread(fd, 100, 0) == b"fir"
        os.ftruncate(fd, 8)
        assert os.pread(fd, 100, 0) == b"fir" + b"\0" * 5
        os.pwrite(fd, b"XY", 1)
    finally:
        os.close(fd)
    assert f.read_bytes() == b"fXY" + b"\0" * 5
    assert os.stat(f).st_size == 8

    sh(f"touch -d '2001-09-09 01:46:40 UTC' {f}")
    assert sh(f"stat -c %Y {f}").stdout.strip() == "1000000000"
    sh(f"touch -m -d @1234567890 {f}")
    assert int(sh(f"stat -c %Y {f}").stdout) == 1234567890
    assert os.stat(f).st_mtime == 1234567890

    os.chown(f, 4321, 8765)
    st_ = os.stat(f)
    assert (st_.st_uid, st_.st_gid) == (4321, 8765)
    assert sh(f"stat -c '%u %g' {f}").stdout.split() == ["4321", "8765"]
    os.chown(f, -1, 99)  # group only
    st_ = os.stat(f)
    assert (st_.st_uid, st_.st_gid) == (4321, 99)
    os.chown(f, 0, 0)


def _test_flags(path, drop_caps: bool) -> str:
    """Which of test -r/-w/-x succeed on path, as root or as root without DAC overrides."""
    prefix = "setpriv --bounding-set=-dac_override,-dac_read_search " if drop_caps else ""
    out = ""
    for flag in "rwx":
        rc = subprocess.run(f"{prefix}test -{flag} {path}", shell=True,
                            timeout=20).returncode
        out += flag if rc == 0 else "-"
    return out


@pytest.mark.timeout(60)
def test_access_via_test_builtin(mnt, tmp_path):
    f = mnt / "perm.sh"
    f.write_text("#!/bin/sh\n")
    local = tmp_path / "perm.sh"
    local.write_text("#!/bin/sh\n")
    for mode, as_root in ((0o644, "rw-"), (0o755, "rwx"), (0o000, "rw-"), (0o100, "rwx")):
        os.chmod(f, mode)
        os.chmod(local, mode)
        assert _test_flags(f, drop_caps=False) == as_root, oct(mode)
        # without CAP_DAC_OVERRIDE the owner bits decide, as on a local file system
        assert _test_flags(f, drop_caps=True) == _test_flags(local, drop_caps=True), oct(mode)
    os.chmod(f, 0o400)
    assert _test_flags(f, drop_caps=True) == "r--"
    os.chmod(f, 0o200)
    assert _test_flags(f, drop_caps=True) == "-w-"
    assert sh(f"test -e {f}", check=False).returncode == 0
    assert sh(f"test -e {mnt}/no-such-file", check=False).returncode == 1


@pytest.mark.timeout(60)
def test_df_and_statvfs(mnt):
    line = sh(f"df -P {mnt}").stdout.splitlines()[-1].split()
    assert line[0].startswith("kelpfs")
    size_k, used_k, avail_k = int(line[1]), int(line[2]), int(line[3])
    assert size_k > 0
    assert avail_k > 0
    assert used_k >= 0
    assert avail_k <= size_k
    v = os.statvfs(mnt)
    assert v.f_bsize > 0
    assert v.f_frsize > 0
    assert v.f_blocks > 0
    assert 0 <= v.f_bavail <= v.f_bfree <= v.f_blocks
    assert v.f_ffree <= v.f_files
    assert v.f_favail <= v.f_files
    assert v.f_namemax == 255
    assert "kelpfs" in sh(f"df -T {mnt}").stdout


@pytest.mark.timeout(90)
def test_mv_directory_tree_and_rmdir_not_empty(mnt, tmp_path):
    src = tmp_path / "proj"
    for rel in ("a/b/c", "a/d", "e"):
        (src / rel).mkdir(parents=True)
    files = {"top.txt": b"top", "a/x.bin": os.urandom(70_000), "a/b/c/deep.txt": b"deep",
             "a/d/empty": b"", "e/y.txt": b"y" * 5000}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    sh(f"cp -r {src} {mnt}/proj")
    (mnt / "moved").mkdir()
    sh(f"mv {mnt}/proj {mnt}/moved/proj2")
    assert not (mnt / "proj").exists()
    sh(f"diff -r {src} {mnt}/moved/proj2")
    assert sh(f"ls {mnt}/moved/proj2/a").stdout.split() == ["b", "d", "x.bin"]
    assert sh(f"ls {mnt}/moved/proj2/a/b/c").stdout.split() == ["deep.txt"]
    found = sorted(sh(f"cd {mnt}/moved/proj2 && find . -type f").stdout.split())
    assert found == sorted(f"./{rel}" for rel in files)
    # a moved subtree keeps working for writes and further moves
    sh(f"mv {mnt}/moved/proj2/a/b {mnt}/moved/proj2/e/b")
    (mnt / "moved/proj2/e/b/c/new.txt").write_text("new")
    assert (mnt / "moved/proj2/e/b/c/deep.txt").read_bytes() == b"deep"
    assert not (mnt / "moved/proj2/a/b").exists()

    with raises_errno(errno.ENOTEMPTY):
        os.rmdir(mnt / "moved/proj2")
    r = sh(f"rmdir {mnt}/moved/proj2/e", check=False)
    assert r.returncode != 0
    assert "not empty" in r.stderr.lower()
    os.unlink(mnt / "moved/proj2/a/d/empty")
    os.rmdir(mnt / "moved/proj2/a/d")  # empty now
    assert sorted(os.listdir(mnt / "moved/proj2/a")) == ["x.bin"]
    sh(f"rm -r {mnt}/moved")
    assert not (mnt / "moved").exists()
    assert stat.S_ISDIR(os.stat(mnt).st_mode)


@pytest.mark.timeout(60)
def test_ioctl_on_an_open_file_is_enotty(env, mount_factory):
    """isatty() (which Python's open() calls) on an open file of the mount: ENOTTY, as on
    a local file, and no noise in the mount's log."""
    cluster, _ = env
    m = mount_factory(cluster, "ioctl")
    f = m.mountpoint / "tty.txt"
    f.write_text("not a tty")
    fd = os.open(f, os.O_RDONLY)
    try:
        assert not os.isatty(fd)
        with raises_errno(errno.ENOTTY):
            fcntl.ioctl(fd, termios.TCGETS, bytes(64))
    finally:
        os.close(fd)
    assert_clean_log(m)


@pytest.mark.timeout(60)
def test_ioctl_on_an_unlinked_open_file_is_enotty(env, mount_factory):
    cluster, _ = env
    m = mount_factory(cluster, "ioctl-unlinked")
    f = m.mountpoint / "gone.txt"
    f.write_text("soon unlinked")
    fd = os.open(f, os.O_RDONLY)
    try:
        os.unlink(f)
        with raises_errno(errno.ENOTTY):
            fcntl.ioctl(fd, termios.TCGETS, bytes(64))
        assert os.read(fd, 100) == b"soon unlinked"
    finally:
        os.close(fd)
    assert_clean_log(m)


@pytest.mark.timeout(60)
def test_link_count_of_the_existing_name_right_after_link(mnt):
    d = mnt / "nlink"
    d.mkdir()
    (d / "b").write_text("data\n")
    os.stat(d / "b")  # the kernel now caches b's attributes (nlink 1)
    sh(f"ln {d}/b {d}/a")
    assert sh(f"stat -c %h {d}/a").stdout.strip() == "2"
    assert sh(f"stat -c %h {d}/b").stdout.strip() == "2"


@pytest.mark.timeout(60)
def test_two_open_appenders_keep_both_writes(mnt):
    f = mnt / "shared.log"
    fa = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    fb = os.open(f, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fa, b"a\n")
        os.close(fa)
        fa = -1
        os.write(fb, b"b\n")
    finally:
        if fa >= 0:
            os.close(fa)
        os.close(fb)
    assert f.read_bytes() == b"a\nb\n"


@pytest.mark.timeout(60)
def test_two_writers_on_disjoint_ranges_keep_both(mnt):
    f = mnt / "regions.bin"
    f1 = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    f2 = os.open(f, os.O_RDWR)
    try:
        os.pwrite(f1, b"a" * 10, 0)
        os.pwrite(f2, b"b" * 10, 10)
    finally:
        os.close(f2)
        os.close(f1)
    assert f.read_bytes() == b"a" * 10 + b"b" * 10


@pytest.mark.xfail(strict=True, reason=(
    "fstat() of an open file whose name was unlinked fails with ENOENT (fchmod, fchown and "
    "futimens too) whenever the kernel has no cached attributes: the kernel's FUSE_GETATTR "
    "for fstat carries no file handle, and libfuse 2's high-level API cannot make a path "
    "for a node removed with hard_remove. Reading and writing the fd keep working."))
@pytest.mark.timeout(60)
def test_fstat_of_an_open_unlinked_file(mnt):
    f = mnt / "unlinked-fstat"
    f.write_bytes(b"12345")
    fd = os.open(f, os.O_RDONLY)
    try:
        os.unlink(f)
        assert os.pread(fd, 10, 0) == b"12345"
        assert os.fstat(fd).st_size == 5
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)


@pytest.mark.timeout(60)
def test_mkfifo_makes_a_fifo(mnt):
    """Special files are stored (test_special_files.py has every type under every op)."""
    p = mnt / "fifo"
    os.mkfifo(p, 0o644)
    assert stat.S_ISFIFO(os.lstat(p).st_mode)
    os.unlink(p)
    # mknod of a regular file works.
    os.mknod(mnt / "plain", 0o640 | stat.S_IFREG)
    assert stat.S_ISREG(os.lstat(mnt / "plain").st_mode)
    assert stat.S_IMODE(os.lstat(mnt / "plain").st_mode) == 0o640
