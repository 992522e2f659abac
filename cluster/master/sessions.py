"""Sessions: which mounts are alive, by lease, so the master may promise them callbacks and
reclaim what a dead one leaves behind.

A mount opens a session on the mutation port and renews it every lease/4 or so. A session is
alive while its last renewal is less than `lease_s` old; the mount, which counts from when it
*sent* that renewal, stops trusting its caches a little before the master gives up on it, so
there is never a moment when the master thinks a callback is broken (by expiry) and the mount
still answers from it.

Sessions live in the master's memory only. After a master restart every mount finds its
session unknown at its next renewal, drops its caches and asks to resume the same id, so the
files it kept open after their last unlink (inodes.orphan = its id) stay its own. What no mount
resumes within a grace period after start is reclaimed (MutationServer's sweep).

Transport-free and single-threaded by design: only the mutation thread calls it (the gRPC
threads, which grant callbacks, only ask `alive`, a dict lookup).
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LEASE_S = 6.0


@dataclass
class Session:
    sid: int
    peer: bytes           # the ROUTER identity of the mount's session socket
    expires: float        # monotonic time after which the session is dead
    opened: float = field(default_factory=time.monotonic)


class SessionTable:
    def __init__(self, lease_s: float = LEASE_S, clock: Callable[[], float] = time.monotonic):
        self.lease_s = lease_s
        self._clock = clock
        self._live: dict[int, Session] = {}
        self.started = clock()

    def open(self, peer: bytes, resume: int = 0) -> Session:
        """A new session, or `resume` again when the master does not know it (a restart) and
        it is a plausible id; a live id cannot be taken over."""
        now = self._clock()
        sid = resume if resume > 1 and resume not in self._live else 0
        while sid <= 1 or sid in self._live:   # 0 = none, 1 = "no session" in inodes.orphan
            sid = random.getrandbits(63)
        s = Session(sid, peer, now + self.lease_s)
        self._live[sid] = s
        return s

    def renew(self, sid: int, peer: bytes) -> bool:
        """False for an unknown (expired, or forgotten by a restart) session."""
        s = self._live.get(sid)
        if s is None:
            return False
        s.expires = self._clock() + self.lease_s
        s.peer = peer
        return True

    def get(self, sid: int) -> Session | None:
        return self._live.get(sid)

    def alive(self, sid: int) -> bool:
        s = self._live.get(sid)
        return s is not None and s.expires > self._clock()

    def expired(self) -> list[int]:
        """Remove and return the sessions whose lease ran out."""
        now = self._clock()
        dead = [sid for sid, s in self._live.items() if s.expires <= now]
        for sid in dead:
            del self._live[sid]
        return dead

    def end(self, sid: int) -> None:
        self._live.pop(sid, None)

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, sid: int) -> bool:
        return sid in self._live
