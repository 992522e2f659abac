"""A volume's read side: needle reads checked against their CRCs, and fsck's checks.

Reads take no lock (see the locking rules in volume.py): they take the current ReadView (the
index dict and a read-only fd of the same generation of `.dat`) once, then a dict lookup
(atomic under the GIL) and os.pread on that fd, so a reader never waits for an append, an
fsync or a compaction. `VolumeReads` is the part of Volume that does this; it is a class of
its own only to keep each module short, and is not used alone.
"""
from __future__ import annotations

import contextlib
import errno
import os
import struct
import threading
from dataclasses import dataclass

from cluster.common import blocks
from cluster.common.errors import FsError, fserror_from_oserror
from cluster.common.lru import ByteLRU
from cluster.volume import needle as fmt

VERIFIED_CACHE_BYTES = 64 << 20  # per version-1 volume, for byte-range reads (see ReadView)
SPLIT_READ_BYTES = 256 << 10   # from this needle size, 3 preads beat 1 pread + a slice copy
READAHEAD_BYTES = 8 << 20       # hinted to the kernel after each big needle read


@dataclass(frozen=True)
class ReadResult:
    data: bytes
    needle_crc: int        # CRC32C of the whole needle's data (verified)
    needle_size: int


@dataclass(frozen=True)
class BlockRead:
    """The 64 KiB blocks covering a byte range of a needle, each verified against its CRC."""
    data: bytes            # blocks [first, end) of the needle's data, the last one maybe short
    data_offset: int       # where `data` starts in the needle's data: first * BLOCK_SIZE
    block_crcs: tuple      # the CRC32C of each block in `data`, as checked
    needle_crc: int        # CRC32C of the whole needle's data, as stored
    needle_size: int


@dataclass(frozen=True)
class NeedleInfo:
    key: int
    cookie: int
    size: int
    crc: int


# Outcomes of Volume.check (fsck), one per needle.
CHECK_OK = "ok"
CHECK_MISSING = "missing"
CHECK_WRONG_COOKIE = "wrong_cookie"
CHECK_CRC_BAD = "crc_bad"
CHECK_SIZE_MISMATCH = "size_mismatch"
CHECK_UNREADABLE = "unreadable"


class ReadView:
    """What a reader needs, published as one object: the index and a read-only fd of the same
    generation of `.dat`. Compaction replaces the view; the fd of the old one is closed when the
    last reader holding it lets go (CPython frees it at once), so no read ever runs on a closed
    or reused fd, nor pairs an old offset with the new file."""

    __slots__ = ("fd", "index", "verified", "version")

    def __init__(self, index: dict, fd: int, version: int):
        self.index = index
        self.fd = fd
        self.version = version     # the layout of this generation's needles (needle.py)
        # Version 1 only (no block CRCs): needles this view read from disk and found intact,
        # for byte-range reads, since a random 4 KiB read of a 4 MiB needle would otherwise
        # re-read and re-check all 4 MiB. Bytes in process memory cannot rot on disk, so
        # serving them is as safe as the first check; corruption on disk is still found by
        # the next read that misses (and by fsck, which reads the disk). A compaction
        # publishes a new view, and so a new, empty cache. Version-2 needles need none: a
        # range read checks only its 64 KiB blocks, from disk, each time.
        self.verified = ByteLRU(VERIFIED_CACHE_BYTES if version < 2 else 0)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self):
        self.close()


def _readahead(fd: int, offset: int, length: int) -> None:
    with contextlib.suppress(OSError):  # only a hint
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)


