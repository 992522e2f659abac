"""Volume storage logic: one Volume per `<vid>.dat`/`<vid>.idx` pair, a Store per data dir.

No transport here: the gRPC servicer (server.py) decodes requests and calls these classes, and
the unit tests drive them directly. Failures are FsError with a POSIX errno (errors.py maps
them to status codes): ENOENT unknown volume or needle, EACCES wrong cookie, EIO corruption
(-> DATA_LOSS), EROFS volume full, ENOSPC disk full, EFBIG needle too large.

Locking rules (gRPC handlers run on a thread pool):
  * Volume._lock serialises appends (write, delete): it guards the end offsets of both files,
    the index dict's mutations and the stats. An append is pwritev of the needle at the end of
    .dat, then pwrite of its entry at the end of .idx, then the dict update — so a key in the
    dict always points at bytes already in the page cache.
  * Reads take no lock: they take the current _ReadView (the index dict and a read-only fd of
    the same .dat) once, then a dict lookup (atomic under the GIL) and os.pread on that fd, so
    a reader never waits for an append, an fsync or a compaction. Compaction publishes a new
    view in one assignment; a reader still holding the old one reads the old file (its fd
    keeps the replaced inode alive) and the fd is closed when the last reader drops the view.
  * Volume._sync (a Condition) guards group commit: `_synced` (the .dat offset known durable),
    `_syncing` (a leader is in fdatasync) and `_inflight` (writers not done appending). A writer
    waits, after releasing _lock, until `_synced` covers its record; the first waiter becomes
    the leader, lets concurrent appends finish (at most group_commit_ms), then fdatasyncs .dat
    once for everyone appended so far (.idx is rebuilt from .dat after a crash, see
    _fdatasync). No dedicated thread, and a lone writer pays
    no batching delay.
  * Compaction (compaction.py) copies live needles without any lock, then takes _lock to copy
    what was appended meanwhile and swap the files; during the swap it also holds the group
    commit leadership (`_syncing`), so no fsync runs on a file being replaced. The swap
    fsyncs the new files, then bumps `_epoch`: writers waiting for an fsync of the old epoch
    are done (their records were copied into the new, synced file).
  * Store._lock guards the dict of volumes (allocate vs lookups).

Durability (VolumeOptions.durability): "fsync" (the default) acknowledges a write once it is
in the operating system (a crash of any process loses nothing; a power cut may lose what no
client fsynced) and syncs when a client's fsync asks for it (`sync`, group-committed like
the others); "group" acknowledges each write after the group fsync covering it (the stricter
sync-on-close contract); "always" fdatasyncs under the append lock for each write; "none"
never syncs, not even for `sync` (tests, benchmarks). An fsync failure poisons the volume
(further writes get EIO): after a failed fsync Linux may have dropped the dirty pages, so
nothing written since can be acknowledged.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass

from cluster.common import blocks
from cluster.common.durability import fdatasync
from cluster.common.errors import FsError
from cluster.common.lru import ByteLRU
from cluster.volume import compaction
from cluster.volume import needle as fmt

log = logging.getLogger(__name__)

DURABILITY_MODES = ("fsync", "group", "always", "none")
DEFAULT_SIZE_LIMIT = 1 << 30
VERIFIED_CACHE_BYTES = 64 << 20  # per version-1 volume, for byte-range reads (see _ReadView)
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


@dataclass(frozen=True)
class CompactResult:
    volume_id: int
    size_before: int
    size_after: int
    compact_revision: int
    seconds: float

    @property
    def freed(self) -> int:
        return max(0, self.size_before - self.size_after)


class _ReadView:
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
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self):
        self.close()


@dataclass(frozen=True)
class VolumeStats:
    volume_id: int
    replication: int
    size: int              # bytes of .dat
    file_count: int        # live needles
    deleted_bytes: int     # bytes of dead records (overwritten, deleted, delete markers)
    read_only: bool
    compact_revision: int
    format_version: int = fmt.FORMAT_VERSION   # 1: no block CRCs until the next vacuum


def _oserror(e: OSError, what: str) -> FsError:
    return FsError(e.errno or errno.EIO, f"{what}: {e.strerror or e}")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, parts: list, offset: int) -> None:
    """Write all buffers at offset; pwritev may write less than asked, so finish the rest."""
    total = sum(len(p) for p in parts)
    done = os.pwritev(fd, parts, offset)
    if done == total:
        return
    # Rare (signals, almost-full disks): finish buffer by buffer.
    pos = 0
    for p in parts:
        view = memoryview(p)
        start = max(0, done - pos)
        pos += len(view)
        while start < len(view):
            n = os.pwrite(fd, view[start:], offset + (pos - len(view)) + start)
            if n <= 0:
                raise OSError(errno.EIO, "short write")
            start += n


def _readahead(fd: int, offset: int, length: int) -> None:
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass  # only a hint


class Volume:
    """One volume: append-only needles in `<vid>.dat`, their index log in `<vid>.idx`."""

    def __init__(self, directory: str, volume_id: int, *, durability: str = "fsync",
                 group_commit_ms: float = 2.0, size_limit: int = DEFAULT_SIZE_LIMIT):
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        self.volume_id = volume_id
        self.dat_path = os.path.join(directory, f"{volume_id}.dat")
        self.idx_path = os.path.join(directory, f"{volume_id}.idx")
        self.durability = durability
        self.group_commit_s = max(0.0, group_commit_ms / 1000.0)
        self._limit = size_limit
        self._lock = threading.Lock()
        self._sync = threading.Condition(threading.Lock())
        self._synced = 0
        self._syncing = False
        self._inflight = 0
        self._failed: str | None = None
        self._closed = False
        self._compacting = False
        self._epoch = 0          # bumped by each compaction swap (see _wait_durable)
        self._directory = directory
        self._open_files()
        self._synced = self._end
        self._full = self._end >= self._limit

    def _open_files(self) -> None:
        """Open the .dat/.idx fds, load the index, publish a fresh read view."""
        self._index: dict[int, tuple[int, int]] = {}   # key -> (offset, size | TOMBSTONE)
        self._file_count = 0
        self._deleted_bytes = 0
        self._wfd = os.open(self.dat_path, os.O_RDWR)
        try:
            self._rfd = os.open(self.dat_path, os.O_RDONLY)
        except OSError:
            os.close(self._wfd)
            raise
        self._ifd = -1
        try:
            self._ifd = os.open(self.idx_path, os.O_RDWR | os.O_CREAT, 0o644)
            self._load()
        except BaseException:
            for fd in (self._wfd, self._ifd, self._rfd):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            raise
        # Owns _rfd; published only once the index is loaded (readers see a whole view).
        self._view = _ReadView(self._index, self._rfd, self.version)

    # ---------------------------------------------------------------- create / load

    @property
    def version(self) -> int:
        """The needle layout of this volume's current files (needle.py): appends use it."""
        return self.superblock.version

    @classmethod
    def create(cls, directory: str, volume_id: int, replication: int,
               version: int = fmt.FORMAT_VERSION, **kw) -> Volume:
        """Write a fresh volume atomically (tmp files, fsync, rename, fsync dir), then open it.
        `version` other than the current one is for tests of old volumes."""
        dat = os.path.join(directory, f"{volume_id}.dat")
        idx = os.path.join(directory, f"{volume_id}.idx")
        if os.path.exists(dat):
            raise FsError(errno.EEXIST, f"volume {volume_id} exists")
        sb = fmt.encode_superblock(fmt.SuperBlock(replication=replication, version=version))
        for path, content in ((idx, b""), (dat, sb)):   # .dat last: it marks the volume as present
            tmp = path + ".tmp"
            with open(tmp, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        _fsync_dir(directory)
        return cls(directory, volume_id, **kw)

    def _load(self) -> None:
        dat_size = os.fstat(self._wfd).st_size
        head = os.pread(self._rfd, fmt.SUPERBLOCK_SIZE, 0)
        try:
            self.superblock = fmt.decode_superblock(head)
        except fmt.FormatError as e:
            raise FsError(errno.EIO, f"volume {self.volume_id}: {e}") from None

        raw = fmt.pread_exact(self._ifd, os.fstat(self._ifd).st_size, 0)
        entries = fmt.decode_idx(raw)
        keep = len(entries)
        # The last entries may point at bytes that never reached the disk (crash between the
        # two files' writeback): walk back to the newest entry whose record checks out.
        while keep and not self._entry_valid(entries[keep - 1], dat_size):
            keep -= 1
        if keep * fmt.IDX_ENTRY_SIZE != len(raw):
            log.warning("volume %d: dropping %d torn/invalid index bytes", self.volume_id,
                        len(raw) - keep * fmt.IDX_ENTRY_SIZE)
            os.ftruncate(self._ifd, keep * fmt.IDX_ENTRY_SIZE)
            os.fsync(self._ifd)
        for e in entries[:keep]:
            self._apply(e.key, e.offset, e.size)
        self._idx_end = keep * fmt.IDX_ENTRY_SIZE
        if keep:
            last = entries[keep - 1]
            self._end = last.offset + fmt.record_size(0 if last.deleted else last.size,
                                                      self.version)
        else:
            self._end = fmt.SUPERBLOCK_SIZE
        self._recover_tail(dat_size)

    def _read_record(self, offset: int, size: int, dat_size: int) -> fmt.Needle | None:
        """The whole record at offset if it is in the file and decodes, else None."""
        if offset < fmt.SUPERBLOCK_SIZE or offset % fmt.ALIGN:
            return None
        length = fmt.record_size(size, self.version)
        if offset + length > dat_size:
            return None
        try:
            return fmt.decode_needle(fmt.pread_exact(self._rfd, length, offset), self.version)
        except fmt.FormatError:
            return None

    def _entry_valid(self, e: fmt.IdxEntry, dat_size: int) -> bool:
        size = 0 if e.deleted else e.size
        n = self._read_record(e.offset, size, dat_size)
        return (n is not None and n.key == e.key and n.size == size
                and n.deleted == e.deleted and fmt.crc_ok(n) and fmt.blocks_ok(n))

    def _recover_tail(self, dat_size: int) -> None:
        """Index whole, CRC-good needles past the last indexed one; cut off a torn tail."""
        pos, recovered = self._end, 0
        while pos + fmt.NEEDLE_HEADER_SIZE <= dat_size:
            h = fmt.decode_header(os.pread(self._rfd, fmt.NEEDLE_HEADER_SIZE, pos))
            if h.size > fmt.MAX_DATA_SIZE:
                break
            n = self._read_record(pos, h.size, dat_size)
            if n is None or not fmt.crc_ok(n) or not fmt.blocks_ok(n) or (n.deleted and n.size):
                break
            size = fmt.TOMBSTONE if n.deleted else n.size
            os.pwrite(self._ifd, fmt.encode_idx(n.key, pos, size), self._idx_end)
            self._idx_end += fmt.IDX_ENTRY_SIZE
            self._apply(n.key, pos, size)
            pos += fmt.record_size(n.size, self.version)
            recovered += 1
        if recovered:
            log.warning("volume %d: re-indexed %d needles from the .dat tail", self.volume_id,
                        recovered)
            os.fsync(self._ifd)
        if pos < dat_size:
            log.warning("volume %d: cutting %d bytes of torn tail at offset %d",
                        self.volume_id, dat_size - pos, pos)
            os.ftruncate(self._wfd, pos)
            os.fsync(self._wfd)
        self._end = pos

    def _apply(self, key: int, offset: int, size: int) -> int:
        """Record an index entry in memory and in the stats; returns the live size it replaced."""
        old = self._index.get(key)
        old_live = old is not None and old[1] != fmt.TOMBSTONE
        if old_live:
            self._deleted_bytes += fmt.record_size(old[1], self.version)
        if size == fmt.TOMBSTONE:
            self._deleted_bytes += fmt.record_size(0, self.version)
            self._file_count -= old_live
        else:
            self._file_count += not old_live
        self._index[key] = (offset, size)
        return old[1] if old_live else 0

    # ---------------------------------------------------------------- appends

    def _check_writable(self, size: int) -> None:
        if self._closed:
            raise FsError(errno.EIO, f"volume {self.volume_id} is closed")
        if self._failed:
            raise FsError(errno.EIO, f"volume {self.volume_id} failed: {self._failed}")
        if size is not None and (self._full or
                                 self._end + fmt.record_size(size, self.version) > self._limit):
            self._full = True
            raise FsError(errno.EROFS, f"volume {self.volume_id} is read-only (full: "
                                       f"{self._end} of {self._limit} bytes)")

    def _append(self, key: int, parts: list, size: int) -> int:
        """Append a record and its index entry; caller holds _lock. Returns the record offset."""
        offset = self._end
        try:
            _pwrite_all(self._wfd, parts, offset)
            os.pwrite(self._ifd, fmt.encode_idx(key, offset, size), self._idx_end)
        except OSError as e:
            # Nothing advanced: the next append overwrites these bytes.
            raise _oserror(e, f"volume {self.volume_id}: append failed") from None
        self._end = offset + sum(len(p) for p in parts)
        self._idx_end += fmt.IDX_ENTRY_SIZE
        if self.durability == "always":
            self._fdatasync()
            self._synced = self._end
        return offset

    def write(self, key: int, cookie: int, data, crc: int | None = None) -> int:
        """Store data under key; durable (per the durability mode) when this returns.

        `crc`, when given, must already be verified against data. Rewriting a live key needs
        its cookie; an identical rewrite (a retried write) stores nothing new.
        """
        size = len(data)
        if size > fmt.MAX_DATA_SIZE:
            raise FsError(errno.EFBIG, f"needle of {size} bytes exceeds {fmt.MAX_DATA_SIZE}")
        if crc is None:
            crc = fmt.crc32c(data)
        # Outside the append lock: the block CRCs cost a pass over the data.
        block_crcs = blocks.crcs(data) if self.version >= 2 else None
        with self._appending():
            self._check_writable(None)
            epoch = self._epoch
            old = self._index.get(key)
            if old is not None and old[1] != fmt.TOMBSTONE:
                info = self._needle_info(key, old[0], old[1])
                if info.cookie != cookie:
                    raise FsError(errno.EACCES, f"wrong cookie for existing needle {key:x}")
                if info.size == size and info.crc == crc:
                    # A retried write: durable once the first copy's record is.
                    end = old[0] + fmt.record_size(size, self.version)
                else:
                    old = None
            if old is None or old[1] == fmt.TOMBSTONE:
                self._check_writable(size)
                parts = self._encode(cookie, key, data, crc, block_crcs)
                offset = self._append(key, parts, size)
                self._apply(key, offset, size)
                end = self._end
        return self._finish(end, epoch, size)

    def _encode(self, cookie: int, key: int, data, crc: int, block_crcs) -> list:
        """The record of a live needle in this volume's version; caller holds _lock. The
        block CRCs were computed before the lock, when the version asked for them then (a
        compaction may have upgraded the volume since: computed here then)."""
        if self.version < 2:
            block_crcs = None
        elif block_crcs is None:
            block_crcs = blocks.crcs(data)
        return fmt.encode_needle_parts(cookie, key, data, 0, crc, self.version, block_crcs)

    @contextlib.contextmanager
    def _appending(self):
        """Hold the append lock, counted in `_inflight` so a group-commit leader waits for
        this append before it syncs (see the module docstring)."""
        with self._sync:
            self._inflight += 1
        try:
            with self._lock:
                yield
        finally:
            with self._sync:
                self._inflight -= 1
                if self._inflight == 0:
                    self._sync.notify_all()

    def restore(self, key: int, cookie: int, data, crc: int | None = None) -> int:
        """Store a needle copied from a healthy replica (fsck --repair), replacing whatever
        this volume holds under the key: missing, damaged, or under another cookie. Unlike
        write, an identical-looking copy is not skipped (its bytes may be the damaged ones),
        and a volume that is full still accepts it (a repair must not fail on the size limit)."""
        size = len(data)
        if size > fmt.MAX_DATA_SIZE:
            raise FsError(errno.EFBIG, f"needle of {size} bytes exceeds {fmt.MAX_DATA_SIZE}")
        if crc is None:
            crc = fmt.crc32c(data)
        elif fmt.crc32c(data) != crc:
            raise FsError(errno.EIO, f"needle {key:x}: copy does not match its CRC {crc:08x}")
        block_crcs = blocks.crcs(data) if self.version >= 2 else None
        with self._appending():
            self._check_writable(None)
            epoch = self._epoch
            parts = self._encode(cookie, key, data, crc, block_crcs)
            offset = self._append(key, parts, size)
            self._apply(key, offset, size)
            end = self._end
        return self._finish(end, epoch, size)

    def delete(self, key: int, cookie: int) -> int:
        """Delete a needle: a delete record in .dat plus a tombstone in .idx. Returns the
        data bytes freed (0 if it was deleted already)."""
        with self._appending():
            self._check_writable(None)   # deletes are allowed on a full volume
            epoch = self._epoch
            old = self._index.get(key)
            if old is None:
                raise FsError(errno.ENOENT, f"needle {key:x} not in volume {self.volume_id}")
            if old[1] == fmt.TOMBSTONE:
                return 0
            if self._needle_info(key, old[0], old[1]).cookie != cookie:
                raise FsError(errno.EACCES, f"wrong cookie for needle {key:x}")
            parts = fmt.encode_needle_parts(cookie, key, b"", fmt.FLAG_DELETED,
                                            version=self.version)
            offset = self._append(key, parts, fmt.TOMBSTONE)
            freed = self._apply(key, offset, fmt.TOMBSTONE)
            end = self._end
        return self._finish(end, epoch, freed)

    def _finish(self, end: int, epoch: int, result: int) -> int:
        if self.durability == "group":
            self._wait_durable(end, epoch)
        return result

    def sync(self) -> None:
        """Every write acknowledged so far is on stable storage when this returns (a client's
        fsync); concurrent syncs and group-mode writes share one fdatasync."""
        if self.durability == "none":
            return
        with self._lock:
            end, epoch = self._end, self._epoch
        self._wait_durable(end, epoch)

    def _fdatasync(self) -> None:
        # Only .dat is synced: it alone is the durable record. The .idx is a cache of it that
        # recovery rebuilds (a lost or torn .idx tail is re-indexed from the .dat records past
        # the last good entry), so syncing it too would double the cost of every write.
        try:
            fdatasync(self._wfd, f"volume {self.volume_id} {self._end}")
        except OSError as e:
            self._failed = f"fsync: {e.strerror or e}"
            log.error("volume %d: %s; refusing further writes", self.volume_id, self._failed)
            raise _oserror(e, f"volume {self.volume_id}: fsync failed") from None

    def _wait_durable(self, end: int, epoch: int) -> None:
        # `end` is an offset in the .dat of `epoch`; once a compaction swapped the files
        # (epoch changed) the record is in the new, fsynced file and offsets mean nothing.
        with self._sync:
            while self._epoch == epoch and self._synced < end:
                if self._failed:
                    raise FsError(errno.EIO, f"volume {self.volume_id} failed: {self._failed}")
                if not self._syncing:
                    self._syncing = True
                    break
                self._sync.wait()
            else:
                return
            # Leader: let writers already appending join this batch, within the window.
            deadline = time.monotonic() + self.group_commit_s
            while self._inflight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._sync.wait(left)
        try:
            target = self._end   # every record below it has its .dat and .idx bytes written
            self._fdatasync()
        finally:
            with self._sync:
                self._syncing = False
                if not self._failed:
                    self._synced = max(self._synced, target)
                self._sync.notify_all()

    # ---------------------------------------------------------------- reads

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
                    view: _ReadView | None = None) -> BlockRead:
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
            raise _oserror(e, f"volume {self.volume_id}: read failed") from None
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

    def _locate(self, view: _ReadView, key: int) -> tuple[int, int]:
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

    def _read_whole(self, view: _ReadView, key: int, cookie: int, pos: int,
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
            raise _oserror(e, f"volume {self.volume_id}: read failed") from None
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

    # ---------------------------------------------------------------- compaction

    def garbage_ratio(self) -> float:
        with self._lock:
            return self._deleted_bytes / self._end if self._end else 0.0

    def compact(self, _between=None) -> CompactResult:
        """Rewrite the volume without its dead records (see compaction.py); reads and writes
        go on meanwhile, writes only waiting for the final tail copy and swap.

        `_between` is a test hook called after the bulk copy, before the tail copy."""
        started = time.monotonic()
        with self._lock:
            self._check_writable(None)
            if self._compacting:
                raise FsError(errno.EAGAIN, f"volume {self.volume_id} is being compacted already")
            self._compacting = True
            view = self._view
            live = sorted(((o, k, s) for k, (o, s) in self._index.items()
                           if s != fmt.TOMBSTONE))
            snap_idx_end = self._idx_end
            size_before = self._end
            # Always the current format: compaction is how an old volume is upgraded.
            sb = fmt.SuperBlock(self.superblock.replication,
                                (self.superblock.compact_revision + 1) & 0xFFFFFFFF,
                                fmt.FORMAT_VERSION)
        try:
            try:
                writer = compaction.CompactionWriter(self._directory, self.volume_id, sb,
                                                     view.version)
            except OSError as e:
                raise _oserror(e, f"volume {self.volume_id}: cannot start compaction") from None
            try:
                for offset, key, size in live:
                    writer.copy_record(view.fd, key, offset, size)
                if _between is not None:
                    _between()
                with self._lock:
                    self._check_writable(None)
                    size_before = self._end
                    tail = fmt.pread_exact(self._ifd, self._idx_end - snap_idx_end, snap_idx_end)
                    for e in fmt.decode_idx(tail):
                        writer.copy_record(view.fd, e.key, e.offset, e.size)
                    self._swap(writer)
            except OSError as e:
                writer.abort()
                raise _oserror(e, f"volume {self.volume_id}: compaction failed") from None
            except BaseException:
                writer.abort()
                raise
        finally:
            self._compacting = False
        result = CompactResult(self.volume_id, size_before, self._end,
                               self.superblock.compact_revision, time.monotonic() - started)
        log.info("volume %d compacted: %d -> %d bytes (revision %d) in %.2fs", self.volume_id,
                 result.size_before, result.size_after, result.compact_revision, result.seconds)
        return result

    def _swap(self, writer: compaction.CompactionWriter) -> None:
        """Caller holds _lock. Make the writer's pair the volume, with group-commit leadership
        held so no fsync touches the files being replaced."""
        with self._sync:
            while self._syncing:
                self._sync.wait()
            self._syncing = True
        swapped = False
        try:
            writer.finish()
            old_wfd, old_ifd, old_view = self._wfd, self._ifd, self._view
            try:
                compaction.swap_in(writer, self.dat_path, self.idx_path, self._directory)
                swapped = True
            except OSError:
                # Before the first rename nothing changed; after it the files on disk are a
                # mix of old and new that only a restart sorts out (the .idx is rebuilt).
                if not os.path.exists(self.idx_path):
                    self._failed = "compaction swap failed midway; restart to recover"
                raise
            for fd in (old_wfd, old_ifd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                self._open_files()
            except BaseException as e:
                self._failed = f"reopening after compaction: {e}"
                self._view = old_view   # keep serving reads from the old file
                raise
            self._synced = self._end
            self._full = self._end >= self._limit
        finally:
            with self._sync:
                if swapped:
                    # Everything appended so far is in the new, fsynced file.
                    self._epoch += 1
                self._syncing = False
                self._sync.notify_all()

    # ---------------------------------------------------------------- state

    @property
    def read_only(self) -> bool:
        return self._full or self._failed is not None

    def set_size_limit(self, limit: int) -> None:
        with self._lock:
            self._limit = limit
            self._full = self._end >= limit

    def stats(self) -> VolumeStats:
        with self._lock:
            return VolumeStats(self.volume_id, self.superblock.replication, self._end,
                               self._file_count, self._deleted_bytes, self.read_only,
                               self.superblock.compact_revision, self.version)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self.durability != "none" and not self._failed:
                    self._fdatasync()
            finally:
                self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._wfd, getattr(self, "_ifd", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        view = getattr(self, "_view", None)
        if view is not None:
            view.close()


class Store:
    """The volumes of one data directory. Persists nothing besides the volume files."""

    def __init__(self, directory: str, *, max_volumes: int = 16, min_free_bytes: int = 0,
                 durability: str = "fsync", group_commit_ms: float = 2.0,
                 size_limit: int = DEFAULT_SIZE_LIMIT):
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        self.directory = directory
        self.max_volumes = max_volumes
        self.min_free_bytes = min_free_bytes
        self._volume_kw = dict(durability=durability, group_commit_ms=group_commit_ms)
        self._size_limit = size_limit
        self._lock = threading.Lock()
        self._volumes: dict[int, Volume] = {}

    def open(self) -> Store:
        """Open every `<vid>.dat` in the directory; a volume that cannot be loaded is logged
        and left out (its files stay for a person or fsck to look at)."""
        os.makedirs(self.directory, exist_ok=True)
        for name in sorted(os.listdir(self.directory)):
            stem, ext = os.path.splitext(name)
            if ext == ".tmp":
                os.unlink(os.path.join(self.directory, name))  # an allocation that died midway
                continue
            if ext != ".dat" or not stem.isdigit():
                continue
            vid = int(stem)
            try:
                self._volumes[vid] = Volume(self.directory, vid, size_limit=self._size_limit,
                                            **self._volume_kw)
            except (FsError, OSError) as e:
                log.error("volume %d in %s cannot be loaded, skipping it: %s",
                          vid, self.directory, e)
        return self

    def allocate(self, volume_id: int, replication: int) -> Volume:
        """Create a volume; allocating one that exists with the same replication is a no-op,
        so a master may retry."""
        if not 1 <= replication <= 8:
            raise FsError(errno.EINVAL, f"replication must be 1..8, not {replication}")
        if not 0 <= volume_id < 2**32:
            raise FsError(errno.EINVAL, f"volume id {volume_id} out of range")
        with self._lock:
            vol = self._volumes.get(volume_id)
            if vol is not None:
                if vol.superblock.replication != replication:
                    raise FsError(errno.EEXIST, f"volume {volume_id} exists with replication "
                                                f"{vol.superblock.replication}")
                return vol
            if len(self._volumes) >= self.max_volumes:
                raise FsError(errno.ENOSPC, f"server holds its maximum of {self.max_volumes} volumes")
            free, _ = self.disk()
            if free < self.min_free_bytes:
                raise FsError(errno.ENOSPC, f"only {free} bytes free in {self.directory}")
            try:
                vol = Volume.create(self.directory, volume_id, replication,
                                    size_limit=self._size_limit, **self._volume_kw)
            except OSError as e:
                raise _oserror(e, f"cannot create volume {volume_id}") from None
            self._volumes[volume_id] = vol
            return vol

    def get(self, volume_id: int) -> Volume:
        vol = self._volumes.get(volume_id)
        if vol is None:
            raise FsError(errno.ENOENT, f"volume {volume_id} not on this server")
        return vol

    def sync(self, volume_ids) -> None:
        """Volume.sync of each volume (ENOENT for one this server does not hold)."""
        for vol in [self.get(vid) for vid in dict.fromkeys(volume_ids)]:
            vol.sync()

    def volumes(self) -> list[Volume]:
        with self._lock:
            return sorted(self._volumes.values(), key=lambda v: v.volume_id)

    def disk(self) -> tuple[int, int]:
        """(free, total) bytes of the file system holding the directory."""
        st = os.statvfs(self.directory)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    def write(self, volume_id: int, key: int, cookie: int, data, crc: int | None = None) -> int:
        vol = self.get(volume_id)
        free, _ = self.disk()
        if free < self.min_free_bytes + len(data):
            raise FsError(errno.ENOSPC, f"only {free} bytes free in {self.directory} "
                                        f"(keeping {self.min_free_bytes} in reserve)")
        return vol.write(key, cookie, data, crc)

    def read(self, volume_id: int, key: int, cookie: int, offset: int = 0,
             length: int = 0) -> ReadResult:
        return self.get(volume_id).read(key, cookie, offset, length)

    def read_blocks(self, volume_id: int, key: int, cookie: int, offset: int = 0,
                    length: int = 0) -> BlockRead:
        return self.get(volume_id).read_blocks(key, cookie, offset, length)

    def delete(self, volume_id: int, key: int, cookie: int) -> int:
        return self.get(volume_id).delete(key, cookie)

    def list_needles(self, volume_id: int) -> list[NeedleInfo]:
        return self.get(volume_id).list_needles()

    def check_needles(self, volume_id: int,
                      refs: list[tuple[int, int, int, int]]) -> list[tuple[str, str]]:
        """Volume.check for each (key, cookie, size, crc); a missing volume is ENOENT."""
        vol = self.get(volume_id)
        return [vol.check(k, c, s, crc) for k, c, s, crc in refs]

    def restore(self, volume_id: int, key: int, cookie: int, data, crc: int | None = None) -> int:
        return self.get(volume_id).restore(key, cookie, data, crc)

    def compact(self, volume_id: int) -> CompactResult:
        return self.get(volume_id).compact()

    @property
    def size_limit(self) -> int:
        return self._size_limit

    def set_size_limit(self, limit: int) -> None:
        """Apply the master's volume size limit to every volume (and to ones allocated later)."""
        if limit <= 0 or limit == self._size_limit:
            return
        self._size_limit = limit
        for vol in self.volumes():
            vol.set_size_limit(limit)

    def close(self) -> None:
        with self._lock:
            vols, self._volumes = list(self._volumes.values()), {}
        for vol in vols:
            try:
                vol.close()
            except FsError as e:
                log.error("closing volume %d: %s", vol.volume_id, e)
