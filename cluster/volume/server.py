"""The volume server process: the gRPC Volume service over a Store, /status and /metrics over
HTTP, and the heartbeat to the master.

VolumeServicer is the thin transport layer: it decodes a request, calls the Store, encodes the
answer; FsError from the store becomes the status code errors.py assigns (via
rpc.servicer_method). VolumeNode wires options -> store -> gRPC server -> HTTP -> heartbeats,
and main() runs a node in the foreground for `kelp volume`.
"""
from __future__ import annotations

import errno
import functools
import logging
import threading

import grpc

from cluster.common import malloc, rpc
from cluster.common.blocks import BLOCK_SIZE
from cluster.common.errors import FsError
from cluster.common.fid import MAX_VOLUME_ID
from cluster.common.httpstatus import StatusServer
from cluster.common.node import run_node
from cluster.common.security import Transport
from cluster.volume import metrics, repair
from cluster.volume import store as st
from cluster.volume.appends import DURABILITY_MODES
from cluster.volume.heartbeat import Heartbeater
from cluster.volume.needle import crc32c
from cluster.volume.options import VolumeOptions
from cluster.volume.store import Store
from cluster.volume.volume import VolumeStats
from protos import volume_pb2, volume_pb2_grpc

log = logging.getLogger(__name__)

STOP_GRACE_S = 1.0
MAX_NEEDLES_PER_CALL = 10_000

_CHECK_STATUS = {
    st.CHECK_OK: volume_pb2.NeedleCheck.OK,
    st.CHECK_MISSING: volume_pb2.NeedleCheck.MISSING,
    st.CHECK_WRONG_COOKIE: volume_pb2.NeedleCheck.WRONG_COOKIE,
    st.CHECK_CRC_BAD: volume_pb2.NeedleCheck.CRC_BAD,
    st.CHECK_SIZE_MISMATCH: volume_pb2.NeedleCheck.SIZE_MISMATCH,
    st.CHECK_UNREADABLE: volume_pb2.NeedleCheck.UNREADABLE,
}


def _refs(needles) -> list[repair.Ref]:
    if not 1 <= len(needles) <= MAX_NEEDLES_PER_CALL:
        raise FsError(errno.EINVAL, f"{len(needles)} needles in one call; want "
                                    f"1..{MAX_NEEDLES_PER_CALL}")
    return [repair.Ref(n.key, n.cookie, n.size, n.crc32c) for n in needles]


def _peer_address(source: str, own: str) -> str:
    host, sep, port = source.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise FsError(errno.EINVAL, f"source {source!r} is not host:port")
    if source == own:
        raise FsError(errno.EINVAL, "source is this server itself")
    return source


def _volume_status(s: VolumeStats) -> volume_pb2.VolumeStatus:
    return volume_pb2.VolumeStatus(
        volume_id=s.volume_id, replication=s.replication, size=s.size,
        file_count=s.file_count, deleted_bytes=s.deleted_bytes, read_only=s.read_only,
        compact_revision=s.compact_revision)


def _counted(fn):
    """Count error answers per method and status code (inside servicer_method's mapping)."""

    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except FsError as e:
            metrics.ERRORS.labels(self.node_name, fn.__name__, e.status().name).inc()
            raise

    return wrapper


