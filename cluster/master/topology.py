"""The cluster's soft state: which volume servers and gateways exist, what they hold, who is alive.

Rebuilt from heartbeats after a master restart (one heartbeat interval), so nothing here is
persisted except the volume-server ids, which live in the metadata store's `servers` table so
an id is never handed to two servers and a restarted server gets its old id back.

A server is alive when it was heard from within `dead_after` seconds. A volume is writable
for replication N when it is not read-only, its size is under the limit, it was created with
replication N and N live servers hold it: a write never goes to fewer copies than asked for.

Locking: one lock guards all maps; every method holds it briefly and returns copies.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from cluster.master.store import MetadataStore


@dataclass(frozen=True)
class VolumeState:
    volume_id: int
    replication: int
    size: int = 0
    file_count: int = 0
    deleted_bytes: int = 0
    read_only: bool = False
    compact_revision: int = 0


@dataclass
class ServerState:
    server_id: int
    name: str
    grpc_address: str
    http_address: str
    last_seen: float
    volumes: dict[int, VolumeState] = field(default_factory=dict)
    free_bytes: int = 0
    total_bytes: int = 0
    max_volumes: int = 0
    heard: bool = False  # a heartbeat arrived (free space and volumes are known)
    # Volumes this master just allocated here -> when; kept even if a heartbeat composed before
    # the allocation omits them, so an Assign right after growth does not grow again.
    fresh: dict[int, float] = field(default_factory=dict)


@dataclass
class GatewayState:
    name: str
    address: str
    http_address: str
    last_seen: float


class Topology:
    def __init__(self, store: MetadataStore, dead_after: float, volume_size_limit: int,
                 clock: Callable[[], float] = time.monotonic,
                 on_volume_seen: Callable[[int], None] | None = None):
        self._store = store
        self.dead_after = dead_after
        self.volume_size_limit = volume_size_limit
        self._clock = clock
        self._on_volume_seen = on_volume_seen
        self._lock = threading.Lock()
        self._servers: dict[int, ServerState] = {}
        self._gateways: dict[str, GatewayState] = {}
        self._max_vid_seen = 0

    # ------------------------------------------------------------ volume servers

    def register(self, server_id: int, name: str, grpc_address: str, http_address: str) -> int:
        """The server's persistent id: `server_id` when given (known or adopted), else new."""
        sid = self._store.register_server(server_id, name, grpc_address, http_address)
        now = self._clock()
        with self._lock:
            # A server that lost its data dir comes back with a new id at the old address:
            # the old entry describes nothing any more.
            for other in [s for s in self._servers.values()
                          if s.grpc_address == grpc_address and s.server_id != sid]:
                del self._servers[other.server_id]
            state = self._servers.get(sid)
            if state is None:
                self._servers[sid] = ServerState(sid, name, grpc_address, http_address, now)
            else:
                state.name = name
                state.grpc_address, state.http_address = grpc_address, http_address
                state.last_seen = now
        return sid

    def heartbeat(self, server_id: int, name: str, grpc_address: str, http_address: str,
                  volumes: Iterable[VolumeState], free_bytes: int, total_bytes: int,
                  max_volumes: int) -> bool:
        """Record a heartbeat; False when the id is unknown and the server must re-register."""
        if not server_id:
            return False
        now = self._clock()
        with self._lock:
            state = self._servers.get(server_id)
        if state is None:
            # After a master restart the id is in the store but not in memory yet.
            record = self._store.get_server(server_id)
            if record is None:
                return False
            self.register(server_id, name or record.name, grpc_address or record.grpc_address,
                          http_address or record.http_address)
        vols = {v.volume_id: v for v in volumes}
        newest = max(vols, default=0)
        with self._lock:
            state = self._servers.get(server_id)
            if state is None:  # raced with a re-registration under another id
                return False
            state.last_seen = now
            if name:
                state.name = name
            if grpc_address:
                state.grpc_address = grpc_address
            if http_address:
                state.http_address = http_address
            for vid, added in list(state.fresh.items()):
                if vid in vols or now - added > self.dead_after:
                    del state.fresh[vid]
                elif vid in state.volumes:
                    vols[vid] = state.volumes[vid]
            state.volumes = vols
            state.free_bytes, state.total_bytes = free_bytes, total_bytes
            state.max_volumes = max_volumes
            state.heard = True
            raise_vid = newest > self._max_vid_seen
            if raise_vid:
                self._max_vid_seen = newest
        if raise_vid and self._on_volume_seen:
            self._on_volume_seen(newest)
        return True

    def add_volume(self, volume_id: int, replication: int, server_ids: Iterable[int]) -> None:
        """A volume was just allocated on these servers: usable before their next heartbeat."""
        with self._lock:
            for sid in server_ids:
                state = self._servers.get(sid)
                if state is not None and volume_id not in state.volumes:
                    state.volumes[volume_id] = VolumeState(volume_id, replication)
                    state.fresh[volume_id] = self._clock()

    def mark_read_only(self, volume_id: int) -> None:
        with self._lock:
            for s in self._servers.values():
                if volume_id in s.volumes:
                    s.volumes[volume_id] = replace(s.volumes[volume_id], read_only=True)

    def _alive(self, s: ServerState, now: float) -> bool:
        return now - s.last_seen <= self.dead_after

    def servers(self) -> list[tuple[ServerState, bool]]:
        """(copy of each server, alive), by id."""
        now = self._clock()
        with self._lock:
            return [
                (replace(s, volumes=dict(s.volumes), fresh=dict(s.fresh)), self._alive(s, now))
                for _, s in sorted(self._servers.items())
            ]

    def alive_servers(self) -> list[ServerState]:
        return [s for s, alive in self.servers() if alive]

    def is_known(self, server_id: int) -> bool:
        with self._lock:
            return server_id in self._servers

    def holders(self, volume_id: int) -> list[tuple[ServerState, bool]]:
        """Every server known to hold the volume, with whether it is alive."""
        return [(s, alive) for s, alive in self.servers() if volume_id in s.volumes]

    def volume_replication(self, volume_id: int) -> int:
        with self._lock:
            for s in self._servers.values():
                if volume_id in s.volumes:
                    return s.volumes[volume_id].replication
        return 0

    def live_replicas(self, volume_id: int) -> list[ServerState]:
        """Live servers holding the volume, the one with most free space first."""
        live = [s for s, alive in self.holders(volume_id) if alive]
        live.sort(key=lambda s: (-s.free_bytes, s.server_id))
        return live

    def writable_volumes(self, replication: int) -> list[int]:
        now = self._clock()
        by_vid: dict[int, list[tuple[VolumeState, bool]]] = {}
        with self._lock:
            for s in self._servers.values():
                alive = self._alive(s, now)
                for v in s.volumes.values():
                    by_vid.setdefault(v.volume_id, []).append((v, alive))
        out = []
        for vid, copies in sorted(by_vid.items()):
            if any(v.replication != replication for v, _ in copies):
                continue
            if any(v.read_only or v.size >= self.volume_size_limit for v, _ in copies):
                continue
            if sum(1 for _, alive in copies if alive) >= replication and all(a for _, a in copies):
                out.append(vid)
        return out

    def capacity(self) -> tuple[int, int]:
        """(total, free) bytes over live servers."""
        live = self.alive_servers()
        return sum(s.total_bytes for s in live), sum(s.free_bytes for s in live)

    # ------------------------------------------------------------ gateways

    def gateway_heartbeat(self, name: str, address: str, http_address: str) -> None:
        key = address or name
        with self._lock:
            self._gateways[key] = GatewayState(name, address, http_address, self._clock())

    def gateways(self) -> list[tuple[GatewayState, bool]]:
        now = self._clock()
        with self._lock:
            return [(replace(g), now - g.last_seen <= self.dead_after)
                    for _, g in sorted(self._gateways.items())]

    def seconds_since(self, last_seen: float) -> float:
        return max(0.0, self._clock() - last_seen)
