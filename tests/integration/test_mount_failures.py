"""Failures seen through a real mount: a write that cannot be stored is an error at close()
(never a silent loss) and the file keeps its old content; a read-only mount refuses changes."""
from __future__ import annotations

import errno
import os
import time

import pytest

from tests.errnos import raises_errno
from tests.harness import Mount
from tests.integration.mountutil import needs_fuse, start_cluster_and_mount, stop_all

pytestmark = [pytest.mark.mount, needs_fuse]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cluster, mount = start_cluster_and_mount(tmp_path_factory, "fail")
    yield cluster, mount
    stop_all(cluster, mount)


@pytest.mark.timeout(120)
def test_failed_write_is_an_error_at_close_and_old_content_stays(setup):
    cluster, mount = setup
    f = mount.mountpoint / "precious"
    f.write_bytes(b"old content")
    volumes = cluster.volume_names()
    for name in volumes:
        cluster.kill(name)
    try:
        started = time.monotonic()
        with raises_errno(errno.EIO, errno.ENOSPC, errno.EAGAIN, errno.ETIMEDOUT), \
                open(f, "r+b") as fp:
            # past inline_max (a smaller file would stay at the master, which is up)
            fp.write(b"NEW" * 100_000)
        assert time.monotonic() - started < 90
    finally:
        for name in volumes:
            cluster.start_node(name)
        cluster.wait_ready(timeout=40)
    # The restarted servers need a heartbeat, and the reader's channels leave their reconnect
    # backoff: reads may fail for a moment (not wrong data, ever).
    deadline = time.monotonic() + 20
    while True:
        try:
            data = f.read_bytes()
            break
        except OSError as e:
            if e.errno != errno.EIO or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert data == b"old content"
    f.write_bytes(b"works again")
    assert f.read_bytes() == b"works again"


@pytest.mark.timeout(60)
def test_read_only_mount(setup, tmp_path):
    cluster, mount = setup
    (mount.mountpoint / "ro.txt").write_text("visible")
    ro = Mount(cluster, tmp_path / "ro", "--read-only")
    ro.start()
    try:
        assert (ro.mountpoint / "ro.txt").read_text() == "visible"
        for fn in (lambda: (ro.mountpoint / "new").write_text("x"),
                   lambda: os.mkdir(ro.mountpoint / "d"),
                   lambda: os.unlink(ro.mountpoint / "ro.txt")):
            with raises_errno(errno.EROFS):
                fn()
    finally:
        ro.stop()
