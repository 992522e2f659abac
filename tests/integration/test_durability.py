"""The durability contract through a real mount (docs/reliability.md, `mount.py --help`):

* close() returns once data and metadata are in every replica's and the master's operating
  system: kill -9 of the master, the gateway and every volume server right after close()
  loses nothing, and close() alone asks no disk for a sync;
* fsync() returns once they are on stable storage: with every sync recorded (KELP_SYNC_LOG,
  cluster/common/durability.py), each fsync that returned was preceded by a sync of the file's
  volume on every replica and of the master's log;
* with --sync-on-close, close() gives the fsync promise.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from cluster.common.fid import Fid
from fusefs.master_client import MasterClient
from protos import master_pb2
from tests.harness import Mount, dump_logs, make_cluster, wait_until
from tests.integration.mountutil import needs_fuse

pytestmark = [pytest.mark.faults, pytest.mark.mount, needs_fuse]


@pytest.fixture
def env(tmp_path, monkeypatch):
    log = tmp_path / "syncs.log"
    monkeypatch.setenv("KELP_SYNC_LOG", str(log))   # inherited by every node and the mount
    cluster = make_cluster(tmp_path / "c", volumes=2, extra_master_args=["--replication", "2"])
    mounts: list[Mount] = []
    try:
        cluster.start(timeout=40)
        yield {"cluster": cluster, "log": log, "tmp": tmp_path, "mounts": mounts}
    except BaseException:
        dump_logs(cluster)
        raise
    finally:
        for m in mounts:
            m.stop()
        cluster.stop()


def mount(env, name: str, *extra: str) -> Path:
    m = Mount(env["cluster"], env["tmp"] / name, *extra).start()
    env["mounts"].append(m)
    return m.mountpoint


def syncs(env) -> list[tuple[int, str]]:
    try:
        lines = env["log"].read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(int(pid), what) for pid, what in (line.split(" ", 1) for line in lines)]


def volumes_of(env, path: str) -> set[int]:
    master = MasterClient(env["cluster"].master_addr)
    try:
        chunks = master.call("GetChunksAt", master_pb2.PathRequest(path=path)).chunks
    finally:
        master.close()
    return {Fid.parse(c.fid).volume_id for c in chunks}


def pids(env) -> dict[str, int]:
    return {name: spec.pid for name, spec in env["cluster"].nodes.items()}


def synced_everywhere(env, vids: set[int], since: int) -> None:
    """Every volume server synced each of `vids`, and the master its log, in the records
    after the first `since`."""
    recs = syncs(env)[since:]
    p = pids(env)
    for name in env["cluster"].volume_names():
        got = {int(what.split()[1]) for pid, what in recs
               if pid == p[name] and what.startswith("volume ")}
        assert vids <= got, f"{name} synced volumes {got}, not all of {vids}: {recs}"
    assert any(pid == p["m0"] and what == "master wal" for pid, what in recs), recs


@pytest.mark.timeout(180)
def test_fsync_syncs_every_replica_and_the_master_and_close_does_not(env):
    mnt = mount(env, "mnt")
    data = os.urandom(3 << 20)
    (mnt / "closed.bin").write_bytes(data)
    assert syncs(env) == [], "close() alone must not wait for a disk sync"

    before = len(syncs(env))
    fd = os.open(mnt / "synced.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
        synced_everywhere(env, volumes_of(env, "/synced.bin"), before)
        # fdatasync after more writes: the new needles synced too (a sync with nothing new
        # since the last one needs no disk sync and asks none)
        before = len(syncs(env))
        os.write(fd, data)
        os.fdatasync(fd)
        synced_everywhere(env, volumes_of(env, "/synced.bin"), before)
    finally:
        os.close(fd)

    before = len(syncs(env))
    fd = os.open(mnt / "osync.bin", os.O_WRONLY | os.O_CREAT | os.O_SYNC, 0o644)
    try:
        os.write(fd, data[:100_000])                 # the kernel fsyncs an O_SYNC write
    finally:
        os.close(fd)
    synced_everywhere(env, volumes_of(env, "/osync.bin"), before)

    before = len(syncs(env))
    dfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.mkdir(mnt / "newdir")
        os.fsync(dfd)                                 # a directory's fsync: the master's log
    finally:
        os.close(dfd)
    assert any(what == "master wal" for _, what in syncs(env)[before:])


@pytest.mark.timeout(180)
def test_sync_on_close_gives_close_the_fsync_promise(env):
    mnt = mount(env, "strict", "--sync-on-close")
    before = len(syncs(env))
    (mnt / "f.bin").write_bytes(os.urandom(1 << 20))
    synced_everywhere(env, volumes_of(env, "/f.bin"), before)


@pytest.mark.timeout(240)
def test_kill_9_of_every_server_right_after_close_loses_nothing(env):
    cluster = env["cluster"]
    mnt = mount(env, "mnt")
    files = {f"f{i}.bin": os.urandom(size) for i, size in
             enumerate([0, 1, 4096, 100_000, 5 << 20, (4 << 20) + 7])}
    (mnt / "dir").mkdir()
    for name, data in files.items():
        (mnt / "dir" / name).write_bytes(data)
    os.rename(mnt / "dir" / "f2.bin", mnt / "dir" / "renamed.bin")
    files["renamed.bin"] = files.pop("f2.bin")
    os.chmod(mnt / "dir" / "renamed.bin", 0o600)
    # right after the last close: every server dies at once, with no chance to flush
    for name in cluster.nodes:
        os.kill(cluster.nodes[name].pid, signal.SIGKILL)
    for name in cluster.nodes:
        cluster.kill(name)
    env["mounts"].pop().stop()
    cluster.start(timeout=60)
    mnt2 = mount(env, "after")
    wait_until(lambda: (mnt2 / "dir").exists(), timeout=30, what="the namespace back")
    assert sorted(os.listdir(mnt2 / "dir")) == sorted(files)
    for name, data in files.items():
        assert (mnt2 / "dir" / name).read_bytes() == data, name
    assert (os.stat(mnt2 / "dir" / "renamed.bin").st_mode & 0o777) == 0o600
