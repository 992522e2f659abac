"""Client side of the gateway's ZMQ protocol (protos/gateway.proto), shared by the mount and
the `kelp` CLI.

One background I/O thread owns a DEALER socket connected to the gateway's ROUTER (zmq sockets
are not thread-safe). Callers on any thread submit a request through a queue and wake the I/O
thread through a pipe that its zmq.Poller watches; each request gets a request_id and a
concurrent.futures.Future that the I/O thread resolves when the Reply with that id arrives,
fails with EIO when the client timeout passes, or fails at once when the connection that
carried it drops (the ROUTER cannot route a late reply to a new connection anyway).

Socket options, and why:
* IMMEDIATE: a message is only queued on a live connection, so nothing piles up for a gateway
  that is not there; such requests wait in the I/O thread's outbox until their deadline.
* HEARTBEAT_IVL/TIMEOUT: a gateway that vanished without closing TCP is noticed in seconds.
* LINGER 0: close() never blocks on unsent data.
Payloads are sent without copying (pyzmq copies only frames below its copy threshold), so the
caller must not modify a buffer it passed in; mutable buffers (bytearray, writable
memoryviews) are copied once to make that safe.

WriteStream adds credit-based flow control per open file: at most `credits` Writes are
unacknowledged at once, which bounds the memory of the client and the gateway to
credits x chunk size per stream.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import itertools
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import crc32c
import zmq
from zmq.utils.monitor import recv_monitor_message

from cluster.common.errors import FsError, errno_from_name
from cluster.common.security import Transport
from cluster.common.wakepipe import WakePipe
from protos import gateway_pb2, master_pb2

log = logging.getLogger(__name__)

_POLL_MS = 100  # the longest the I/O thread sleeps before checking deadlines
# A request that could not even be sent (no connection to the gateway: it is down or
# restarting) fails after this long instead of after the whole timeout, so a writer whose
# gateway is gone gets EIO in seconds, while a gateway that restarts quickly is waited for.
CONNECT_GRACE_S = 10.0


class _Pending:
    __slots__ = ("deadline", "expect", "frames", "future", "send_by", "sent", "timeout")

    def __init__(self, future: Future, timeout: float, expect: str, frames: list,
                 connect_grace: float):
        self.future = future
        self.timeout = timeout
        now = time.monotonic()
        self.deadline = now + timeout
        self.send_by = now + min(timeout, connect_grace)
        self.expect = expect
        self.sent = False
        self.frames = frames


def _resolve(future: Future, result=None, error: BaseException | None = None) -> None:
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except Exception:
        pass


class GatewayClient:
    """Thread-safe client of one gateway. `timeout` bounds every wait, in seconds."""

    def __init__(self, address: str, timeout: float = 60.0, credits: int = 4,
                 connect_grace: float = CONNECT_GRACE_S, transport: Transport | None = None):
        self._transport = transport or Transport("client")
        self.address = address[len("tcp://"):] if address.startswith("tcp://") else address
        self.timeout = float(timeout)
        self.connect_grace = float(connect_grace)
        self.credits = max(1, int(credits))
        self._endpoint = f"tcp://{self.address}"
        self._ctx = zmq.Context()
        self._submitted: collections.deque = collections.deque()
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()
        self._closed = threading.Event()
        self._wake_pipe = WakePipe()
        # Owned by the I/O thread from here on.
        self._pending: dict[int, _Pending] = {}
        self._outbox: collections.deque = collections.deque()
        self._sock: zmq.Socket | None = None
        self._poller: zmq.Poller | None = None
        self._monitor: zmq.Socket | None = None
        self._thread = threading.Thread(target=self._run, name=f"gateway-io-{self.address}",
                                        daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- public API

    def ping(self, timeout: float = 2.0) -> str:
        """The gateway's name; FsError(EIO) if it does not answer within `timeout` s."""
        request = gateway_pb2.Request(ping=gateway_pb2.Ping())
        return self._call(request, None, "pong", timeout).name

    def open_stream(self, ino: int, replication: int = 0) -> WriteStream:
        if ino <= 0:
            raise FsError(errno.EINVAL, f"bad inode number {ino}")
        return WriteStream(self, ino, replication)

    def write_small(self, ino: int, file_offset: int, data, size: int, mtime_ns: int = 0,
                    replication: int = 0, exact_size: bool = False,
                    session: int = 0) -> master_pb2.Attr:
        """Write `data` at `file_offset` and commit the file at `size` (grow-only unless
        exact_size, see gateway.proto): one round trip. `session`: the mount's, so its own
        change breaks none of its callbacks."""
        payload = _frozen(data)
        request = gateway_pb2.Request(write=gateway_pb2.Write(
            ino=ino, file_offset=file_offset, length=len(payload),
            crc32c=crc32c.crc32c(payload), replication=replication,
            commit=gateway_pb2.Commit(ino=ino, size=size, mtime_ns=mtime_ns,
                                      exact_size=exact_size, session=session)))
        return self._call(request, payload, "committed").attr

    def sync(self, ino: int) -> None:
        """fsync's data half: every replica of every volume holding the file's chunks syncs
        what it was given (the metadata half is the master's, see MasterClient.mutate)."""
        self._call(gateway_pb2.Request(sync=gateway_pb2.Sync(ino=ino)), None, "synced")

    def close(self) -> None:
        """Stop the I/O thread; requests still pending fail with EIO."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake()
        self._thread.join(timeout=5.0)
        if self._thread.is_alive():  # should not happen; do not let term() hang on it
            log.error("gateway client %s: I/O thread did not stop", self.address)
            self._ctx.destroy(linger=0)
        else:
            self._ctx.term()
        self._wake_pipe.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- submitting

    def submit(self, request: gateway_pb2.Request, payload=None, expect: str = "",
               timeout: float | None = None) -> Future:
        """Send `request` (+ payload for a Write); a Future of the Reply's `expect` body."""
        if self._closed.is_set():
            raise FsError(errno.EIO, f"gateway client for {self.address} is closed")
        with self._id_lock:
            request.request_id = next(self._ids)
        frames = [request.SerializeToString()]
        if payload is not None:
            frames.append(payload)
        future: Future = Future()
        timeout = self.timeout if timeout is None else timeout
        self._submitted.append((request.request_id, _Pending(future, timeout, expect, frames,
                                                                 self.connect_grace)))
        self._wake()
        return future

    def _call(self, request, payload, expect: str, timeout: float | None = None):
        timeout = self.timeout if timeout is None else timeout
        return self.wait(self.submit(request, payload, expect, timeout), timeout)

    def wait(self, future: Future, timeout: float | None = None):
        """The future's result; FsError on an Error reply, a timeout or a lost gateway."""
        timeout = self.timeout if timeout is None else timeout
        try:
            # The I/O thread fails the future at its deadline; the slack is only a backstop.
            return future.result(timeout + 1.0)
        except FutureTimeout:
            raise self._timeout_error(timeout) from None

    def _timeout_error(self, timeout: float) -> FsError:
        return FsError(errno.EIO, f"gateway {self.address} did not answer within {timeout:g} s")

    def _wake(self) -> None:
        self._wake_pipe.wake()

    # ---------------------------------------------------------------- the I/O thread

    def _open_socket(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 6000)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self._transport.zmq_client(sock, "gateway")
        self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.connect(self._endpoint)
        self._sock = sock
        self._poller = zmq.Poller()
        self._poller.register(self._wake_pipe.fd, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._poller.register(sock, zmq.POLLIN)

    def _close_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
            self._sock.close(0)
            self._sock = None
        if self._monitor is not None:
            self._monitor.close(0)
            self._monitor = None

    def _run(self) -> None:
        self._open_socket()
        try:
            while not self._closed.is_set():
                self._step()
        except Exception:
            log.exception("gateway client %s: I/O thread failed", self.address)
        finally:
            self._fail_all(FsError(errno.EIO, f"gateway client for {self.address} closed"))
            self._close_socket()

    def _step(self) -> None:
        sock, poller, monitor = self._sock, self._poller, self._monitor
        # _run opened them, and every step ends with them open (_expire reopens them).
        assert sock is not None
        assert poller is not None
        assert monitor is not None
        poller.register(sock, zmq.POLLIN | (zmq.POLLOUT if self._outbox else 0))
        now = time.monotonic()
        wait_ms = _POLL_MS
        if self._pending:
            soonest = min(p.deadline if p.sent else p.send_by for p in self._pending.values())
            wait_ms = max(0, min(wait_ms, int((soonest - now) * 1000) + 1))
        events = dict(poller.poll(wait_ms))
        self._wake_pipe.drain(events)
        while self._submitted:
            rid, pending = self._submitted.popleft()
            self._pending[rid] = pending
            self._outbox.append(rid)
        if monitor in events:
            self._on_monitor(monitor)
        self._flush_outbox(sock)
        if events.get(sock, 0) & zmq.POLLIN:
            self._receive(sock)
        self._expire()

    def _flush_outbox(self, sock: zmq.Socket) -> None:
        while self._outbox:
            rid = self._outbox[0]
            pending = self._pending.get(rid)
            if pending is None:  # expired before it could be sent
                self._outbox.popleft()
                continue
            try:
                sock.send_multipart(pending.frames, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return  # no live connection, or its pipe is full: try again later
            self._outbox.popleft()
            pending.sent = True
            pending.frames = []  # zmq holds what it still needs

    def _receive(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = gateway_pb2.Reply()
            try:
                if len(frames) != 1:
                    raise ValueError(f"{len(frames)} frames")
                reply.ParseFromString(frames[0])
            except Exception as e:
                log.warning("gateway %s sent an unreadable reply: %s", self.address, e)
                continue
            pending = self._pending.pop(reply.request_id, None)
            if pending is None:
                if reply.WhichOneof("body") == "error":
                    log.warning("gateway %s: error for unknown request %d: %s %s", self.address,
                                reply.request_id, reply.error.errno_name, reply.error.message)
                continue  # a late reply to a request that already timed out
            body = reply.WhichOneof("body")
            if body == "error":
                err = FsError(errno_from_name(reply.error.errno_name),
                              f"gateway {self.address}: {reply.error.message}")
                _resolve(pending.future, error=err)
            elif pending.expect and body != pending.expect:
                _resolve(pending.future, error=FsError(
                    errno.EIO, f"gateway {self.address} answered {body}, expected "
                               f"{pending.expect}"))
            else:
                _resolve(pending.future, getattr(reply, body) if body else reply)

    def _on_monitor(self, monitor: zmq.Socket) -> None:
        lost = False
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            if event["event"] == zmq.EVENT_DISCONNECTED:
                lost = True
        if not lost:
            return
        # Whatever was sent on the dropped connection will never be answered.
        for rid in [rid for rid, p in self._pending.items() if p.sent]:
            pending = self._pending.pop(rid)
            _resolve(pending.future, error=FsError(
                errno.EIO, f"connection to gateway {self.address} lost before it answered"))

    def _expire(self) -> None:
        now = time.monotonic()
        for rid in [rid for rid, p in self._pending.items()
                    if not p.sent and p.send_by <= now < p.deadline]:
            pending = self._pending.pop(rid)
            _resolve(pending.future, error=FsError(
                errno.EIO, f"gateway {self.address} not reachable for "
                           f"{self.connect_grace:g} s"))
        expired = [rid for rid, p in self._pending.items() if p.deadline <= now]
        for rid in expired:
            pending = self._pending.pop(rid)
            _resolve(pending.future, error=self._timeout_error(pending.timeout))
        if expired and not self._pending:
            # A fresh socket drops whatever the old connection still had queued; late replies
            # to the expired requests then have nowhere to go.
            self._close_socket()
            self._outbox.clear()
            self._open_socket()

    def _fail_all(self, error: FsError) -> None:
        while self._submitted:
            _rid, pending = self._submitted.popleft()
            _resolve(pending.future, error=error)
        for pending in self._pending.values():
            _resolve(pending.future, error=error)
        self._pending.clear()
        self._outbox.clear()


class WriteStream:
    """The chunks of one open file on their way through the gateway, with `credits` flow
    control. One writer thread per stream is the intended use; the methods are still safe to
    call from several threads."""

    def __init__(self, client: GatewayClient, ino: int, replication: int = 0):
        self.client = client
        self.ino = ino
        self.replication = replication
        self._lock = threading.Lock()
        self._credits = threading.Semaphore(client.credits)
        self._futures: list[Future] = []   # this generation's writes, in write order
        self._error: FsError | None = None
        self._generation = 0

    def write(self, file_offset: int, data) -> None:
        """Send one chunk now; block while `credits` writes are unacknowledged. Raises the
        FsError of an earlier failed write of this stream, if any."""
        self._raise_error()
        payload = _frozen(data)
        if not self._credits.acquire(timeout=self.client.timeout):
            raise self.client._timeout_error(self.client.timeout)
        request = gateway_pb2.Request(write=gateway_pb2.Write(
            ino=self.ino, file_offset=file_offset, length=len(payload),
            crc32c=crc32c.crc32c(payload), replication=self.replication))
        with self._lock:
            try:
                future = self.client.submit(request, payload, "written")
            except BaseException:
                self._credits.release()
                raise
            generation = self._generation
            self._futures.append(future)
        future.add_done_callback(lambda f: self._on_done(f, generation))

    def _on_done(self, future: Future, generation: int) -> None:
        self._credits.release()
        error = future.exception()
        if error is not None:
            with self._lock:
                if generation == self._generation and self._error is None:
                    self._error = error if isinstance(error, FsError) else \
                        FsError(errno.EIO, f"{type(error).__name__}: {error}")

    def _raise_error(self) -> None:
        with self._lock:
            error = self._error
        if error is not None:
            raise error

    def in_flight(self) -> int:
        with self._lock:
            return sum(1 for f in self._futures if not f.done())

    def chunks(self) -> list[master_pb2.Chunk]:
        """The chunks acknowledged so far, in write order (still-pending ones left out)."""
        with self._lock:
            futures = list(self._futures)
        return [f.result().chunk for f in futures if f.done() and f.exception() is None]

    def commit(self, size: int, mtime_ns: int = 0, exact_size: bool = False,
               committer=None) -> master_pb2.Attr:
        """Wait for every write, then commit them all (in write order) at `size` (grow-only
        unless exact_size). `committer(CommitRequest) -> Attr` sends the commit: the mount
        passes its master channel (one hop: the master owns the chunk list); without one the
        gateway forwards it (the CLI, which holds no channel)."""
        deadline = time.monotonic() + self.client.timeout
        with self._lock:
            futures = list(self._futures)
            generation = self._generation
        chunks = []
        for future in futures:
            left = max(0.0, deadline - time.monotonic())
            try:
                chunks.append(self.client.wait(future, left).chunk)
            except FsError as e:
                with self._lock:
                    if generation == self._generation and self._error is None:
                        self._error = e
                raise
        self._raise_error()
        if committer is not None:
            attr = committer(master_pb2.CommitRequest(
                ino=self.ino, chunks=chunks, size=size, mtime_ns=mtime_ns,
                exact_size=exact_size))
        else:
            request = gateway_pb2.Request(commit=gateway_pb2.Commit(
                ino=self.ino, chunks=chunks, size=size, mtime_ns=mtime_ns,
                exact_size=exact_size))
            attr = self.client._call(request, None, "committed").attr
        with self._lock:
            if generation == self._generation:
                # Committed: this stream starts over (writes made meanwhile stay pending).
                self._futures = self._futures[len(futures):]
        return attr

    def abort(self) -> None:
        """Forget pending chunks and any error; the file keeps its last committed content."""
        with self._lock:
            self._generation += 1
            self._futures = []
            self._error = None


def _frozen(data):
    """`data` as a buffer nobody can change while zmq sends it without copying."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, memoryview) and data.readonly and data.contiguous \
            and data.format in ("B", "b", "c") and data.ndim == 1:
        return data
    return bytes(data)
