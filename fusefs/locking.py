"""fcntl and flock locks for the mount: each becomes a LockRequest on the mutation channel, and
the master keeps it under this mount's session (cluster/master/locks.py), so a lock holds
against every mount and frees when its holder's mount dies (its lease runs out).

libfuse unlocks for the owner at every close (flush), whether it locked or not: the mount
remembers which owners hold locks on which inode and answers the other unlocks itself, so a
close costs no round trip to the master (and does not wait out an unreachable one).

A lock that must wait (F_SETLKW, flock without LOCK_NB) asks again with a growing pause, up
to WAIT_MAX_S apart, until it is granted or the caller is interrupted (Ctrl-C: EINTR). The
master does not queue waiters: a waiter may be overtaken, as with NFS's polling clients.
"""
from __future__ import annotations

import errno
import fcntl
import threading
import time
from collections.abc import Callable

from cluster.common.errors import FsError
from protos import master_pb2

WAIT_MIN_S = 0.01
WAIT_MAX_S = 0.2
EOF_END = (1 << 63) - 1
_TYPES = {fcntl.F_RDLCK: 0, fcntl.F_WRLCK: 1, fcntl.F_UNLCK: 2}
_FCNTL_TYPE = {v: k for k, v in _TYPES.items()}


class Locker:
    def __init__(self, mutate: Callable, interrupted: Callable[[], bool] = lambda: False):
        self._mutate = mutate              # MasterClient.mutate
        self._interrupted = interrupted
        self._lock = threading.Lock()
        self._holders: set[tuple[int, int, bool]] = set()   # (ino, owner, flock) with locks

    def fcntl(self, ino: int, owner: int, cmd: int, lock) -> None:
        """F_GETLK, F_SETLK or F_SETLKW on `lock` (a struct flock: l_type, l_whence (always
        SEEK_SET from libfuse), l_start, l_len (0: to the end), l_pid); F_GETLK writes the
        conflicting lock into it, or F_UNLCK."""
        if lock.l_type not in _TYPES or lock.l_start < 0 or lock.l_len < 0:
            raise FsError(errno.EINVAL, "bad lock")
        start = lock.l_start
        end = EOF_END if lock.l_len == 0 else start + lock.l_len - 1
        request = master_pb2.LockRequest(ino=ino, owner=owner, type=_TYPES[lock.l_type],
                                         start=start, end=end, pid=lock.l_pid,
                                         test=cmd == fcntl.F_GETLK)
        if cmd == fcntl.F_GETLK:
            reply = self._mutate("lock", request)
            if reply.granted:
                lock.l_type = fcntl.F_UNLCK
            else:
                c = reply.conflict
                lock.l_type = _FCNTL_TYPE[c.type]
                lock.l_start = c.start
                lock.l_len = 0 if c.end >= EOF_END else c.end - c.start + 1
                lock.l_pid = c.pid
            return
        self._take(request, wait=cmd == fcntl.F_SETLKW)

    def flock(self, ino: int, owner: int, op: int) -> None:
        kind = op & ~fcntl.LOCK_NB
        types = {fcntl.LOCK_SH: 0, fcntl.LOCK_EX: 1, fcntl.LOCK_UN: 2}
        if kind not in types:
            raise FsError(errno.EINVAL, f"flock operation {op}")
        request = master_pb2.LockRequest(ino=ino, owner=owner, flock=True, type=types[kind],
                                         start=0, end=EOF_END)
        self._take(request, wait=not op & fcntl.LOCK_NB)

    def _take(self, request: master_pb2.LockRequest, wait: bool) -> None:
        key = (request.ino, request.owner, request.flock)
        if request.type == 2:
            with self._lock:
                if key not in self._holders:
                    return   # nothing to release (the unlock at every close, mostly)
            self._mutate("lock", request)
            if request.start == 0 and request.end >= EOF_END:
                with self._lock:
                    self._holders.discard(key)
            return
        with self._lock:
            self._holders.add(key)   # before asking: an unlock racing the grant still goes
        pause = WAIT_MIN_S
        while True:
            if self._mutate("lock", request).granted:
                return
            if not wait:
                raise FsError(errno.EAGAIN, "the lock is held elsewhere")
            if self._interrupted():
                raise FsError(errno.EINTR, "interrupted while waiting for a lock")
            time.sleep(pause)
            pause = min(WAIT_MAX_S, pause * 2)
