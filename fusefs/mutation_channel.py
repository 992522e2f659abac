"""MutationChannel: a mount's one pipelined ZMQ channel to the master for namespace changes.

Every FUSE thread may have a mutation in flight on the one DEALER socket; answers come back by
id in any order (cluster/master/mutation_server.py is the other end).

No I/O thread: a ZMQ socket may be used by one thread at a time, and each hand-off between
threads costs a wake-up and a turn of the GIL, more than the round trip itself. So the calling
threads take turns (leader/followers): a caller queues its request, and if no other caller is
driving the socket it becomes the leader: it sends what is queued, receives answers and hands
each to its caller, until its own has come. Callers that arrive meanwhile queue their request,
wake the leader through a pipe (it sends for them) and wait for their answer or for the
leader to step down, when one of them takes over. A lone caller so does its own send and
receive, as a plain socket call would.

Failures: the socket only sends on a live connection (ZMQ_IMMEDIATE), so while the master is
down requests wait in the queue; when a connection drops, the requests sent on it and not yet
answered go back to the queue and are sent again once the master is back (as the gRPC client
retries UNAVAILABLE; a request the master had applied may so be applied twice, and its second
answer, the one a retry would give, is ignored because the first settled the call). A call
that gets no answer within `retry_for` seconds fails with EIO (MasterUnreachable).

Several masters (fusefs/master_client.py): a channel talks to one master. When it has had no
connection for `stall_after` seconds while calls wait, it calls `on_stall` (the client probes
that master and may move to another). A client that moves closes the channel with
`failover=True`: a call that was sent and not answered fails with EIO (the old master may
have applied it, so it is not sent again), and one never sent fails with NotSent, which the
client sends to the new master.
"""
from __future__ import annotations

import collections
import errno
import itertools
import logging
import threading
import time
from dataclasses import dataclass

import zmq
from google.protobuf.message import DecodeError, Message
from zmq.utils.monitor import parse_monitor_message

from cluster.common.errors import FsError
from cluster.common.security import Transport
from cluster.common.wakepipe import WakePipe
from protos import master_pb2

log = logging.getLogger(__name__)

POLL_S = 0.05  # the leader also looks at its own deadline this often


class NotSent(FsError):
    """The channel was closed for a failover before this call went out: safe to send again
    elsewhere."""

    def __init__(self, address: str):
        super().__init__(errno.EIO, f"mutation channel to {address} closed before sending")


@dataclass
class _Call:
    payload: bytes
    deadline: float
    done: bool = False
    sent: bool = False      # went out at least once (it may have been applied)
    reply: master_pb2.MutationReply | None = None
    error: FsError | None = None


