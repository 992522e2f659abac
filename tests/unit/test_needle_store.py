"""Needle format and volume store: round trips, restart, crash recovery, corruption, limits."""
from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.common import blocks
from cluster.common.errors import FsError
from cluster.volume import needle as fmt
from cluster.volume.store import Store
from cluster.volume.volume import Volume

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
    assert fmt.record_size(3, 1) == 24       # v1: 16 header + 3 data + 5 trailer -> 24
    assert fmt.record_size(3) == 32          # v2: + 4 for the one block CRC -> 28 -> 32
    assert len(rec) == 32
    assert rec[16:19] == b"abc"
    assert rec[24:28] == fmt.crc32c(b"abc").to_bytes(4, "little")   # the block's CRC
    rec[17] ^= 0xFF
    assert not fmt.crc_ok(fmt.decode_needle(rec))
    with pytest.raises(fmt.FormatError):
        fmt.decode_needle(rec[:20])
    bad_flags = bytearray(fmt.encode_needle(7, 9, b"abc"))
    bad_flags[19] = 0x80
    with pytest.raises(fmt.FormatError):
        fmt.decode_needle(bad_flags)


@pytest.mark.timeout(30)
@settings(max_examples=40, deadline=None)
@given(size=st.sampled_from([0, 1, blocks.BLOCK_SIZE - 1, blocks.BLOCK_SIZE,
                             blocks.BLOCK_SIZE + 1, 3 * blocks.BLOCK_SIZE + 17]),
       seed=st.integers(0, 255), version=st.sampled_from([1, 2]))
def test_block_crc_layout_round_trip(size, seed, version):
    """Version 2 stores one CRC32C per 64 KiB block after the trailer; the data sits where
    version 1 has it, and version 1 records decode as before, without block CRCs."""
    data = bytes((seed + i * 31) % 251 for i in range(size))
    rec = fmt.encode_needle(7, 9, data, version=version)
    assert len(rec) == fmt.record_size(size, version)
    assert len(rec) % fmt.ALIGN == 0
    assert rec[fmt.NEEDLE_HEADER_SIZE:fmt.NEEDLE_HEADER_SIZE + size] == data
    n = fmt.decode_needle(rec, version)
    assert bytes(n.data) == data
    assert fmt.crc_ok(n)
    assert fmt.blocks_ok(n)
    if version == 1:
        assert n.block_crcs is None
        assert len(rec) == (fmt.NEEDLE_HEADER_SIZE + size + 5 + 7) // 8 * 8
        return
    want = tuple(fmt.crc32c(data[i:i + blocks.BLOCK_SIZE])
                 for i in range(0, size, blocks.BLOCK_SIZE))
    assert n.block_crcs == want
    assert len(want) == blocks.count(size)
    for i, crc in enumerate(want):                      # each CRC where block_crc_offset says
        at = fmt.block_crc_offset(size, i)
        assert rec[at:at + 4] == crc.to_bytes(4, "little")
    if size:
        damaged = bytearray(rec)
        damaged[fmt.block_crc_offset(size, len(want) - 1)] ^= 0x10   # the last block's CRC
        n = fmt.decode_needle(damaged, version)
        assert fmt.crc_ok(n)
        assert not fmt.blocks_ok(n)


@pytest.mark.timeout(10)
def test_block_arithmetic():
    bs = blocks.BLOCK_SIZE
    assert blocks.span(0, 4096, 10 * bs) == (0, 1)
    assert blocks.span(bs - 1, 2, 10 * bs) == (0, 2)         # straddles a boundary
    assert blocks.span(5 * bs, 0, 5 * bs + 3) == (5, 6)      # to the end
    assert blocks.span(3, 100, 3) == (0, 0)                  # empty at the end
    assert blocks.byte_range(1, 3, 2 * bs + 5) == (bs, 2 * bs + 5)
    data = os.urandom(2 * bs + 5)
    crcs = blocks.crcs(data)
    assert len(crcs) == 3
    assert blocks.first_bad(data, crcs) is None
    assert blocks.first_bad(data[:-1], crcs) == 2
    assert blocks.first_bad(data + b"x" * bs, crcs) == 0     # wrong block count: never good


