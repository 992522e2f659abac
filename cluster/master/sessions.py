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

Each session also records who opened it and what it may reach: the client identity of the
connection that opened it (the ZAP User-Id, cluster/common/curve.py; "client" on an insecure
cluster) and the export Scope its subdir resolved to then (cluster/master/exports.py). A
session keeps that scope until it is opened again (a reload of the exports file changes what
new sessions get, not what open ones have), and only connections of the same identity may
renew it or name it in their calls (cluster/master/scoped.py, `view_for`).

Transport-free and single-threaded by design: only the mutation thread calls it (the gRPC
threads, which grant callbacks, only ask `alive` and `get`, dict lookups).
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.master.exports import Scope

LEASE_S = 6.0


@dataclass
class Session:
    sid: int
    peer: bytes           # the ROUTER identity of the mount's session socket
    expires: float        # monotonic time after which the session is dead
    opened: float = field(default_factory=time.monotonic)
    identity: str = "client"                     # the client identity that opened it
    scope: Scope = field(default_factory=Scope.everything)   # its export
    callbacks: bool = True                       # its lookups' answers come with callbacks


class SessionTable:
    def __init__(self, lease_s: float = LEASE_S, clock: Callable[[], float] = time.monotonic):
        self.lease_s = lease_s
        self._clock = clock
        self._live: dict[int, Session] = {}
        self.started = clock()

    def open(self, peer: bytes, resume: int = 0, identity: str = "client",
             scope: Scope | None = None, callbacks: bool = True) -> Session:
        """A new session, or `resume` again when the master does not know it (a restart) and
        it is a plausible id; a live id cannot be taken over."""
        now = self._clock()
        sid = resume if resume > 1 and resume not in self._live else 0
        while sid <= 1 or sid in self._live:   # 0 = none, 1 = "no session" in inodes.orphan
            sid = random.getrandbits(63)
        s = Session(sid, peer, now + self.lease_s, identity=identity,
                    scope=scope if scope is not None else Scope.everything(),
                    callbacks=callbacks)
        self._live[sid] = s
        return s

    def renew(self, sid: int, peer: bytes, identity: str | None = None) -> bool:
        """False for an unknown (expired, or forgotten by a restart) session, and for one
        another client identity opened (`identity` None: not checked)."""
        s = self._live.get(sid)
        if s is None or (identity is not None and identity != s.identity):
            return False
        s.expires = self._clock() + self.lease_s
        s.peer = peer
        return True

    def get(self, sid: int) -> Session | None:
        return self._live.get(sid)

    def alive(self, sid: int) -> bool:
        s = self._live.get(sid)
        return s is not None and s.expires > self._clock()

    def granting(self, sid: int) -> bool:
        """Alive, and taking callbacks (not a --no-callbacks mount's)."""
        s = self._live.get(sid)
        return s is not None and s.callbacks and s.expires > self._clock()

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
