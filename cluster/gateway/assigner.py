"""Hands out file ids to chunk writers, fetched from the master in batches.

One Master.Assign per chunk would put a master round trip on every 4 MiB of data, so the
assigner asks for `batch` fids at once and serves them from a per-replication cache. Cached
fids age out after `ttl` seconds because the topology behind them changes (a volume fills up
and turns read-only, a server dies); an unused fid costs nothing but a skipped needle key.

When a write to a volume fails, `avoid(volume_id)` drops every cached fid of that volume and
names it in `avoid_volumes` on the following Assign calls for `ttl` seconds, so the retry
lands elsewhere.

Locking: `_lock` guards the cache and the avoid set and is never held across an RPC;
`_fetch_lock` lets one thread at a time talk to the master, so a burst of writers on an empty
cache causes one Assign, not one per writer.
"""
from __future__ import annotations

import collections
import errno
import threading
import time

from cluster.common.errors import FsError
from cluster.common.fid import BadFid, Fid
from cluster.gateway.mastercall import MASTER_PATIENCE_S, call_master
from protos import master_pb2

DEFAULT_TTL_S = 5.0
FETCH_TRIES = 3


class Assigner:
    """Thread-safe source of `master_pb2.Assignment`s (fid + replica locations)."""

    def __init__(self, master_stub, batch: int = 16, ttl: float = DEFAULT_TTL_S,
                 master_patience: float = MASTER_PATIENCE_S):
        self._stub = master_stub
        self.batch = max(1, min(int(batch), 1000))
        self.ttl = ttl
        self._patience = master_patience
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        # replication -> deque of (fetched_at, volume_id, Assignment)
        self._cache: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        self._avoid: dict[int, float] = {}  # volume id -> avoid until (monotonic)

    def next(self, replication: int = 0) -> master_pb2.Assignment:
        """A fresh fid for `replication` copies, with the locations of its replicas."""
        found = self._take(replication)
        if found is not None:
            return found
        with self._fetch_lock:
            # Another thread may have refilled the cache while this one waited.
            found = self._take(replication)
            if found is not None:
                return found
            # A batch can be useless on arrival: another writer found its volume full (or
            # its server gone) and avoided it while the Assign was on its way. The next
            # Assign names that volume, so a few tries always get past it.
            for _ in range(FETCH_TRIES):
                self._fetch(replication)
                found = self._take(replication)
                if found is not None:
                    break
        if found is None:
            raise FsError(errno.ENOSPC, f"master assigned no usable fid for replication "
                                        f"{replication or 'default'}")
        return found

    def avoid(self, volume_id: int) -> None:
        """A write to `volume_id` failed: forget its cached fids and steer Assign away."""
        with self._lock:
            self._avoid[volume_id] = time.monotonic() + self.ttl
            for queue in self._cache.values():
                kept = [item for item in queue if item[1] != volume_id]
                queue.clear()
                queue.extend(kept)

    def forget_servers(self, server_ids: set[int]) -> int:
        """The master says these volume servers are dead: drop cached fids with a replica on
        any of them (a write there would wait for its timeout). Returns how many were dropped."""
        if not server_ids:
            return 0
        dropped = 0
        with self._lock:
            for queue in self._cache.values():
                kept = [item for item in queue
                        if not any(r.server_id in server_ids for r in item[2].replicas)]
                dropped += len(queue) - len(kept)
                queue.clear()
                queue.extend(kept)
        return dropped

    def avoided(self) -> list[int]:
        with self._lock:
            return sorted(self._live_avoid(time.monotonic()))

    def cached(self, replication: int = 0) -> int:
        with self._lock:
            return len(self._cache[replication])

    # ---------------------------------------------------------------- internals

    def _live_avoid(self, now: float) -> list[int]:
        for vid in [v for v, until in self._avoid.items() if until <= now]:
            del self._avoid[vid]
        return list(self._avoid)

    def _take(self, replication: int) -> master_pb2.Assignment | None:
        now = time.monotonic()
        with self._lock:
            queue = self._cache[replication]
            avoid = set(self._live_avoid(now))
            while queue:
                fetched_at, vid, assignment = queue.popleft()
                if now - fetched_at <= self.ttl and vid not in avoid:
                    return assignment
            return None

    def _fetch(self, replication: int) -> None:
        with self._lock:
            avoid = self._live_avoid(time.monotonic())
        request = master_pb2.AssignRequest(count=self.batch, replication=replication,
                                           avoid_volumes=avoid)
        reply = call_master(self._stub.Assign, request, what="assign fids",
                            patience=self._patience)
        fetched_at = time.monotonic()
        items = []
        for assignment in reply.assignments:
            try:
                vid = Fid.parse(assignment.fid).volume_id
            except BadFid as e:
                raise FsError(errno.EIO, f"master assigned a malformed fid: {e}") from None
            if not assignment.replicas:
                raise FsError(errno.EIO, f"master assigned {assignment.fid} with no replicas")
            items.append((fetched_at, vid, assignment))
        with self._lock:
            self._cache[replication].extend(items)
