"""Vacuum: compact volumes whose garbage ratio passes a threshold, on every replica.

Deleting a needle only appends a delete record; the space comes back when the volume server
compacts the volume (cluster/volume/compaction.py: live needles copied to fresh files, swapped
in atomically, reads and writes going on meanwhile). This module decides which volumes are
worth it and drives Volume.Compact on each live replica, for the Vacuum RPC (`kelp vacuum`)
and, every MasterOptions.vacuum_interval seconds, on its own.

The ratio is deleted_bytes / size, asked fresh from each live server (Volume.Status) rather
than taken from the last heartbeat, so a vacuum right after a burst of deletes sees them. A
volume is compacted on all its live replicas when any replica passes the threshold, so the
copies keep the same compact revision. A replica whose server is down is reported and
skipped; it compacts at a later vacuum once it is back.

Locking: `_running` lets one vacuum run at a time (a second request gets EAGAIN, the
automatic one just skips its turn).
"""
from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from cluster.common import rpc
from cluster.common.errors import FsError
from cluster.master.topology import Topology
from protos import volume_pb2

log = logging.getLogger(__name__)

STATUS_TIMEOUT_S = 5.0
COMPACT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ReplicaVacuum:
    volume_id: int
    server: str
    garbage_ratio: float
    size_before: int = 0
    size_after: int = 0
    compact_revision: int = 0
    error: str = ""
    seconds: float = 0.0

    @property
    def freed(self) -> int:
        return max(0, self.size_before - self.size_after)


def garbage_ratio(size: int, deleted_bytes: int) -> float:
    return deleted_bytes / size if size > 0 else 0.0


class Vacuumer:
    def __init__(self, topology: Topology, stubs, default_threshold: float = 0.3,
                 interval: float = 0.0):
        check_threshold(default_threshold)
        self._topo = topology
        self._stubs = stubs      # .get(address) -> Volume stub
        self.default_threshold = default_threshold
        self.interval = interval
        self.active: Callable[[], bool] = lambda: True   # MasterNode: only on the leader
        self._running = threading.Lock()
        self._thread: rpc.StoppableThread | None = None
        self.runs = 0            # completed vacuums (tests and /status)

    # ------------------------------------------------------------ background

    def start(self) -> None:
        if self.interval > 0:
            self._thread = rpc.StoppableThread("vacuum", self.interval, self._auto)
            # Wait one interval before the first pass: a master that just started has not heard
            # every server yet.
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            if self._thread.is_alive():
                self._thread.join(timeout=10)

    def _auto(self) -> None:
        if not self.active():
            return   # the leader vacuums; other masters of its database do not
        if self._thread is not None and self.runs == 0 and self._thread.wake_after(self.interval):
            return
        try:
            rows = self.run()
        except FsError as e:
            if e.errno != errno.EAGAIN:
                raise
            return
        done = [r for r in rows if not r.error]
        if done:
            log.info("automatic vacuum: compacted %d replicas, %d bytes reclaimed",
                     len(done), sum(r.freed for r in done))

    # ------------------------------------------------------------ one pass

    def run(self, threshold: float | None = None, volume_ids=()) -> list[ReplicaVacuum]:
        """Compact every volume (of `volume_ids`, or all) past the threshold; one row per
        replica compacted or failed."""
        threshold = threshold if threshold else self.default_threshold
        check_threshold(threshold)
        if not self._running.acquire(blocking=False):
            raise FsError(errno.EAGAIN, "a vacuum is running already")
        try:
            return self._run(threshold, set(volume_ids))
        finally:
            self.runs += 1
            self._running.release()

    def _run(self, threshold: float, only: set[int]) -> list[ReplicaVacuum]:
        # vid -> [(server name, address or "" if down, size, deleted_bytes)]
        replicas: dict[int, list[tuple[str, str, int, int]]] = {}
        for server, alive in self._topo.servers():
            fresh = {}
            if alive:
                try:
                    st = self._stubs.get(server.grpc_address).Status(
                        volume_pb2.StatusRequest(), timeout=STATUS_TIMEOUT_S)
                    fresh = {v.volume_id: (v.size, v.deleted_bytes) for v in st.volumes}
                except grpc.RpcError as e:
                    log.warning("vacuum: status of %s failed: %s", server.name, e.code().name)
                    alive = False
            vids = set(fresh) if fresh else set(server.volumes)
            for vid in vids:
                if only and vid not in only:
                    continue
                v = server.volumes.get(vid)
                size, deleted = fresh.get(vid, (v.size, v.deleted_bytes) if v else (0, 0))
                replicas.setdefault(vid, []).append(
                    (server.name, server.grpc_address if alive else "", size, deleted))
        rows: list[ReplicaVacuum] = []
        for vid in sorted(replicas):
            copies = replicas[vid]
            if max(garbage_ratio(s, d) for _, _, s, d in copies) < threshold:
                continue
            for name, address, size, deleted in copies:
                rows.append(self._compact(vid, name, address, garbage_ratio(size, deleted)))
        return rows

    def _compact(self, vid: int, name: str, address: str, ratio: float) -> ReplicaVacuum:
        if not address:
            return ReplicaVacuum(vid, name, ratio, error="server down; not compacted")
        started = time.monotonic()
        try:
            r = self._stubs.get(address).Compact(volume_pb2.VolumeRef(volume_id=vid),
                                                 timeout=COMPACT_TIMEOUT_S)
        except grpc.RpcError as e:
            log.warning("vacuum: compacting volume %d on %s failed: %s %s", vid, name,
                        e.code().name, e.details())
            return ReplicaVacuum(vid, name, ratio, error=f"{e.code().name}: {e.details()}",
                                 seconds=time.monotonic() - started)
        return ReplicaVacuum(vid, name, ratio, r.size_before, r.size_after, r.compact_revision,
                             seconds=r.seconds)


def check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise FsError(errno.EINVAL, f"vacuum threshold {threshold} is not in (0, 1]")
