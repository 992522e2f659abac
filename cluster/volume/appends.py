"""A volume's write side: appends (write, restore, delete) and group commit.

An append is pwritev of the needle at the end of `.dat`, then pwrite of its entry at the end
of `.idx`, then the index dict update, all under the append lock, so a key in the dict always
points at bytes already in the page cache. Group commit (the `_sync` condition) lets one
fdatasync cover every writer that appended meanwhile; the locking rules and the durability
modes are described in volume.py, whose Volume this class is a part of (split out only to
keep each module short).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Iterator

from cluster.common import blocks
from cluster.common.durability import fdatasync
from cluster.common.errors import FsError, fserror_from_oserror
from cluster.volume import needle as fmt
from cluster.volume.reads import VolumeReads

log = logging.getLogger(__name__)

DURABILITY_MODES = ("fsync", "group", "always", "none")


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


class VolumeAppends(VolumeReads):
    """The appends and group commit of a Volume (volume.py), which sets up what is declared
    here."""

    superblock: fmt.SuperBlock
    durability: str                       # one of DURABILITY_MODES
    group_commit_s: float
    _wfd: int                             # .dat, appended at _end
    _ifd: int                             # .idx, appended at _idx_end
    _end: int
    _idx_end: int
    _limit: int                           # the size limit: a volume past it is full
    _full: bool
    _closed: bool
    _failed: str | None                   # why the volume refuses writes (a failed fsync)
    _file_count: int
    _deleted_bytes: int
    # Group commit, under _sync (see volume.py):
    _sync: threading.Condition
    _synced: int                          # the .dat offset known durable
    _syncing: bool                        # a leader is in fdatasync (or a compaction swaps)
    _inflight: int                        # writers not done appending
    _epoch: int                           # bumped by each compaction swap

    @property
    def version(self) -> int:
        """The needle layout of this volume's current files (needle.py): appends use it."""
        return self.superblock.version

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

    def _check_writable(self, size: int | None) -> None:
        """EIO for a closed or failed volume; with a record `size` (None: a delete or a
        compaction, which a full volume still takes), EROFS when it would not fit."""
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
            raise fserror_from_oserror(e, f"volume {self.volume_id}: append failed") from None
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
    def _appending(self) -> Iterator[None]:
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
            raise fserror_from_oserror(e, f"volume {self.volume_id}: fsync failed") from None

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