class VolumeServicer(volume_pb2_grpc.VolumeServicer):
    """gRPC Volume service over a Store."""

    def __init__(self, store: Store, node_name: str, server_id=lambda: 0,
                 on_volumes_changed=lambda: None, own_address: str = "",
                 transport: Transport | None = None):
        self.store = store
        self.node_name = node_name
        self._server_id = server_id
        self._on_volumes_changed = on_volumes_changed
        self.own_address = own_address
        # other volume servers, for repair copies
        peers = (transport or Transport("volume")).channel_factory("volume")
        self._peers = rpc.ChannelCache(peers)

    def _peer(self, source: str) -> volume_pb2_grpc.VolumeStub:
        return self._peers.stub(_peer_address(source, self.own_address),
                                volume_pb2_grpc.VolumeStub)

    def close(self) -> None:
        self._peers.close()

    @rpc.servicer_method
    @_counted
    def AllocateVolume(self, request, context):
        if not 1 <= request.volume_id <= MAX_VOLUME_ID:
            raise FsError(errno.EINVAL, f"volume id {request.volume_id} is not 1..{MAX_VOLUME_ID}")
        vol = self.store.allocate(request.volume_id, request.replication)
        self._on_volumes_changed()
        return _volume_status(vol.stats())

    @rpc.servicer_method
    def Sync(self, request, context):
        self.store.sync(request.volume_ids)
        return volume_pb2.SyncResponse()

    @rpc.servicer_method
    @_counted
    def WriteNeedle(self, request, context):
        data = request.data   # each access of a bytes field may copy it: read once
        if crc32c(data) != request.crc32c:
            raise FsError(errno.EINVAL, f"crc32c {request.crc32c:08x} does not match the "
                                        f"{len(data)} bytes received (damaged in transit?)")
        size = self.store.write(request.volume_id, request.key, request.cookie, data,
                                request.crc32c)
        metrics.BYTES_WRITTEN.labels(self.node_name).inc(size)
        metrics.NEEDLES_WRITTEN.labels(self.node_name).inc()
        return volume_pb2.WriteResponse(size=size)

    @rpc.servicer_method
    @_counted
    def ReadNeedle(self, request, context):
        # Counted from the store's result: reading a bytes field back from a message copies it.
        if request.whole_blocks and (request.offset or request.length):
            b = self.store.read_blocks(request.volume_id, request.key, request.cookie,
                                       request.offset, request.length)
            metrics.BYTES_READ.labels(self.node_name).inc(len(b.data))
            reply = volume_pb2.ReadResponse(
                data=b.data, needle_crc32c=b.needle_crc, needle_size=b.needle_size,
                data_offset=b.data_offset, block_crc32c=b.block_crcs, block_size=BLOCK_SIZE)
        else:
            r = self.store.read(request.volume_id, request.key, request.cookie,
                                request.offset, request.length)
            metrics.BYTES_READ.labels(self.node_name).inc(len(r.data))
            reply = volume_pb2.ReadResponse(data=r.data, needle_crc32c=r.needle_crc,
                                            needle_size=r.needle_size,
                                            data_offset=request.offset)
        metrics.NEEDLES_READ.labels(self.node_name).inc()
        return reply

    @rpc.servicer_method
    @_counted
    def DeleteNeedle(self, request, context):
        freed = self.store.delete(request.volume_id, request.key, request.cookie)
        if freed:
            metrics.NEEDLES_DELETED.labels(self.node_name).inc()
        return volume_pb2.DeleteResponse(freed=freed)

    @rpc.servicer_method
    @_counted
    def ListNeedles(self, request, context):
        needles = self.store.list_needles(request.volume_id)
        return volume_pb2.NeedleList(needles=[
            volume_pb2.NeedleInfo(key=n.key, cookie=n.cookie, size=n.size, crc32c=n.crc)
            for n in needles])

    @rpc.servicer_method
    @_counted
    def CheckNeedles(self, request, context):
        refs = _refs(request.needles)
        verdicts = self.store.check_needles(request.volume_id,
                                            [(r.key, r.cookie, r.size, r.crc) for r in refs])
        return volume_pb2.CheckNeedlesResponse(results=[
            volume_pb2.NeedleCheck(key=r.key, status=_CHECK_STATUS[status], detail=detail)
            for r, (status, detail) in zip(refs, verdicts, strict=True)])

    @rpc.servicer_method
    @_counted
    def CopyNeedles(self, request, context):
        refs = _refs(request.needles)
        out = repair.copy_needles(self.store, request.volume_id, self._peer(request.source), refs)
        return volume_pb2.CopyNeedlesResponse(
            copied=out.copied, bytes=out.bytes,
            failures=[volume_pb2.NeedleCheck(key=k, status=_CHECK_STATUS[s], detail=d)
                      for k, s, d in out.failures])

    @rpc.servicer_method
    @_counted
    def CopyVolume(self, request, context):
        peer = self._peer(request.source)
        out = repair.copy_volume(self.store, request.volume_id, request.replication, peer)
        self._on_volumes_changed()
        return volume_pb2.CopyVolumeResponse(copied=out.copied, bytes=out.bytes,
                                             failed=len(out.failures))

    @rpc.servicer_method
    @_counted
    def Compact(self, request, context):
        r = self.store.compact(request.volume_id)
        self._on_volumes_changed()   # the master sees the smaller size at once
        return volume_pb2.CompactResponse(volume_id=r.volume_id, size_before=r.size_before,
                                          size_after=r.size_after,
                                          compact_revision=r.compact_revision,
                                          seconds=r.seconds)

    @rpc.servicer_method
    @_counted
    def Status(self, request, context):
        free, total = self.store.disk()
        return volume_pb2.StatusResponse(
            server_id=self._server_id(), name=self.node_name,
            volumes=[_volume_status(v.stats()) for v in self.store.volumes()],
            free_bytes=free, total_bytes=total)