@pytest.mark.timeout(10)
def test_superblock_and_idx():
    sb = fmt.SuperBlock(replication=3, compact_revision=5)
    raw = fmt.encode_superblock(sb)
    assert len(raw) == fmt.SUPERBLOCK_SIZE
    assert len(raw) % fmt.ALIGN == 0
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
    assert r.data == data
    assert r.needle_size == len(data)
    assert r.needle_crc == fmt.crc32c(data)
    assert vol.read(10, 0xABCD, 10, 5).data == data[10:15]
    assert vol.read(10, 0xABCD, 99_990).data == data[99_990:]
    assert vol.read(10, 0xABCD, 99_990, 100).data == data[99_990:]
    assert vol.read(11, 1).data == b""
    s = vol.stats()
    assert s.file_count == 2
    assert s.deleted_bytes == 0
    assert s.replication == 2
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
    assert info[7].cookie == 1007
    assert info[7].size == len(blobs[7])
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
        assert e.value.errno == errno.EIO
        assert "CRC mismatch" in e.value.message
        assert e.value.status().name == "DATA_LOSS"
    assert vol.read(2, 6).data == b"neighbour"
    vol.close()


@pytest.mark.timeout(20)
def test_ranged_reads_reuse_a_verified_needle_and_never_return_rot(tmp_path):
    """Version 1 (one CRC per needle): a byte-range read keeps the needle it verified; later
    ranges come from memory (the bytes that passed the CRC), so corruption on disk afterwards
    is never served; a whole read still goes to the disk and reports it."""
    vol = new_volume(tmp_path, version=1)
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
        assert e.value.errno == errno.EACCES
        assert "wrong cookie" in e.value.message
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
    assert e.value.errno == errno.EROFS
    assert e.value.status().name == "FAILED_PRECONDITION"
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
        except Exception as e:
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
    assert e.value.errno == errno.ENOSPC
    assert e.value.status().name == "RESOURCE_EXHAUSTED"
    store.close()


# ------------------------------------------------------------------ block CRCs (version 2)

def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x01]))


class _PreadCounter:
    """Counts the bytes os.pread returns while installed (store and needle both use it)."""

    def __init__(self, monkeypatch):
        self.bytes = 0
        real = os.pread

        def pread(fd, n, offset):
            buf = real(fd, n, offset)
            self.bytes += len(buf)
            return buf

        monkeypatch.setattr(os, "pread", pread)


@pytest.mark.timeout(20)
def test_range_read_reads_and_verifies_only_its_covering_blocks(tmp_path, monkeypatch):
    vol = new_volume(tmp_path)
    assert vol.version == fmt.FORMAT_VERSION == 2
    bs = blocks.BLOCK_SIZE
    data = os.urandom(4 << 20)                                  # a 4 MiB chunk: 64 blocks
    vol.write(1, 5, data)
    counter = _PreadCounter(monkeypatch)
    r = vol.read_blocks(1, 5, 10 * bs + 100, 4096)
    assert (r.data_offset, r.data, r.needle_size) == (10 * bs, data[10 * bs:11 * bs], len(data))
    assert r.block_crcs == (fmt.crc32c(data[10 * bs:11 * bs]),)
    assert r.needle_crc == fmt.crc32c(data)
    # header + one block + trailer and CRCs up to block 10: nothing like the 4 MiB needle
    assert counter.bytes == fmt.NEEDLE_HEADER_SIZE + bs + 5 + 4 * 11
    r = vol.read_blocks(1, 5, 2 * bs - 1, 2)                    # straddles blocks 1 and 2
    assert r.data_offset == bs
    assert r.data == data[bs:3 * bs]
    assert len(r.block_crcs) == 2
    assert vol.read(1, 5, 63 * bs + 5, 0).data == data[63 * bs + 5:]   # the short tail
    assert vol.read(1, 5, 12345, 678).data == data[12345:13023]
    vol.close()


