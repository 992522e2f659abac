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


NEGATIVE_TTL = 0.1  # seconds a "no such name" answer is trusted


class AttrCache:
    def __init__(self, ttl: float = 1.0, max_entries: int = 100_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._attrs: dict[str, tuple[float, master_pb2.Attr]] = {}
        self._paths_of: dict[int, set[str]] = {}     # ino -> cached paths (hard links)
        self._absent: dict[str, float] = {}           # path -> until: known not to exist
        self._no_xattr: dict[tuple[str, str], float] = {}  # (path, name) known to be absent

    # -- attributes

    def get(self, path: str) -> Optional[master_pb2.Attr]:
        if self.ttl <= 0:
            return None
        with self._lock:
            hit = self._attrs.get(path)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                self._pop_locked(path)
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
                    self._paths_of.clear()
            self._pop_locked(path)
            self._absent.pop(path, None)
            self._attrs[path] = (time.monotonic() + self.ttl, attr)
            self._paths_of.setdefault(attr.ino, set()).add(path)

    def touch_dir(self, path: str, now_ns: int, nlink_delta: int = 0) -> None:
        """A directory this mount just changed: move its cached mtime/ctime to now (and its
        link count by nlink_delta) instead of dropping it, which would cost the next getattr
        an RPC. The master sets the same times in the same operation."""
        with self._lock:
            hit = self._attrs.get(path)
            if hit is None:
                return
            attr = master_pb2.Attr()
            attr.CopyFrom(hit[1])
            attr.mtime_ns = attr.ctime_ns = now_ns
            attr.nlink = max(1, attr.nlink + nlink_delta)
            self._attrs[path] = (hit[0], attr)

    # -- negative entries: a name the master said does not exist (the kernel looks a new
    # name up twice before creating it); any local change to the name drops the entry. They
    # live at most NEGATIVE_TTL, so a name another mount creates shows within 0.1 s.

    def is_absent(self, path: str) -> bool:
        if self.ttl <= 0:
            return False
        with self._lock:
            until = self._absent.get(path)
            if until is None:
                return False
            if until < time.monotonic():
                del self._absent[path]
                return False
            return True

    def put_absent(self, path: str) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._absent) >= self.max_entries:
                self._absent.clear()
            self._absent[path] = time.monotonic() + min(self.ttl, NEGATIVE_TTL)

    # -- invalidation

    def invalidate(self, path: str) -> None:
        with self._lock:
            self._pop_locked(path)
            self._absent.pop(path, None)
            self._drop_xattr_locked(path)

    def invalidate_tree(self, path: str) -> None:
        """Drop `path` and everything below it (rename or removal of a directory)."""
        prefix = path.rstrip("/") + "/"
        with self._lock:
            for key in [k for k in self._attrs if k == path or k.startswith(prefix)]:
                self._pop_locked(key)
            for key in [k for k in self._absent if k == path or k.startswith(prefix)]:
                del self._absent[key]
            for key in [k for k in self._no_xattr if k[0] == path or k[0].startswith(prefix)]:
                del self._no_xattr[key]

    def invalidate_ino(self, ino: int) -> None:
        """Drop every path naming inode `ino` (hard links share attributes)."""
        with self._lock:
            for path in list(self._paths_of.get(ino, ())):
                self._pop_locked(path)

    def clear(self) -> None:
        with self._lock:
            self._attrs.clear()
            self._paths_of.clear()
            self._absent.clear()
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

    # -- internals (lock held)

    def _pop_locked(self, path: str) -> None:
        hit = self._attrs.pop(path, None)
        if hit is not None:
            paths = self._paths_of.get(hit[1].ino)
            if paths is not None:
                paths.discard(path)
                if not paths:
                    del self._paths_of[hit[1].ino]

    def _drop_xattr_locked(self, path: str) -> None:
        for key in [k for k in self._no_xattr if k[0] == path]:
            del self._no_xattr[key]

    def _expire_locked(self) -> None:
        now = time.monotonic()
        for key in [k for k, v in self._attrs.items() if v[0] < now]:
            self._pop_locked(key)
