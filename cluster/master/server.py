"""The master node: the gRPC Master service over the metadata store, topology, assigner and
reaper, plus its HTTP /status and /metrics endpoint.

`MasterServicer` is transport only: it decodes a request, calls the store / topology /
assigner, encodes the answer; FsError becomes a status code through rpc.servicer_method (so a
bad path is INVALID_ARGUMENT, a missing one NOT_FOUND "ENOENT: /a"). `MasterNode` wires the
pieces from MasterOptions and owns their lifetimes; `main` runs one until SIGINT/SIGTERM.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import threading
import time

import grpc

from cluster.common import rpc
from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError, fserror_from_rpc
from cluster.common.fid import MAX_SERVER_ID, MAX_VOLUME_ID
from cluster.common.fid import Fid
from cluster.common.httpstatus import StatusServer
from cluster.master import metrics, mutations, schema, sequencer
from cluster.master.assign import Assigner
from cluster.master.keyclock import KeyClock
from cluster.master.mutation_server import MutationServer
from cluster.master.mutations import attr_pb
from cluster.master.namespace import Namespace
from cluster.master.options import MasterOptions
from cluster.master.reaper import Reaper
from cluster.master.schema import SchemaError
from cluster.master.store import MAX_REPLICATION, Content, MetadataStore, SQLiteStore
from cluster.master.topology import ServerState, Topology, VolumeState
from cluster.master.vacuum import Vacuumer
from protos import master_pb2, master_pb2_grpc, volume_pb2

log = logging.getLogger(__name__)

DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
BLOCK_SIZE = 4096
ALLOCATE_TIMEOUT_S = 5.0
MAX_ORPHANS_PER_CALL = 100_000


def _check_ids(server_id: int, volume_ids: list[int]) -> None:
    """Ids past the lower half of the 32-bit range are refused: adopting one would push the
    master's own sequences past what the wire can carry."""
    if server_id > MAX_SERVER_ID:
        raise FsError(errno.EINVAL, f"server id {server_id} is not 0..{MAX_SERVER_ID}")
    bad = [v for v in volume_ids if not 1 <= v <= MAX_VOLUME_ID]
    if bad:
        raise FsError(errno.EINVAL, f"volume ids {bad[:3]} are not 1..{MAX_VOLUME_ID}")


def chunk_pb(p: Piece) -> master_pb2.Chunk:
    return master_pb2.Chunk(
        file_offset=p.file_offset, length=p.length, fid=p.fid,
        needle_offset=p.needle_offset, needle_size=p.needle_size, crc32c=p.crc32c,
    )


def content_pb(content: Content) -> master_pb2.FileChunks:
    out = master_pb2.FileChunks(attr=attr_pb(content.attr),
                                chunks=[chunk_pb(p) for p in content.pieces],
                                version=content.version)
    if content.inline is not None:
        out.inline_data, out.inline_crc32c = content.inline, content.inline_crc
    return out


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


def _invalid(message: str) -> FsError:
    return FsError(errno.EINVAL, message)


