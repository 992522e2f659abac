"""Caches of file attributes keyed by path, shared by the mount's threads.

With a session (`trusted` given, the normal case), entries live until the master breaks the
callback it granted with them (`apply_break`) or the cache fills: no TTL. They answer only
while `trusted()` says the session's lease is proven, and an answer is not cached when a
break reached the mount while its operation ran (`begin_op` marks the start of each FUSE
operation), so an answer older than a break never outlives it. docs/caching.md says why this
is enough. Without a session (`trusted` None: tests, and --no-callbacks) the TTLs below
hold:

The kernel already caches attributes and entries for attr_timeout / entry_timeout; this cache
saves the RPCs the kernel still makes (getattr right after readdir for `ls -l`, the lookups of
every path component, getxattr of security.capability on each write). Entries live `ttl`
seconds; every local change invalidates what it touches, so a mount always sees its own
changes at once. Other mounts' changes show after at most `ttl` (close-to-open still holds: an
open always asks the master for the chunk list).

Every invalidation costs what it touches, not the size of the cache: `_kids` indexes each
cached path under its parent directory, so dropping a subtree (rename or removal of a
directory) walks just that subtree, and the negative xattr answers are grouped by path (a scan
of every entry per rename would, with a few thousand cached names, cost more than the
rename's RPC).

Per caller (`who`, for a mount without `default_permissions`): the kernel then checks no
permission before it asks the mount, and the master checks each request's caller (fusefs/
callers.py), so an answer given to one caller must not answer another, who might not be
allowed to see it (a name in a directory they cannot search, an open of a file they cannot
read). Every entry then remembers whom it was given to (`who()` when it was cached: uid, gid
and groups) and answers only that caller; the others ask the master. Invalidation is not per
caller: a change drops what every caller had.

Locking: one lock around the dicts; values are immutable protobuf Attr messages that callers
must not modify.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable

from fusefs.paths import parent_of
from protos import master_pb2

NEGATIVE_TTL = 0.1  # seconds a "no such name" answer is trusted
CONTENT_BYTES = 32 << 20  # inline bytes of cached FileChunks (small files' contents)


class AttrCache:
    def __init__(self, ttl: float = 1.0, max_entries: int = 100_000,
                 trusted: Callable[[], bool] | None = None,
                 who: Callable[[], Hashable] | None = None):
        self.ttl = ttl
        self.max_entries = max_entries
        self._trusted = trusted
        self._who = who                   # the current caller, when answers are per caller
        self._local = threading.local()   # .breaks: the break count when the op began
        self._breaks = 0                  # callback breaks applied so far
        self._lock = threading.Lock()
        # path -> (until, attributes, whom they were given to: None unless per caller)
        self._attrs: dict[str, tuple[float, master_pb2.Attr, Hashable]] = {}
        self._paths_of: dict[int, set[str]] = {}     # ino -> cached paths (hard links)
        self._absent: dict[str, tuple[float, Hashable]] = {}   # path -> until, whom: no name
        # path -> {(xattr name, whom): until}
        self._no_xattr: dict[str, dict[tuple[str, Hashable], float]] = {}
        self._kids: dict[str, set[str]] = {}          # parent dir -> its paths in any map
        # path -> FileChunks (attributes, chunk list, inline bytes) an open took, kept with
        # a session only: the next open of the name needs no RPC. At most CONTENT_BYTES of
        # inline bytes (emptied when full); it goes whenever the name's attributes go.
        self._content: dict[str, master_pb2.FileChunks] = {}
        self._content_bytes = 0
        # Bumped by the methods that record a local change (invalidate, invalidate_tree,
        # invalidate_ino, touch_dir, clear: every change this mount makes calls one of them
        # after its RPC), so a directory listing in flight across one, which may predate that
        # change, is not cached. Plain answers from the master (put, put_absent) do not bump
        # it: they are not changes, and would make every concurrent listing useless.
        self._gen = 0

    # -- attributes

    @property
    def per_caller(self) -> bool:
        return self._who is not None

    def _key(self) -> Hashable:
        """Whom an answer is for: the current caller when answers are per caller."""
        return self._who() if self._who is not None else None

    def _answers(self) -> bool:
        """Whether the cache may answer at all (a session's lease is proven, or TTLs rule)."""
        return self.ttl > 0 and (self._trusted is None or self._trusted())

    def _may_put_locked(self, generation: int | None = None) -> bool:
        """An answer may be cached: no local change since `generation` (if given), and with
        a session, a proven lease and no break since this operation began."""
        if generation is not None and generation != self._gen:
            return False
        if self._trusted is None:
            return True
        return getattr(self._local, "breaks", -1) == self._breaks and self._trusted()

    def _until(self, ttl: float) -> float:
        return math.inf if self._trusted is not None else time.monotonic() + ttl

    def use_session(self, trusted: Callable[[], bool]) -> None:
        """From now on, answers live until broken, and only while `trusted()`."""
        with self._lock:
            self._trusted = trusted
            self._gen += 1
            self._breaks += 1
            self._clear_locked()

    def begin_op(self) -> None:
        """A FUSE operation starts on this thread (errno_boundary calls it)."""
        self._local.breaks = self._breaks

    def _hit_locked(self, path: str, key: Hashable):
        """The live entry for `path` answering `key`'s caller, or None (an expired one goes)."""
        hit = self._attrs.get(path)
        if hit is None or hit[2] != key:
            return None
        if hit[0] < time.monotonic():
            self._pop_locked(path)
            return None
        return hit

    def get(self, path: str) -> master_pb2.Attr | None:
        if not self._answers():
            return None
        key = self._key()
        with self._lock:
            hit = self._hit_locked(path, key)
            return hit[1] if hit is not None else None

    def put(self, path: str, attr: master_pb2.Attr, generation: int | None = None) -> None:
        """Cache the master's answer about `path`; with `generation` (taken before asking),
        only if this mount changed nothing since."""
        if self.ttl <= 0:
            return
        key = self._key()
        with self._lock:
            if self._may_put_locked(generation):
                self._put_locked(path, attr, self._until(self.ttl), key)

    # -- contents (with a session only): what an open needs, so the next open asks nothing

    def get_content(self, path: str) -> master_pb2.FileChunks | None:
        if self._trusted is None or not self._answers():
            return None
        key = self._key()
        with self._lock:
            return self._content.get(path) if self._hit_locked(path, key) is not None else None

    def put_content(self, path: str, snapshot: master_pb2.FileChunks, generation: int) -> None:
        """Cache an open's answer: the attributes as put() does, and (with a session) the
        chunk list and inline bytes, under the same callback."""
        if self.ttl <= 0:
            return
        key = self._key()
        with self._lock:
            if not self._may_put_locked(generation):
                return
            self._put_locked(path, snapshot.attr, self._until(self.ttl), key)
            if self._trusted is None:
                return
            if self._content_bytes + len(snapshot.inline_data) > CONTENT_BYTES:
                self._content.clear()
                self._content_bytes = 0
            self._content[path] = snapshot
            self._content_bytes += len(snapshot.inline_data)

    def generation(self) -> int:
        with self._lock:
            return self._gen

    def put_listing(self, directory: str, entries, generation: int) -> bool:
        """Cache the attributes of a directory listing (DirEntry messages) taken when the
        cache was at `generation`. Nothing is cached, and False is returned, when this mount
        changed something since: the listing may predate that change. Paths already cached
        and not expired are kept (that answer may be newer than the listing)."""
        if self.ttl <= 0:
            return False
        base = directory.rstrip("/")
        key = self._key()
        with self._lock:
            if not self._may_put_locked(generation):
                return False
            now = time.monotonic()
            until = self._until(self.ttl)
            for entry in entries:
                path = f"{base}/{entry.name}"
                hit = self._attrs.get(path)
                if hit is None or hit[0] < now:   # an expired answer is replaced, too
                    self._put_locked(path, entry.attr, until, key)
            return True

    def _put_locked(self, path: str, attr: master_pb2.Attr, until: float,
                    key: Hashable = None) -> None:
        if len(self._attrs) >= self.max_entries:
            self._expire_locked()
            if len(self._attrs) >= self.max_entries:
                self._clear_locked()
        self._pop_locked(path)
        self._absent.pop(path, None)
        self._attrs[path] = (until, attr, key)
        self._paths_of.setdefault(attr.ino, set()).add(path)
        self._index_locked(path)

    def touch_dir(self, path: str, now_ns: int, nlink_delta: int = 0) -> None:
        """A directory this mount just changed: move its cached mtime/ctime to now (and its
        link count by nlink_delta) instead of dropping it, which would cost the next getattr
        an RPC. The master sets the same times in the same operation."""
        with self._lock:
            self._gen += 1
            hit = self._attrs.get(path)
            if hit is None:
                return
            attr = master_pb2.Attr()
            attr.CopyFrom(hit[1])
            attr.mtime_ns = attr.ctime_ns = now_ns
            attr.nlink = max(1, attr.nlink + nlink_delta)
            self._attrs[path] = (hit[0], attr, hit[2])

    # -- negative entries: a name the master said does not exist (the kernel looks a new
    # name up twice before creating it); any local change to the name drops the entry. They
    # live at most NEGATIVE_TTL, so a name another mount creates shows within 0.1 s.

    def is_absent(self, path: str) -> bool:
        if not self._answers():
            return False
        key = self._key()
        with self._lock:
            hit = self._absent.get(path)
            if hit is None or hit[1] != key:
                return False
            if hit[0] < time.monotonic():
                del self._absent[path]
                self._unindex_locked(path)
                return False
            return True

    def put_absent(self, path: str, generation: int | None = None) -> None:
        if self.ttl <= 0:
            return
        key = self._key()
        with self._lock:
            if not self._may_put_locked(generation):
                return
            if len(self._absent) >= self.max_entries:
                for name in list(self._absent):
                    self._drop_absent_locked(name)
            self._absent[path] = (self._until(min(self.ttl, NEGATIVE_TTL)), key)
            self._index_locked(path)

    # -- invalidation

    def invalidate(self, path: str) -> None:
        with self._lock:
            self._gen += 1
            self._forget_locked(path)

    def invalidate_tree(self, path: str) -> None:
        """Drop `path` and everything below it (rename or removal of a directory)."""
        with self._lock:
            self._gen += 1
            todo = [path.rstrip("/") or "/"]
            while todo:
                key = todo.pop()
                todo.extend(self._kids.get(key, ()))
                self._forget_locked(key)

    def invalidate_ino(self, ino: int) -> None:
        """Drop every path naming inode `ino` (hard links share attributes)."""
        with self._lock:
            self._gen += 1
            for path in list(self._paths_of.get(ino, ())):
                self._pop_locked(path)

    def clear(self) -> set[str]:
        """Drop everything; returns the paths whose attributes were cached (the caller may
        invalidate the kernel's too)."""
        with self._lock:
            self._gen += 1
            self._breaks += 1
            paths = set(self._attrs)
            self._clear_locked()
            return paths

    def apply_break(self, paths=(), trees=(), inos=()) -> set[str]:
        """The master took back its callbacks on these names, directories (and everything
        below them) and inodes: drop all of it. Returns the names and directories broken and
        every path this mount had cached for them: the caller invalidates the kernel's too."""
        with self._lock:
            self._gen += 1
            self._breaks += 1
            gone: set[str] = set()
            for path in paths:
                gone.add(path)
                hit = self._attrs.get(path)
                if hit is not None:   # the inode's other names show its nlink and times
                    gone.update(self._paths_of.get(hit[1].ino, ()))
            for ino in inos:
                gone.update(self._paths_of.get(ino, ()))
            for path in gone:
                self._forget_locked(path)
            for top in trees:
                todo = [top.rstrip("/") or "/"]
                while todo:
                    key = todo.pop()
                    todo.extend(self._kids.get(key, ()))
                    gone.add(key)
                    self._forget_locked(key)
            return gone

    # -- negative xattr lookups (the kernel asks for security.capability before every write)

    def xattr_absent(self, path: str, name: str) -> bool:
        if not self._answers():
            return False
        key = (name, self._key())
        with self._lock:
            names = self._no_xattr.get(path)
            until = names.get(key) if names is not None else None
            if names is None or until is None:
                return False
            if until < time.monotonic():
                del names[key]
                if not names:
                    self._drop_xattr_locked(path)
                return False
            return True

    def put_xattr_absent(self, path: str, name: str) -> None:
        if self.ttl <= 0:
            return
        key = (name, self._key())
        with self._lock:
            if not self._may_put_locked():
                return
            if len(self._no_xattr) >= self.max_entries:
                for other in list(self._no_xattr):
                    self._drop_xattr_locked(other)
            self._no_xattr.setdefault(path, {})[key] = self._until(self.ttl)
            self._index_locked(path)

    def drop_xattr(self, path: str) -> None:
        with self._lock:
            self._drop_xattr_locked(path)

    # -- internals (lock held)

    def _pop_locked(self, path: str) -> None:
        content = self._content.pop(path, None)
        if content is not None:
            self._content_bytes -= len(content.inline_data)
        hit = self._attrs.pop(path, None)
        if hit is not None:
            paths = self._paths_of.get(hit[1].ino)
            if paths is not None:
                paths.discard(path)
                if not paths:
                    del self._paths_of[hit[1].ino]
            self._unindex_locked(path)

    def _drop_absent_locked(self, path: str) -> None:
        if self._absent.pop(path, None) is not None:
            self._unindex_locked(path)

    def _drop_xattr_locked(self, path: str) -> None:
        if self._no_xattr.pop(path, None) is not None:
            self._unindex_locked(path)

    def _forget_locked(self, path: str) -> None:
        """Everything cached about `path` itself (not below it)."""
        self._pop_locked(path)
        self._drop_absent_locked(path)
        self._drop_xattr_locked(path)

    def _clear_locked(self) -> None:
        self._content.clear()
        self._content_bytes = 0
        self._attrs.clear()
        self._paths_of.clear()
        self._absent.clear()
        self._no_xattr.clear()
        self._kids.clear()

    def _index_locked(self, path: str) -> None:
        """Index `path` under its parent, and the parent under its own, up to the root (a
        subtree walk must reach cached paths below directories that are not cached)."""
        while path != "/":
            parent = parent_of(path)
            kids = self._kids.get(parent)
            if kids is not None:
                kids.add(path)
                return  # an indexed parent is itself indexed up to the root
            self._kids[parent] = {path}
            path = parent

    def _unindex_locked(self, path: str) -> None:
        """Drop `path` from the index once nothing is cached at or below it, and its
        ancestors with it when they become empty."""
        while path != "/":
            if path in self._attrs or path in self._absent or path in self._no_xattr \
                    or path in self._kids:
                return
            parent = parent_of(path)
            kids = self._kids.get(parent)
            if kids is None:
                return
            kids.discard(path)
            if kids:
                return
            del self._kids[parent]
            path = parent

    def _expire_locked(self) -> None:
        now = time.monotonic()
        for key in [k for k, v in self._attrs.items() if v[0] < now]:
            self._pop_locked(key)