@pytest.mark.timeout(20)
def test_a_flipped_byte_fails_its_block_only_and_never_returns_data(tmp_path):
    """A damaged block is EIO (DATA_LOSS) for every read that covers it, the whole read
    included; the needle's other blocks still read, as they are checked on their own."""
    vol = new_volume(tmp_path)
    bs = blocks.BLOCK_SIZE
    data = os.urandom(5 * bs)
    vol.write(1, 5, data)
    vol.write(2, 6, b"neighbour")
    _flip(vol.dat_path, fmt.SUPERBLOCK_SIZE + fmt.NEEDLE_HEADER_SIZE + 3 * bs + 7)  # block 3
    for offset, length in ((3 * bs, 10), (2 * bs, 2 * bs), (0, 0), (3 * bs + 7, 1)):
        with pytest.raises(FsError) as e:
            vol.read(1, 5, offset, length)
        assert e.value.errno == errno.EIO
        assert "CRC mismatch" in e.value.message
        assert e.value.status().name == "DATA_LOSS"
    with pytest.raises(FsError) as e:
        vol.read_blocks(1, 5, 3 * bs, 1)
    assert "block 3" in e.value.message
    assert vol.read(1, 5, bs + 5, 100).data == data[bs + 5:bs + 105]       # block 1: fine
    assert vol.read(1, 5, 4 * bs, 0).data == data[4 * bs:]                 # block 4: fine
    assert vol.read(2, 6).data == b"neighbour"
    assert vol.check(1, 5, len(data), fmt.crc32c(data))[0] == "crc_bad"
    vol.close()


@pytest.mark.timeout(20)
def test_a_damaged_block_crc_is_an_error_for_its_block_and_fsck_finds_it(tmp_path):
    vol = new_volume(tmp_path)
    bs = blocks.BLOCK_SIZE
    data = os.urandom(3 * bs)
    vol.write(1, 5, data)
    _flip(vol.dat_path, fmt.SUPERBLOCK_SIZE + fmt.block_crc_offset(len(data), 1))
    assert vol.read(1, 5).data == data                  # the whole CRC still holds
    assert vol.read(1, 5, 0, 10).data == data[:10]
    with pytest.raises(FsError) as e:
        vol.read(1, 5, bs, 10)
    assert e.value.errno == errno.EIO
    status, detail = vol.check(1, 5, len(data), fmt.crc32c(data))
    assert status == "crc_bad"
    assert "block CRC" in detail
    vol.restore(1, 5, data)                             # fsck --repair's copy fixes it
    assert vol.read(1, 5, bs, 10).data == data[bs:bs + 10]
    assert vol.check(1, 5, len(data), fmt.crc32c(data))[0] == "ok"
    vol.close()


@pytest.mark.timeout(20)
def test_block_reads_check_the_cookie_and_the_header(tmp_path):
    vol = new_volume(tmp_path)
    data = os.urandom(3 * blocks.BLOCK_SIZE)
    vol.write(1, 5, data)
    with pytest.raises(FsError) as e:
        vol.read_blocks(1, 6, 100, 10)
    assert e.value.errno == errno.EACCES
    _flip(vol.dat_path, fmt.SUPERBLOCK_SIZE + 4)        # the key
    with pytest.raises(FsError) as e:
        vol.read_blocks(1, 5, 100, 10)
    assert e.value.errno == errno.EIO
    assert "header corrupt" in e.value.message
    vol.close()


