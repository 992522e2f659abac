"""ChunkReader: file bytes from volume servers, with replica fail-over, an LRU needle cache,
an LRU block cache and read-ahead.

A read maps the byte range onto the file's pieces (cluster.common.chunkmap), fetches each
needle from the first replica that answers with good data, and fills holes with zeros.

* Integrity: the volume server checks its CRC32C before answering; a whole-needle read is also
  checked here against the CRC the master recorded at commit, so a bad disk, a bad replica or a
  bug anywhere on the path shows up as a fail-over, and with no good replica as EIO, never as
  wrong bytes.
* Locations: volume id -> replicas is cached for LOCATION_TTL seconds and dropped when a replica
  fails, so a moved or dead server costs one extra lookup.
* Cache: whole needles, LRU, bounded by cache_bytes. Fetches of the same needle by concurrent
  readers (or by read-ahead) are merged into one.
* Small reads that are not sequential (random 4 KiB reads) fetch only the 64 KiB blocks of the
  needle that cover them (cluster/common/blocks.py), not the whole chunk: the volume server
  reads and checks just those blocks against their own CRC32Cs, sends them whole with their
  CRCs (ReadRequest.whole_blocks), and the reader checks each again on arrival before keeping
  it in the block cache (LRU, bounded by block_cache_bytes). The master records only the
  whole needle's CRC, so what a block is checked against comes from the volume server; the
  reader still compares the needle's size and whole CRC in the answer with the recorded ones
  (a replica holding another needle under the key is refused).
* Replicas: each needle is asked first of replica `key % replicas` (the others on failure),
  so the needles of a file, whose keys follow one another, are spread over the replicas:
  the several needles that sequential read-ahead fetches in parallel come from different
  servers, and a needle read twice goes to the server whose page cache holds it.
"""
from __future__ import annotations

import bisect
import errno
import functools
import itertools
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import crc32c
import grpc

from cluster.common import blocks, chunkmap
from cluster.common.errors import FsError, fserror_from_rpc
from cluster.common.fid import Fid
from cluster.common.lru import ByteLRU
from cluster.common.security import Transport
from fusefs.master_client import MasterClient
from protos import master_pb2, volume_pb2

LOCATION_TTL = 30.0
RANGE_READ_FRACTION = 4  # blocks under needle_size/4 are read alone when not streaming
BLOCK_CACHE_BYTES = 32 << 20
READ_TIMEOUT = 30.0
RESTART_GRACE = 5.0  # seconds to wait for an unreachable replica set to come back


def inline_bytes(snapshot: master_pb2.FileChunks) -> bytes | None:
    """An inline file's bytes from a GetChunks answer, checked against their CRC32C (a
    mismatch is EIO, never wrong bytes); None for a file kept in chunks."""
    if not snapshot.attr.inline:
        return None
    data = snapshot.inline_data
    if crc32c.crc32c(data) != snapshot.inline_crc32c:
        raise FsError(errno.EIO, f"inline bytes of inode {snapshot.attr.ino} fail their "
                                 "CRC32C check")
    return data


