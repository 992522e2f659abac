"""Two mounts of one cluster (close-to-open), and mount.py's refusals and background mode."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.harness import REPO_ROOT, Mount
from tests.integration.mountutil import (
    assert_clean_log,
    needs_fuse,
    start_cluster_and_mount,
    stop_all,
)
from tools.mounts import unmount

pytestmark = [pytest.mark.mount, needs_fuse]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cluster, first = start_cluster_and_mount(tmp_path_factory, "multi")
    second = None
    try:
        second = Mount(cluster, first.mountpoint.parent / "mnt2").start()
        yield cluster, first.mountpoint, second.mountpoint
    finally:
        mounts = [m for m in (first, second) if m is not None]
        stop_all(cluster, *mounts)
    assert_clean_log(*mounts)


def _mount_py(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, str(REPO_ROOT / "mount.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.timeout(60)
def test_close_to_open_between_mounts(pair):
    _, a, b = pair
    (a / "shared.txt").write_text("v1")
    assert (b / "shared.txt").read_text() == "v1"
    with open(b / "shared.txt", "w") as fp:
        fp.write("version two")
    assert (a / "shared.txt").read_text() == "version two"
    (a / "dir").mkdir()
    assert (b / "dir").is_dir()
    os.rename(a / "shared.txt", a / "dir/moved.txt")
    deadline = time.monotonic() + 5
    while (b / "shared.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # names cached by the other kernel expire after attr-ttl
    assert (b / "dir/moved.txt").read_text() == "version two"


@pytest.mark.timeout(60)
def test_a_file_replaced_by_rename_in_one_mount_opens_new_in_the_other(pair):
    """The editor's save (write a temp file, rename it over the name) in mount A; mount B has
    the name cached from a read a moment before. B's next open must see the new file: not
    ENOENT for the inode that was replaced, nor that inode's old bytes while some process
    still holds it open."""
    _, a, b = pair
    (a / "saved.txt").write_bytes(b"version 1")
    assert (b / "saved.txt").read_bytes() == b"version 1"   # B caches the name's inode
    (a / "saved.tmp").write_bytes(b"version 2, longer")
    os.rename(a / "saved.tmp", a / "saved.txt")
    assert (b / "saved.txt").read_bytes() == b"version 2, longer"

    (a / "held.txt").write_bytes(b"old bytes")
    assert (b / "held.txt").read_bytes() == b"old bytes"
    fd = os.open(a / "held.txt", os.O_RDONLY)              # keeps the old inode alive
    try:
        (a / "held.tmp").write_bytes(b"new bytes")
        os.rename(a / "held.tmp", a / "held.txt")
        assert (b / "held.txt").read_bytes() == b"new bytes"
        assert os.pread(fd, 100, 0) == b"old bytes"         # the open fd keeps its file
    finally:
        os.close(fd)


def _read_without_fstat(path) -> bytes:
    """Read to EOF in 4 MiB os.read calls, as a program that never stats the file would:
    the kernel then serves it up to the size it believes, from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        out = bytearray()
        while block := os.read(fd, 4 << 20):
            out += block
        return bytes(out)
    finally:
        os.close(fd)


@pytest.mark.timeout(90)
def test_a_file_changed_by_the_other_mount_reads_exactly_its_new_bytes(pair):
    """Mount B's kernel still holds a file's old size (attr_ttl) when mount A replaces the
    file with a shorter or a longer one: B's next open must read exactly the new bytes
    (close-to-open). Through the page cache B would stop at the old size of a file that grew,
    and get zeros past the end of one that shrank when read-ahead requests finish out of
    order, so B's open bypasses the page cache while its kernel holds another size
    (fusefs/kernelsize.py)."""
    _, a, b = pair
    for i in range(15):
        big = os.urandom(3 << 20)
        (a / "shrinks.bin").write_bytes(big)
        got = _read_without_fstat(b / "shrinks.bin")            # grew (after round 0)
        assert len(got) == len(big), f"round {i}: {len(got)} bytes read"
        assert got == big, f"round {i}: other bytes read"
        small = os.urandom(100_000 + 4096 * i)
        (a / "shrinks.bin").write_bytes(small)
        got = _read_without_fstat(b / "shrinks.bin")            # shrank
        assert len(got) == len(small), f"round {i}: {len(got)} bytes read"
        assert got == small, f"round {i}: other bytes read"
    os.unlink(a / "shrinks.bin")


@pytest.mark.timeout(60)
def test_mount_refusals(pair, tmp_path):
    cluster, a, _ = pair
    cases = [
        (str(tmp_path / "missing"), "does not exist"),
        (__file__, "not a directory"),
        (str(a), "already a mount point"),
    ]
    for mountpoint, words in cases:
        r = _mount_py(mountpoint, "--master", cluster.master_addr)
        assert r.returncode == 1
        assert words in r.stderr
        assert "Traceback" not in r.stderr
    r = _mount_py(str(tmp_path), "--master", "127.0.0.1:1")
    assert r.returncode == 1
    assert "no master" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.timeout(60)
def test_background_mount_and_sigterm_unmounts(pair, tmp_path):
    cluster, a, _ = pair
    mp = tmp_path / "bg"
    mp.mkdir()
    pid_file, log_file = tmp_path / "m.pid", tmp_path / "m.log"
    r = _mount_py(str(mp), "--master", cluster.master_addr, "--gateway", cluster.gateway_addr,
                  "--background", "--pid-file", str(pid_file), "--log-file", str(log_file))
    try:
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mp)
        pid = int(pid_file.read_text())
        (mp / "bg.txt").write_text("from background")
        assert (a / "bg.txt").read_text() == "from background"
        os.kill(pid, 15)
        deadline = time.monotonic() + 15
        while os.path.ismount(mp) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.ismount(mp)
    finally:
        unmount(mp)
