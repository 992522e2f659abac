"""MountSession: the mount's session with the master, and the one thread that hears its
callback breaks (docs/caching.md).

The session lives on its own DEALER socket to the master's mutation port, apart from the
MutationChannel: breaks arrive when no FUSE thread is calling, and must be handled by a thread
that is not serving a FUSE request (the kernel invalidation it makes may wait for one). This
thread opens the session, renews it every lease/4, and answers each CallbackBreak by handing
it to `on_break` (which drops the caches, the mount's and the kernel's) and acknowledging it.

`trusted()` says whether the caches may answer: only while the lease is proven, counted from
when the last answered renewal was *sent* (the master counts from when it arrived, later), less
a margin. A renewal the master answers with session 0 means it forgot the session (it
restarted, or the lease ran out while this mount was cut off): `on_lost` drops every cache and
the session is opened again with the same id, so the files this mount keeps open after unlink
stay its own.

The open names the subtree the mount serves (`subdir`) and whether it takes callbacks. The
master may refuse it (EACCES: no export of that subtree for this client's identity,
docs/security.md): `refused` then holds the master's message, which the mount prints as it
gives up; a refusal of a later re-open (the exports changed while the master restarted) is
logged and the open retried every REFUSED_RETRY_S.

Several masters: when the mount's MasterClient moves to another master, `reconnect()` has this
thread ask `address_source` for the new master's mutation address, drop the socket to the old
one, call `on_lost` (every cache goes: the new master holds none of this mount's callbacks)
and open the session there with the same id, which the master adopts (resume). When no
answer comes for SILENT_S while something was sent, `on_silent` is told (the client probes
the master and moves on if it is gone), so an idle mount finds the new master by itself.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable

import zmq
from google.protobuf.message import DecodeError

from cluster.common.security import Transport
from protos import master_pb2

log = logging.getLogger(__name__)

MARGIN_S = 0.5     # the mount stops trusting its lease this long before the master would
REFUSED_RETRY_S = 5.0   # how often a refused open is tried again
SILENT_S = 2.0          # no answer this long to what was sent: tell on_silent
POLL_S = 0.2            # the longest the thread waits on its socket at a time
RECONNECT_RETRY_S = 1.0   # how often a failed lookup of the new master's address is retried


class MountSession:
    def __init__(self, address: str, on_break: Callable[[master_pb2.CallbackBreak], None],
                 on_lost: Callable[[], None], transport: Transport | None = None,
                 subdir: str = "/", callbacks: bool = True,
                 address_source: Callable[[], str] | None = None,
                 on_silent: Callable[[str], None] | None = None):
        self.address = address
        self.address_source = address_source   # () -> the mutation address of the master now
        self.on_silent = on_silent     # (this session's address) -> None: no answers of late
        self._reconnect = threading.Event()
        self._next_reconnect = 0.0
        self._silent_told = 0.0
        self._transport = transport or Transport("client")
        self.reconnects = 0
        self.subdir = subdir
        self.callbacks = callbacks
        self.refused = ""      # the master's message when it refused the open
        self.on_break = on_break
        self.on_lost = on_lost
        self.sid = 0
        self.lease_s = 0.0
        self._valid_until = 0.0
        self._ids = itertools.count(1)
        self._sent: dict[int, tuple[str, float]] = {}    # id -> (kind, monotonic send time)
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._ctx = zmq.Context()
        self._sock = self._socket(address)
        self._thread = threading.Thread(target=self._run, name="session", daemon=True)

    def start(self, wait: float = 5.0) -> MountSession:
        """Start the thread and wait up to `wait` s for the session (without one the mount
        works, uncached, until it comes)."""
        self._thread.start()
        self._opened.wait(wait)
        return self

    def _socket(self, address: str) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        # IMMEDIATE: while the master is away, renewals are dropped rather than queued (a pile
        # of stale renewals would all be answered at once when it is back).
        for opt, value in ((zmq.LINGER, 0), (zmq.IMMEDIATE, 1), (zmq.RECONNECT_IVL, 100),
                           (zmq.RECONNECT_IVL_MAX, 1000)):
            sock.setsockopt(opt, value)
        self._transport.zmq_client(sock, "master")
        sock.connect(f"tcp://{address}")
        return sock

    def reconnect(self) -> None:
        """The mount moved to another master: reopen the session there (on this thread)."""
        self._valid_until = 0.0    # trust nothing from the old master from now on
        self._reconnect.set()

    def trusted(self) -> bool:
        return time.monotonic() < self._valid_until

    def close(self) -> None:
        """End the session at the master (a clean unmount), then stop. Without this, the
        master would wait out the lease before a change to what this mount had cached."""
        self._stop.set()
        self._thread.join(5.0)
        if self.sid:
            m = master_pb2.Mutation(id=next(self._ids),
                                    close_session=master_pb2.SessionRequest(session=self.sid))
            try:
                self._sock.send(m.SerializeToString(), zmq.NOBLOCK)
                self._sock.poll(1000)    # the answer: the master has ended it
            except zmq.ZMQError:
                pass   # no master: the lease runs out instead
        self._sock.close(0)
        self._ctx.term()

    # ---------------------------------------------------------------- the thread

    def _send(self, kind: str) -> None:
        mid = next(self._ids)
        m = master_pb2.Mutation(id=mid)
        request = master_pb2.SessionRequest(session=self.sid)
        if kind == "open_session":
            request.subdir = self.subdir
            request.no_callbacks = not self.callbacks
        getattr(m, kind).CopyFrom(request)
        self._sent[mid] = (kind, time.monotonic())
        # zmq.Again: no connection; the lease lapses, and the next try opens or renews.
        with contextlib.suppress(zmq.Again):
            self._sock.send(m.SerializeToString(), zmq.NOBLOCK)

    def _run(self) -> None:
        next_send = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self._reconnect.is_set() and now >= self._next_reconnect:
                if self._switch():
                    next_send = 0.0
                    continue
                self._next_reconnect = now + RECONNECT_RETRY_S
            self._check_silent(now)
            if now >= next_send:
                self._sent = {k: v for k, v in self._sent.items() if now - v[1] < 30}
                self._send("renew_session" if self.sid and self.lease_s else "open_session")
                next_send = now + (self.lease_s / 4 if self.lease_s else
                                   REFUSED_RETRY_S if self.refused else 0.5)
            # At most POLL_S at a time: a reconnect() or silence is noticed that soon.
            wait = min(next_send - time.monotonic(), POLL_S)
            if self._sock.poll(max(1, int(wait * 1000))):
                self._receive()
        log.debug("session %x: thread ends", self.sid)

    def _switch(self) -> bool:
        """Move the session to the master in use now; False if its address is unknown yet."""
        try:
            address = self.address_source() if self.address_source else self.address
        except Exception as e:   # FsError: no master answers; tried again shortly
            log.warning("session %x: no master to reopen the session with (%s); retrying",
                        self.sid, getattr(e, "message", e))
            return False
        self._reconnect.clear()
        old, self._sock = self._sock, self._socket(address)
        old.close(0)
        log.warning("session %x: moving from the master at %s to %s; dropping every cache "
                    "and resuming the session there", self.sid, self.address, address)
        self.address = address
        self.reconnects += 1
        self._valid_until = 0.0
        self.lease_s = 0.0          # the next message opens (resumes) the session
        self._sent = {}
        self._silent_told = time.monotonic()
        self.on_lost()
        return True

    def _check_silent(self, now: float) -> None:
        """Tell on_silent when what was sent went unanswered for SILENT_S."""
        if self.on_silent is None or not self._sent or now - self._silent_told < SILENT_S:
            return
        oldest = min(sent_at for _, sent_at in self._sent.values())
        if now - oldest < SILENT_S:
            return
        self._silent_told = now
        try:
            self.on_silent(self.address)
        except Exception:
            log.exception("session: on_silent failed")

    def _receive(self) -> None:
        while True:
            try:
                payload = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = master_pb2.MutationReply()
            try:
                reply.ParseFromString(payload)
            except DecodeError:
                log.warning("session: a message that does not parse")
                continue
            what = reply.WhichOneof("result")
            if reply.errno and reply.id in self._sent:
                self._on_refusal(reply)
            elif what == "callback_break":
                self._on_break(reply.callback_break)
            elif what == "session":
                self._on_session(reply.id, reply.session)

    def _on_break(self, brk: master_pb2.CallbackBreak) -> None:
        try:
            self.on_break(brk)
        except Exception:
            log.exception("callback break: dropping every cache instead")
            self.on_lost()
        m = master_pb2.Mutation(id=next(self._ids))
        m.break_ack.break_id = brk.break_id
        # zmq.Again: the master is gone; a new one does not wait for this ack.
        with contextlib.suppress(zmq.Again):
            self._sock.send(m.SerializeToString(), zmq.NOBLOCK)

    def _on_refusal(self, reply: master_pb2.MutationReply) -> None:
        kind, _ = self._sent.pop(reply.id)
        if kind != "open_session":
            return   # a renewal the master would not take: the lease runs out, then reopen
        if reply.message != self.refused:
            log.error("the master refused this mount's session: %s", reply.message)
        self.refused = reply.message or f"errno {reply.errno}"
        self._opened.set()

    def _on_session(self, mid: int, answer: master_pb2.SessionReply) -> None:
        sent = self._sent.pop(mid, None)
        if sent is None:
            return
        kind, sent_at = sent
        if answer.session == 0:
            if kind == "renew_session" and self.lease_s:
                # A master restart (or a lease that ran out while cut off): expected, so
                # not a warning; the mutation channel already said the master was away.
                log.info("session %x: the master forgot it; dropping every cache and "
                         "opening it again", self.sid)
                self._valid_until = 0.0
                self.lease_s = 0.0    # the next message opens (resumes) the session
                self._sent = {k: v for k, v in self._sent.items() if v[0] != "renew_session"}
                self.on_lost()
            return
        if kind == "open_session":
            if self.sid and answer.session != self.sid:
                log.warning("session %x could not be resumed; now %x", self.sid, answer.session)
            # Lookups sent from now on carry the new id (their answers come with callbacks);
            # whatever was cached before has none, nor do answers to lookups in flight.
            self.sid = answer.session
            self.refused = ""
            self.on_lost()
            log.info("session %x opened with the master (lease %.1f s)", self.sid,
                     answer.lease_s)
            self._opened.set()
        self.lease_s = answer.lease_s
        self._valid_until = sent_at + answer.lease_s - MARGIN_S