class VolumeNode:
    """One volume server: start() brings it up, stop() takes it down, wait() blocks until then."""

    def __init__(self, opts: VolumeOptions):
        if opts.durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}, "
                             f"not {opts.durability!r}")
        self.opts = opts
        self.store: Store | None = None
        self.grpc_port = 0
        self.http_port = 0
        self.heartbeater: Heartbeater | None = None
        self._server: grpc.Server | None = None
        self._servicer: VolumeServicer | None = None
        self._health = None
        self._http: StatusServer | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def grpc_address(self) -> str:
        return f"{self.opts.ip}:{self.grpc_port}"

    @property
    def http_address(self) -> str:
        return f"{self.opts.ip}:{self.http_port}"

    @property
    def server_id(self) -> int:
        return self.heartbeater.server_id if self.heartbeater else 0

    def start(self) -> VolumeNode:
        o = self.opts
        try:
            self.store = Store(o.dir, max_volumes=o.max_volumes, min_free_bytes=o.min_free_bytes,
                               durability=o.durability, group_commit_ms=o.group_commit_ms,
                               size_limit=o.volume_size_limit).open()
            transport = Transport("volume", o.tls_dir)
            self._server, self._health = transport.make_server()
            servicer = VolumeServicer(self.store, o.name, lambda: self.server_id,
                                      self._volumes_changed, transport=transport)
            self._servicer = servicer
            rpc.add_servicer(self._server, volume_pb2_grpc.add_VolumeServicer_to_server, servicer)
            self.grpc_port = transport.bind(self._server, o.ip, o.grpc_port)
            servicer.own_address = self.grpc_address
            self._http = StatusServer(o.ip, o.port, self.status).start()
            self.http_port = self._http.port
            self._server.start()
            metrics.VOLUMES.labels(o.name).set_function(lambda: len(self.store.volumes()))
            metrics.FREE_BYTES.labels(o.name).set_function(lambda: self.store.disk()[0])
            self.heartbeater = Heartbeater(o, self.store, self.grpc_address, self.http_address,
                                           transport)
            self.heartbeater.start()
            rpc.set_serving(self._health)
        except BaseException:
            self.stop()
            raise
        log.info("volume server %s serving gRPC on %s, HTTP on %s, data in %s",
                 o.name, self.grpc_address, self.http_address, o.dir)
        return self

    def _volumes_changed(self) -> None:
        if self.heartbeater:
            self.heartbeater.trigger()

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Graceful: no more heartbeats, finish in-flight RPCs (up to `grace` s), close volumes."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            if self.heartbeater:
                self.heartbeater.stop()
            if self._health:
                self._health.enter_graceful_shutdown()
            if self._server:
                self._server.stop(grace).wait()
            if self._servicer:
                self._servicer.close()
            if self._http:
                self._http.stop()
            metrics.forget(self.opts.name)
            if self.store:
                self.store.close()
            self._stopped.set()
            log.info("volume server %s stopped", self.opts.name)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop() has finished; False if `timeout` passed first."""
        return self._stopped.wait(timeout)

    def status(self) -> dict:
        free, total = self.store.disk() if self.store else (0, 0)
        vols = [vars(v.stats()) for v in self.store.volumes()] if self.store else []
        return {
            "kind": "volume", "name": self.opts.name, "server_id": self.server_id,
            "grpc_address": self.grpc_address, "http_address": self.http_address,
            "master": self.opts.master,
            "registered": bool(self.heartbeater and self.heartbeater.registered.is_set()),
            "free_bytes": free, "total_bytes": total, "max_volumes": self.opts.max_volumes,
            "durability": self.opts.durability, "volumes": vols,
        }


def main(opts: VolumeOptions) -> int:
    """Run a volume server until SIGINT/SIGTERM; 0 on a clean stop, 1 if it cannot start."""
    malloc.keep_big_buffers()   # before the first needle buffer (see cluster/common/malloc.py)
    return run_node("volume server", opts, VolumeNode,
                    start_errors=(OSError, FsError))
