"""The volumes of one data directory: the volume server's Store.

Store opens every volume in its directory at start, allocates new ones (refusing past
max_volumes or when the disk keeps less than min_free_bytes free), and routes each call to
its Volume (volume.py), which does the work. It persists nothing besides the volume files.
Store._lock guards the dict of volumes (allocate vs lookups); everything else is the
Volume's own locking.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Iterable

from cluster.common.errors import FsError, fserror_from_oserror
from cluster.common.replication import check_replication
from cluster.volume.appends import DURABILITY_MODES

# fsck's verdicts on a needle (Volume.check), named here too: volume/server.py and repair.py
# know them as st.CHECK_*.
from cluster.volume.reads import CHECK_CRC_BAD as CHECK_CRC_BAD
from cluster.volume.reads import CHECK_MISSING as CHECK_MISSING
from cluster.volume.reads import CHECK_OK as CHECK_OK
from cluster.volume.reads import CHECK_SIZE_MISMATCH as CHECK_SIZE_MISMATCH
from cluster.volume.reads import CHECK_UNREADABLE as CHECK_UNREADABLE
from cluster.volume.reads import CHECK_WRONG_COOKIE as CHECK_WRONG_COOKIE
from cluster.volume.reads import BlockRead, NeedleInfo, ReadResult
from cluster.volume.volume import DEFAULT_SIZE_LIMIT, CompactResult, Volume

log = logging.getLogger(__name__)


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
        check_replication(replication)
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
                raise FsError(errno.ENOSPC,
                              f"server holds its maximum of {self.max_volumes} volumes")
            free, _ = self.disk()
            if free < self.min_free_bytes:
                raise FsError(errno.ENOSPC, f"only {free} bytes free in {self.directory}")
            try:
                vol = Volume.create(self.directory, volume_id, replication,
                                    size_limit=self._size_limit, **self._volume_kw)
            except OSError as e:
                raise fserror_from_oserror(e, f"cannot create volume {volume_id}") from None
            self._volumes[volume_id] = vol
            return vol

    def get(self, volume_id: int) -> Volume:
        vol = self._volumes.get(volume_id)
        if vol is None:
            raise FsError(errno.ENOENT, f"volume {volume_id} not on this server")
        return vol

    def sync(self, volume_ids: Iterable[int]) -> None:
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
