"""KernelInvalidator: drops what the kernel caches for paths, from a thread of its own.

A callback break is acknowledged once the mount's own caches dropped what it named and the
kernel's attributes and pages of those paths were invalidated here, or after WAIT_S if that
takes longer. It can: the kernel locks each page it drops, and a page can be held by a FUSE
request that is itself waiting for the master, which waits for the acknowledgement (a write
whose commit waits behind a break to this very mount, a case fsx exercises). Done in the
session thread without a bound, that wait would deadlock until the lease ran out; here the ack
goes after WAIT_S and the invalidation finishes when the request does.

What this leaves open, only in that case: between the acknowledgement and the invalidation the
kernel may still answer fstat from its attribute cache. Names are never answered by the kernel
(entry_timeout=0, docs/caching.md), so a lookup or an open always reaches the mount's fresh
cache.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

WAIT_S = 0.2   # the longest a break's ack waits for the kernel


class KernelInvalidator:
    def __init__(self, invalidate: Callable[[str], object]):
        self._invalidate = invalidate
        self._cv = threading.Condition()
        self._pending: dict[str, None] = {}     # ordered set of paths
        self._done: list[threading.Event] = []  # set once the paths before them are done
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="invalidator", daemon=True)
        self._thread.start()

    def submit(self, paths: Iterable[str]) -> threading.Event:
        """Queue `paths`; the event is set once they (and all queued before) are done."""
        done = threading.Event()
        with self._cv:
            for p in paths:
                self._pending[p] = None
            self._done.append(done)
            self._cv.notify()
        return done

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                paths, self._pending = list(self._pending), {}
                done, self._done = self._done, []
            for p in paths:
                try:
                    self._invalidate(p)
                except Exception:
                    log.debug("invalidating %s failed", p, exc_info=True)
            for event in done:
                event.set()
