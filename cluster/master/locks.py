"""Locks that hold across mounts: fcntl byte-range locks and flock locks, kept by the master
under the session of the mount that took them (docs/caching.md).

Semantics are Linux's: a lock of one owner (the kernel's lock owner: a process's files for
fcntl, one open file description for flock) never conflicts with the same owner's; shared
locks conflict only with exclusive ones; a new fcntl lock replaces the owner's locks in its
range (splitting them), and unlocking a range splits too. fcntl and flock locks do not see
each other, as on a local Linux file system.

Locks live in the master's memory only, as an NFS server's do: they go when their owner
unlocks, when the file is closed (libfuse unlocks for the owner at flush and release), when
the session ends (a killed mount's locks free within its lease), and with a master restart.
Transport-free; only the mutation thread calls it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

SHARED, EXCLUSIVE, UNLOCK = 0, 1, 2
EOF_END = (1 << 63) - 1


@dataclass(frozen=True)
class Lock:
    session: int
    owner: int
    flock: bool
    type: int        # SHARED or EXCLUSIVE
    start: int
    end: int         # inclusive
    pid: int = 0

    def same_owner(self, other: Lock) -> bool:
        return self.session == other.session and self.owner == other.owner \
            and self.flock == other.flock

    def overlaps(self, start: int, end: int) -> bool:
        return self.start <= end and start <= self.end


class LockTable:
    def __init__(self):
        self._by_ino: dict[int, list[Lock]] = {}

    def conflict(self, ino: int, want: Lock) -> Lock | None:
        """The first lock of another owner that `want` may not coexist with."""
        for held in self._by_ino.get(ino, ()):
            if held.flock != want.flock or held.same_owner(want):
                continue
            if held.overlaps(want.start, want.end) and EXCLUSIVE in (held.type, want.type):
                return held
        return None

    def set(self, ino: int, want: Lock, unlock: bool = False) -> Lock | None:
        """Take `want` (or, with unlock, release the owner's locks in its range); the lock in
        the way when it cannot be taken (nothing changes then)."""
        if not unlock:
            blocker = self.conflict(ino, want)
            if blocker is not None:
                return blocker
        kept: list[Lock] = []
        for held in self._by_ino.get(ino, ()):
            if not held.same_owner(want) or not held.overlaps(want.start, want.end):
                kept.append(held)
                continue
            if held.start < want.start:          # the part before the range stays
                kept.append(replace(held, end=want.start - 1))
            if held.end > want.end:              # and the part after it
                kept.append(replace(held, start=want.end + 1))
        if not unlock:
            kept.append(want)
        if kept:
            self._by_ino[ino] = kept
        else:
            self._by_ino.pop(ino, None)
        return None

    def drop_session(self, session: int) -> int:
        """Release every lock of `session`; how many."""
        dropped = 0
        for ino in list(self._by_ino):
            locks = self._by_ino[ino]
            kept = [lk for lk in locks if lk.session != session]
            dropped += len(locks) - len(kept)
            if kept:
                self._by_ino[ino] = kept
            else:
                del self._by_ino[ino]
        return dropped

    def held(self, ino: int) -> list[Lock]:
        return list(self._by_ino.get(ino, ()))
