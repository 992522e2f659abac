"""Attributes: chmod's mode bits, chown's owner and group (and the setuid/setgid bits it
clears), utimensat's explicit, 'now' and 'omit' times, and the ctime each of them moves."""
from __future__ import annotations

import os
import stat
import time

import pytest

from tests.integration.mountutil import needs_fuse
from tests.integration.posix.posixutil import (
    AT_SYMLINK_NOFOLLOW,
    NOBODY,
    as_nobody,
    both,
    changed,
    needs_root,
    now,
    touch,
    unchanged,
    utimensat,
)

pytestmark = [pytest.mark.mount, needs_fuse, needs_root]


# =========================================================================== chmod


@pytest.mark.parametrize("mode", [0o000, 0o644, 0o4755, 0o2755, 0o1777, 0o7777])
@pytest.mark.timeout(30)
def test_chmod_file_mode_bits(d, mode):
    f = touch(d / "f")
    os.chmod(f, mode)
    assert os.lstat(f).st_mode == stat.S_IFREG | mode


@pytest.mark.parametrize("mode", [0o700, 0o1777, 0o2755, 0o555])
@pytest.mark.timeout(30)
def test_chmod_dir_mode_bits(d, mode):
    (d / "s").mkdir()
    os.chmod(d / "s", mode)
    assert os.lstat(d / "s").st_mode == stat.S_IFDIR | mode


@both
@pytest.mark.parametrize("kind", ["file", "dir", "fchmod", "via-symlink"])
@pytest.mark.timeout(30)
def test_chmod_updates_ctime_not_mtime(d, kind):
    if kind == "dir":
        (d / "t").mkdir()
    else:
        touch(d / "t", data=b"abc")
    os.symlink("t", d / "l")
    before = os.lstat(d / "t")
    lbefore = os.lstat(d / "l")
    t0 = now()
    if kind == "fchmod":
        fd = os.open(d / "t", os.O_RDONLY)
        os.fchmod(fd, 0o640)
        os.close(fd)
    else:
        os.chmod(d / ("l" if kind == "via-symlink" else "t"), 0o640)
    after = os.lstat(d / "t")
    assert stat.S_IMODE(after.st_mode) == 0o640
    changed(before, after, t0, "ctime")
    unchanged(before, after, "mtime")
    # the symlink itself is untouched when chmod follows it
    assert os.lstat(d / "l").st_ctime_ns == lbefore.st_ctime_ns


@pytest.mark.timeout(30)
def test_chmod_failure_changes_nothing(d):
    f = touch(d / "f")
    before = os.lstat(f)
    assert as_nobody(d, lambda: os.chmod("f", 0o777)) == "EPERM"
    after = os.lstat(f)
    assert after.st_mode == before.st_mode
    assert after.st_ctime_ns == before.st_ctime_ns

# =========================================================================== chown


@both
@pytest.mark.parametrize(("uid", "gid"), [(NOBODY, NOBODY), (1000, -1), (-1, -1)])
@pytest.mark.timeout(30)
def test_chown_sets_owner_and_ctime_not_mtime(d, uid, gid):
    f = touch(d / "f", data=b"x")
    before = os.lstat(f)
    t0 = now()
    os.chown(f, uid, gid)
    after = os.lstat(f)
    assert after.st_uid == (before.st_uid if uid == -1 else uid)
    assert after.st_gid == (before.st_gid if gid == -1 else gid)
    unchanged(before, after, "mtime")
    if (uid, gid) != (-1, -1):
        changed(before, after, t0, "ctime")


@pytest.mark.parametrize("kind", ["file", "dir"])
@pytest.mark.timeout(30)
def test_chown_clears_setuid_setgid_of_files_only(d, kind):
    p = d / "p"
    if kind == "dir":
        p.mkdir()
    else:
        touch(p)
    os.chmod(p, 0o6755)
    os.chown(p, NOBODY, NOBODY)
    st = os.lstat(p)
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    # Linux: chown of a regular file drops S_ISUID and (with group exec) S_ISGID, even by
    # root; a directory keeps them.
    assert stat.S_IMODE(st.st_mode) == (0o755 if kind == "file" else 0o6755)


