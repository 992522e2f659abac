"""ChunkReader's bookkeeping of fetches in flight (no servers: the fetch itself is stubbed)."""
from __future__ import annotations

import errno
import os
import threading
import time
from concurrent.futures import Future

import pytest

from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from fusefs.reader import ChunkReader


class _DonePool:
    """An executor whose futures are finished before submit() returns: the case of a fetch
    that completes before the caller gets to register its callback."""

    def submit(self, fn, *args):
        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut

    def shutdown(self, wait=True, cancel_futures=False):
        pass


@pytest.mark.timeout(20)
def test_a_fetch_that_finishes_at_once_does_not_deadlock_the_reader():
    """A fetch already done when its done-callback is added runs the callback at once, in the
    same thread: added under the in-flight lock, the callback would wait for that lock
    forever and hang the mount."""
    reader = ChunkReader(master=None, cache_bytes=1 << 20)
    try:
        reader._pool.shutdown()
        reader._pool = _DonePool()
        reader._fetch_whole = lambda piece: b"needle bytes"
        piece = Piece(0, 12, "1,0100000001", 0, 12, 0)
        result: list = []
        t = threading.Thread(target=lambda: result.append(reader._fetch_async(piece).result()),
                             daemon=True)
        t.start()
        t.join(5)
        assert not t.is_alive(), "the reader deadlocked in _fetch_async"
        assert result == [b"needle bytes"]
        assert reader._inflight == {}   # the finished fetch is not left behind
    finally:
        reader.close()


@pytest.mark.timeout(20)
def test_a_finished_fetch_does_not_drop_a_newer_fetch_of_the_same_needle():
    reader = ChunkReader(master=None, cache_bytes=1 << 20)
    try:
        old, new = Future(), Future()
        reader._inflight["1,0100000001"] = new
        reader._done("1,0100000001", old)
        assert reader._inflight == {"1,0100000001": new}
        reader._done("1,0100000001", new)
        assert reader._inflight == {}
    finally:
        reader.close()


@pytest.mark.timeout(10)
def test_inline_bytes_are_crc_checked_and_read_with_zeros_past_them():
    import crc32c

    from fusefs.reader import inline_bytes, read_inline
    from protos import master_pb2
    good = master_pb2.FileChunks(attr=master_pb2.Attr(ino=3, size=8, inline=True),
                                 inline_data=b"abc", inline_crc32c=crc32c.crc32c(b"abc"))
    data = inline_bytes(good)
    assert read_inline(data, 8, 0, 100) == b"abc" + bytes(5)
    assert read_inline(data, 8, 2, 2) == b"c\0"
    assert read_inline(data, 8, 8, 1) == b""
    bad = master_pb2.FileChunks(attr=good.attr, inline_data=b"abd",
                                inline_crc32c=good.inline_crc32c)
    with pytest.raises(FsError) as e:
        inline_bytes(bad)
    assert e.value.errno == errno.EIO
    assert inline_bytes(master_pb2.FileChunks(attr=master_pb2.Attr(ino=4))) is None


# ------------------------------------------------------------------ block reads, replicas

class _Replica:
    """A volume server's ReadNeedle over needles held in memory, answering as server.py does;
    `damage` flips a byte of every answer after the CRCs were taken (damage in flight)."""

    def __init__(self, needles: dict, damage: bool = False):
        self.needles = needles
        self.damage = damage
        self.calls: list[tuple] = []

    def ReadNeedle(self, req, timeout=None, wait_for_ready=None):
        import crc32c

        from cluster.common import blocks
        from protos import volume_pb2
        self.calls.append((req.key, req.offset, req.length, req.whole_blocks))
        data = self.needles[req.key]
        whole = dict(needle_crc32c=crc32c.crc32c(data), needle_size=len(data))
        if req.whole_blocks and (req.offset or req.length):
            start, stop = blocks.byte_range(*blocks.span(req.offset, req.length, len(data)),
                                            len(data))
            out, crcs = data[start:stop], blocks.crcs(data[start:stop])
            if self.damage:
                out = bytes([out[0] ^ 1]) + out[1:]
            return volume_pb2.ReadResponse(data=out, data_offset=start, block_crc32c=crcs,
                                           block_size=blocks.BLOCK_SIZE, **whole)
        if self.damage:
            data = bytes([data[0] ^ 1]) + data[1:]
        return volume_pb2.ReadResponse(data=data, **whole)


class _Stubs:
    def __init__(self, replicas: dict):
        self.replicas = replicas

    def get(self, address):
        return self.replicas[address]

    def reset(self, address):
        pass

    def close(self):
        pass


