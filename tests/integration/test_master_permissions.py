"""The master's own permission checks, through a mount that leaves them to it
(--no-default-permissions, --allow-other): the kernel then checks nothing, and what refuses
another user is the master, told each request's caller by the mount.

The cases are the POSIX suite's permission table (tests/integration/posix/
test_posix_permissions.py, where the kernel checks under default_permissions): the master
alone must give the kernel's answers. Each runs as nobody (65534) in a forked child, after
root built the tree and listed it (so the mount's caches hold root's answers: they must not
answer nobody). A second mount of the same cluster, with default permissions, checks that
the usual mount still works for the owner. Every test has a timeout; the module's fixture
unmounts both mounts and stops the cluster, whatever happens.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.harness import Mount
from tests.integration.mountutil import cluster_with_two_mounts, needs_fuse
from tests.integration.posix.posixutil import NOBODY, as_nobody, needs_root, touch
from tests.integration.posix.test_posix_permissions import PERM_CASES, _open, _perm_tree

pytestmark = [pytest.mark.mount, needs_fuse, needs_root]


@pytest.fixture(scope="module")
def mounts(tmp_path_factory):
    with cluster_with_two_mounts(tmp_path_factory, "master-perms",
                                 ("--no-default-permissions", "--allow-other"),
                                 "kernel", ("--allow-other",)) as (bare, kernel):
        yield {"bare": bare, "kernel": kernel}


_serial = iter(range(1_000_000))


def fresh_dir(mount: Mount, owner: int = 0) -> Path:
    """A new directory (0755, owned by `owner`) at the top of `mount`."""
    path = mount.mountpoint / f"t{next(_serial)}"
    path.mkdir()
    os.chmod(path, 0o755)
    os.chown(path, owner, owner)
    return path


@pytest.fixture
def d(mounts):
    old = os.umask(0o022)
    try:
        yield fresh_dir(mounts["bare"])
    finally:
        os.umask(old)


def _listing(d: Path) -> dict:
    return {p: sorted(os.listdir(d / p)) for p in ("", "sub", "open", "sticky")}


# The POSIX table, and what the kernel checks itself even without default_permissions (a
# chdir asks the file system: FUSE_ACCESS, which the mount hands to the master).
CASES = dict(PERM_CASES)
CASES["enter 0700 dir"] = (lambda: os.chdir("closed"), "EACCES")
CASES["access(R_OK) of 0600"] = (lambda: _access("f600", os.R_OK), "EACCES")
CASES["access(R_OK) of 0644"] = (lambda: _access("f644", os.R_OK), "OK")


def _access(path: str, mode: int) -> None:
    if not os.access(path, mode):
        raise PermissionError(13, "access refused", path)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.timeout(30)
def test_the_master_refuses_what_the_kernel_would(d, case):
    _perm_tree(d)
    fn, expect = CASES[case]
    listing = _listing(d)
    assert (d / "f600").read_bytes() == b"secret"     # root's answers are in the caches
    assert as_nobody(d, fn) == expect
    if expect != "OK":  # a refused operation changes nothing
        assert _listing(d) == listing
        assert (d / "f600").read_bytes() == b"secret"
        assert (d / "f666").read_bytes() == b"secret"
        assert os.stat(d / "f666").st_mode & 0o7777 == 0o666
        assert os.stat(d / "sticky" / "rootf").st_uid == 0


def _owned_tree(d: Path) -> None:
    """The same shapes as _perm_tree, all nobody's own (sticky: root's directory)."""
    _perm_tree(d)
    for p in ("f600", "f644", "f666", "sub", "closed", "closed/g", "open", "sticky/rootf"):
        os.chown(d / p, NOBODY, NOBODY)
    os.chown(d, NOBODY, NOBODY)


OWNER_CASES = {
    "read own 0600": _open("f600", os.O_RDONLY),
    "write own 0600": _open("f600", os.O_WRONLY),
    "list own 0700 dir": lambda: os.listdir("closed"),
    "enter own 0700 dir": lambda: os.chdir("closed"),
    "stat in own 0700 dir": lambda: os.stat("closed/g"),
    "create in own 0755 dir": _open("sub/new", os.O_WRONLY | os.O_CREAT),
    "delete own file in sticky dir": lambda: os.unlink("sticky/rootf"),
    "chmod own file": lambda: os.chmod("f666", 0o600),
    "utimensat own file": lambda: os.utime("f644", (1, 2)),
    "truncate own 0644": lambda: os.truncate("f644", 1),
    "rename in own dir": lambda: os.rename("f644", "sub/moved"),
}


@pytest.mark.parametrize("case", list(OWNER_CASES))
@pytest.mark.timeout(30)
def test_the_same_operations_as_the_owner_succeed(d, case):
    _owned_tree(d)
    _listing(d)
    assert as_nobody(d, OWNER_CASES[case]) == "OK"


@pytest.mark.timeout(60)
def test_a_file_root_read_is_still_refused_to_nobody_and_granted_after_chmod(d):
    secret = touch(d / "secret", 0o600, b"root's")
    for _ in range(2):   # the second open is answered from the mount's cache, for root
        assert secret.read_bytes() == b"root's"
    assert as_nobody(d, lambda: Path("secret").read_bytes()) == "EACCES"
    assert as_nobody(d, lambda: os.listdir(".")) == "OK"
    os.chmod(secret, 0o644)
    assert as_nobody(d, lambda: Path("secret").read_bytes()) == "OK"
    os.chmod(d, 0o700)   # and a directory closed after nobody looked inside
    assert as_nobody(d, lambda: os.stat("secret")) == "EACCES"


@pytest.mark.timeout(60)
def test_commands_run_as_another_user_are_refused_with_the_kernels_messages(d):
    """The same through the tools a user runs (setpriv drops to nobody with no groups).
    They run in `d`, entered as root (the test's tmp directories above the mount are 0700,
    which would refuse nobody before the mount is reached), with relative paths."""
    _perm_tree(d)

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               *cmd], capture_output=True, text=True, timeout=30, cwd=d)

    refused = {("cat", "f600"): "Permission denied",
               ("ls", "closed"): "Permission denied",
               ("touch", "sub/new"): "Permission denied",
               ("rm", "-f", "sticky/rootf"): "Operation not permitted",
               ("chmod", "777", "f666"): "Operation not permitted"}
    for cmd, message in refused.items():
        result = run(*cmd)
        assert result.returncode != 0, cmd
        assert message in result.stderr, (cmd, result.stderr)
    assert run("cat", "f644").stdout == "secret"
    assert run("ls", "sub").returncode == 0
    assert (d / "sticky" / "rootf").exists()
    assert os.stat(d / "f666").st_mode & 0o777 == 0o666


@pytest.mark.timeout(60)
def test_with_default_permissions_the_mount_works_as_before(mounts):
    """The usual mount (the kernel checks, the master checks again): an owner's work."""
    top = fresh_dir(mounts["kernel"])
    f = touch(top / "f", 0o600, b"one")
    assert f.read_bytes() == b"one"
    os.chmod(f, 0o444)
    os.rename(f, top / "g")
    assert (top / "g").read_bytes() == b"one"
    os.chmod(top, 0o777)

    def nobody_works():
        fd = os.open("mine", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o444)   # git's way
        os.write(fd, b"by nobody")
        os.close(fd)
        if Path("mine").read_bytes() != b"by nobody":
            raise OSError(5, "content differs")
        os.chmod("mine", 0o644)
        os.truncate("mine", 2)
        os.utime("mine", None)
        os.mkdir("d")
        os.rename("mine", "d/yours")
        os.unlink("d/yours")
        os.rmdir("d")

    assert as_nobody(top, nobody_works) == "OK"
    assert as_nobody(top, lambda: Path("g").read_bytes()) == "OK"      # 0444: readable
    assert as_nobody(top, _open("g", os.O_WRONLY)) == "EACCES"
    os.unlink(top / "g")
    assert os.listdir(top) == []