class MutationChannel:
    def __init__(self, address: str, retry_for: float = 30.0,
                 unreachable=lambda address, detail: FsError(errno.EIO, detail),
                 session=lambda: 0, transport: Transport | None = None,
                 on_stall=None, stall_after: float = 1.0):
        self.address = address
        self.on_stall = on_stall    # () -> None: no connection for stall_after s, calls wait
        self.stall_after = stall_after
        self._down_since: float | None = time.monotonic()   # None while connected
        self._stall_told = 0.0
        self._failover = False      # closed because the client moved to another master
        self.session = session      # () -> the mount's session id, sent with each mutation
        self.retry_for = retry_for
        self._unreachable = unreachable
        self._ids = itertools.count(1)
        self._cv = threading.Condition()
        self._calls: dict[int, _Call] = {}          # id -> call not yet answered
        self._outbox: collections.deque[int] = collections.deque()  # ids to send
        self._sent: set[int] = set()                # ids sent on the current connection
        self._leader = False                        # a caller is driving the socket
        self._closed = False
        self._wake_pipe = WakePipe()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        for opt, value in ((zmq.LINGER, 0), (zmq.IMMEDIATE, 1), (zmq.RECONNECT_IVL, 100),
                           (zmq.RECONNECT_IVL_MAX, 1000), (zmq.HEARTBEAT_IVL, 1000),
                           (zmq.HEARTBEAT_TIMEOUT, 3000), (zmq.HEARTBEAT_TTL, 6000),
                           (zmq.SNDHWM, 100000), (zmq.RCVHWM, 100000)):
            self._sock.setsockopt(opt, value)
        (transport or Transport("client")).zmq_client(self._sock, "master")
        self._monitor = self._sock.get_monitor_socket(
            zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._sock.connect(f"tcp://{address}")
        self._poller = zmq.Poller()
        for what in (self._sock, self._monitor, self._wake_pipe.fd):
            self._poller.register(what, zmq.POLLIN)

    def call(self, op: str, request: Message, durable: bool = False,
             caller: master_pb2.Caller | None = None,
             deadline: float | None = None) -> master_pb2.MutationReply:
        """Send one mutation (op is the Mutation.op field), made for `caller` (None: the
        superuser), and wait for its answer; an errno answer raises FsError with it."""
        mid = next(self._ids)
        m = master_pb2.Mutation(id=mid, durable=durable, session=self.session())
        if caller is not None:
            m.caller.CopyFrom(caller)
        getattr(m, op).CopyFrom(request)
        call = _Call(m.SerializeToString(),
                     deadline if deadline is not None else time.monotonic() + self.retry_for)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("mutation %s %s", op, str(request).replace("\n", " ")[:120])
        with self._cv:
            if self._closed:
                if self._failover:
                    raise NotSent(self.address)
                raise FsError(errno.EIO, f"mutation channel to {self.address} is closed")
            self._calls[mid] = call
            self._outbox.append(mid)
            leading = self._leader
        if leading:
            self._wake()
        self._wait(mid, call)
        if call.error is not None:
            raise call.error
        reply = call.reply
        assert reply is not None   # a settled call has its reply or its error
        if reply.errno:
            raise FsError(reply.errno, reply.message)
        return reply

    def close(self, failover: bool = False) -> None:
        """Fail what waits and close. `failover`: the client moved to another master; calls
        never sent fail with NotSent (to be sent there), sent ones with EIO."""
        with self._cv:
            self._closed = True
            self._failover = failover
            while self._leader:
                self._cv.wait(1.0)
            if failover:
                for c in self._calls.values():
                    c.error = FsError(errno.EIO, f"master at {self.address} lost before it "
                                                 "answered; the change may or may not have "
                                                 "been made") if c.sent else \
                        NotSent(self.address)
                    c.done = True
            self._fail_all(FsError(errno.EIO, f"mutation channel to {self.address} closed"))
        self._sock.disable_monitor()
        self._monitor.close(0)
        self._sock.close(0)
        self._ctx.term()
        self._wake_pipe.close()

    # ---------------------------------------------------------------- taking turns

    def _wait(self, mid: int, call: _Call) -> None:
        """Until `call` is settled: follow while another caller leads, lead otherwise."""
        while True:
            with self._cv:
                while not call.done and self._leader:
                    left = call.deadline - time.monotonic()
                    if left <= 0:
                        self._expire(mid, call)
                        return
                    self._cv.wait(left)
                if call.done:
                    return
                if self._closed:
                    self._calls.pop(mid, None)
                    call.error = (NotSent(self.address) if self._failover and not call.sent
                                  else FsError(errno.EIO,
                                               f"mutation channel to {self.address} closed"))
                    return
                if time.monotonic() >= call.deadline:
                    self._expire(mid, call)
                    return
                self._leader = True
            try:
                self._lead(call)
            finally:
                with self._cv:
                    self._leader = False
                    self._cv.notify_all()   # a follower takes over, if any waits

    def _lead(self, call: _Call) -> None:
        """Drive the socket until `call` is settled or its deadline passes."""
        while not call.done and not self._closed and time.monotonic() < call.deadline:
            self._send()
            events = dict(self._poller.poll(int(POLL_S * 1000)))
            self._wake_pipe.drain(events)
            if self._monitor in events:
                self._on_monitor()
            if self._sock in events:
                self._receive()
            self._check_stall()

    def _expire(self, mid: int, call: _Call) -> None:
        """Under _cv: the call's deadline passed with no answer."""
        if self._calls.pop(mid, None) is not None:
            self._sent.discard(mid)
            call.error = self._unreachable(self.address,
                                           f"no answer within {self.retry_for:g} s")
            call.done = True

    def _wake(self) -> None:
        self._wake_pipe.wake()

    # ---------------------------------------------------------------- the leader's work

    def _send(self) -> None:
        while True:
            with self._cv:
                if not self._outbox:
                    return
                mid = self._outbox[0]
                call = self._calls.get(mid)
                if call is None:  # answered or expired meanwhile
                    self._outbox.popleft()
                    continue
            try:
                self._sock.send(call.payload, zmq.NOBLOCK)
            except zmq.Again:
                return  # no live connection (IMMEDIATE) or the pipe is full: poll again
            with self._cv:
                self._outbox.popleft()
                self._sent.add(mid)
                call.sent = True

    def _receive(self) -> None:
        settled = False
        while True:
            try:
                payload = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._down_since = None
            reply = master_pb2.MutationReply()
            try:
                reply.ParseFromString(payload)
            except DecodeError:
                log.warning("mutation channel to %s: an answer that does not parse",
                            self.address)
                continue
            with self._cv:
                call = self._calls.pop(reply.id, None)
                self._sent.discard(reply.id)
                if call is not None:
                    call.reply, call.done = reply, True
                    settled = True
        if settled:
            with self._cv:
                self._cv.notify_all()

    def _on_monitor(self) -> None:
        disconnected = False
        try:
            while True:
                kind = parse_monitor_message(self._monitor.recv_multipart(zmq.NOBLOCK))[
                    "event"]
                if kind == zmq.EVENT_DISCONNECTED:
                    disconnected = True
                    self._down_since = self._down_since or time.monotonic()
                elif kind:
                    self._down_since = None
        except zmq.Again:
            pass
        if disconnected:
            self._on_disconnect()

    def _check_stall(self) -> None:
        """No connection for stall_after s while calls wait: tell on_stall (every
        stall_after s at most)."""
        if self.on_stall is None or self._down_since is None:
            return
        now = time.monotonic()
        if now - self._down_since < self.stall_after or now - self._stall_told < \
                self.stall_after:
            return
        self._stall_told = now
        try:
            self.on_stall()
        except Exception:
            log.exception("mutation channel to %s: on_stall failed", self.address)

    def _on_disconnect(self) -> None:
        with self._cv:
            resend = sorted(self._sent)
            self._sent.clear()
            self._outbox.extendleft(reversed(resend))
        if resend:
            log.warning("mutation channel to %s: connection lost with %d requests "
                        "unanswered; sending them again when it is back", self.address,
                        len(resend))

    def _fail_all(self, error: FsError) -> None:
        """Under _cv."""
        for c in self._calls.values():
            c.error, c.done = error, True
        self._calls.clear()
        self._outbox.clear()
        self._sent.clear()
        self._cv.notify_all()