class _Locator:
    def __init__(self, addresses):
        from protos import master_pb2
        self.locs = [master_pb2.Location(name=a, grpc_address=a) for a in addresses]

    def locations(self, vid):
        return self.locs

    def invalidate(self, vid):
        pass


def _reader_over(replicas: dict) -> ChunkReader:
    reader = ChunkReader(master=None, cache_bytes=64 << 20)
    reader.stubs = _Stubs(replicas)
    reader.locator = _Locator(list(replicas))
    return reader


def _piece(key: int, data: bytes, file_offset: int = 0) -> Piece:
    import crc32c

    from cluster.common.fid import Fid
    return Piece(file_offset, len(data), str(Fid(1, key, 0xC0FFEE)), 0, len(data),
                 crc32c.crc32c(data))


@pytest.mark.timeout(20)
def test_a_random_read_fetches_only_its_covering_block_and_caches_it():

    from cluster.common import blocks
    bs = blocks.BLOCK_SIZE
    data = os.urandom(4 << 20)
    a = _Replica({2: data})
    reader = _reader_over({"a": a})
    try:
        piece = _piece(2, data)
        assert reader.read([piece], 10 * bs + 100, 4096, len(data)) == data[10 * bs + 100:
                                                                               10 * bs + 4196]
        assert a.calls == [(2, 10 * bs, bs, True)]          # one block, whole, with its CRC
        assert reader.cache.get(piece.fid) is None          # not the whole needle
        assert reader.read([piece], 10 * bs + 8192, 4096, len(data)) == \
            data[10 * bs + 8192:10 * bs + 12288]
        assert len(a.calls) == 1                            # the same block: from the cache
        assert reader.read([piece], 12 * bs - 10, 20, len(data)) == data[12 * bs - 10:12 * bs + 10]
        assert a.calls[-1] == (2, 11 * bs, 2 * bs, True)    # two blocks, one request
        assert reader.read([piece], 11 * bs, 4096, len(data)) == data[11 * bs:11 * bs + 4096]
        assert len(a.calls) == 2
        # A sequential reader still streams whole needles.
        assert reader.read([piece], 0, 4096, len(data), readahead=1) == data[:4096]
        assert a.calls[-1] == (2, 0, 0, False)
    finally:
        reader.close()


@pytest.mark.timeout(20)
def test_a_block_damaged_in_flight_fails_over_and_is_never_returned():
    data = os.urandom(1 << 20)
    bad, good = _Replica({4: data}, damage=True), _Replica({4: data})
    piece = _piece(4, data)                        # key 4 % 2 == 0: "bad" is asked first
    reader = _reader_over({"bad": bad, "good": good})
    try:
        assert reader.read([piece], 300_000, 4096, len(data)) == data[300_000:304_096]
        assert len(bad.calls) == 1
        assert len(good.calls) == 1
    finally:
        reader.close()
    reader = _reader_over({"bad": bad, "also-bad": _Replica({4: data}, damage=True)})
    try:
        with pytest.raises(FsError) as e:
            reader.read([piece], 300_000, 4096, len(data))
        assert e.value.errno == errno.EIO
        assert "fails its CRC32C on arrival" in e.value.message
        assert reader.blocks.get((piece.fid, 300_000 // (64 << 10))) is None
    finally:
        reader.close()


@pytest.mark.timeout(20)
def test_a_replica_holding_another_needle_is_refused_for_block_reads():
    data = os.urandom(1 << 20)
    other = os.urandom(1 << 20)
    reader = _reader_over({"a": _Replica({6: other}), "b": _Replica({6: data})})
    try:
        assert reader.read([_piece(6, data)], 500_000, 100, len(data)) == data[500_000:500_100]
    finally:
        reader.close()


@pytest.mark.timeout(20)
def test_sequential_read_ahead_spreads_needles_over_the_replicas():
    """Read-ahead fetches the next needles in parallel; needle key k goes first to replica
    k % replicas, so consecutive chunks of a file come from different servers."""
    chunk = 256 << 10
    needles = {k: os.urandom(chunk) for k in range(1, 7)}
    a, b = _Replica(needles), _Replica(needles)
    pieces = [_piece(k, needles[k], (k - 1) * chunk) for k in range(1, 7)]
    size = 6 * chunk
    reader = _reader_over({"a": a, "b": b})
    try:
        assert reader.read(pieces, 0, 4096, size, readahead=4) == needles[1][:4096]
        deadline = time.monotonic() + 5
        while len(a.calls) + len(b.calls) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(c[0] for c in a.calls) == [2, 4]
        assert sorted(c[0] for c in b.calls) == [1, 3, 5]
    finally:
        reader.close()