V1_FIXTURE = Path(__file__).parent / "data" / "volume_v1"
V1_BIG = bytes((i * 7 + i // 251) % 256 for i in range(150_000))


@pytest.mark.timeout(30)
def test_a_version_1_volume_still_reads_and_takes_writes(tmp_path):
    """tests/unit/data/volume_v1 is a volume in format version 1 (one CRC per needle), as
    commit 8696909 writes it: needle 1 (150,000 bytes, cookie 0x1111), needle 2 (cookie
    0x2222), needle 3 written and deleted."""
    for name in ("1.dat", "1.idx"):
        shutil.copy(V1_FIXTURE / name, tmp_path / name)
    vol = Volume(str(tmp_path), 1, durability="none")
    assert vol.version == 1
    assert vol.stats().file_count == 2
    assert vol.stats().format_version == 1               # /status shows it
    assert vol.read(1, 0x1111).data == V1_BIG
    assert vol.read(2, 0x2222).data == b"an old small needle"
    with pytest.raises(FsError):
        vol.read(3, 0x3333)
    bs = blocks.BLOCK_SIZE
    r = vol.read_blocks(1, 0x1111, bs + 10, 5)          # the same answer's shape as version 2
    assert r.data_offset == bs
    assert r.data == V1_BIG[bs:2 * bs]
    assert r.block_crcs == (fmt.crc32c(V1_BIG[bs:2 * bs]),)
    assert vol.read(1, 0x1111, 140_000, 0).data == V1_BIG[140_000:]
    assert vol.check(1, 0x1111, len(V1_BIG), fmt.crc32c(V1_BIG))[0] == "ok"
    vol.write(4, 0x4444, b"appended in version 1")      # the volume keeps its layout
    vol = reopen(vol, tmp_path)
    assert vol.version == 1
    assert vol.read(4, 0x4444).data == b"appended in version 1"
    _flip(vol.dat_path, fmt.SUPERBLOCK_SIZE + fmt.NEEDLE_HEADER_SIZE + 100)   # one CRC:
    with pytest.raises(FsError) as e:                   # a range anywhere in it fails
        vol.read(1, 0x1111, 2 * bs, 10)
    assert e.value.errno == errno.EIO
    vol.close()


@pytest.mark.timeout(30)
def test_compaction_upgrades_a_version_1_volume_and_keeps_damage(tmp_path):
    for name in ("1.dat", "1.idx"):
        shutil.copy(V1_FIXTURE / name, tmp_path / name)
    vol = Volume(str(tmp_path), 1, durability="none")
    damaged = os.urandom(3 * blocks.BLOCK_SIZE)
    vol.write(5, 0x5555, damaged)
    vol.write(6, 0x6666, b"last")        # a bad last record would pass for a torn write at load
    pos = vol._index[5][0]
    _flip(vol.dat_path, pos + fmt.NEEDLE_HEADER_SIZE + 10)          # block 0 of needle 5
    vol.compact()
    assert vol.version == 2
    assert vol.stats().format_version == 2
    with open(vol.dat_path, "rb") as fh:
        assert fmt.decode_superblock(fh.read(16)).version == 2
    bs = blocks.BLOCK_SIZE
    assert vol.read(1, 0x1111).data == V1_BIG
    r = vol.read_blocks(1, 0x1111, 2 * bs, 1)           # now from stored block CRCs
    assert r.data == V1_BIG[2 * bs:]
    assert r.block_crcs == (fmt.crc32c(V1_BIG[2 * bs:]),)
    assert vol.read(2, 0x2222).data == b"an old small needle"
    for offset, length in ((0, 0), (2 * bs, 10), (0, 10)):  # damaged before: every block fails
        with pytest.raises(FsError) as e:
            vol.read(5, 0x5555, offset, length)
        assert e.value.errno == errno.EIO
    assert vol.check(5, 0x5555)[0] == "crc_bad"
    vol = reopen(vol, tmp_path)                         # the new file loads as version 2
    assert vol.version == 2
    assert vol.read(1, 0x1111, 10, 10).data == V1_BIG[10:20]
    vol.close()


@pytest.mark.timeout(30)
def test_compaction_keeps_block_crcs(tmp_path):
    vol = new_volume(tmp_path)
    bs = blocks.BLOCK_SIZE
    keep = os.urandom(4 * bs + 3)
    vol.write(1, 5, os.urandom(2 * bs))
    vol.write(2, 6, keep)
    vol.delete(1, 5)
    before = vol.stats().size
    vol.compact()
    assert vol.stats().size < before
    assert vol.version == 2
    r = vol.read_blocks(2, 6, 3 * bs, 10)
    assert r.data == keep[3 * bs:4 * bs]
    assert r.block_crcs == (fmt.crc32c(keep[3 * bs:4 * bs]),)
    pos = vol._index[2][0]
    _flip(vol.dat_path, pos + fmt.NEEDLE_HEADER_SIZE + 3 * bs)          # block 3
    with pytest.raises(FsError):
        vol.read(2, 6, 3 * bs, 10)
    assert vol.read(2, 6, 4 * bs, 0).data == keep[4 * bs:]
    vol.close()
