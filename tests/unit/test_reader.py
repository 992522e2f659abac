"""ChunkReader's bookkeeping of fetches in flight (no servers: the fetch itself is stubbed)."""
from __future__ import annotations

import errno
import threading
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
    """Registering the done-callback under the in-flight lock ran it at once, in the same
    thread, and it waited for that lock forever: fsx hung the mount this way."""
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
