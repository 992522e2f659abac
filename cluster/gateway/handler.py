"""What the gateway does with one well-formed request: the logic behind the ZMQ loop.

`GatewayHandler.handle(request, payload)` returns the Reply for a Write, Commit, Sync or Ping;
failures come back as Error replies carrying the errno name (the client turns them into
FsError), so the transport never sees an exception. Runs on the worker threads.
"""
from __future__ import annotations

import errno
import logging
import threading
import time

from cluster.common.errors import FsError
from cluster.gateway import metrics
from cluster.gateway.protocol import error_reply
from cluster.gateway.writer import ChunkWriter
from protos import gateway_pb2

log = logging.getLogger(__name__)


class GatewayHandler:
    def __init__(self, writer: ChunkWriter, name: str):
        self.writer = writer
        self.name = name
        self._lock = threading.Lock()
        self.stats = {"chunks_written": 0, "bytes_written": 0, "commits": 0, "errors": 0,
                      "malformed": 0}

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def ping(self, request: gateway_pb2.Request) -> gateway_pb2.Reply:
        return gateway_pb2.Reply(request_id=request.request_id,
                                 pong=gateway_pb2.Pong(name=self.name))

    def handle(self, request: gateway_pb2.Request, payload,
               client: str = "") -> gateway_pb2.Reply:
        """`client`: the sender's ZMQ User-Id ("role:identity"), passed on with its commits
        so the master holds them to that client's session and export."""
        rid = request.request_id
        body = request.WhichOneof("body")
        try:
            if body == "write":
                return self._write(rid, request.write, payload, client)
            if body == "commit":
                c = request.commit
                attr = self._commit(c.ino, c.chunks, c.size, c.mtime_ns, c.exact_size,
                                    c.session, client)
                return gateway_pb2.Reply(request_id=rid,
                                         committed=gateway_pb2.Committed(attr=attr))
            if body == "ping":
                return self.ping(request)
            if body == "sync":
                volumes, servers = self.writer.sync_file(request.sync.ino)
                return gateway_pb2.Reply(request_id=rid, synced=gateway_pb2.Synced(
                    volumes=volumes, servers=servers))
            raise FsError(errno.EINVAL, f"unknown request kind {body!r}")
        except FsError as e:
            self.count("errors")
            metrics.ERRORS.labels(self.name, body or "none").inc()
            log.warning("%s request %d failed: %s", body, rid, e.status_message())
            return error_reply(rid, e.name, e.message)
        except Exception as e:
            self.count("errors")
            metrics.ERRORS.labels(self.name, body or "none").inc()
            log.exception("%s request %d failed unexpectedly", body, rid)
            return error_reply(rid, "EIO", f"gateway {self.name}: {type(e).__name__}: {e}")

    def _write(self, rid: int, write: gateway_pb2.Write, payload,
               client: str = "") -> gateway_pb2.Reply:
        chunk = None
        if write.length:
            started = time.monotonic()
            chunk = self.writer.write_chunk(payload, write.crc32c, write.replication)
            chunk.file_offset = write.file_offset
            metrics.WRITE_SECONDS.labels(self.name).observe(time.monotonic() - started)
            metrics.CHUNKS_WRITTEN.labels(self.name).inc()
            metrics.BYTES_WRITTEN.labels(self.name).inc(write.length)
            self.count("chunks_written")
            self.count("bytes_written", write.length)
        if not write.HasField("commit"):
            return gateway_pb2.Reply(request_id=rid, written=gateway_pb2.Written(chunk=chunk))
        # Small-file path: the new chunk is the latest, so it goes after the listed ones.
        c = write.commit
        chunks = list(c.chunks) + ([chunk] if chunk is not None else [])
        attr = self._commit(c.ino or write.ino, chunks, c.size, c.mtime_ns, c.exact_size,
                            c.session, client)
        mine = [chunk] if chunk is not None else []
        return gateway_pb2.Reply(request_id=rid,
                                 committed=gateway_pb2.Committed(attr=attr, chunks=mine))

    def _commit(self, ino: int, chunks, size: int, mtime_ns: int, exact_size: bool = False,
                session: int = 0, client: str = ""):
        started = time.monotonic()
        attr = self.writer.commit(ino, chunks, size, mtime_ns, exact_size, session, client)
        metrics.COMMIT_SECONDS.labels(self.name).observe(time.monotonic() - started)
        self.count("commits")
        return attr
