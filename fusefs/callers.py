"""Whom each FUSE request is made for: the Caller (master.proto) the mount sends with its
namespace calls, so that the master checks permissions for that process, not for the mount.

The kernel tells each request's uid, gid and pid (fuse_get_context: the caller's fsuid,
fsgid and thread id); its supplementary groups it does not, so they are read from
/proc/<pid>/status ("Groups:"), once per process a second (GROUPS_TTL): a shell running `ls
-l` makes hundreds of requests, and reading /proc for each would cost more than the RPC. A
process that is gone by then (or a /proc that cannot be read) counts with its primary group
alone; a group change takes up to GROUPS_TTL to be seen, as with NFS's credential caches.

`begin()` is called as each FUSE operation starts (OperationsBase._begin_op); `current()`
gives the Caller of the operation running on this thread. Work that runs for no request (the
mount's own start and stop, a release, which the kernel sends without credentials) is made as
the mount process itself: never as more than it is. An open file remembers its opener's
Caller (FileHandle.caller): its commits are the opener's writes, whoever's request happens to
flush them.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from fusefs.fuse_binding import fuse_get_context
from protos import master_pb2

GROUPS_TTL = 1.0     # seconds a process's supplementary groups are trusted
MAX_PROCESSES = 4096  # processes whose groups are kept at once (the table is emptied beyond)

_local = threading.local()   # .context: (uid, gid, pid) of this thread's request; .caller


def read_groups(pid: int, gid: int, proc: str = "/proc") -> frozenset[int]:
    """The primary group `gid` and the supplementary groups of process `pid`."""
    groups = {gid}
    try:
        with open(f"{proc}/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
                    break
    except (OSError, ValueError):
        pass
    return frozenset(groups)


class GroupCache:
    """Supplementary groups per process, each kept for `ttl` seconds."""

    def __init__(self, ttl: float = GROUPS_TTL, reader: Callable[[int, int], frozenset[int]]
                 = read_groups, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._read = reader
        self._clock = clock
        self._lock = threading.Lock()
        self._groups: dict[tuple[int, int], tuple[float, frozenset[int]]] = {}

    def groups(self, pid: int, gid: int) -> frozenset[int]:
        now = self._clock()
        key = (pid, gid)
        with self._lock:
            hit = self._groups.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        found = self._read(pid, gid)
        with self._lock:
            if len(self._groups) >= MAX_PROCESSES:
                self._groups.clear()
            self._groups[key] = (now + self.ttl, found)
        return found


GROUPS = GroupCache()


def make(uid: int, gid: int, groups) -> master_pb2.Caller:
    return master_pb2.Caller(uid=uid, gid=gid, groups=sorted(set(groups) - {gid}))


def _own() -> master_pb2.Caller:
    """The mount process's own credentials."""
    return make(os.geteuid(), os.getegid(), os.getgroups())


def begin() -> None:
    """A FUSE request starts on this thread: remember whom it is for (the groups are read
    only if a call to the master needs them)."""
    try:
        uid, gid, pid = fuse_get_context()
    except (ValueError, OSError, AttributeError):
        uid = gid = pid = 0
    # Outside a request (a test calling the operations) libfuse's answer is meaningless;
    # the pid of a real one is positive.
    _local.context = (uid, gid, pid) if pid > 0 else None
    _local.caller = None


def end() -> None:
    """This thread serves no request any more (tests; FUSE's threads just begin again)."""
    _local.context = None
    _local.caller = None


def current() -> master_pb2.Caller:
    """The Caller of the request this thread serves (the mount's own outside one)."""
    caller = getattr(_local, "caller", None)
    if caller is not None:
        return caller
    context = getattr(_local, "context", None)
    if context is None:
        caller = _own()
    else:
        uid, gid, pid = context
        # Root's groups decide nothing (the master lets root through): no /proc read.
        caller = make(uid, gid, GROUPS.groups(pid, gid) if uid else ())
    _local.caller = caller
    return caller


def key() -> tuple:
    """What identifies the current caller to a cache whose answers are the caller's own."""
    c = current()
    return (c.uid, c.gid, tuple(c.groups))
