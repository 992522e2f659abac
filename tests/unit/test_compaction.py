"""Volume compaction (vacuum), needle checks and repair copies, driven on Volume/Store directly."""
from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
import time

import pytest

from cluster.common.errors import FsError
from cluster.volume import compaction, repair
from cluster.volume import needle as fmt
from cluster.volume import reads as st
from cluster.volume.store import Store
from cluster.volume.volume import Volume


def _vol(tmp_path, durability="none", **kw) -> Volume:
    return Volume.create(str(tmp_path), 1, 2, durability=durability, **kw)


def _fill(vol: Volume, n: int, size: int = 4096, seed: int = 0) -> dict[int, bytes]:
    rnd = random.Random(seed)
    data = {}
    for key in range(1, n + 1):
        data[key] = rnd.randbytes(size)
        vol.write(key, key * 7, data[key])
    return data


@pytest.mark.timeout(30)
def test_compact_drops_dead_needles_and_keeps_live_ones(tmp_path):
    vol = _vol(tmp_path)
    data = _fill(vol, 100)
    for key in range(1, 71):
        vol.delete(key, key * 7)
    vol.write(80, 80 * 7, b"overwritten")          # the old record of 80 is garbage too
    data[80] = b"overwritten"
    before = vol.stats()
    assert before.deleted_bytes / before.size > 0.6
    r = vol.compact()
    after = vol.stats()
    assert r.size_before == before.size
    assert r.size_after == after.size
    assert r.freed > 0.6 * before.size
    assert os.path.getsize(vol.dat_path) == after.size
    assert after.file_count == 30
    assert after.deleted_bytes == 0
    assert after.compact_revision == before.compact_revision + 1 == r.compact_revision
    for key in range(71, 101):
        assert vol.read(key, key * 7).data == data[key]
    for key in range(1, 71):
        with pytest.raises(FsError) as e:
            vol.read(key, key * 7)
        assert e.value.errno == errno.ENOENT
    # No temporary files left; the volume reopens from the new files alike.
    assert sorted(os.listdir(tmp_path)) == ["1.dat", "1.idx"]
    vol.write(200, 1, b"after")
    vol.close()
    again = Volume(str(tmp_path), 1, durability="none")
    assert again.stats().file_count == 31
    assert again.superblock.compact_revision == r.compact_revision
    assert again.read(200, 1).data == b"after"
    assert again.read(99, 99 * 7).data == data[99]
    again.close()


@pytest.mark.timeout(30)
def test_writes_and_deletes_during_the_copy_are_kept(tmp_path):
    """What arrives between the snapshot and the swap is replayed into the new files."""
    vol = _vol(tmp_path)
    data = _fill(vol, 50)
    for key in range(1, 41):
        vol.delete(key, key * 7)

    def meanwhile():
        vol.write(500, 5, b"new during compaction")
        vol.delete(45, 45 * 7)                       # live at the snapshot, deleted since
        vol.write(46, 46 * 7, b"rewritten during compaction")

    vol.compact(_between=meanwhile)
    assert vol.read(500, 5).data == b"new during compaction"
    assert vol.read(46, 46 * 7).data == b"rewritten during compaction"
    assert vol.read(47, 47 * 7).data == data[47]
    with pytest.raises(FsError):
        vol.read(45, 45 * 7)
    stats = vol.stats()
    assert stats.file_count == 10     # 41..50 minus 45 plus 500
    vol.close()
    # The .dat alone says 45 is deleted: an index rebuilt from it agrees.
    os.unlink(tmp_path / "1.idx")
    again = Volume(str(tmp_path), 1, durability="none")
    with pytest.raises(FsError):
        again.read(45, 45 * 7)
    assert again.read(46, 46 * 7).data == b"rewritten during compaction"
    assert again.stats().file_count == 10
    again.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("durability", ["group", "none"])
