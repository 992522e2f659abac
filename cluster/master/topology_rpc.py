"""The topology half of the Master gRPC service: volume servers register and heartbeat,
gateways heartbeat, writers get fids (Assign) and readers find replicas (LookupVolume), and
ClusterStatus describes it all. Transport only, over Topology and Assigner."""
from __future__ import annotations

import errno
import logging

from cluster.common import rpc
from cluster.common.errors import FsError
from cluster.common.fid import MAX_SERVER_ID, MAX_VOLUME_ID
from cluster.master import metrics
from cluster.master.namespace_rpc import _invalid
from cluster.master.topology import ServerState, VolumeState
from protos import master_pb2

log = logging.getLogger(__name__)


def _check_ids(server_id: int, volume_ids: list[int]) -> None:
    """Ids past the lower half of the 32-bit range are refused: adopting one would push the
    master's own sequences past what the wire can carry."""
    if server_id > MAX_SERVER_ID:
        raise FsError(errno.EINVAL, f"server id {server_id} is not 0..{MAX_SERVER_ID}")
    bad = [v for v in volume_ids if not 1 <= v <= MAX_VOLUME_ID]
    if bad:
        raise FsError(errno.EINVAL, f"volume ids {bad[:3]} are not 1..{MAX_VOLUME_ID}")


def location_pb(s: ServerState) -> master_pb2.Location:
    return master_pb2.Location(server_id=s.server_id, name=s.name,
                               grpc_address=s.grpc_address, http_address=s.http_address)


def volume_info_pb(v: VolumeState) -> master_pb2.VolumeInfo:
    return master_pb2.VolumeInfo(
        volume_id=v.volume_id, replication=v.replication, size=v.size, file_count=v.file_count,
        deleted_bytes=v.deleted_bytes, read_only=v.read_only,
        compact_revision=v.compact_revision,
    )


def volume_from_pb(v: master_pb2.VolumeInfo) -> VolumeState:
    return VolumeState(v.volume_id, v.replication, v.size, v.file_count, v.deleted_bytes,
                       v.read_only, v.compact_revision)


class TopologyRpc:
    """Mixed into MasterServicer: needs self.store, self.topology, self.assigner, self.opts."""

    @rpc.servicer_method
    def RegisterVolumeServer(self, request, context):
        _check_ids(request.server_id, [])
        if not request.grpc_address:
            raise _invalid("RegisterVolumeServer needs grpc_address")
        sid = self.topology.register(request.server_id, request.name or request.grpc_address,
                                     request.grpc_address, request.http_address)
        self._node_stubs.reset(request.grpc_address)  # a restarted server: connect afresh
        log.info("volume server %d registered: %s at %s", sid, request.name,
                 request.grpc_address)
        return master_pb2.RegisterResponse(
            server_id=sid,
            heartbeat_interval_ms=int(self.opts.heartbeat_interval * 1000),
            volume_size_limit=self.opts.volume_size_limit,
            master_name=self.opts.name,
        )

    @rpc.servicer_method
    def SendHeartbeat(self, request, context):
        _check_ids(request.server_id, [v.volume_id for v in request.volumes])
        metrics.HEARTBEATS.inc()
        known = self.topology.heartbeat(
            request.server_id, request.name, request.grpc_address, request.http_address,
            [volume_from_pb(v) for v in request.volumes], request.free_bytes,
            request.total_bytes, request.max_volumes,
        )
        return master_pb2.HeartbeatResponse(reregister=not known)

    @rpc.servicer_method
    def SendGatewayHeartbeat(self, request, context):
        if not request.address and not request.name:
            raise _invalid("gateway heartbeat needs a name or an address")
        self.topology.gateway_heartbeat(request.name, request.address, request.http_address)
        return master_pb2.Empty()

    @rpc.servicer_method
    def Assign(self, request, context):
        self.require_leader(context)
        assigned = self.assigner.assign(request.count, request.replication,
                                        request.avoid_volumes)
        metrics.ASSIGNED_FIDS.inc(len(assigned))
        if assigned:
            self.key_clock.note(max(fid.key for fid, _ in assigned) + 1)
        return master_pb2.AssignResponse(assignments=[
            master_pb2.Assignment(fid=str(fid), replicas=[location_pb(s) for s in replicas])
            for fid, replicas in assigned
        ])

    @rpc.servicer_method
    def LookupVolume(self, request, context):
        """Known volumes with at least one live replica; others are absent."""
        out = []
        for vid in dict.fromkeys(request.volume_ids):
            live = self.topology.live_replicas(vid)
            if live:
                out.append(master_pb2.VolumeLocation(
                    volume_id=vid, replicas=[location_pb(s) for s in live]))
        return master_pb2.LookupResponse(locations=out)

    @rpc.servicer_method
    def ClusterStatus(self, request, context):
        servers = [
            master_pb2.ServerStatus(
                server_id=s.server_id, name=s.name, grpc_address=s.grpc_address,
                http_address=s.http_address, alive=alive,
                last_seen_s=self.topology.seconds_since(s.last_seen),
                volumes=[volume_info_pb(v) for _, v in sorted(s.volumes.items())],
                free_bytes=s.free_bytes, total_bytes=s.total_bytes,
            )
            for s, alive in self.topology.servers()
        ]
        gateways = [
            master_pb2.GatewayStatus(name=g.name, address=g.address,
                                     http_address=g.http_address, alive=alive,
                                     last_seen_s=self.topology.seconds_since(g.last_seen))
            for g, alive in self.topology.gateways()
        ]
        return master_pb2.ClusterStatusResponse(
            master_name=self.opts.name, grpc_address=self.grpc_address, servers=servers,
            gateways=gateways, files=self.store.count_inodes(),
            default_replication=self.opts.default_replication,
            pending_deletions=self.store.pending_deletions(),
            mutation_address=self.mutation_address, inline_max=self.opts.inline_max,
            leader=self.peers.leader_address() if self.peers else "",
            masters=self.peers.live_addresses() if self.peers else [],
        )