class MasterServicer(master_pb2_grpc.MasterServicer):
    def __init__(self, store: MetadataStore, topology: Topology, assigner: Assigner,
                 opts: MasterOptions, grpc_address: str = "",
                 node_stubs: rpc.ChannelCache | None = None,
                 key_clock: KeyClock | None = None, vacuumer: Vacuumer | None = None):
        self._node_stubs = node_stubs or rpc.VolumeStubs()
        self.store = store
        self.topology = topology
        self.assigner = assigner
        self.opts = opts
        self.grpc_address = grpc_address
        self.key_clock = key_clock or KeyClock(store.counter(schema.COUNTER_NEEDLE_KEY))
        self.vacuumer = vacuumer or Vacuumer(topology, self._node_stubs, opts.vacuum_threshold)
        self.namespace = Namespace(store, on_commit=metrics.COMMITS.inc,
                                   inline_max=opts.inline_max)
        self.mutation_address = ""  # set once the ZMQ mutation channel is bound

    # ------------------------------------------------------------ namespace

    @rpc.servicer_method
    def GetAttr(self, request, context):
        return attr_pb(self.store.getattr(request.path))

    @rpc.servicer_method
    def GetAttrByIno(self, request, context):
        return attr_pb(self.store.getattr_ino(request.ino))

    @rpc.streaming_servicer_method
    def ReadDir(self, request, context):
        page = request.page_size or DEFAULT_PAGE
        if page > MAX_PAGE:
            raise _invalid(f"page_size {page} is not 1..{MAX_PAGE}")
        after = request.after
        first = True
        while True:
            entries = self.store.readdir(request.path, after, page)
            if entries or first:
                # An empty directory still answers one (empty) page.
                yield master_pb2.ReadDirPage(
                    entries=[master_pb2.DirEntry(name=n, attr=attr_pb(a)) for n, a in entries])
            first = False
            if len(entries) < page or not context.is_active():
                return
            after = entries[-1][0]

    @rpc.servicer_method
    def Readlink(self, request, context):
        return master_pb2.ReadlinkResponse(target=self.store.readlink(request.path))

    @rpc.servicer_method
    def GetXattr(self, request, context):
        return master_pb2.XattrValue(value=self.store.getxattr(request.path, request.name))

    @rpc.servicer_method
    def ListXattr(self, request, context):
        return master_pb2.XattrList(names=self.store.listxattr(request.path))

    @rpc.servicer_method
    def StatFs(self, request, context):
        total, free = self.topology.capacity()
        return master_pb2.StatFsResponse(total_bytes=total, free_bytes=free,
                                         files=self.store.count_inodes(), block_size=BLOCK_SIZE)

    @rpc.servicer_method
    def GetChunks(self, request, context):
        return content_pb(self.store.content(ino=request.ino))

    @rpc.servicer_method
    def GetChunksAt(self, request, context):
        return content_pb(self.store.content(path=request.path))

    # ------------------------------------------------------------ mutations
    # One gRPC method per row of mutations.TABLE, made by _mutation_methods below: the CLI,
    # tools and tests call these; mounts send the same requests on the ZMQ channel.

    # ------------------------------------------------------------ cluster

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
        )


    # ------------------------------------------------------------ fsck and vacuum

    @rpc.streaming_servicer_method
    def ListChunks(self, request, context):
        page = request.page_size or DEFAULT_PAGE
        if page > MAX_PAGE:
            raise _invalid(f"page_size {page} is not 1..{MAX_PAGE}")
        high = self.key_clock.high()
        refs, queued = self.store.chunk_refs()
        inline = [master_pb2.InlineCheck(ino=ino, path=path, size=size, crc_ok=ok)
                  for ino, path, size, ok in self.store.inline_checks()]
        first = True
        for i in range(0, max(len(refs), 1), page):
            yield master_pb2.ChunkRefPage(
                key_high_water=high if first else 0, inline=inline if first else [],
                chunks=[master_pb2.ChunkRef(
                    ino=r.ino, path=r.path, file_offset=r.piece.file_offset,
                    length=r.piece.length, fid=r.piece.fid, needle_size=r.piece.needle_size,
                    crc32c=r.piece.crc32c) for r in refs[i:i + page]])
            first = False
            if not context.is_active():
                return
        for i in range(0, len(queued), page):
            yield master_pb2.ChunkRefPage(queued_fids=queued[i:i + page])

    @rpc.servicer_method
    def QueueOrphans(self, request, context):
        if not 1 <= len(request.fids) <= MAX_ORPHANS_PER_CALL:
            raise _invalid(f"{len(request.fids)} fids; want 1..{MAX_ORPHANS_PER_CALL}")
        if request.min_age_s < 0:
            raise _invalid(f"min_age_s {request.min_age_s} is negative")
        cutoff = self.key_clock.cutoff(request.min_age_s)
        fids = [Fid.parse(f) for f in request.fids]
        old = [str(f) for f in fids if f.key < cutoff]
        queued, referenced = self.store.queue_orphans(old) if old else (0, 0)
        if queued:
            log.info("fsck queued %d orphan needles for deletion", queued)
        return master_pb2.QueueOrphansResponse(queued=queued, referenced=referenced,
                                               too_recent=len(fids) - len(old))

    @rpc.servicer_method
    def Vacuum(self, request, context):
        rows = self.vacuumer.run(request.threshold, list(request.volume_ids))
        return master_pb2.VacuumResponse(replicas=[
            master_pb2.VolumeVacuum(volume_id=r.volume_id, server=r.server,
                                    garbage_ratio=r.garbage_ratio, size_before=r.size_before,
                                    size_after=r.size_after,
                                    compact_revision=r.compact_revision, error=r.error,
                                    seconds=r.seconds)
            for r in rows])


