"""KernelInvalidator: drops what the kernel caches for paths, from a thread of its own.

A callback break is acknowledged as soon as the mount's own caches dropped what it named; the
kernel's attributes and pages of those paths are invalidated here, after. Invalidation may
wait: the kernel locks each page it drops, and a page can be held by a FUSE request that is
itself waiting for the master, which waits for the acknowledgement (a write whose commit
broke a callback of this very mount, found by fsx). Done in the session thread, that wait was
a deadlock until the lease ran out; here it ends when the request does.

What this leaves open: between the acknowledgement and the invalidation (microseconds, or as
long as such a request lasts) the kernel may still answer fstat from its attribute cache. Names
are never answered by the kernel (entry_timeout=0, docs/caching.md), so a lookup or an open
always reaches the mount's fresh cache.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable

log = logging.getLogger(__name__)


class KernelInvalidator:
    def __init__(self, invalidate: Callable[[str], object]):
        self._invalidate = invalidate
        self._cv = threading.Condition()
        self._pending: dict[str, None] = {}     # ordered set of paths
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="invalidator", daemon=True)
        self._thread.start()

    def submit(self, paths: Iterable[str]) -> None:
        with self._cv:
            for p in paths:
                self._pending[p] = None
            self._cv.notify()

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
            for p in paths:
                try:
                    self._invalidate(p)
                except Exception:  # noqa: BLE001 - a path the kernel no longer knows, etc.
                    log.debug("invalidating %s failed", p, exc_info=True)
