"""Permissions, checked by the kernel under default_permissions from the attributes the
mount returns: each case runs as nobody (65534) in a forked child."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.integration.mountutil import needs_fuse
from tests.integration.posix.posixutil import NOBODY, as_nobody, needs_root, touch, utimensat

pytestmark = [pytest.mark.mount, needs_fuse, needs_root]



def _perm_tree(d: Path) -> None:
    """d (root 0755) holds: f600, f644, f666 (root files), sub (root 0755, empty), closed
    (root 0700 with g), open (0777, with mine owned by nobody), sticky (1777 with rootf 0666
    and mine owned by nobody)."""
    for name, mode in (("f600", 0o600), ("f644", 0o644), ("f666", 0o666)):
        touch(d / name, mode, b"secret")
    for name, mode in (("sub", 0o755), ("closed", 0o700), ("open", 0o777), ("sticky", 0o1777)):
        (d / name).mkdir()
        os.chmod(d / name, mode)
    touch(d / "closed" / "g", 0o644)
    touch(d / "sticky" / "rootf", 0o666)
    for p in ("open/mine", "sticky/mine"):
        touch(d / p, 0o644)
        os.chown(d / p, NOBODY, NOBODY)


def _open(path, flags):
    return lambda: os.close(os.open(path, flags, 0o644))


PERM_CASES = {
    # a root directory without write permission for others
    "create in 0755 dir": (_open("new", os.O_WRONLY | os.O_CREAT), "EACCES"),
    "mkdir in 0755 dir": (lambda: os.mkdir("new"), "EACCES"),
    "symlink in 0755 dir": (lambda: os.symlink("x", "new"), "EACCES"),
    "link in 0755 dir": (lambda: os.link("f666", "new"), "EACCES"),
    "rename in 0755 dir": (lambda: os.rename("f666", "new"), "EACCES"),
    "unlink in 0755 dir": (lambda: os.unlink("f666"), "EACCES"),
    "rmdir in 0755 dir": (lambda: os.rmdir("sub"), "EACCES"),
    # root files
    "read 0600": (_open("f600", os.O_RDONLY), "EACCES"),
    "write 0600": (_open("f600", os.O_WRONLY), "EACCES"),
    "O_CREAT of existing 0600": (_open("f600", os.O_RDWR | os.O_CREAT), "EACCES"),
    "read 0644": (_open("f644", os.O_RDONLY), "OK"),
    "write 0644": (_open("f644", os.O_WRONLY), "EACCES"),
    "truncate 0644": (lambda: os.truncate("f644", 0), "EACCES"),
    "chmod not owner": (lambda: os.chmod("f666", 0o777), "EPERM"),
    "chown to self": (lambda: os.chown("f666", NOBODY, NOBODY), "EPERM"),
    "utimensat times not owner": (lambda: utimensat("f666", 10**18, 10**18), "EPERM"),
    "utimensat now 0644": (lambda: utimensat("f644", "now", "now"), "EACCES"),
    "utimensat now 0666": (lambda: utimensat("f666", "now", "now"), "OK"),
    "link 0600 (protected_hardlinks)": (lambda: os.link("f600", "open/l"), "EPERM"),
    # a root directory without x (and r) for others
    "stat in 0700 dir": (lambda: os.stat("closed/g"), "EACCES"),
    "open in 0700 dir": (_open("closed/g", os.O_RDONLY), "EACCES"),
    "list 0700 dir": (lambda: os.listdir("closed"), "EACCES"),
    "create in 0700 dir": (_open("closed/new", os.O_WRONLY | os.O_CREAT), "EACCES"),
    # sticky directory
    "unlink other's in sticky": (lambda: os.unlink("sticky/rootf"), "EPERM"),
    "rename other's in sticky": (lambda: os.rename("sticky/rootf", "sticky/x"), "EPERM"),
    "unlink own in sticky": (lambda: os.unlink("sticky/mine"), "OK"),
    # what an owner may do
    "chmod own": (lambda: os.chmod("open/mine", 0o600), "OK"),
    "utimensat times own": (lambda: utimensat("open/mine", 10**18, 10**18), "OK"),
    "chown own to root": (lambda: os.chown("open/mine", 0, -1), "EPERM"),
    "chgrp own to a foreign group": (lambda: os.chown("open/mine", -1, 0), "EPERM"),
}


@pytest.mark.parametrize("case", list(PERM_CASES))
@pytest.mark.timeout(30)
def test_permissions_as_nobody(d, case):
    _perm_tree(d)
    fn, expect = PERM_CASES[case]
    listing = {p: sorted(os.listdir(d / p)) for p in ("", "sub", "open", "sticky")}
    assert as_nobody(d, fn) == expect
    if expect != "OK":  # a refused operation changes nothing
        assert {p: sorted(os.listdir(d / p)) for p in listing} == listing
        assert (d / "f600").read_bytes() == b"secret"
        assert (d / "f666").read_bytes() == b"secret"


@pytest.mark.parametrize("what", ["file", "dir", "symlink"])
@pytest.mark.timeout(30)
def test_new_objects_belong_to_the_caller(d, what):
    os.chmod(d, 0o777)
    fn = {"file": _open("new", os.O_WRONLY | os.O_CREAT),
          "dir": lambda: os.mkdir("new"),
          "symlink": lambda: os.symlink("target", "new")}[what]
    assert as_nobody(d, fn) == "OK"
    st = os.lstat(d / "new")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)


@pytest.mark.timeout(30)
def test_nobody_can_write_and_read_back_its_own_file(d):
    os.chmod(d, 0o777)

    def work():
        fd = os.open("mine", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"by nobody")
        os.close(fd)
        with open("mine", "rb") as fp:
            if fp.read() != b"by nobody":
                raise OSError(errno.EIO, "content differs")
        os.truncate("mine", 2)
        os.rename("mine", "yours")
        os.unlink("yours")
    assert as_nobody(d, work) == "OK"
    assert os.listdir(d) == []
