"""The gateway's write logic, apart from its ZMQ transport: put one chunk on every replica of
a freshly assigned fid, and commit chunk lists to the master.

A chunk is acknowledged only when every replica stored it (no silent under-replication). If
any replica fails, the fid's volume is avoided and the whole chunk is written again under a
fresh fid, up to `write_retries` more times; the needles the failed attempt left on the
replicas that did succeed are orphans no chunk list names, and fsck reclaims them later.

The needle is serialised once and the same bytes go to every replica: the replicas of one
volume share the volume id, key and cookie, so their WriteRequests are identical. The data
field is appended to the encoded header by hand, which costs one copy of the payload instead of
two (message field, then serialisation).
"""
from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from concurrent import futures

import crc32c
import grpc

from cluster.common import rpc
from cluster.common.errors import FsError
from cluster.common.fid import Fid
from cluster.gateway.assigner import Assigner
from cluster.gateway.mastercall import MASTER_PATIENCE_S, call_master
from protos import master_pb2, volume_pb2, volume_pb2_grpc

log = logging.getLogger(__name__)

# A replica write may take VOLUME_RPC_BASE_S plus a second per MB before the gateway gives up
# on that replica and retries the chunk elsewhere: a stopped (partitioned) server must not hold
# a writer for TCP's own timeout, yet a busy disk gets ample time (a 4 MiB chunk: 9 s).
VOLUME_RPC_BASE_S = 5.0
VOLUME_RPC_PER_BYTE_S = 1e-6
VOLUME_RPC_TIMEOUT_S = 30.0  # the cap
DEADLINE_SLACK_S = 1.0       # past a write's deadline, stop waiting for gRPC to say so
_WRITE_NEEDLE = "/kelp.volume.Volume/WriteNeedle"
_DATA_TAG = b"\x22"  # WriteRequest.data: field 4, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def encode_write_request(fid: Fid, data, crc: int) -> bytes:
    """WriteRequest for `fid` carrying `data` (any buffer), serialised with one payload copy."""
    header = volume_pb2.WriteRequest(volume_id=fid.volume_id, key=fid.key, cookie=fid.cookie,
                                     crc32c=crc).SerializeToString()
    return b"".join((header, _DATA_TAG, _varint(len(data)), data))


class VolumePool:
    """WriteNeedle over cached channels (cluster.common.rpc.ChannelCache), shared by all
    writer threads. A channel that failed to connect is dropped, so a restarted volume server
    is reached on the next attempt instead of after gRPC's reconnect backoff."""

    def __init__(self, channel_factory: Callable[[str], grpc.Channel] = rpc.channel):
        self._channels = rpc.ChannelCache(channel_factory)
        self._lock = threading.Lock()
        self._write: dict[str, Callable] = {}

    def write_needle(self, address: str, serialized: bytes, timeout: float):
        method = self._write.get(address)
        if method is None:
            # No request serializer: the bytes are already a WriteRequest.
            method = self._channels.channel(address).unary_unary(
                _WRITE_NEEDLE, request_serializer=None,
                response_deserializer=volume_pb2.WriteResponse.FromString)
            with self._lock:
                self._write[address] = method
        future = method.future(serialized, timeout=timeout)
        try:
            return future.result(timeout=timeout + DEADLINE_SLACK_S)
        except grpc.FutureTimeoutError:
            # A peer that went silent mid-send (its host cut off): gRPC reports the deadline
            # only when TCP gives up on the connection (keepalive's 20 s), so the gateway
            # gives up on time itself. The channel is left alone: closing a stuck one blocks.
            future.cancel()
            raise FsError(errno.ETIMEDOUT, f"WriteNeedle to {address}: no answer within "
                                           f"{timeout:.1f} s") from None
        except grpc.RpcError as e:
            if _code(e) == grpc.StatusCode.UNAVAILABLE:
                with self._lock:
                    self._write.pop(address, None)
                self._channels.reset(address)
            raise

    def sync(self, address: str, volume_ids: list[int], timeout: float) -> None:
        stub = self._channels.stub(address, volume_pb2_grpc.VolumeStub)
        stub.Sync(volume_pb2.SyncRequest(volume_ids=volume_ids), timeout=timeout)

    def close(self) -> None:
        with self._lock:
            self._write.clear()
        self._channels.close()


