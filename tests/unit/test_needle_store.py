"""Needle format and volume store: round trips, restart, crash recovery, corruption, limits."""
from __future__ import annotations

import errno
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.common.errors import FsError
from cluster.volume import needle as fmt
from cluster.volume.store import Store, Volume


# ------------------------------------------------------------------ format

@pytest.mark.timeout(30)
@settings(max_examples=60, deadline=None)
@given(cookie=st.integers(0, 2**32 - 1), key=st.integers(0, 2**64 - 1),
       data=st.binary(max_size=300), deleted=st.booleans())
def test_needle_round_trip(cookie, key, data, deleted):
    flags = fmt.FLAG_DELETED if deleted else 0
    rec = fmt.encode_needle(cookie, key, data, flags)
    assert len(rec) == fmt.record_size(len(data))
    assert len(rec) % fmt.ALIGN == 0
    n = fmt.decode_needle(rec)
    assert (n.cookie, n.key, bytes(n.data), n.deleted) == (cookie, key, data, deleted)
    assert fmt.crc_ok(n)
    assert n.crc == fmt.crc32c(data)


@pytest.mark.timeout(10)
def test_needle_layout_and_corruption_detected():
    rec = bytearray(fmt.encode_needle(7, 9, b"abc"))
    assert fmt.record_size(3) == 24          # 16 header + 3 data + 5 trailer -> 24
    assert rec[16:19] == b"abc"
    rec[17] ^= 0xFF
    assert not fmt.crc_ok(fmt.decode_needle(rec))
    with pytest.raises(fmt.FormatError):
        fmt.decode_needle(rec[:20])
    bad_flags = bytearray(fmt.encode_needle(7, 9, b"abc"))
    bad_flags[19] = 0x80
    with pytest.raises(fmt.FormatError):
        fmt.decode_needle(bad_flags)


@pytest.mark.timeout(10)
def test_superblock_and_idx():
    sb = fmt.SuperBlock(replication=3, compact_revision=5)
    raw = fmt.encode_superblock(sb)
    assert len(raw) == fmt.SUPERBLOCK_SIZE and len(raw) % fmt.ALIGN == 0
    assert fmt.decode_superblock(raw) == sb
    with pytest.raises(fmt.FormatError):
        fmt.decode_superblock(b"NOPE" + raw[4:])
    with pytest.raises(fmt.FormatError):
        fmt.decode_superblock(raw[:4] + b"\x63\x00" + raw[6:])    # version 99
    log = fmt.encode_idx(1, 16, 5) + fmt.encode_idx(1, 48, fmt.TOMBSTONE) + b"torn"
    entries = fmt.decode_idx(log)
    assert [(e.key, e.offset, e.deleted) for e in entries] == [(1, 16, False), (1, 48, True)]


# ------------------------------------------------------------------ volume

def new_volume(tmp_path, **kw) -> Volume:
    kw.setdefault("durability", "none")
    return Volume.create(str(tmp_path), 1, 2, **kw)


def reopen(vol: Volume, tmp_path, **kw) -> Volume:
    vol.close()
    kw.setdefault("durability", "none")
    return Volume(str(tmp_path), 1, **kw)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("durability", ["group", "always", "none"])
def test_write_read_delete_round_trip(tmp_path, durability):
    vol = new_volume(tmp_path, durability=durability)
    data = os.urandom(100_000)
    assert vol.write(10, 0xABCD, data) == len(data)
    vol.write(11, 1, b"")                               # empty needles are allowed
    r = vol.read(10, 0xABCD)
    assert r.data == data and r.needle_size == len(data) and r.needle_crc == fmt.crc32c(data)
    assert vol.read(10, 0xABCD, 10, 5).data == data[10:15]
    assert vol.read(10, 0xABCD, 99_990).data == data[99_990:]
    assert vol.read(10, 0xABCD, 99_990, 100).data == data[99_990:]
    assert vol.read(11, 1).data == b""
    s = vol.stats()
    assert s.file_count == 2 and s.deleted_bytes == 0 and s.replication == 2
    assert s.size == os.path.getsize(vol.dat_path)

    assert vol.delete(10, 0xABCD) == len(data)
    assert vol.delete(10, 0xABCD) == 0                 # already deleted
    with pytest.raises(FsError) as e:
        vol.read(10, 0xABCD)
    assert e.value.errno == errno.ENOENT
    with pytest.raises(FsError) as e:
        vol.delete(999, 1)
    assert e.value.errno == errno.ENOENT
    s = vol.stats()
    assert s.file_count == 1
    assert s.deleted_bytes == fmt.record_size(len(data)) + fmt.record_size(0)
    vol.close()


