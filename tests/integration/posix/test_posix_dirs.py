"""Directories: mkdir (mode under umask, link counts, times, a setgid directory's group) and
rmdir (the parent's link count and times, and its errors)."""
from __future__ import annotations

import os
import stat
import time

import pytest

from tests.integration.mountutil import needs_fuse
from tests.integration.posix.posixutil import NOBODY, E, both, changed, needs_root, now, touch

pytestmark = [pytest.mark.mount, needs_fuse, needs_root]


# =========================================================================== mkdir


@pytest.mark.parametrize(("mode", "expect"), [(0o755, 0o755), (0o777, 0o755), (0o700, 0o700),
                                         (0o1777, 0o1755), (0o000, 0o000)])
@pytest.mark.timeout(30)
def test_mkdir_mode_uses_umask(d, mode, expect):
    os.mkdir(d / "s", mode)
    st = os.lstat(d / "s")
    assert st.st_mode == stat.S_IFDIR | expect
    assert (st.st_uid, st.st_gid, st.st_size >= 0) == (0, 0, True)


@both
@pytest.mark.timeout(30)
def test_mkdir_links_and_times(d):
    pb = os.lstat(d)
    assert pb.st_nlink == 2
    t0 = now()
    os.mkdir(d / "s")
    t1 = time.time_ns()
    st, pa = os.lstat(d / "s"), os.lstat(d)
    assert st.st_nlink == 2                                  # its name and its '.'
    assert pa.st_nlink == 3                                  # the child's '..'
    changed(pb, pa, t0, "mtime", "ctime")
    for f in ("atime", "mtime", "ctime"):
        assert t0 <= getattr(st, f"st_{f}_ns") <= t1
    assert os.lstat(d / "s" / "..").st_ino == pa.st_ino
    assert os.lstat(d / "s" / ".").st_ino == st.st_ino
    os.mkdir(d / "t")
    assert os.lstat(d).st_nlink == 4
    os.mkdir(d / "s" / "u")
    assert os.lstat(d / "s").st_nlink == 3
    assert os.lstat(d).st_nlink == 4


@pytest.mark.parametrize("kind", ["file", "dir"])
@pytest.mark.timeout(30)
def test_setgid_dir_passes_its_group_on(d, kind):
    os.chown(d, 0, NOBODY)
    os.chmod(d, 0o2775)
    if kind == "dir":
        os.mkdir(d / "new", 0o755)
    else:
        os.close(os.open(d / "new", os.O_WRONLY | os.O_CREAT, 0o644))
    st = os.lstat(d / "new")
    assert st.st_gid == NOBODY
    assert stat.S_IMODE(st.st_mode) == (0o2755 if kind == "dir" else 0o644)

# =========================================================================== rmdir


@both
@pytest.mark.timeout(30)
def test_rmdir_updates_parent(d):
    (d / "s").mkdir()
    pb = os.lstat(d)
    assert pb.st_nlink == 3
    t0 = now()
    os.rmdir(d / "s")
    pa = os.lstat(d)
    assert not os.path.lexists(d / "s")
    assert pa.st_nlink == 2
    changed(pb, pa, t0, "mtime", "ctime")


@pytest.mark.parametrize(("case", "expect"), [
    ("with a file", "ENOTEMPTY"),
    ("with a subdir", "ENOTEMPTY"),
    ("a file", "ENOTDIR"),
    ("a symlink to a dir", "ENOTDIR"),
    ("dot", "EINVAL"),
    ("dotdot", "ENOTEMPTY"),
])
@pytest.mark.timeout(30)
def test_rmdir_errors(d, case, expect):
    (d / "s").mkdir()
    touch(d / "f")
    os.symlink("s", d / "ls")
    path = {"with a file": "s/f", "with a subdir": "s/sub",
            "a file": "f", "a symlink to a dir": "ls", "dot": "s/.", "dotdot": "s/sub/.."}[case]
    if case == "with a file":
        touch(d / "s" / "f")
    elif case in ("with a subdir", "dotdot"):
        (d / "s" / "sub").mkdir()
    target = f"{d}/{path}" if case in ("dot", "dotdot") else d / path.split("/")[0]
    assert E(os.rmdir, target) in ((expect, "EEXIST") if expect == "ENOTEMPTY" else (expect,))
    assert os.path.isdir(d / "s")