@pytest.mark.timeout(30)
def test_lchown_changes_the_link_not_its_target(d):
    f = touch(d / "f")
    os.symlink("f", d / "l")
    os.chown(d / "l", NOBODY, NOBODY, follow_symlinks=False)
    assert (os.lstat(d / "l").st_uid, os.lstat(d / "l").st_gid) == (NOBODY, NOBODY)
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (0, 0)
    os.chown(d / "l", 1000, 1000)  # follows
    assert os.stat(f).st_uid == 1000
    assert os.lstat(d / "l").st_uid == NOBODY

# =========================================================================== utimensat


@both
@pytest.mark.timeout(30)
def test_utimensat_explicit_times_keep_nanoseconds(d):
    f = touch(d / "f", data=b"x")
    before = os.lstat(f)
    t0 = now()
    atime, mtime = 1_000_000_123_456_789, 1_500_000_987_654_321
    utimensat(f, atime, mtime)
    st = os.lstat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)
    changed(before, st, t0, "ctime")


@both
@pytest.mark.parametrize(("atime", "mtime"), [("now", "now"), ("omit", "now"), ("now", "omit"),
                                         ("omit", "omit"), ("now", 10**18), (None, None)])
@pytest.mark.timeout(30)
def test_utimensat_now_and_omit(d, atime, mtime):
    f = touch(d / "f", data=b"x")
    utimensat(f, 5 * 10**17, 6 * 10**17)   # a known past
    before = os.lstat(f)
    t0 = now()
    if atime is None:
        os.utime(f)                          # times == NULL: both now
        atime = mtime = "now"
    else:
        utimensat(f, atime, mtime)
    t1 = time.time_ns()
    st = os.lstat(f)
    for name, want, old in (("atime", atime, before.st_atime_ns),
                            ("mtime", mtime, before.st_mtime_ns)):
        got = getattr(st, f"st_{name}_ns")
        if want == "now":
            assert t0 <= got <= t1, f"{name} {got} not in [{t0}, {t1}]"
        elif want == "omit":
            assert got == old, f"{name} changed by UTIME_OMIT"
        else:
            assert got == want
    if (atime, mtime) == ("omit", "omit"):
        unchanged(before, st, "ctime")
    else:
        changed(before, st, t0, "ctime")


@both
@pytest.mark.timeout(30)
def test_utimensat_after_pending_writes_sticks(d):
    # tar and cp -p: write, set mtime, close; the close must not stamp mtime again
    fd = os.open(d / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"payload")
        utimensat(d / "f", 10**18, 2 * 10**18)
    finally:
        os.close(fd)
    st = os.lstat(d / "f")
    assert (st.st_size, st.st_atime_ns, st.st_mtime_ns) == (7, 10**18, 2 * 10**18)


@pytest.mark.timeout(30)
def test_utimensat_nofollow_sets_the_link(d):
    f = touch(d / "f")
    os.symlink("f", d / "l")
    ft = os.lstat(f).st_mtime_ns
    utimensat(d / "l", 10**18, 10**18, AT_SYMLINK_NOFOLLOW)
    assert os.lstat(d / "l").st_mtime_ns == 10**18
    assert os.lstat(f).st_mtime_ns == ft
    utimensat(d / "l", 10**17, 10**17)      # follows
    assert os.lstat(f).st_mtime_ns == 10**17


@pytest.mark.timeout(30)
def test_utimensat_directory(d):
    (d / "s").mkdir()
    utimensat(d / "s", 10**18, 2 * 10**18)
    st = os.lstat(d / "s")
    assert (st.st_atime_ns, st.st_mtime_ns) == (10**18, 2 * 10**18)