def test_readers_and_writers_run_through_compaction(tmp_path, durability):
    vol = _vol(tmp_path, durability=durability)
    data = _fill(vol, 300, size=2048)
    for key in range(1, 211):
        vol.delete(key, key * 7)
    live = {k: hashlib.sha256(v).digest() for k, v in data.items() if k > 210}
    stop = threading.Event()
    errors: list[str] = []
    written: dict[int, bytes] = {}
    reads = [0]

    def reader():
        keys = list(live)
        while not stop.is_set():
            k = random.choice(keys)
            try:
                got = vol.read(k, k * 7).data
            except FsError as e:
                errors.append(f"read {k}: {e}")
                continue
            if hashlib.sha256(got).digest() != live[k]:
                errors.append(f"wrong bytes for {k}")
            reads[0] += 1

    def writer():
        key = 10_000
        while not stop.is_set():
            payload = os.urandom(1024)
            try:
                vol.write(key, 3, payload)
            except FsError as e:
                errors.append(f"write {key}: {e}")
            written[key] = payload
            key += 1

    threads = [threading.Thread(target=reader) for _ in range(3)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            time.sleep(0.05)
            vol.compact()
        time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:5]
    assert reads[0] > 0
    assert written
    for k, payload in written.items():
        assert vol.read(k, 3).data == payload
    for k, digest in live.items():
        assert hashlib.sha256(vol.read(k, k * 7).data).digest() == digest
    assert vol.superblock.compact_revision == 3
    vol.close()


@pytest.mark.timeout(30)
def test_damaged_needle_is_copied_as_is_not_dropped(tmp_path):
    vol = _vol(tmp_path)
    _fill(vol, 5, size=100)
    vol.delete(1, 7)
    offset = vol._index[3][0] + fmt.NEEDLE_HEADER_SIZE + 10
    with open(vol.dat_path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))
    vol.compact()
    with pytest.raises(FsError) as e:
        vol.read(3, 21)
    assert e.value.errno == errno.EIO
    assert vol.check(3, 21)[0] == st.CHECK_CRC_BAD
    assert vol.check(2, 14)[0] == st.CHECK_OK
    vol.close()


@pytest.mark.timeout(30)
def test_failed_compaction_leaves_the_volume_untouched(tmp_path, monkeypatch):
    vol = _vol(tmp_path)
    data = _fill(vol, 20)
    for key in range(1, 11):
        vol.delete(key, key * 7)
    size = vol.stats().size

    def boom(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(compaction.CompactionWriter, "finish", boom)
    with pytest.raises(FsError) as e:
        vol.compact()
    assert e.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path)) == ["1.dat", "1.idx"]
    assert vol.stats().size == size
    assert not vol.read_only
    assert vol.read(15, 15 * 7).data == data[15]
    vol.write(99, 1, b"still writable")
    monkeypatch.undo()
    vol.compact()
    assert vol.read(99, 1).data == b"still writable"
    vol.close()


@pytest.mark.timeout(30)
def test_leftovers_of_a_crashed_compaction_are_removed_at_start(tmp_path):
    store = Store(str(tmp_path), durability="none").open()
    vol = store.allocate(4, 1)
    vol.write(1, 1, b"x")
    store.close()
    (tmp_path / f"4{compaction.DAT_SUFFIX}").write_bytes(b"half")
    (tmp_path / f"4{compaction.IDX_SUFFIX}").write_bytes(b"half")
    store = Store(str(tmp_path), durability="none").open()
    assert sorted(os.listdir(tmp_path)) == ["4.dat", "4.idx"]
    assert store.read(4, 1, 1).data == b"x"
    store.close()


@pytest.mark.timeout(30)
def test_concurrent_compaction_of_one_volume_is_refused(tmp_path):
    vol = _vol(tmp_path)
    _fill(vol, 5)
    seen = []

    def inner():
        with pytest.raises(FsError) as e:
            vol.compact()
        seen.append(e.value.errno)

    vol.compact(_between=inner)
    assert seen == [errno.EAGAIN]
    vol.close()


@pytest.mark.timeout(30)
def test_check_reports_each_kind_of_damage(tmp_path):
    vol = _vol(tmp_path)
    vol.write(1, 11, b"a" * 100)
    vol.write(2, 22, b"b" * 100)
    crc = fmt.crc32c(b"a" * 100)
    assert vol.check(1, 11, 100, crc) == (st.CHECK_OK, "")
    assert vol.check(1, 11)[0] == st.CHECK_OK
    assert vol.check(1, 12)[0] == st.CHECK_WRONG_COOKIE
    assert vol.check(1, 11, 99, crc)[0] == st.CHECK_SIZE_MISMATCH
    assert vol.check(1, 11, 100, crc ^ 1)[0] == st.CHECK_CRC_BAD
    assert vol.check(3, 33)[0] == st.CHECK_MISSING
    vol.delete(2, 22)
    assert vol.check(2, 22)[0] == st.CHECK_MISSING
    vol.close()


