"""Path resolution and names, for every operation that takes a path: ENOENT, ENOTDIR and
ENAMETOOLONG, a name of NAME_MAX bytes, and EEXIST for every way of creating a name that
exists."""
from __future__ import annotations

import os

import pytest

from tests.integration.mountutil import needs_fuse
from tests.integration.posix.posixutil import LONG, MAX, E, needs_root, touch, utimensat

pytestmark = [pytest.mark.mount, needs_fuse, needs_root]



def _ops():
    """op name -> fn(d, path): the op applied to `path` as its subject (new name for the ops
    that create). d holds 'file' (a regular file) and 'dir' (an empty directory)."""
    return {
        "chmod": lambda d, p: os.chmod(p, 0o600),
        "chown": lambda d, p: os.chown(p, 0, 0),
        "link-src": lambda d, p: os.link(p, d / "newlink"),
        "link-dst": lambda d, p: os.link(d / "file", p),
        "mkdir": lambda d, p: os.mkdir(p),
        "open": lambda d, p: os.close(os.open(p, os.O_RDONLY)),
        "open-creat": lambda d, p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)),
        "rename-src": lambda d, p: os.rename(p, d / "renamed"),
        "rename-dst": lambda d, p: os.rename(d / "file", p),
        "rmdir": lambda d, p: os.rmdir(p),
        "symlink": lambda d, p: os.symlink("target", p),
        "truncate": lambda d, p: os.truncate(p, 0),
        "unlink": lambda d, p: os.unlink(p),
        "utimensat": lambda d, p: utimensat(p, "now", "now"),
    }


OPS = _ops()


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("case", ["ENOENT", "ENOTDIR", "ENAMETOOLONG"])
@pytest.mark.timeout(30)
def test_path_errors(d, op, case):
    """ENOENT: a missing directory in the path; ENOTDIR: a regular file used as a directory;
    ENAMETOOLONG: a 256-byte component."""
    touch(d / "file", data=b"x")
    (d / "dir").mkdir()
    path = {"ENOENT": d / "missing" / "x", "ENOTDIR": d / "file" / "x",
            "ENAMETOOLONG": d / LONG}[case]
    assert E(OPS[op], d, path) == case
    assert sorted(os.listdir(d)) == ["dir", "file"]  # nothing created or removed


@pytest.mark.parametrize("op", ["link-dst", "mkdir", "open-creat", "rename-dst", "symlink"])
@pytest.mark.timeout(30)
def test_name_max_is_allowed(d, op):
    touch(d / "file", data=b"x")
    OPS[op](d, d / MAX)
    assert MAX in os.listdir(d)
    os.lstat(d / MAX)


@pytest.mark.parametrize("op", ["link-dst", "mkdir", "open-excl", "symlink"])
@pytest.mark.parametrize("existing", ["file", "dir", "dangling"])
@pytest.mark.timeout(30)
def test_create_over_existing_is_eexist(d, op, existing):
    touch(d / "file", data=b"x")
    (d / "dir").mkdir()
    os.symlink("file", d / "symlink")
    os.symlink("nowhere", d / "dangling")
    before = os.lstat(d / existing)
    fn = {"link-dst": lambda p: os.link(d / "file", p),
          "mkdir": os.mkdir,
          "open-excl": lambda p: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644),
          "symlink": lambda p: os.symlink("x", p)}[op]
    assert E(fn, d / existing) == "EEXIST"
    after = os.lstat(d / existing)
    assert (after.st_ino, after.st_mode, after.st_size) == (
        before.st_ino, before.st_mode, before.st_size)
    assert not os.path.lexists(d / "nowhere")  # O_EXCL never follows the dangling link
