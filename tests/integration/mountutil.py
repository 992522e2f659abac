"""Module-scoped cluster + mount for the mount suites (one cluster per test module keeps the
suite fast); teardown always unmounts and stops every process, via tests/harness.py."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest

from tests.harness import Mount, dump_logs, make_cluster
from tools.mounts import fusermount

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which(fusermount()) is None,
    reason="needs /dev/fuse and fusermount")


def start_cluster_and_mount(tmp_path_factory, name: str, *extra: str):
    base = tmp_path_factory.mktemp(name)
    cluster = make_cluster(base / "cluster", volumes=2)
    mount = None
    try:
        cluster.start(timeout=40)
        mount = Mount(cluster, base / "mnt", *extra).start()
    except BaseException:
        if mount is not None:
            mount.stop()
        dump_logs(cluster)
        cluster.stop()
        raise
    return cluster, mount


@contextlib.contextmanager
def cluster_with_two_mounts(tmp_path_factory, name: str, first: tuple[str, ...],
                            second_dir: str, second: tuple[str, ...]):
    """One cluster and two mounts of it (the second in `second_dir` beside the first), each
    with its own mount.py arguments; yields (m0, m1), then unmounts, stops, and checks both
    mounts' logs for unexpected warnings."""
    cluster, m0 = start_cluster_and_mount(tmp_path_factory, name, *first)
    try:
        m1 = Mount(cluster, m0.mountpoint.parent / second_dir, *second).start()
    except BaseException:
        stop_all(cluster, m0)
        raise
    try:
        yield m0, m1
    finally:
        stop_all(cluster, m0, m1)
    assert_clean_log(m0, m1)


def stop_all(cluster, *mounts) -> None:
    try:
        for m in mounts:
            m.stop()
    finally:
        cluster.stop()


def sh(cmd: str, cwd=None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, timeout=timeout,
                            text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{cmd!r} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def assert_clean_log(*mounts) -> None:
    """Warnings and errors in a mount's log fail the suite unless the suite expects them."""
    for m in mounts:
        bad = [line for line in m.log_tail(100000).splitlines()
               if " WARNING " in line or " ERROR " in line or "Traceback" in line]
        assert not bad, f"unexpected log lines in {m.log}:\n" + "\n".join(bad[:20])