@pytest.mark.timeout(20)
def test_restart_loads_index(tmp_path):
    vol = new_volume(tmp_path, durability="group")
    blobs = {k: os.urandom(k * 37) for k in range(1, 30)}
    for k, b in blobs.items():
        vol.write(k, k + 1000, b)
    vol.delete(5, 1005)
    vol.write(6, 1006, b"rewritten")                    # overwrite with the right cookie
    before = vol.stats()
    vol = reopen(vol, tmp_path)
    assert vol.stats() == before
    for k, b in blobs.items():
        if k == 5:
            with pytest.raises(FsError):
                vol.read(k, k + 1000)
        elif k == 6:
            assert vol.read(k, 1006).data == b"rewritten"
        else:
            assert vol.read(k, k + 1000).data == b
    keys = [n.key for n in vol.list_needles()]
    assert keys == sorted(set(blobs) - {5})
    info = {n.key: n for n in vol.list_needles()}
    assert info[7].cookie == 1007 and info[7].size == len(blobs[7])
    assert info[7].crc == fmt.crc32c(blobs[7])
    vol.close()


@pytest.mark.timeout(20)
def test_rewrite_rules(tmp_path):
    vol = new_volume(tmp_path)
    vol.write(1, 42, b"one")
    size_before = vol.stats().size
    vol.write(1, 42, b"one")                            # a retried write stores nothing new
    assert vol.stats().size == size_before
    with pytest.raises(FsError) as e:
        vol.write(1, 43, b"other")                      # another cookie may not overwrite
    assert e.value.errno == errno.EACCES
    vol.delete(1, 42)
    vol.write(1, 43, b"new life")                       # a deleted key may be written again
    assert vol.read(1, 43).data == b"new life"
    vol = reopen(vol, tmp_path)
    assert vol.read(1, 43).data == b"new life"
    vol.close()


@pytest.mark.timeout(20)
def test_tail_without_index_is_recovered(tmp_path):
    """Needles whose .idx entries were lost are re-indexed from .dat, deletes included."""
    vol = new_volume(tmp_path)
    vol.write(1, 1, b"first")
    idx_len = os.path.getsize(vol.idx_path)
    vol.write(2, 2, b"second")
    vol.write(3, 3, b"third")
    vol.delete(2, 2)
    vol.close()
    with open(vol.idx_path, "r+b") as fh:
        fh.truncate(idx_len + 7)                        # lost entries and a torn one
    vol = Volume(str(tmp_path), 1, durability="none")
    assert vol.read(1, 1).data == b"first"
    assert vol.read(3, 3).data == b"third"
    with pytest.raises(FsError):
        vol.read(2, 2)
    assert vol.stats().file_count == 2
    assert os.path.getsize(vol.idx_path) == 4 * fmt.IDX_ENTRY_SIZE
    vol.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("damage", ["garbage", "cut_mid_needle", "cut_mid_header",
                                    "zeros"])
def test_torn_tail_is_cut(tmp_path, damage):
    vol = new_volume(tmp_path)
    vol.write(1, 11, b"a" * 1000)
    vol.write(2, 22, b"b" * 2000)
    good_size = vol.stats().size
    vol.write(3, 33, b"c" * 3000)
    vol.close()
    with open(vol.dat_path, "r+b") as fh:
        if damage == "garbage":
            fh.seek(0, 2)
            fh.write(os.urandom(777))
        elif damage == "cut_mid_needle":
            fh.truncate(good_size + 100)
        elif damage == "cut_mid_header":
            fh.truncate(good_size + 5)
        else:
            fh.seek(0, 2)
            fh.write(bytes(4096))
    vol = Volume(str(tmp_path), 1, durability="none")
    assert vol.read(1, 11).data == b"a" * 1000
    assert vol.read(2, 22).data == b"b" * 2000
    if damage in ("garbage", "zeros"):
        assert vol.read(3, 33).data == b"c" * 3000
    else:
        assert os.path.getsize(vol.dat_path) == good_size
        with pytest.raises(FsError) as e:
            vol.read(3, 33)
        assert e.value.errno == errno.ENOENT
    size = vol.stats().size
    assert os.path.getsize(vol.dat_path) == size
    vol.write(4, 44, b"after recovery")                 # appends continue where it was cut
    vol = reopen(vol, tmp_path)
    assert vol.read(4, 44).data == b"after recovery"
    assert vol.read(1, 11).data == b"a" * 1000
    vol.close()


