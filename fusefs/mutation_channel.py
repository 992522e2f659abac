"""MutationChannel: a mount's one pipelined ZMQ channel to the master for namespace changes.

Every FUSE thread may have a mutation in flight on the one DEALER socket; answers come back by
id in any order (cluster/master/mutation_server.py is the other end). A ZMQ socket must stay in
one thread, so a private I/O thread owns it: callers put the encoded request in the outbox,
wake the thread through a pipe, and wait on their own event.

Failures: the socket only sends on a live connection (ZMQ_IMMEDIATE), so while the master is
down requests wait in the outbox; when a connection drops, the requests sent on it and not yet
answered go back to the outbox and are sent again once the master is back (as the gRPC
client retries UNAVAILABLE; a request the master had applied may so be applied twice, and its
second answer, the one a retry would give, is ignored because the first settled the call). A
call that gets no answer within `retry_for` seconds fails with EIO (MasterUnreachable).
"""
from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import zmq
from google.protobuf.message import DecodeError, Message

from cluster.common.errors import FsError
from protos import master_pb2

log = logging.getLogger(__name__)


@dataclass
class _Call:
    payload: bytes
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)
    reply: master_pb2.MutationReply | None = None
    error: FsError | None = None


class MutationChannel:
    def __init__(self, address: str, retry_for: float = 30.0,
                 unreachable=lambda address, detail: FsError(errno.EIO, detail)):
        self.address = address
        self.retry_for = retry_for
        self._unreachable = unreachable
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._calls: dict[int, _Call] = {}          # id -> call not yet answered
        self._outbox: collections.deque[int] = collections.deque()  # ids to send
        self._sent: set[int] = set()                # ids sent on the current connection
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closed = threading.Event()
        self._ctx = zmq.Context()
        self._thread = threading.Thread(target=self._run, name="mutation-channel", daemon=True)
        self._thread.start()

    def call(self, op: str, request: Message, durable: bool = False) -> master_pb2.MutationReply:
        """Send one mutation (op is the Mutation.op field) and wait for its answer; an errno
        answer raises FsError with it."""
        mid = next(self._ids)
        m = master_pb2.Mutation(id=mid, durable=durable)
        getattr(m, op).CopyFrom(request)
        call = _Call(m.SerializeToString(), time.monotonic() + self.retry_for)
        with self._lock:
            if self._closed.is_set():
                raise FsError(errno.EIO, f"mutation channel to {self.address} is closed")
            self._calls[mid] = call
            self._outbox.append(mid)
        self._wake()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("mutation %s %s", op, str(request).replace("\n", " ")[:120])
        call.done.wait(self.retry_for + 5.0)  # the I/O thread fails it at its deadline
        if call.error is not None:
            raise call.error
        reply = call.reply
        if reply is None:
            raise self._unreachable(self.address, f"no answer within {self.retry_for:g} s")
        if reply.errno:
            raise FsError(reply.errno, reply.message)
        return reply

    def close(self) -> None:
        self._closed.set()
        self._wake()
        self._thread.join(5.0)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._ctx.term()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # full (the thread is awake already) or closed

    # ---------------------------------------------------------------- the I/O thread

    def _run(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        for opt, value in ((zmq.LINGER, 0), (zmq.IMMEDIATE, 1), (zmq.RECONNECT_IVL, 100),
                           (zmq.RECONNECT_IVL_MAX, 1000), (zmq.HEARTBEAT_IVL, 1000),
                           (zmq.HEARTBEAT_TIMEOUT, 3000), (zmq.HEARTBEAT_TTL, 6000),
                           (zmq.SNDHWM, 100000), (zmq.RCVHWM, 100000)):
            sock.setsockopt(opt, value)
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.connect(f"tcp://{self.address}")
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._closed.is_set():
                with self._lock:
                    want_out = bool(self._outbox)
                poller.modify(sock, zmq.POLLIN | (zmq.POLLOUT if want_out else 0))
                events = dict(poller.poll(250))
                if self._wake_r in events:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                if monitor in events:
                    self._on_disconnect(monitor)
                if events.get(sock, 0) & zmq.POLLIN:
                    self._receive(sock)
                if events.get(sock, 0) & zmq.POLLOUT:
                    self._send(sock)
                self._expire()
        except Exception:  # noqa: BLE001 - fail the callers, never leave them hanging
            log.exception("mutation channel to %s: I/O thread failed", self.address)
        finally:
            self._fail_all(FsError(errno.EIO, f"mutation channel to {self.address} closed"))
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)

    def _send(self, sock: zmq.Socket) -> None:
        while True:
            with self._lock:
                if not self._outbox:
                    return
                mid = self._outbox[0]
                call = self._calls.get(mid)
                if call is None:  # answered or expired meanwhile
                    self._outbox.popleft()
                    continue
            try:
                sock.send(call.payload, zmq.NOBLOCK)
            except zmq.Again:
                return  # no live connection (IMMEDIATE) or the pipe is full: poll again
            with self._lock:
                self._outbox.popleft()
                self._sent.add(mid)

    def _receive(self, sock: zmq.Socket) -> None:
        while True:
            try:
                payload = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = master_pb2.MutationReply()
            try:
                reply.ParseFromString(payload)
            except DecodeError:
                log.warning("mutation channel to %s: an answer that does not parse",
                            self.address)
                continue
            with self._lock:
                call = self._calls.pop(reply.id, None)
                self._sent.discard(reply.id)
            if call is not None:
                call.reply = reply
                call.done.set()

    def _on_disconnect(self, monitor: zmq.Socket) -> None:
        try:
            while True:
                monitor.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            pass
        with self._lock:
            resend = sorted(self._sent)
            self._sent.clear()
            self._outbox.extendleft(reversed(resend))
        if resend:
            log.warning("mutation channel to %s: connection lost with %d requests "
                        "unanswered; sending them again when it is back", self.address,
                        len(resend))

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [mid for mid, c in self._calls.items() if c.deadline <= now]
            calls = [self._calls.pop(mid) for mid in late]
            self._sent.difference_update(late)
        for c in calls:
            c.error = self._unreachable(self.address,
                                        f"no answer within {self.retry_for:g} s")
            c.done.set()

    def _fail_all(self, error: FsError) -> None:
        with self._lock:
            calls = list(self._calls.values())
            self._calls.clear()
            self._outbox.clear()
            self._sent.clear()
        for c in calls:
            c.error = error
            c.done.set()