class VolumeReads:
    """The reads and checks of a Volume (volume.py), which sets up what is declared here."""

    volume_id: int
    _lock: threading.Lock                 # the append lock: taken here only to snapshot
    _index: dict[int, tuple[int, int]]    # key -> (offset, size | TOMBSTONE), under _lock
    _rfd: int                             # read-only fd of the current .dat
    _view: ReadView                       # the current generation, replaced by compaction

    def read(self, key: int, cookie: int, offset: int = 0, length: int = 0) -> ReadResult:
        """Bytes [offset, offset+length) of a needle's data (length 0 = to the end), after
        checking the cookie and the CRC of what was read: the whole needle's for a whole
        read, the covering blocks' for a range of a version-2 needle (see read_blocks)."""
        view = self._view
        pos, size = self._locate(view, key)
        if offset > size:
            raise FsError(errno.EINVAL, f"offset {offset} past needle size {size}")
        if offset > 0 or (length and offset + length < size):
            r = self.read_blocks(key, cookie, offset, length, view)
            start = offset - r.data_offset
            stop = (size if length == 0 else min(size, offset + length)) - r.data_offset
            return ReadResult(r.data[start:stop], r.needle_crc, size)
        n, data = self._read_whole(view, key, cookie, pos, size)
        return ReadResult(data if data is not None else bytes(n.data), n.crc, size)

    def read_blocks(self, key: int, cookie: int, offset: int = 0, length: int = 0,
                    view: ReadView | None = None) -> BlockRead:
        """The 64 KiB blocks covering [offset, offset+length) (length 0 = to the end), each
        checked against its CRC before it is returned; a block that fails is EIO, and no
        byte of any block is returned then.

        Version 2 reads just those blocks and their stored CRCs from disk. A version-1 needle
        has one CRC: it is read and checked whole (or found in the verified cache), and the
        block CRCs are computed from the verified bytes, so the caller sees one shape."""
        if view is None:
            view = self._view
        pos, size = self._locate(view, key)
        if offset > size:
            raise FsError(errno.EINVAL, f"offset {offset} past needle size {size}")
        first, end = blocks.span(offset, length, size)
        start, stop = blocks.byte_range(first, end, size)
        if view.version < 2:
            hit = view.verified.get(pos)
            if hit is not None and hit[0] == key:
                _, hit_cookie, crc, data = hit
                if hit_cookie != cookie:
                    raise FsError(errno.EACCES, f"wrong cookie for needle {key:x}")
            else:
                n, _ = self._read_whole(view, key, cookie, pos, size)
                crc, data = n.crc, n.data
                view.verified.put(pos, (key, n.cookie, n.crc, n.data), size)
            out = bytes(data[start:stop])
            return BlockRead(out, start, tuple(blocks.crcs(out)), crc, size)
        rfd = view.fd
        try:
            head = os.pread(rfd, fmt.NEEDLE_HEADER_SIZE, pos)
            out = fmt.pread_exact(rfd, stop - start, pos + fmt.NEEDLE_HEADER_SIZE + start)
            # The trailer and the block CRCs up to the last block read, in one pread.
            tail_len = fmt.block_crc_offset(size, end) - fmt.trailer_offset(size)
            tail = fmt.pread_exact(rfd, tail_len, pos + fmt.trailer_offset(size))
        except OSError as e:
            raise fserror_from_oserror(e, f"volume {self.volume_id}: read failed") from None
        if len(head) != fmt.NEEDLE_HEADER_SIZE or len(out) != stop - start or \
                len(tail) != tail_len:
            raise FsError(errno.EIO, f"needle {key:x} in volume {self.volume_id}: file ends "
                                     f"inside it")
        h = fmt.decode_header(head)
        flags, crc = fmt.decode_trailer(tail)
        self._check_identity(key, cookie, size, h, flags)
        crcs = fmt.decode_block_crcs(tail, fmt.NEEDLE_TRAILER_SIZE + fmt.BLOCK_CRC_SIZE * first,
                                     end - first)
        bad = blocks.first_bad(out, crcs)
        if bad is not None:
            raise FsError(errno.EIO, f"CRC mismatch in block {first + bad} of needle {key:x} "
                                     f"of volume {self.volume_id} at offset {pos}")
        return BlockRead(out, start, crcs, crc, size)

    def _locate(self, view: ReadView, key: int) -> tuple[int, int]:
        entry = view.index.get(key)
        if entry is None or entry[1] == fmt.TOMBSTONE:
            raise FsError(errno.ENOENT, f"needle {key:x} not in volume {self.volume_id}")
        return entry

    def _check_identity(self, key: int, cookie: int, size: int, h: fmt.NeedleHeader,
                        flags: int) -> None:
        """The record read is the live needle the index points at, and the caller may read
        it: EIO for a header that does not match the index, EACCES for a wrong cookie."""
        if h.key != key or h.size != size or flags:
            raise FsError(errno.EIO, f"needle {key:x} in volume {self.volume_id}: header "
                                     f"corrupt (key {h.key:x}, size {h.size}, flags {flags:#x})")
        if h.cookie != cookie:
            raise FsError(errno.EACCES, f"wrong cookie for needle {key:x}")

    def _read_whole(self, view: ReadView, key: int, cookie: int, pos: int,
                    size: int) -> tuple[fmt.Needle, bytes | None]:
        """The whole needle from disk, its whole-data CRC checked. The second item is the
        data as its own bytes object when it was read so (big needles), else None."""
        rfd = view.fd
        try:
            if size >= SPLIT_READ_BYTES:
                # Files are mostly read front to back, and their chunks were appended one after
                # another: ask the kernel to start reading what follows this needle now, so
                # the disk is busy while this one is checked and sent.
                _readahead(rfd, pos + fmt.record_size(size, view.version), READAHEAD_BYTES)
                # Big needle: read the data straight into its own bytes object (no slice copy).
                head = os.pread(rfd, fmt.NEEDLE_HEADER_SIZE, pos)
                data = fmt.pread_exact(rfd, size, pos + fmt.NEEDLE_HEADER_SIZE)
                tail = os.pread(rfd, fmt.NEEDLE_TRAILER_SIZE, pos + fmt.trailer_offset(size))
                if len(head) + len(data) + len(tail) != size + fmt.NEEDLE_HEADER_SIZE + \
                        fmt.NEEDLE_TRAILER_SIZE:
                    raise FsError(errno.EIO, f"needle {key:x} in volume {self.volume_id}: "
                                             f"file ends inside it")
                h = fmt.decode_header(head)
                flags, crc = fmt.decode_trailer(tail)
                n = fmt.Needle(h.cookie, h.key, flags, crc, memoryview(data))
            else:
                record = fmt.pread_exact(rfd, fmt.record_size(size, view.version), pos)
                n = fmt.decode_needle(record, view.version)
                data = None
        except OSError as e:
            raise fserror_from_oserror(e, f"volume {self.volume_id}: read failed") from None
        except fmt.FormatError as e:
            raise FsError(errno.EIO, f"needle {key:x} in volume {self.volume_id}: {e}") from None
        self._check_identity(key, cookie, size, fmt.NeedleHeader(n.cookie, n.key, n.size),
                             n.flags)
        if not fmt.crc_ok(n):
            raise FsError(errno.EIO, f"CRC mismatch in needle {key:x} of volume "
                                     f"{self.volume_id} at offset {pos}")
        return n, data

    def _needle_info(self, key: int, pos: int, size: int, rfd: int | None = None) -> NeedleInfo:
        """Cookie and stored CRC of a live needle, from its header and trailer (no data read)."""
        if rfd is None:
            rfd = self._rfd
        try:
            head = os.pread(rfd, fmt.NEEDLE_HEADER_SIZE, pos)
            tail = os.pread(rfd, fmt.NEEDLE_TRAILER_SIZE,
                            pos + fmt.NEEDLE_HEADER_SIZE + size)
            h = fmt.decode_header(head)
            _, crc = fmt.decode_trailer(tail)
        except (OSError, struct.error) as e:  # struct.error: a short read
            raise FsError(errno.EIO, f"needle {key:x}: cannot read header: {e}") from None
        if h.key != key or h.size != size:
            raise FsError(errno.EIO, f"needle {key:x} in volume {self.volume_id}: header corrupt")
        return NeedleInfo(key, h.cookie, size, crc)

    def list_needles(self) -> list[NeedleInfo]:
        """Live needles (key, cookie, size, stored crc), sorted by key, for fsck."""
        with self._lock:
            view = self._view
            live = [(k, o, s) for k, (o, s) in self._index.items() if s != fmt.TOMBSTONE]
        return [self._needle_info(k, o, s, view.fd) for k, o, s in sorted(live)]

    def check(self, key: int, cookie: int, size: int = 0, crc: int = 0) -> tuple[str, str]:
        """fsck's verdict on one needle, read and verified in place: (CHECK_*, detail).

        `size` and `crc`, when not both 0, are what the master recorded for the needle."""
        view = self._view
        entry = view.index.get(key)
        if entry is None or entry[1] == fmt.TOMBSTONE:
            return CHECK_MISSING, f"needle {key:x} not in volume {self.volume_id}"
        pos, stored = entry
        try:
            record = fmt.pread_exact(view.fd, fmt.record_size(stored, view.version), pos)
            n = fmt.decode_needle(record, view.version)
        except (OSError, fmt.FormatError) as e:
            return CHECK_UNREADABLE, f"needle {key:x} at offset {pos}: {e}"
        if n.key != key or n.size != stored or n.flags:
            return CHECK_UNREADABLE, (f"needle {key:x} at offset {pos}: header corrupt "
                                      f"(key {n.key:x}, size {n.size}, flags {n.flags:#x})")
        if n.cookie != cookie:
            return CHECK_WRONG_COOKIE, f"needle {key:x} has cookie {n.cookie:08x}, not {cookie:08x}"
        if (size or crc) and n.size != size:
            return CHECK_SIZE_MISMATCH, f"needle {key:x} holds {n.size} bytes, expected {size}"
        if not fmt.crc_ok(n):
            return CHECK_CRC_BAD, f"needle {key:x} at offset {pos}: data does not match its CRC"
        if (size or crc) and n.crc != crc:
            return CHECK_CRC_BAD, (f"needle {key:x}: CRC {n.crc:08x} differs from the "
                                   f"recorded {crc:08x}")
        if not fmt.blocks_ok(n):
            # The data is intact but a block CRC is not: range reads of that block would
            # fail, so the copy needs repair like any other damage.
            return CHECK_CRC_BAD, (f"needle {key:x} at offset {pos}: a block CRC does not "
                                   f"match its data")
        return CHECK_OK, ""