class _Peer:
    """A stand-in for a peer's Volume stub, over a local Store."""

    def __init__(self, store: Store):
        self.store = store

    def ReadNeedle(self, req, timeout=None):
        from protos import volume_pb2
        r = self.store.read(req.volume_id, req.key, req.cookie)
        return volume_pb2.ReadResponse(data=r.data, needle_crc32c=r.needle_crc,
                                       needle_size=r.needle_size)

    def ListNeedles(self, req, timeout=None):
        from protos import volume_pb2
        return volume_pb2.NeedleList(needles=[
            volume_pb2.NeedleInfo(key=n.key, cookie=n.cookie, size=n.size, crc32c=n.crc)
            for n in self.store.list_needles(req.volume_id)])


@pytest.mark.timeout(30)
def test_restore_replaces_a_damaged_copy_and_copy_volume_rebuilds(tmp_path):
    good = Store(str(tmp_path / "good"), durability="none").open()
    bad = Store(str(tmp_path / "bad"), durability="none").open()
    for s in (good, bad):
        s.allocate(9, 2)
    payloads = {k: os.urandom(500) for k in range(1, 6)}
    for k, p in payloads.items():
        good.write(9, k, k, p)
        bad.write(9, k, k, p)
    vol = bad.get(9)
    off = vol._index[2][0] + fmt.NEEDLE_HEADER_SIZE
    with open(vol.dat_path, "r+b") as fh:
        fh.seek(off)
        fh.write(b"\0\0\0\0")
    bad.delete(9, 4, 4)
    # A plain write of the same needle is a no-op (it looks like a retry): restore is needed.
    out = repair.copy_needles(bad, 9, _Peer(good), [
        repair.Ref(2, 2, 500, fmt.crc32c(payloads[2])), repair.Ref(4, 4), repair.Ref(7, 7)])
    assert out.copied == 2
    assert [(k, s) for k, s, _ in out.failures] == [(7, st.CHECK_MISSING)]
    assert bad.read(9, 2, 2).data == payloads[2]
    assert bad.read(9, 4, 4).data == payloads[4]

    empty = Store(str(tmp_path / "empty"), durability="none").open()
    out = repair.copy_volume(empty, 9, 2, _Peer(good))
    assert out.copied == 5
    assert not out.failures
    for k, p in payloads.items():
        assert empty.read(9, k, k).data == p
    # Idempotent: a second run copies nothing.
    assert repair.copy_volume(empty, 9, 2, _Peer(good)).copied == 0
    for s in (good, bad, empty):
        s.close()


@pytest.mark.timeout(30)
def test_repair_copies_between_a_version_1_and_a_version_2_replica(tmp_path):
    """A peer still in format version 1 (one CRC per needle) repairs a new replica, which
    stores the needles with block CRCs; and the other way round, a version-1 replica takes
    copies from a version-2 one in its own layout."""
    from cluster.common import blocks
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    Volume.create(str(old_dir), 9, 2, version=1, durability="none").close()
    old = Store(str(old_dir), durability="none").open()
    assert old.get(9).version == 1
    payloads = {k: os.urandom(k * 40_000) for k in range(1, 5)}
    for k, p in payloads.items():
        old.write(9, k, k, p)
    new = Store(str(new_dir), durability="none").open()
    out = repair.copy_volume(new, 9, 2, _Peer(old))
    assert out.copied == 4
    assert not out.failures
    assert new.get(9).version == 2
    for k, p in payloads.items():
        assert new.check_needles(9, [(k, k, len(p), fmt.crc32c(p))]) == [(st.CHECK_OK, "")]
        r = new.read_blocks(9, k, k, len(p) - 1, 1)          # from stored block CRCs
        assert r.data == p[(len(p) - 1) // blocks.BLOCK_SIZE * blocks.BLOCK_SIZE:]
    new.write(9, 5, 5, b"written to the new replica only")
    assert repair.copy_volume(old, 9, 2, _Peer(new)).copied == 1
    assert old.get(9).version == 1
    assert old.read(9, 5, 5).data == b"written to the new replica only"
    for s in (old, new):
        s.close()
