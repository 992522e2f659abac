"""KernelSizes: the size the kernel believes each file name has, so that an open can tell
when the kernel is wrong about it.

Why it matters: the kernel keeps a file's size (i_size) from our last getattr answer, and
grows it itself when a write() succeeds. It trusts that size for attr_ttl, and reads through
the page cache stop at it without asking us. When the real file, as an open finds it at the
master, has another size, reads through the page cache go wrong:

* The file is shorter than the kernel thinks. Either a write() that succeeded into the
  handle's buffer was lost later with EIO (the gateway went away mid-stream; the file keeps
  its old content), or another mount shrank the file. Our answers past the real end come back
  short. The kernel zero-fills the rest of the page and lowers i_size to the end of what came
  back. But when two read-ahead requests past the end finish out of order, it ignores the lower
  one, because the attribute version moved when the higher one lowered i_size. i_size then
  stays past the end, and the reader gets zeros there: wrong bytes. The fault test of a
  gateway restarted mid-stream hit this once in CI and once in a local loop under load
  (128 KiB of zeros after the old 1 MiB).
* The file is longer than the kernel thinks, because another mount grew it within attr_ttl.
  The reader stops at the old size: close-to-open broken, because the open does not see the
  whole file.

* Hard links: libfuse 2's high-level API gives each NAME its own kernel inode. After a write
  through one name, the kernel still holds the old size for the other names, and a read
  through them stopped at it.

So the mount records, per name (per kernel inode, for libfuse 2), the size the kernel was
last given: each getattr answer, and each write() the kernel saw succeed. A rename moves the
record with the name. Records of names below a renamed directory, or of a removed name, are
left behind; the kernel looks a name up before its next open, and that getattr answer
replaces the record. An open that finds another size at the master is
opened with direct_io (fusefs.fuse_binding.KelpFUSE.open). Its reads bypass the page cache,
so they neither stop at the kernel's size nor get zero-filled; a short read is just the end
of the file. The record changes when getattr reports the size again, except that an answer
computed while a write() of the inode completed only grows it: the kernel drops an answer that
raced one of its own write()s. The record has to be exact, not just an upper bound: opens
that find the kernel right, nearly all of them, keep the page cache, and with it shared
mmap, which a direct_io open refuses (ENODEV). Neither does direct_io fix fstat or
lseek(SEEK_END) on that descriptor: both show the kernel's size until attr_ttl runs out
(docs/posix.md).

Bounded: at most `max_entries` names; the oldest half is forgotten when it fills. For a
forgotten name the kernel's own size is taken as it is, as for a name never recorded.
"""
from __future__ import annotations

import threading


class KernelSizes:
    def __init__(self, max_entries: int = 65536):
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._told: dict[str, list[int]] = {}   # path -> [size, sequence of its last write()]
        self._seq = 0                           # write()s seen, all names

    def token(self) -> int:
        """Taken before a getattr looks anything up: the write() sequence number so far."""
        with self._lock:
            return self._seq

    def reported(self, path: str, size: int, token: int) -> None:
        """getattr told the kernel `size` for `path`; `token` is what token() gave before the
        answer was computed. A write() through `path` completed since then may make the
        kernel drop this answer, so the record only grows in that case."""
        with self._lock:
            entry = self._told.get(path)
            if entry is None:
                self._add_locked(path, size, 0)
            elif entry[1] <= token or size > entry[0]:
                entry[0] = size

    def truncated(self, path: str) -> None:
        """An open with O_TRUNC reached the driver (libfuse 3's atomic_o_trunc): when it
        succeeds the kernel sets its size for the name to 0 itself."""
        with self._lock:
            entry = self._told.get(path)
            if entry is None:
                self._add_locked(path, 0, 0)
            else:
                entry[0] = 0

    def grew(self, path: str, end: int) -> None:
        """A write() through `path` ending at `end` succeeded: the kernel's size for that name
        is now at least `end`."""
        with self._lock:
            self._seq += 1
            entry = self._told.get(path)
            if entry is None:
                self._add_locked(path, end, self._seq)
            else:
                entry[0] = max(entry[0], end)
                entry[1] = self._seq

    def renamed(self, old: str, new: str) -> None:
        """The kernel moved its inode of `old` to the name `new` (and dropped new's)."""
        with self._lock:
            entry = self._told.pop(old, None)
            if entry is None:
                self._told.pop(new, None)
            else:
                self._told[new] = entry

    def exchanged(self, a: str, b: str) -> None:
        """RENAME_EXCHANGE: the kernel's inodes of `a` and `b` swapped names."""
        with self._lock:
            entry_a, entry_b = self._told.pop(a, None), self._told.pop(b, None)
            if entry_a is not None:
                self._told[b] = entry_a
            if entry_b is not None:
                self._told[a] = entry_b

    def differs(self, path: str, size: int) -> bool:
        """True when the kernel was told another size for `path` than `size` (the real one)."""
        with self._lock:
            entry = self._told.get(path)
            return entry is not None and entry[0] != size

    def _add_locked(self, path: str, size: int, seq: int) -> None:
        if len(self._told) >= self.max_entries:
            for old in list(self._told)[: self.max_entries // 2]:
                del self._told[old]
        self._told[path] = [size, seq]
