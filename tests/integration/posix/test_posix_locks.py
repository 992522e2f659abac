"""fcntl locks: a lock conflicts with another process's on the same mount and on the other
mount of the same cluster."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import pytest

from fusefs.fuse_binding import LIBFUSE_MAJOR
from tests.integration.mountutil import needs_fuse
from tests.integration.posix.posixutil import needs_root, touch

pytestmark = [pytest.mark.mount, needs_fuse, needs_root]



def _try_lock_in_child(path: str) -> str:
    code = ("import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "try:\n"
            "    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "    print('LOCKED')\n"
            "except OSError as e:\n"
            "    print('BUSY', e.errno)\n")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         timeout=20)
    return out.stdout.strip() + out.stderr.strip()


@pytest.mark.timeout(60)
def test_fcntl_lock_conflicts_within_one_mount(d):
    f = touch(d / "f", 0o666, b"lock")
    fd = os.open(f, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _try_lock_in_child(str(f)).startswith("BUSY")
    finally:
        os.close(fd)
    assert _try_lock_in_child(str(f)) == "LOCKED"


@pytest.mark.xfail(LIBFUSE_MAJOR < 3, strict=True, reason=(
    "documented difference on libfuse 2: no locks across mounts (fusepy gives the driver no "
    "lock owner, so the kernel keeps flock/fcntl locks local to one mount)"))
@pytest.mark.timeout(60)
def test_fcntl_lock_conflicts_across_mounts(d, other):
    f = touch(d / "f", 0o666, b"lock")
    fd = os.open(f, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _try_lock_in_child(str(other / d.name / "f")).startswith("BUSY")
    finally:
        os.close(fd)
