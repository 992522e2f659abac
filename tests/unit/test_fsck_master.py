"""The master's side of fsck and vacuum: chunk listing with paths, orphan queueing, the key
clock's age guard, and the vacuum's choice of volumes (with fake volume servers)."""
from __future__ import annotations

import errno

import pytest

from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from cluster.master.keyclock import KeyClock
from cluster.master.sqlite_store import SQLiteStore
from cluster.master.topology import Topology, VolumeState
from cluster.master.vacuum import Vacuumer
from protos import volume_pb2


def fid(vid: int, key: int) -> str:
    return f"{vid},{key:x}{0xabcdef01:08x}"


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "meta.db"), "NORMAL")
    yield s
    s.close()


@pytest.mark.timeout(10)
def test_chunk_refs_name_every_inode_and_list_the_queue(store):
    store.mkdir("/a", 0o755)
    store.mkdir("/a/b", 0o755)
    f1 = store.create("/a/b/one", 0o644)
    f2 = store.create("/two", 0o644)
    store.commit(f1.ino, [Piece(0, 10, fid(1, 1), 0, 10, 7), Piece(10, 5, fid(1, 2), 0, 5, 8)], 15)
    store.commit(f2.ino, [Piece(0, 3, fid(2, 3), 0, 3, 9)], 3)
    store.link("/two", "/a/also-two")
    store.commit(f2.ino, [Piece(0, 3, fid(2, 4), 0, 3, 9)], 3)   # fid(2, 3) is queued now
    store.unlink("/a/b/one", keep_open=True)                      # open but unlinked
    refs, queued = store.chunk_refs()
    got = sorted((r.path, r.piece.fid) for r in refs)
    assert got == [("/a/also-two", fid(2, 4)),
                   (f"<unlinked ino {f1.ino}>", fid(1, 1)),
                   (f"<unlinked ino {f1.ino}>", fid(1, 2))]
    assert queued == [fid(2, 3)]


@pytest.mark.timeout(10)
def test_queue_orphans_skips_referenced_fids(store):
    f = store.create("/f", 0o644)
    store.commit(f.ino, [Piece(0, 3, fid(1, 1), 0, 3, 9)], 3)
    assert store.queue_orphans([fid(1, 1), fid(1, 2), fid(1, 3)]) == (2, 1)
    assert store.pending_deletions() == 2
    assert store.queue_orphans([fid(1, 2)]) == (0, 0)      # already queued
    with pytest.raises(FsError) as e:
        store.queue_orphans(["nonsense"])
    assert e.value.errno == errno.EINVAL


@pytest.mark.timeout(10)
def test_key_clock_only_vouches_for_keys_handed_out_long_enough_ago():
    now = [100.0]
    clock = KeyClock(50, clock=lambda: now[0])
    assert clock.cutoff(0) == 50
    assert clock.cutoff(10) == 0          # the master is 0 s old: nothing is 10 s old
    now[0] = 111.0
    assert clock.cutoff(10) == 50         # keys below 50 predate the start
    clock.note(80)
    clock.note(70)                        # lower: ignored
    assert clock.high() == 80
    assert clock.cutoff(0) == 80
    assert clock.cutoff(10) == 50
    now[0] = 111.5
    clock.note(90)                        # same bucket: the sample moves forward
    now[0] = 121.4
    assert clock.cutoff(10) == 50
    now[0] = 121.6
    assert clock.cutoff(10) == 90


class _FakeVolume:
    def __init__(self, volumes: dict[int, tuple[int, int]], fail: bool = False):
        self.volumes = volumes
        self.fail = fail
        self.compacted: list[int] = []

    def Status(self, req, timeout=None):
        return volume_pb2.StatusResponse(volumes=[
            volume_pb2.VolumeStatus(volume_id=v, size=s, deleted_bytes=d)
            for v, (s, d) in self.volumes.items()])

    def Compact(self, req, timeout=None):
        self.compacted.append(req.volume_id)
        size, deleted = self.volumes[req.volume_id]
        self.volumes[req.volume_id] = (size - deleted, 0)
        return volume_pb2.CompactResponse(volume_id=req.volume_id, size_before=size,
                                          size_after=size - deleted, compact_revision=1)


class _Stubs:
    def __init__(self, by_address):
        self.by_address = by_address

    def get(self, address):
        return self.by_address[address]


@pytest.mark.timeout(10)
def test_vacuum_compacts_every_live_replica_of_volumes_past_the_threshold(store):
    topo = Topology(store, dead_after=5, volume_size_limit=1 << 30)
    a = _FakeVolume({1: (1000, 500), 2: (1000, 100)})
    b = _FakeVolume({1: (1000, 200), 2: (1000, 100)})
    for name, addr, fake in (("a", "h:1", a), ("b", "h:2", b)):
        sid = topo.register(0, name, addr, "")
        topo.heartbeat(sid, name, addr, "", [VolumeState(v, 2) for v in fake.volumes], 1, 1, 8)
    vac = Vacuumer(topo, _Stubs({"h:1": a, "h:2": b}), default_threshold=0.3)
    rows = vac.run()
    assert sorted((r.volume_id, r.server, r.freed) for r in rows) == [(1, "a", 500), (1, "b", 200)]
    assert a.compacted == [1]
    assert b.compacted == [1]
    assert vac.run(threshold=0.05, volume_ids=[2])
    assert a.compacted == [1, 2]
    with pytest.raises(FsError) as e:
        vac.run(threshold=2)
    assert e.value.errno == errno.EINVAL
