"""A volume: one `<vid>.dat`/`<vid>.idx` pair (the Store of a data dir's volumes is store.py).

Volume is put together from three modules, each short enough to read: this one opens,
creates and recovers the files, compacts them and reports their state; reads.py holds its
reads and fsck checks (VolumeReads), appends.py its appends and group commit (VolumeAppends).
The rules below are the whole class's.

No transport here: the gRPC servicer (server.py) decodes requests and calls these classes, and
the unit tests drive them directly. Failures are FsError with a POSIX errno (errors.py maps
them to status codes): ENOENT unknown volume or needle, EACCES wrong cookie, EIO corruption
(-> DATA_LOSS), EROFS volume full, ENOSPC disk full, EFBIG needle too large.

Locking rules (gRPC handlers run on a thread pool):
  * Volume._lock serialises appends (write, delete): it guards the end offsets of both files,
    the index dict's mutations and the stats. An append is pwritev of the needle at the end of
    .dat, then pwrite of its entry at the end of .idx, then the dict update — so a key in the
    dict always points at bytes already in the page cache.
  * Reads take no lock: they take the current ReadView (the index dict and a read-only fd of
    the same .dat) once, then a dict lookup (atomic under the GIL) and os.pread on that fd, so
    a reader never waits for an append, an fsync or a compaction. Compaction publishes a new
    view in one assignment; a reader still holding the old one reads the old file (its fd
    keeps the replaced inode alive) and the fd is closed when the last reader drops the view.
  * Volume._sync (a Condition) guards group commit: `_synced` (the .dat offset known durable),
    `_syncing` (a leader is in fdatasync) and `_inflight` (writers not done appending). A writer
    waits, after releasing _lock, until `_synced` covers its record; the first waiter becomes
    the leader, lets concurrent appends finish (at most group_commit_ms), then fdatasyncs .dat
    once for everyone appended so far (.idx is rebuilt from .dat after a crash, see
    _fdatasync). No dedicated thread, and a lone writer pays no batching delay.
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
import threading
import time
from dataclasses import dataclass

from cluster.common.errors import FsError, fserror_from_oserror
from cluster.volume import compaction
from cluster.volume import needle as fmt
from cluster.volume.appends import DURABILITY_MODES, VolumeAppends
from cluster.volume.reads import ReadView

log = logging.getLogger(__name__)

DEFAULT_SIZE_LIMIT = 1 << 30


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


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Volume(VolumeAppends):
    """One volume: append-only needles in `<vid>.dat`, their index log in `<vid>.idx`.

    Its reads are VolumeReads' (reads.py), its appends and group commit VolumeAppends'
    (appends.py); here: opening, creating and recovering the files, compaction, state."""

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
        self._failed = None
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
                    with contextlib.suppress(OSError):
                        os.close(fd)
            raise
        # Owns _rfd; published only once the index is loaded (readers see a whole view).
        self._view = ReadView(self._index, self._rfd, self.version)

    # ---------------------------------------------------------------- create / load

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
                raise fserror_from_oserror(
                    e, f"volume {self.volume_id}: cannot start compaction") from None
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
                raise fserror_from_oserror(
                    e, f"volume {self.volume_id}: compaction failed") from None
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
                with contextlib.suppress(OSError):
                    os.close(fd)
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
                with contextlib.suppress(OSError):
                    os.close(fd)
        view = getattr(self, "_view", None)
        if view is not None:
            view.close()