def read_inline(data: bytes, size: int, offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of an inline file: its bytes, then zeros up to size."""
    end = min(size, offset + length)
    if offset >= end:
        return b""
    part = data[offset:end]
    return part + bytes(end - offset - len(part))


def to_piece_map(chunks) -> chunkmap.PieceMap:
    """Proto chunks (or pieces, or a PieceMap) -> a PieceMap."""
    if isinstance(chunks, chunkmap.PieceMap):
        return chunks
    return chunkmap.PieceMap(to_pieces(chunks))


def to_pieces(chunks) -> list[chunkmap.Piece]:
    """Proto chunks (or pieces) -> sorted pieces."""
    out = []
    for c in chunks:
        if isinstance(c, chunkmap.Piece):
            out.append(c)
        else:
            out.append(chunkmap.Piece(c.file_offset, c.length, c.fid, c.needle_offset,
                                      c.needle_size, c.crc32c))
    out.sort(key=lambda p: p.file_offset)
    return out


class VolumeLocator:
    """volume id -> live replica locations, cached; refreshed after a failure."""

    def __init__(self, master: MasterClient):
        self.master = master
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[float, list[master_pb2.Location]]] = {}

    def locations(self, vid: int) -> list[master_pb2.Location]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(vid)
            if hit and hit[0] > now:
                return hit[1]
        reply = self.master.call("LookupVolume", master_pb2.LookupRequest(volume_ids=[vid]))
        locs: list[master_pb2.Location] = []
        for loc in reply.locations:
            if loc.volume_id == vid:
                locs = list(loc.replicas)
        with self._lock:
            self._cache[vid] = (now + LOCATION_TTL, locs)
        return locs

    def invalidate(self, vid: int) -> None:
        with self._lock:
            self._cache.pop(vid, None)


class NeedleCache(ByteLRU):
    """Whole needles by fid (cluster.common.lru.ByteLRU)."""


class BlockCache(ByteLRU):
    """Verified 64 KiB blocks by (fid, block index): what random reads fetched. A fid names
    one needle's bytes for ever (a rewrite gets a new fid), so an entry never goes stale."""


class ChunkReader:
    def __init__(self, master: MasterClient, cache_bytes: int = 256 << 20, workers: int = 8,
                 block_cache_bytes: int = BLOCK_CACHE_BYTES):
        self.master = master
        self.locator = VolumeLocator(master)
        # The master client's transport (None in tests that give no master: plain).
        transport = getattr(master, "transport", None) or Transport("client")
        self.stubs = transport.volume_stubs()
        self.cache = NeedleCache(cache_bytes)
        self.blocks = BlockCache(block_cache_bytes)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read")
        self._inflight_lock = threading.Lock()
        self._inflight: dict[str, Future] = {}

    # -- public

    def read(self, chunks, offset: int, length: int, file_size: int,
             readahead: int = 0, streaming: bool | None = None) -> bytes:
        """Bytes [offset, offset+length) of a file of `file_size` bytes made of `chunks`.

        readahead: how many needles past the range to fetch in the background (the caller
        knows whether its reads are sequential). streaming: fetch whole needles into the
        cache (default: when reading ahead) rather than just the range.
        """
        if offset >= file_size or length <= 0:
            return b""
        length = min(length, file_size - offset)
        pmap = to_piece_map(chunks)
        wanted = pmap.range(offset, length)
        if streaming is None:
            streaming = readahead > 0
        if len(wanted) == 1 and wanted[0].file_offset == offset and wanted[0].length == length:
            # The common case (a FUSE read inside one chunk): one slice, no assembly.
            p = wanted[0]
            cached = self.cache.get(p.fid)
            if cached is not None and len(cached) >= p.needle_offset + p.length:
                if readahead:
                    self._prefetch(pmap, p, readahead)
                return cached[p.needle_offset:p.needle_offset + p.length]
            if cached is None and not streaming and self._by_blocks(p):
                # A random read inside one needle: in this thread, no hop through the pool.
                return self._read_blocks(p)[0]
        out = bytearray(length)
        futures = []
        for p in wanted:
            if not streaming and self._by_blocks(p) and self.cache.get(p.fid) is None:
                futures.append((p, self._pool.submit(self._read_blocks, p)))
            else:
                futures.append((p, self._fetch_async(p)))
        for p, fut in futures:
            data = fut.result()
            if isinstance(data, tuple):  # block read: already cut to the piece
                piece_bytes = data[0]
            else:
                piece_bytes = data[p.needle_offset:p.needle_offset + p.length]
            if len(piece_bytes) != p.length:
                raise FsError(errno.EIO, f"chunk {p.fid}: needle shorter than its piece")
            start = p.file_offset - offset
            out[start:start + p.length] = piece_bytes
        if readahead and wanted:
            self._prefetch(pmap, wanted[-1], readahead)
        return bytes(out)

    def read_needle(self, piece: chunkmap.Piece) -> bytes:
        """The whole needle of `piece`, from cache or the first replica with good data."""
        return self._fetch_async(piece).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.stubs.close()

    # -- internals

    def _prefetch(self, pmap: chunkmap.PieceMap, last: chunkmap.Piece, count: int) -> None:
        fids_seen = {last.fid}
        i = bisect.bisect_left(pmap.starts, last.end)
        for p in itertools.islice(pmap.pieces, i, None):
            if p.fid in fids_seen:
                continue
            fids_seen.add(p.fid)
            if self.cache.get(p.fid) is None:
                fut = self._fetch_async(p)
                fut.add_done_callback(lambda f: f.exception())  # read-ahead errors are not fatal
            count -= 1
            if count <= 0:
                break

    def _fetch_async(self, piece: chunkmap.Piece) -> Future:
        cached = self.cache.get(piece.fid)
        if cached is not None:
            done: Future = Future()
            done.set_result(cached)
            return done
        with self._inflight_lock:
            fut = self._inflight.get(piece.fid)
            if fut is not None:
                return fut
            fut = self._pool.submit(self._fetch_whole, piece)
            self._inflight[piece.fid] = fut
        # Outside the lock: a future that is already done runs the callback right here, and
        # _done takes the lock (registered under the lock, a fetch that finished before this
        # line would deadlock the mount: every reader thread would wait in _done).
        fut.add_done_callback(functools.partial(self._done, piece.fid))
        return fut

    def _done(self, fid: str, fut: Future) -> None:
        with self._inflight_lock:
            if self._inflight.get(fid) is fut:  # not a newer fetch of the same needle
                del self._inflight[fid]

    def _fetch_whole(self, piece: chunkmap.Piece) -> bytes:
        def check(reply) -> bytes:
            data = reply.data
            if piece.needle_size and len(data) != piece.needle_size:
                raise FsError(errno.EIO, f"size {len(data)} != recorded {piece.needle_size}")
            if piece.crc32c and crc32c.crc32c(data) != piece.crc32c:
                raise FsError(errno.EIO, "CRC32C differs from the one recorded at commit")
            return data

        data = self._from_replicas(piece, 0, 0, check)
        self.cache.put(piece.fid, data)
        return data

    # -- block reads (random access)

    @staticmethod
    def _by_blocks(piece: chunkmap.Piece) -> bool:
        """Whether a read of `piece` should fetch its covering blocks rather than the whole
        needle: when they are a small part of it (a needle of unknown size: never)."""
        if not piece.needle_size:
            return False
        first, end = blocks.span(piece.needle_offset, piece.length, piece.needle_size)
        return (end - first) * blocks.BLOCK_SIZE * RANGE_READ_FRACTION <= piece.needle_size

    @staticmethod
    def _cut(piece: chunkmap.Piece, first: int, parts: list) -> bytes:
        start = piece.needle_offset - first * blocks.BLOCK_SIZE
        joined = parts[0] if len(parts) == 1 else b"".join(parts)
        return joined[start:start + piece.length]

    def _read_blocks(self, piece: chunkmap.Piece) -> tuple[bytes]:
        """The piece's bytes from its covering blocks: cached ones, and one request for the
        span of the missing ones."""
        first, end = blocks.span(piece.needle_offset, piece.length, piece.needle_size)
        parts = [self.blocks.get((piece.fid, i)) for i in range(first, end)]
        missing = [first + j for j, b in enumerate(parts) if b is None]
        if missing:
            lo, hi = missing[0], missing[-1] + 1
            for i, block in enumerate(self._fetch_blocks(piece, lo, hi), lo):
                self.blocks.put((piece.fid, i), block)
                parts[i - first] = block
        return (self._cut(piece, first, parts),)

    def _fetch_blocks(self, piece: chunkmap.Piece, lo: int, hi: int) -> list[bytes]:
        """Blocks [lo, hi) of the piece's needle from the first replica whose answer checks
        out: the blocks asked for, each matching its CRC, of the needle the master recorded."""
        start, stop = blocks.byte_range(lo, hi, piece.needle_size)

        def check(reply) -> bytes:
            data = reply.data
            if reply.block_size != blocks.BLOCK_SIZE or reply.data_offset != start or \
                    len(data) != stop - start or len(reply.block_crc32c) != hi - lo:
                raise FsError(errno.EIO, f"answer is not blocks {lo}..{hi - 1} (block size "
                                         f"{reply.block_size}, offset {reply.data_offset}, "
                                         f"{len(data)} bytes, {len(reply.block_crc32c)} CRCs)")
            if reply.needle_size != piece.needle_size or \
                    (piece.crc32c and reply.needle_crc32c != piece.crc32c):
                raise FsError(errno.EIO, "needle differs from the one recorded at commit")
            bad = blocks.first_bad(data, reply.block_crc32c)
            if bad is not None:
                raise FsError(errno.EIO, f"block {lo + bad} fails its CRC32C on arrival")
            return data

        data = self._from_replicas(piece, start, stop - start, check, whole_blocks=True)
        if hi - lo == 1:
            return [data]
        view = memoryview(data)
        return [bytes(view[i:i + blocks.BLOCK_SIZE])
                for i in range(0, len(view), blocks.BLOCK_SIZE)]

    # -- replicas

    @staticmethod
    def _spread(locations: list, fid: Fid) -> list:
        """The replicas in the order to ask them for this needle (see the module docstring)."""
        if len(locations) < 2:
            return locations
        k = fid.key % len(locations)
        return locations[k:] + locations[:k]

    def _from_replicas(self, piece: chunkmap.Piece, offset: int, length: int, check,
                       whole_blocks: bool = False):
        """Try each replica in turn; when every one was unreachable (a server restarting),
        look the volume up again and retry for up to RESTART_GRACE seconds, waiting for the
        channel to connect. Bad data is not retried: it fails over, then reports EIO."""
        fid = Fid.parse(piece.fid)
        request = volume_pb2.ReadRequest(volume_id=fid.volume_id, key=fid.key, cookie=fid.cookie,
                                         offset=offset, length=length, whole_blocks=whole_blocks)
        problems: list[str] = []
        deadline = time.monotonic() + RESTART_GRACE
        attempt = 0
        while True:
            if attempt:
                self.locator.invalidate(fid.volume_id)
            locations = self._spread(self.locator.locations(fid.volume_id), fid)
            unreachable = 0
            for loc in locations:
                try:
                    reply = self.stubs.get(loc.grpc_address).ReadNeedle(
                        request, timeout=READ_TIMEOUT, wait_for_ready=attempt > 0)
                    return check(reply)
                except grpc.RpcError as e:
                    if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        unreachable += 1
                        self.stubs.reset(loc.grpc_address)
                    problems.append(
                        f"{loc.name or loc.grpc_address}: {fserror_from_rpc(e).message}")
                except FsError as e:
                    problems.append(f"{loc.name or loc.grpc_address}: {e.message}")
            if not locations:
                problems.append(f"volume {fid.volume_id} has no live replica")
            attempt += 1
            retry = (not locations or unreachable == len(locations))
            if not retry or time.monotonic() > deadline:
                break
            time.sleep(min(0.2 * attempt, 1.0))
        seen = list(dict.fromkeys(problems))
        raise FsError(errno.EIO, f"chunk {piece.fid}: no replica has good data ({'; '.join(seen)})")
