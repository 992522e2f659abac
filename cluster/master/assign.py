"""File-id assignment: pick writable volumes (growing new ones when there are none), draw
needle keys from the durable sequencer and random cookies, and name the replicas.

Transport-free: volume allocation is a callable the server wires to Volume.AllocateVolume, so
tests drive this class with a fake. Growth is serialised by one lock, so concurrent Assigns
that find no writable volume grow one round between them, not one round each.
"""
from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterable

from cluster.common.errors import FsError
from cluster.common.fid import Fid
from cluster.common.replication import check_replication
from cluster.master import placement
from cluster.master.placement import Candidate, RoundRobin
from cluster.master.sequencer import Sequencer
from cluster.master.topology import ServerState, Topology

log = logging.getLogger(__name__)

MAX_ASSIGN = 1000

# (server, volume id, replication) -> None; raises when the server could not create it.
AllocateFn = Callable[[ServerState, int, int], None]


class Assigner:
    def __init__(self, topology: Topology, keys: Sequencer, volume_ids: Sequencer,
                 allocate: AllocateFn, default_replication: int = 1,
                 on_grow: Callable[[int], None] | None = None,
                 warming_up: Callable[[], bool] = lambda: False):
        self._topo = topology
        # True while the topology is still incomplete after a master (re)start (known volume
        # servers have not all reported yet): a shortage then is "try again", not "no space".
        self._warming_up = warming_up
        self._keys = keys
        self._vids = volume_ids
        self._allocate = allocate
        self.default_replication = default_replication
        self._on_grow = on_grow
        self._grow_lock = threading.Lock()
        self._rr = RoundRobin()

    def replication_for(self, replication: int) -> int:
        """The copy count an Assign asking for `replication` gets (0: the default)."""
        return check_replication(replication or self.default_replication)

    def assign(self, count: int, replication: int = 0,
               avoid: Iterable[int] = ()) -> list[tuple[Fid, list[ServerState]]]:
        if not 1 <= count <= MAX_ASSIGN:
            raise FsError(errno.EINVAL, f"count {count} is not 1..{MAX_ASSIGN}")
        rep = self.replication_for(replication)
        avoid = set(avoid)
        volumes = [v for v in self._topo.writable_volumes(rep) if v not in avoid]
        if not volumes:
            with self._grow_lock:
                volumes = [v for v in self._topo.writable_volumes(rep) if v not in avoid]
                if not volumes:
                    try:
                        self.grow(rep)
                    except FsError as e:
                        raise self._maybe_transient(e) from None
                    volumes = [v for v in self._topo.writable_volumes(rep) if v not in avoid]
            if not volumes:
                raise FsError(errno.ENOSPC, f"no writable volume with replication {rep}")
        first = self._keys.take(count)
        chosen = self._rr.spread(rep, volumes, count)
        replicas: dict[int, list[ServerState]] = {}
        out = []
        for i, vid in enumerate(chosen):
            if vid not in replicas:
                replicas[vid] = self._topo.live_replicas(vid)
            out.append((Fid(vid, first + i, Fid.new_cookie()), replicas[vid]))
        return out

    def _maybe_transient(self, e: FsError) -> FsError:
        """A growth failure while no server is alive, or right after the master started, is
        EAGAIN (UNAVAILABLE: clients retry) rather than ENOSPC."""
        if e.errno != errno.ENOSPC:
            return e
        if self._warming_up():
            return FsError(errno.EAGAIN, "the master just started and is waiting for volume "
                                         f"servers to report ({e.message})")
        if not self._topo.alive_servers():
            return FsError(errno.EAGAIN, f"no live volume server ({e.message})")
        return e

    def grow(self, replication: int) -> list[int]:
        """Create one growth round of volumes; returns their ids (ENOSPC when none could be).

        A server whose allocation fails (it may have died since its last heartbeat) is left
        out and the round is planned again over the others, so one dead server that the
        master still counts alive does not stop growth."""
        failed_servers: set[int] = set()
        failures: list[str] = []
        full = True  # ENOSPC only when every failure was a full disk
        while True:
            live = [s for s in self._topo.alive_servers()
                    if s.heard and s.server_id not in failed_servers]
            candidates = [
                Candidate(s.server_id, s.free_bytes, len(s.volumes), s.max_volumes) for s in live
            ]
            if failures:
                try:
                    plan = placement.plan_growth(candidates, replication)
                except FsError:
                    break
            else:
                plan = placement.plan_growth(candidates, replication)
            by_id = {s.server_id: s for s in live}
            grown: list[int] = []
            for server_ids in plan:
                vid = self._vids.take()
                ok = True
                for sid in server_ids:
                    try:
                        self._allocate(by_id[sid], vid, replication)
                    except Exception as e:
                        ok = False
                        failed_servers.add(sid)
                        full = full and getattr(e, "errno", None) == errno.ENOSPC
                        failures.append(f"volume {vid} on {by_id[sid].name}: {e}")
                        log.warning("allocating volume %d on server %d (%s) failed: %s",
                                    vid, sid, by_id[sid].grpc_address, e)
                if ok:
                    self._topo.add_volume(vid, replication, server_ids)
                    grown.append(vid)
                    if self._on_grow:
                        self._on_grow(vid)
                    log.info("grew volume %d (replication %d) on servers %s", vid, replication,
                             server_ids)
            if grown or not failures:
                return grown
        raise FsError(errno.ENOSPC if full else errno.EIO,
                      "could not grow a volume: " + "; ".join(failures))
