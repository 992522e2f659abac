"""Short-lived caches of file attributes keyed by path, shared by the mount's threads.

The kernel already caches attributes and entries for attr_timeout / entry_timeout; this cache
saves the RPCs the kernel still makes (getattr right after readdir for `ls -l`, the lookups of
every path component, getxattr of security.capability on each write). Entries live `ttl`
seconds; every local change invalidates what it touches, so a mount always sees its own
changes at once. Other mounts' changes show after at most `ttl` (close-to-open still holds: an
open always asks the master for the chunk list).

Locking: one lock around the dicts; values are immutable protobuf Attr messages that callers
must not modify.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

from protos import master_pb2


class AttrCache:
    def __init__(self, ttl: float = 1.0, max_entries: int = 100_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._attrs: dict[str, tuple[float, master_pb2.Attr]] = {}
        self._no_xattr: dict[tuple[str, str], float] = {}  # (path, name) known to be absent

    def get(self, path: str) -> Optional[master_pb2.Attr]:
        if self.ttl <= 0:
            return None
        with self._lock:
            hit = self._attrs.get(path)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                del self._attrs[path]
                return None
            return hit[1]

    def put(self, path: str, attr: master_pb2.Attr) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._attrs) >= self.max_entries:
                self._expire_locked()
                if len(self._attrs) >= self.max_entries:
                    self._attrs.clear()
            self._attrs[path] = (time.monotonic() + self.ttl, attr)

    def invalidate(self, path: str) -> None:
        with self._lock:
            self._attrs.pop(path, None)
            self._drop_xattr_locked(path)

    def invalidate_tree(self, path: str) -> None:
        """Drop `path` and everything below it (rename or removal of a directory)."""
        prefix = path.rstrip("/") + "/"
        with self._lock:
            for key in [k for k in self._attrs if k == path or k.startswith(prefix)]:
                del self._attrs[key]
            for key in [k for k in self._no_xattr if k[0] == path or k[0].startswith(prefix)]:
                del self._no_xattr[key]

    def invalidate_ino(self, ino: int) -> None:
        """Drop every path naming inode `ino` (hard links share attributes)."""
        with self._lock:
            for key in [k for k, v in self._attrs.items() if v[1].ino == ino]:
                del self._attrs[key]

    def clear(self) -> None:
        with self._lock:
            self._attrs.clear()
            self._no_xattr.clear()

    # -- negative xattr lookups (the kernel asks for security.capability before every write)

    def xattr_absent(self, path: str, name: str) -> bool:
        if self.ttl <= 0:
            return False
        with self._lock:
            until = self._no_xattr.get((path, name))
            if until is None:
                return False
            if until < time.monotonic():
                del self._no_xattr[(path, name)]
                return False
            return True

    def put_xattr_absent(self, path: str, name: str) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._no_xattr) >= self.max_entries:
                self._no_xattr.clear()
            self._no_xattr[(path, name)] = time.monotonic() + self.ttl

    def drop_xattr(self, path: str) -> None:
        with self._lock:
            self._drop_xattr_locked(path)

    def _drop_xattr_locked(self, path: str) -> None:
        for key in [k for k in self._no_xattr if k[0] == path]:
            del self._no_xattr[key]

    def _expire_locked(self) -> None:
        now = time.monotonic()
        for key in [k for k, v in self._attrs.items() if v[0] < now]:
            del self._attrs[key]