class ChunkWriter:
    """write_chunk(): a chunk onto all replicas; commit(): a chunk list into the master."""

    def __init__(self, assigner: Assigner, master_stub, volumes: VolumePool | None = None,
                 write_retries: int = 3, replica_threads: int = 16,
                 volume_timeout: float = VOLUME_RPC_TIMEOUT_S,
                 master_patience: float = MASTER_PATIENCE_S):
        self.assigner = assigner
        self._master = master_stub
        self.volumes = volumes or VolumePool()
        self.write_retries = max(0, int(write_retries))
        self.volume_timeout = volume_timeout
        self.master_patience = master_patience
        self._pool = futures.ThreadPoolExecutor(max_workers=replica_threads,
                                                thread_name_prefix="replica")
        self._stats_lock = threading.Lock()
        self.replica_failures = 0
        self.retries = 0

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.volumes.close()

    def write_chunk(self, data, crc: int, replication: int = 0) -> master_pb2.Chunk:
        """Store `data` (whose CRC32C the client says is `crc`) on every replica of one fid.

        Returns the Chunk with fid, needle_size, crc32c, needle_offset 0 and length; the caller
        fills file_offset. Raises FsError: EINVAL (CRC mismatch, nothing written), ENOSPC (the
        cluster is out of space) or EIO (replicas kept failing).
        """
        size = len(data)
        actual = crc32c.crc32c(data)
        if actual != crc:
            raise FsError(errno.EINVAL, f"payload CRC32C {actual:08x} does not match the "
                                        f"declared {crc:08x}: corrupted in transit")
        failures: list[str] = []
        out_of_space = False
        for attempt in range(self.write_retries + 1):
            if attempt:
                with self._stats_lock:
                    self.retries += 1
            try:
                assignment = self.assigner.next(replication)
            except FsError as e:
                if not failures:
                    raise
                # The master ran out of volumes because this chunk's failures made it avoid
                # them: the cause is those failures, not a full disk (unless it was one).
                err = errno.ENOSPC if out_of_space else errno.EIO
                raise FsError(err, f"chunk of {size} bytes not stored: {'; '.join(failures)}; "
                                   f"then no other volume: {e.message}") from None
            fid = Fid.parse(assignment.fid)
            payload = encode_write_request(fid, data, crc)
            failed = self._write_replicas(fid, assignment.replicas, payload)
            if not failed:
                return master_pb2.Chunk(fid=assignment.fid, length=size, needle_offset=0,
                                        needle_size=size, crc32c=crc)
            with self._stats_lock:
                self.replica_failures += len(failed)
            self.assigner.avoid(fid.volume_id)
            for location, exc in failed:
                out_of_space = out_of_space or _code(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED
                failures.append(f"replica {location.name or location.server_id} "
                                f"({location.grpc_address}) of {assignment.fid}: {_describe(exc)}")
            log.warning("chunk write attempt %d/%d failed: %s", attempt + 1,
                        self.write_retries + 1, failures[-1])
        err = errno.ENOSPC if out_of_space else errno.EIO
        raise FsError(err, f"chunk of {size} bytes not stored after {self.write_retries + 1} "
                           f"attempts: {'; '.join(failures)}")

    def _write_replicas(self, fid: Fid, replicas, payload: bytes) -> list:
        """Write to all replicas in parallel; the (location, exception) pairs that failed."""
        if len(replicas) == 1:
            # One replica: no thread hop.
            try:
                self._write_one(replicas[0], payload)
                return []
            except Exception as e:
                return [(replicas[0], e)]
        pending = [(loc, self._pool.submit(self._write_one, loc, payload)) for loc in replicas]
        failed = []
        for loc, fut in pending:
            try:
                fut.result()
            except Exception as e:
                failed.append((loc, e))
        return failed

    def _write_one(self, location: master_pb2.Location, payload: bytes) -> None:
        timeout = min(self.volume_timeout,
                      VOLUME_RPC_BASE_S + len(payload) * VOLUME_RPC_PER_BYTE_S)
        self.volumes.write_needle(location.grpc_address, payload, timeout)

    def sync_file(self, ino: int) -> tuple[int, int]:
        """A client's fsync of `ino`: every live replica of every volume holding its chunks
        syncs (in parallel, one Sync per server). Returns (volumes, servers). EIO when a
        volume has no live replica or a replica fails to sync."""
        what = f"sync ino {ino}"
        chunks = call_master(self._master.GetChunks, master_pb2.InoRequest(ino=ino), what=what,
                             patience=self.master_patience).chunks
        vids = sorted({Fid.parse(c.fid).volume_id for c in chunks})
        if not vids:
            return 0, 0
        found = call_master(self._master.LookupVolume, master_pb2.LookupRequest(volume_ids=vids),
                            what=what, patience=self.master_patience).locations
        lost = set(vids) - {loc.volume_id for loc in found}
        if lost:
            raise FsError(errno.EIO, f"cannot sync ino {ino}: no live replica of volume(s) "
                                     f"{', '.join(map(str, sorted(lost)))}")
        by_server: dict[str, list[int]] = {}
        for loc in found:
            for replica in loc.replicas:
                by_server.setdefault(replica.grpc_address, []).append(loc.volume_id)
        pending = {address: self._pool.submit(self.volumes.sync, address, ids,
                                              self.volume_timeout)
                   for address, ids in by_server.items()}
        failed = []
        for address, fut in pending.items():
            try:
                fut.result()
            except Exception as e:
                failed.append(f"{address}: {_describe(e)}")
        if failed:
            raise FsError(errno.EIO, f"sync of ino {ino} failed on {'; '.join(failed)}")
        return len(vids), len(by_server)

    def commit(self, ino: int, chunks, size: int, mtime_ns: int = 0,
               exact_size: bool = False, session: int = 0,
               client: str = "") -> master_pb2.Attr:
        """Master.CommitChunks: the file's chunk list gains `chunks` (in order) and `size`
        (grow-only unless exact_size), for the mount whose `session` wrote it; `client` is
        that mount's ZMQ User-Id, which the master checks the session against."""
        request = master_pb2.CommitRequest(ino=ino, chunks=chunks, size=size, mtime_ns=mtime_ns,
                                           exact_size=exact_size, session=session, client=client)
        return call_master(self._master.CommitChunks, request, what=f"commit ino {ino}",
                           patience=self.master_patience)


def _code(exc: Exception):
    return exc.code() if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") else None


def _describe(exc: Exception) -> str:
    if isinstance(exc, grpc.RpcError):
        code = _code(exc)
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return f"{code.name if code else 'RPC error'}: {details}"
    if isinstance(exc, FsError):
        return exc.status_message()
    return f"{type(exc).__name__}: {exc}"

