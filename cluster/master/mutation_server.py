"""The master's ZMQ mutation channel: one ROUTER socket, one thread, group commit.

Each mount holds one DEALER to this ROUTER and sends every namespace change on it as a
`Mutation` (protos/master.proto), many in flight at once; answers go back by id, in any order.
Why not gRPC: a Python gRPC unary call costs ~550 us of CPU here, a ZMQ message ~30-100 us
(docs/performance.md).

One thread owns the socket and does everything, because each hand-off between threads costs a
wake-up and a turn of the GIL, more than the work itself: it takes every message waiting (up
to `max_batch`), applies each mutation in its own savepoint of one transaction (a failing one
rolls back alone), commits once, then answers them all. What arrives meanwhile waits in the
socket for the next round, so eight mounts creating at once cost about one commit, not eight.
A batch holding a `durable` mutation (fsync, O_SYNC) reaches stable storage before any of it
is answered.

Bad input never reaches the namespace and never stops the channel for other mounts: a frame
that does not parse is logged and dropped (there is no id to answer), a mutation naming no
operation is answered EINVAL, a message over `max_message` bytes makes ZMQ drop that peer's
connection, and a peer that sends without reading loses answers past the send high-water mark
(the ROUTER drops them) instead of blocking the others.
"""
from __future__ import annotations

import errno
import logging
import threading

import zmq
from google.protobuf.message import DecodeError

from cluster.common.errors import FsError
from cluster.master import mutations
from cluster.master.namespace import Namespace
from cluster.master.store import MetadataStore
from protos import master_pb2

log = logging.getLogger(__name__)


class MutationServer:
    def __init__(self, namespace: Namespace, store: MetadataStore, ip: str, port: int,
                 max_batch: int = 256, max_message: int = 16 << 20, hwm: int = 10000):
        self.namespace = namespace
        self.store = store
        self.max_batch = max_batch
        self._ctx = zmq.Context()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.MAXMSGSIZE, max_message)
        self._router.setsockopt(zmq.SNDHWM, hwm)
        self._router.setsockopt(zmq.RCVHWM, hwm)
        if port:
            self._router.bind(f"tcp://{ip}:{port}")
            self.port = port
        else:
            self.port = self._router.bind_to_random_port(f"tcp://{ip}")
        self.address = f"{ip}:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mutations", daemon=True)

    def start(self) -> "MutationServer":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._ctx.term()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._router.poll(200):
                    continue
                batch = self._receive()
                if batch:
                    for peer, reply in self.apply_batch(batch):
                        self._answer(peer, reply)
        except zmq.ZMQError as e:
            if not self._stop.is_set():
                log.exception("mutation channel stopped: %s", e)
        finally:
            self._router.close(0)

    def _receive(self) -> list[tuple[bytes, master_pb2.Mutation]]:
        """Every well-formed message waiting (up to max_batch)."""
        batch = []
        while len(batch) < self.max_batch:
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) != 2:
                log.warning("mutation channel: dropped a message of %d frames (want 2)",
                            len(frames))
                continue
            peer, payload = frames
            mutation = master_pb2.Mutation()
            try:
                mutation.ParseFromString(payload)
            except DecodeError:
                log.warning("mutation channel: dropped %d bytes that are no Mutation",
                            len(payload))
                continue
            batch.append((peer, mutation))
        return batch

    def _answer(self, peer: bytes, reply: master_pb2.MutationReply) -> None:
        try:
            self._router.send_multipart([peer, reply.SerializeToString()], zmq.NOBLOCK)
        except zmq.Again:
            log.warning("mutation channel: a peer does not read its answers; dropped one")

    def apply_batch(self, batch: list[tuple[bytes, master_pb2.Mutation]]) -> list:
        """Apply (peer, mutation) pairs as one transaction, each in its own savepoint;
        [(peer, MutationReply)] in order. If the commit fails, every one is answered EIO."""
        replies = []
        durable = any(m.durable for _, m in batch)
        try:
            with self.store.batch(durable=durable):
                for _, m in batch:
                    replies.append(self._apply_one(m))
        except Exception as e:  # noqa: BLE001 - the commit failed: nothing of it happened
            log.exception("mutation batch of %d failed to commit", len(batch))
            replies = [master_pb2.MutationReply(id=m.id, errno=errno.EIO,
                                                message=f"commit failed: {e}") for _, m in batch]
        return [(peer, reply) for (peer, _), reply in zip(batch, replies)]

    def _apply_one(self, m: master_pb2.Mutation) -> master_pb2.MutationReply:
        reply = master_pb2.MutationReply(id=m.id)
        op = m.WhichOneof("op")
        if op is None or op not in mutations.TABLE:
            reply.errno, reply.message = errno.EINVAL, "mutation names no known operation"
            return reply
        try:
            answer = mutations.apply(self.namespace, op, getattr(m, op))
        except FsError as e:
            reply.errno, reply.message = e.errno, e.message
            return reply
        except Exception as e:  # noqa: BLE001 - a bug must not take the channel down
            log.exception("mutation %s failed", op)
            reply.errno, reply.message = errno.EIO, f"{op} failed: {e}"
            return reply
        getattr(reply, mutations.RESULT_FIELD[type(answer)]).CopyFrom(answer)
        return reply