def _mutation_method(op: str):
    @rpc.servicer_method
    def method(self, request, context):
        return mutations.apply(self.namespace, op, request)
    method.__name__ = mutations.TABLE[op][0]
    method.__doc__ = f"The {op} mutation over gRPC (the mount sends it on the ZMQ channel)."
    return method


for _op, (_name, _) in mutations.TABLE.items():
    if _name:
        setattr(MasterServicer, _name, _mutation_method(_op))


class MasterNode:
    """One master: store + topology + assigner + reaper behind gRPC and HTTP."""

    def __init__(self, opts: MasterOptions):
        if not 1 <= opts.default_replication <= MAX_REPLICATION:
            raise ValueError(f"default_replication must be 1..{MAX_REPLICATION}")
        self.opts = opts
        self.store: SQLiteStore | None = None
        self.topology: Topology | None = None
        self.assigner: Assigner | None = None
        self.reaper: Reaper | None = None
        self.vacuumer: Vacuumer | None = None
        self.grpc_port = 0
        self.http_port = 0
        self._server: grpc.Server | None = None
        self.mutations: MutationServer | None = None
        self._http: StatusServer | None = None
        self._stubs = rpc.VolumeStubs()
        self._stopped = threading.Event()
        self._lock_file = None
        self._started = time.monotonic()

    @property
    def grpc_address(self) -> str:
        return f"{self.opts.ip}:{self.grpc_port}"

    def start(self) -> "MasterNode":
        opts = self.opts
        self._lock_data_dir()
        try:
            self.store = SQLiteStore.open_dir(opts.data_dir, opts.sqlite_synchronous)
            volume_ids = sequencer.volume_ids(self.store)
            self.topology = Topology(self.store, opts.dead_after, opts.volume_size_limit,
                                     on_volume_seen=volume_ids.ensure_above)
            self.assigner = Assigner(self.topology, sequencer.needle_keys(self.store),
                                     volume_ids, self._allocate, opts.default_replication,
                                     on_grow=lambda vid: metrics.VOLUMES_GROWN.inc(),
                                     warming_up=self._warming_up)
            self._server, health = rpc.make_server(max_workers=32)
            self.vacuumer = Vacuumer(self.topology, self._stubs, opts.vacuum_threshold,
                                     opts.vacuum_interval)
            self.servicer = MasterServicer(
                self.store, self.topology, self.assigner, opts, node_stubs=self._stubs,
                key_clock=KeyClock(self.store.counter(schema.COUNTER_NEEDLE_KEY)),
                vacuumer=self.vacuumer)
            rpc.add_servicer(self._server, master_pb2_grpc.add_MasterServicer_to_server,
                             self.servicer)
            self.mutations = MutationServer(self.servicer.namespace, self.store, opts.ip,
                                            opts.zmq_port).start()
            self.servicer.mutation_address = self.mutations.address
            self.grpc_port = rpc.bind(self._server, opts.ip, opts.grpc_port)
            self.servicer.grpc_address = self.grpc_address
            self._http = StatusServer(opts.ip, opts.port, self.status)
            self.http_port = self._http.port
            self._server.start()
            self._http.start()
            self.reaper = Reaper(self.store, self.topology, self._stubs, opts.reaper_interval,
                                 on_deleted=metrics.NEEDLES_REAPED.inc)
            self.reaper.start()
            self.vacuumer.start()
            rpc.set_serving(health)
            rpc.set_serving(health, "kelp.master.Master")
        except BaseException:
            self.stop()
            raise
        log.info("master %s serving gRPC on %s, mutations (ZMQ) on %s, HTTP on %s:%d "
                 "(data in %s)", opts.name, self.grpc_address, self.mutations.address, opts.ip,
                 self.http_port, opts.data_dir)
        return self

    def _lock_data_dir(self) -> None:
        """One master per data dir: a second one would hand out the same ids."""
        os.makedirs(self.opts.data_dir, exist_ok=True)
        fh = open(os.path.join(self.opts.data_dir, "master.lock"), "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise OSError(f"data dir {self.opts.data_dir} is in use by another master") from None
        self._lock_file = fh

    def _warming_up(self) -> bool:
        """Just (re)started, and some volume server registered before has not reported yet:
        the topology is incomplete for up to dead_after seconds."""
        if time.monotonic() > self._started + self.opts.dead_after:
            return False
        heard = {s.server_id for s, _ in self.topology.servers() if s.heard}
        return any(sid not in heard for sid in self.store.server_ids())

    def _allocate(self, server: ServerState, volume_id: int, replication: int) -> None:
        try:
            # No wait_for_ready: a server that died since its last heartbeat must fail fast so
            # growth can pick another; a restarted one has a fresh channel (reset when it
            # registered).
            self._stubs.get(server.grpc_address).AllocateVolume(
                volume_pb2.AllocateRequest(volume_id=volume_id, replication=replication),
                timeout=ALLOCATE_TIMEOUT_S,
            )
        except grpc.RpcError as e:
            err = fserror_from_rpc(e)
            raise FsError(err.errno if err.errno == errno.ENOSPC else errno.EIO,
                          f"{e.code().name}: {e.details()}") from None

    def status(self) -> dict:
        topo, store = self.topology, self.store
        return {
            "name": self.opts.name,
            "grpc_address": self.grpc_address,
            "mutation_address": self.mutations.address if self.mutations else "",
            "files": store.count_inodes() if store else 0,
            "pending_deletions": store.pending_deletions() if store else 0,
            "default_replication": self.opts.default_replication,
            "servers": [
                {"server_id": s.server_id, "name": s.name, "grpc_address": s.grpc_address,
                 "alive": alive, "volumes": sorted(s.volumes), "free_bytes": s.free_bytes,
                 "total_bytes": s.total_bytes}
                for s, alive in (topo.servers() if topo else [])
            ],
            "gateways": [
                {"name": g.name, "address": g.address, "alive": alive}
                for g, alive in (topo.gateways() if topo else [])
            ],
        }

    def stop(self, grace: float = 1.0) -> None:
        if self.vacuumer:
            self.vacuumer.stop()
        if self.reaper:
            self.reaper.stop()
        if self._server:
            self._server.stop(grace).wait()
        if self.mutations:
            self.mutations.stop()
            self.mutations = None
        if self._http:
            self._http.stop()
            self._http = None
        self._stubs.close()
        if self.store:
            self.store.close()
            self.store = None
        if self._lock_file:
            self._lock_file.close()  # releases the flock
            self._lock_file = None
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def main(opts: MasterOptions) -> int:
    """Run a master until SIGINT/SIGTERM; the exit code for the CLI."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        node = MasterNode(opts).start()
    except (OSError, SchemaError, ValueError) as e:
        log.error("master %s cannot start: %s", opts.name, e)
        return 1
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("master %s: %s, stopping", opts.name, signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        node.stop()
    return 0