@pytest.mark.timeout(20)
def test_index_entry_past_torn_data_is_dropped(tmp_path):
    """An .idx entry that reached the disk while its needle did not is dropped at load."""
    vol = new_volume(tmp_path)
    vol.write(1, 1, b"x" * 500)
    good_size = vol.stats().size
    vol.write(2, 2, b"y" * 500)
    vol.close()
    with open(vol.dat_path, "r+b") as fh:
        fh.truncate(good_size + 50)
    vol = Volume(str(tmp_path), 1, durability="none")
    assert vol.read(1, 1).data == b"x" * 500
    with pytest.raises(FsError):
        vol.read(2, 2)
    assert os.path.getsize(vol.idx_path) == fmt.IDX_ENTRY_SIZE
    assert os.path.getsize(vol.dat_path) == good_size
    vol.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("repeat", [100, 30_000])     # small needle, and one read in 3 preads
def test_flipped_byte_is_eio_never_data(tmp_path, repeat):
    vol = new_volume(tmp_path)
    vol.write(1, 5, b"precious bytes" * repeat)
    vol.write(2, 6, b"neighbour")
    vol.close()
    with open(vol.dat_path, "r+b") as fh:
        fh.seek(fmt.SUPERBLOCK_SIZE + fmt.NEEDLE_HEADER_SIZE + 3)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0x01]))
    vol = Volume(str(tmp_path), 1, durability="none")
    for offset, length in ((0, 0), (500, 10)):          # ranged reads check the whole needle
        with pytest.raises(FsError) as e:
            vol.read(1, 5, offset, length)
        assert e.value.errno == errno.EIO and "CRC mismatch" in e.value.message
        assert e.value.status().name == "DATA_LOSS"
    assert vol.read(2, 6).data == b"neighbour"
    vol.close()


@pytest.mark.timeout(20)
def test_ranged_reads_reuse_a_verified_needle_and_never_return_rot(tmp_path):
    """A byte-range read keeps the needle it verified; later ranges come from memory (the
    bytes that passed the CRC), so corruption on disk afterwards is never served; a whole
    read still goes to the disk and reports it."""
    vol = new_volume(tmp_path)
    data = bytes(range(256)) * 40
    vol.write(1, 5, data)
    assert vol.read(1, 5, 100, 10).data == data[100:110]
    with open(vol.dat_path, "r+b") as fh:
        fh.seek(fmt.SUPERBLOCK_SIZE + fmt.NEEDLE_HEADER_SIZE + 3000)
        fh.write(b"\xff")
    assert vol.read(1, 5, 2990, 20).data == data[2990:3010]   # verified copy, not the rot
    with pytest.raises(FsError) as e:
        vol.read(1, 5)                                           # the whole needle: from disk
    assert e.value.errno == errno.EIO
    with pytest.raises(FsError) as e:
        vol.read(1, 6, 100, 10)                                  # the cookie still counts
    assert e.value.errno == errno.EACCES
    vol.close()


@pytest.mark.timeout(20)
def test_corrupt_header_is_eio(tmp_path):
    vol = new_volume(tmp_path)
    vol.write(1, 5, b"data")
    with open(vol.dat_path, "r+b") as fh:
        fh.seek(fmt.SUPERBLOCK_SIZE + 4)                 # the key field
        fh.write(b"\xff")
    with pytest.raises(FsError) as e:
        vol.read(1, 5)
    assert e.value.errno == errno.EIO
    vol.close()


@pytest.mark.timeout(20)
def test_wrong_cookie_refused(tmp_path):
    vol = new_volume(tmp_path)
    vol.write(1, 5, b"secret")
    vol.write(2, 5, b"big secret" * 50_000)
    for call in (lambda: vol.read(1, 6), lambda: vol.delete(1, 6), lambda: vol.read(2, 6)):
        with pytest.raises(FsError) as e:
            call()
        assert e.value.errno == errno.EACCES and "wrong cookie" in e.value.message
    assert vol.read(1, 5).data == b"secret"            # the refused delete changed nothing
    assert vol.read(2, 5).data == b"big secret" * 50_000
    vol.close()


