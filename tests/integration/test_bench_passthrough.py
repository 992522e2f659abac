"""bench/passthrough.py through bench.targets.PassthroughTarget: a real FUSE mount of a local
directory, every change visible on the backing directory, and nothing left behind."""
from __future__ import annotations

import os

import pytest

from bench.targets import PassthroughTarget
from tests.integration.mountutil import needs_fuse
from tools.mounts import is_mounted, unmount

pytestmark = [pytest.mark.mount, needs_fuse]


@pytest.mark.timeout(90)
def test_passthrough_target_maps_every_change_onto_the_backing_dir(tmp_path):
    target = PassthroughTarget()
    try:
        mnt = target.setup(tmp_path)
        backing = tmp_path / "passthrough" / "backing"
        assert mnt == tmp_path / "passthrough" / "mnt"
        assert is_mounted(mnt)
        pid = target.proc.pid

        data = os.urandom(300_000)          # more than one 128 KiB FUSE write
        (mnt / "f.bin").write_bytes(data)
        assert (mnt / "f.bin").read_bytes() == data
        assert (backing / "f.bin").read_bytes() == data

        (mnt / "d").mkdir()
        os.rename(mnt / "f.bin", mnt / "d" / "g.bin")
        assert not (backing / "f.bin").exists()
        assert (backing / "d" / "g.bin").read_bytes() == data
        assert os.listdir(mnt / "d") == ["g.bin"]
        assert os.stat(mnt / "d" / "g.bin").st_ino == os.stat(backing / "d" / "g.bin").st_ino

        with open(mnt / "d" / "g.bin", "r+b") as fh:  # pwrite in the middle, truncate, fsync
            fh.seek(10)
            fh.write(b"hello")
            fh.truncate(100)
            fh.flush()
            os.fsync(fh.fileno())
        assert (backing / "d" / "g.bin").read_bytes() == data[:10] + b"hello" + data[15:100]

        os.symlink("g.bin", mnt / "d" / "s")
        assert os.readlink(backing / "d" / "s") == "g.bin"
        os.chmod(mnt / "d" / "g.bin", 0o600)
        assert os.stat(backing / "d" / "g.bin").st_mode & 0o777 == 0o600

        os.unlink(mnt / "d" / "s")
        os.unlink(mnt / "d" / "g.bin")
        os.rmdir(mnt / "d")
        assert os.listdir(backing) == []
        assert os.listdir(mnt) == []

        target.cold()                       # remount: a new process, the same backing dir
        assert is_mounted(mnt)
        assert target.proc.pid != pid
        (mnt / "after").write_bytes(b"x")
        assert (backing / "after").read_bytes() == b"x"
    finally:
        proc = target.proc
        try:
            target.teardown()
        finally:
            mnt = tmp_path / "passthrough" / "mnt"
            if is_mounted(mnt):
                unmount(mnt)
    assert not is_mounted(mnt)
    assert target.proc is None
    assert proc is not None
    assert proc.poll() is not None


@pytest.mark.timeout(60)
def test_abort_kills_the_mount_process_and_unmounts(tmp_path):
    target = PassthroughTarget()
    try:
        mnt = target.setup(tmp_path)
        proc = target.proc
        target.abort()
        assert proc.wait(timeout=10) != 0
        assert not is_mounted(mnt)
    finally:
        target.teardown()
        if is_mounted(tmp_path / "passthrough" / "mnt"):
            unmount(tmp_path / "passthrough" / "mnt")