@pytest.mark.timeout(20)
def test_bad_read_range(tmp_path):
    vol = new_volume(tmp_path)
    vol.write(1, 5, b"12345")
    assert vol.read(1, 5, 5).data == b""
    with pytest.raises(FsError) as e:
        vol.read(1, 5, 6)
    assert e.value.errno == errno.EINVAL
    vol.close()


@pytest.mark.timeout(20)
def test_size_limit_makes_read_only(tmp_path):
    vol = new_volume(tmp_path, size_limit=4096)
    vol.write(1, 1, b"x" * 2000)
    with pytest.raises(FsError) as e:
        vol.write(2, 2, b"y" * 3000)
    assert e.value.errno == errno.EROFS and e.value.status().name == "FAILED_PRECONDITION"
    assert vol.stats().read_only
    with pytest.raises(FsError):
        vol.write(3, 3, b"z")                           # read-only now, even for small ones
    assert vol.read(1, 1).data == b"x" * 2000           # reads still work
    assert vol.delete(1, 1) == 2000                     # and deletes (they free space later)
    vol.set_size_limit(1 << 20)                         # the master raised the limit
    assert not vol.stats().read_only
    vol.write(3, 3, b"z")
    vol.set_size_limit(100)
    assert vol.stats().read_only
    vol = reopen(vol, tmp_path, size_limit=100)
    assert vol.stats().read_only
    vol.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("durability", ["group", "always"])
def test_concurrent_writers_and_readers(tmp_path, durability):
    vol = new_volume(tmp_path, durability=durability, group_commit_ms=2.0)
    errors = []

    def writer(base):
        try:
            for i in range(40):
                key = base * 1000 + i
                vol.write(key, key, key.to_bytes(8, "little") * (i + 1))
                assert vol.read(key, key).data == key.to_bytes(8, "little") * (i + 1)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert vol.stats().file_count == 320
    vol = reopen(vol, tmp_path)
    assert vol.stats().file_count == 320
    assert vol.read(7039, 7039).data == (7039).to_bytes(8, "little") * 40
    vol.close()


@pytest.mark.timeout(20)
def test_too_large_needle(tmp_path):
    vol = new_volume(tmp_path)

    class Huge:
        def __len__(self):
            return fmt.MAX_DATA_SIZE + 1

    with pytest.raises(FsError) as e:
        vol.write(1, 1, Huge())
    assert e.value.errno == errno.EFBIG
    vol.close()


# ------------------------------------------------------------------ store

@pytest.mark.timeout(20)
def test_store_allocate_list_reopen(tmp_path):
    d = str(tmp_path / "data")
    store = Store(d, max_volumes=2, durability="none").open()
    store.allocate(7, 1)
    assert store.allocate(7, 1).volume_id == 7          # idempotent
    with pytest.raises(FsError) as e:
        store.allocate(7, 3)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(FsError) as e:
        store.allocate(8, 0)
    assert e.value.errno == errno.EINVAL
    store.allocate(9, 3)
    with pytest.raises(FsError) as e:
        store.allocate(10, 1)
    assert e.value.errno == errno.ENOSPC
    store.write(9, 1, 2, b"hi")
    with pytest.raises(FsError) as e:
        store.get(123)
    assert e.value.errno == errno.ENOENT
    free, total = store.disk()
    assert 0 < free <= total
    store.close()
    open(os.path.join(d, "5.dat.tmp"), "wb").close()    # a died allocation
    open(os.path.join(d, "6.dat"), "wb").close()        # an unreadable volume
    store = Store(d, durability="none").open()
    assert [v.volume_id for v in store.volumes()] == [7, 9]
    assert store.read(9, 1, 2).data == b"hi"
    assert [(n.key, n.cookie) for n in store.list_needles(9)] == [(1, 2)]
    assert not os.path.exists(os.path.join(d, "5.dat.tmp"))
    store.set_size_limit(10)
    assert all(v.stats().read_only for v in store.volumes())
    store.close()


@pytest.mark.timeout(20)
def test_store_refuses_when_disk_low(tmp_path):
    store = Store(str(tmp_path), min_free_bytes=1 << 62, durability="none").open()
    with pytest.raises(FsError) as e:
        store.allocate(1, 1)
    assert e.value.errno == errno.ENOSPC
    store.min_free_bytes = 0
    store.allocate(1, 1)
    store.min_free_bytes = 1 << 62
    with pytest.raises(FsError) as e:
        store.write(1, 1, 1, b"x")
    assert e.value.errno == errno.ENOSPC and e.value.status().name == "RESOURCE_EXHAUSTED"
    store.close()
