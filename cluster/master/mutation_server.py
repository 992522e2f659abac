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

Sessions and callbacks share the port (docs/caching.md):
open_session, renew_session and break_ack are handled as they arrive, outside any batch.
After a batch commits, the callbacks other sessions hold on what it changed are taken back:
each such session gets one CallbackBreak, and the batch is answered only once every one was
acknowledged or its session's lease ran out (the session then ends: its callbacks and the
files it kept open go). Mutations arriving meanwhile wait for the next batch, so a break costs
the other mutations one round trip to the mount that holds it, and nothing when none does.

The gRPC servicer's mutations (the CLI's, a gateway's commits) come in through `submit`, into
the same batches, so they break callbacks like any other change.

Exports: the connection a message came on proved a client identity (its CURVE key's ZAP
User-Id, cluster/common/curve.py). open_session resolves the session's subdir against the
exports for that identity (refused with EACCES when none admits it), and every mutation is
applied through the view `scoped.view_for` gives for its connection and the session it
names; a gRPC servicer's mutation brings the view it was given (`submit`).

Bad input never reaches the namespace and never stops the channel for other mounts: a frame
that does not parse is logged and dropped (there is no id to answer), a mutation naming no
operation is answered EINVAL, a message over `max_message` bytes makes ZMQ drop that peer's
connection, and a peer that sends without reading loses answers past the send high-water mark
(the ROUTER drops them) instead of blocking the others.
"""
from __future__ import annotations

import collections
import errno
import itertools
import logging
import threading
import time
from collections.abc import Callable

import zmq
from google.protobuf.message import DecodeError

from cluster.common import curve
from cluster.common.errors import FsError
from cluster.common.security import Transport
from cluster.common.wakepipe import WakePipe
from cluster.master import mutations, schema
from cluster.master.callbacks import CallbackTable, Keys
from cluster.master.exports import IMPLICIT_EXPORT, ExportTable, Scope
from cluster.master.locks import EXCLUSIVE, UNLOCK, Lock, LockTable
from cluster.master.namespace import Namespace
from cluster.master.paths import canonical
from cluster.master.peers import PeerLink
from cluster.master.scoped import INSECURE_PEER, ScopedNamespace, view_for
from cluster.master.sessions import SessionTable
from cluster.master.store import MetadataStore, StoreConflict
from cluster.master.touched import path_before, touched
from protos import master_pb2

log = logging.getLogger(__name__)

# Handled as they arrive, outside any batch: they change no stored state.
CONTROL = ("open_session", "renew_session", "close_session", "break_ack", "lock")


def _failed(mid: int, op: str, e: Exception) -> master_pb2.MutationReply:
    """The answer to a message whose handling raised: its errno for an FsError, else EIO (a
    bug, logged: it must not take the channel down for the other mounts)."""
    if isinstance(e, FsError):
        return master_pb2.MutationReply(id=mid, errno=e.errno, message=e.message)
    log.error("%s failed", op, exc_info=e)
    return master_pb2.MutationReply(id=mid, errno=errno.EIO, message=f"{op} failed: {e}")


class _LocalCall:
    """A mutation submitted by another thread of the master (the gRPC servicer): the peer
    its answer goes to, and the view of the namespace it is applied through."""
    __slots__ = ("done", "reply", "view")

    def __init__(self, view: Namespace | ScopedNamespace | None = None):
        self.done = threading.Event()
        self.reply: master_pb2.MutationReply | None = None
        self.view = view


MAX_PEERS = 10_000   # connections whose identity is remembered (each message refreshes it)
CONFLICT_RETRIES = 20   # a batch applied again after losing a race to another master
HOUSEKEEPING_S = 0.5   # how often expired sessions and over-full callback tables are seen to


class MutationServer:
    def __init__(self, namespace: Namespace, store: MetadataStore, ip: str, port: int,
                 max_batch: int = 256, max_message: int = 16 << 20, hwm: int = 10000,
                 peer_inflight: int = 1000,
                 sessions: SessionTable | None = None, callbacks: CallbackTable | None = None,
                 transport: Transport | None = None,
                 exports: Callable[[], ExportTable] | None = None):
        self.namespace = namespace
        self.exports = exports or ExportTable
        # ROUTER routing id -> (role, identity) its connection proved, from the last message
        # it sent (unknown: an insecure cluster's "client")
        self._peers: dict[bytes, tuple[str, str]] = {}
        self.store = store
        self.max_batch = max_batch
        self.sessions = sessions if sessions is not None else SessionTable()
        self.callbacks = callbacks if callbacks is not None else CallbackTable()
        self.locks = LockTable()
        # Files kept open by sessions of an earlier run of the master, not resumed within
        # this long, are freed.
        self.resume_grace = 2 * self.sessions.lease_s
        self._grace_over = False
        # A mount whose lease an earlier run of the master granted may still answer from its
        # cache for up to a lease: no change is applied before those leases ran out (the
        # counter says whether any run ever had a session; a new cluster does not wait).
        self._sessions_known = store.counter(schema.COUNTER_SESSIONS) > 0
        self._quiet_until = time.monotonic() + self.sessions.lease_s \
            if self._sessions_known else 0.0
        # The other masters of a shared database (peers.py), once MasterNode links them.
        self.peers: PeerLink | None = None
        self._held: collections.deque = collections.deque()  # mutations that came in a wait
        self._waiting: dict[int, int] = {}     # break id -> session, not yet acknowledged
        self._break_ids = itertools.count(1)
        self._next_housekeeping = 0.0
        self._local: collections.deque = collections.deque()   # (_LocalCall, Mutation)
        self._wake = WakePipe()
        self._ctx = zmq.Context()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.MAXMSGSIZE, max_message)
        self._router.setsockopt(zmq.SNDHWM, hwm)
        # At most `peer_inflight` messages of one peer wait to be read (ZMQ's receive HWM is
        # per connection): a client that sends faster is held back in its own send queue,
        # so no peer can fill the master's memory, whatever it pipelines.
        self._router.setsockopt(zmq.RCVHWM, peer_inflight)
        self._transport = transport or Transport("master")
        self._transport.zmq_server(self._router)   # CURVE and the ZAP handler, if secure
        if port:
            self._router.bind(f"tcp://{ip}:{port}")
            self.port = port
        else:
            self.port = self._router.bind_to_random_port(f"tcp://{ip}")
        self.address = f"{ip}:{self.port}"
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)
        self._poller.register(self._wake.fd, zmq.POLLIN)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mutations", daemon=True)

    def start(self) -> MutationServer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._transport.close()   # the ZAP handler's socket, before the context ends
        self._ctx.term()
        self._wake.close()

    def wake(self) -> None:
        """Have the mutation thread look at its queues now (another master's notice)."""
        self._wake.wake()

    def submit(self, op: str, request, session: int = 0, timeout: float = 60.0,
               view: Namespace | ScopedNamespace | None = None) -> master_pb2.MutationReply:
        """Apply one mutation from another thread (the gRPC servicer) in the next batch,
        through `view` (None: the whole namespace), with its breaks (none to `session`); its
        MutationReply."""
        m = master_pb2.Mutation(id=1, session=session)
        getattr(m, op).CopyFrom(request)
        call = _LocalCall(view)
        self._local.append((call, m))
        self._wake.wake()
        if not call.done.wait(timeout):
            return master_pb2.MutationReply(errno=errno.EIO,
                                            message="the mutation thread did not answer")
        return call.reply

    def _poll(self, timeout_ms: int) -> bool:
        """Wait for a message or a local submission."""
        events = dict(self._poller.poll(timeout_ms))
        self._wake.drain(events)
        return bool(events) or bool(self._local)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if time.monotonic() >= self._next_housekeeping:
                    self._housekeeping()
                if self._quiet_until:
                    if time.monotonic() < self._quiet_until:
                        if self._poll(100):
                            self._receive(hold=True)   # sessions open; changes wait
                        continue
                    self._quiet_until = 0.0
                    log.info("the leases of the last run have run out: applying changes")
                self._remote_breaks()
                if not self._held and not self._local and not self._poll(200):
                    continue
                batch = self._receive()
                if batch:
                    changes: list[tuple[int, Keys]] = []
                    answers = self.apply_batch(batch, changes)
                    self._announce(changes)
                    for peer, reply in answers:
                        self._answer(peer, reply)
        except zmq.ZMQError as e:
            if not self._stop.is_set():
                log.exception("mutation channel stopped: %s", e)
        finally:
            self._router.close(0)

    def _receive(self, hold: bool = False) -> list[tuple[bytes, master_pb2.Mutation]]:
        """Every well-formed mutation waiting (up to max_batch), those held from a wait
        first; session messages are handled on the way. With `hold`, mutations are kept
        for the next batch instead (a break is being waited for)."""
        batch = []
        while not hold and self._held and len(batch) < self.max_batch:
            batch.append(self._held.popleft())
        while not hold and self._local and len(batch) < self.max_batch:
            batch.append(self._local.popleft())
        while hold or len(batch) < self.max_batch:
            try:
                parts = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            if len(parts) != 2:
                log.warning("mutation channel: dropped a message of %d frames (want 2)",
                            len(parts))
                continue
            peer, payload = parts[0].bytes, parts[1].bytes
            self._remember(peer, curve.peer_identity(parts[1]))
            mutation = master_pb2.Mutation()
            try:
                mutation.ParseFromString(payload)
            except DecodeError:
                log.warning("mutation channel: dropped %d bytes that are no Mutation",
                            len(payload))
                continue
            op = mutation.WhichOneof("op")
            if op in CONTROL:
                self._control(peer, mutation, op)
            elif hold:
                self._held.append((peer, mutation))
            else:
                batch.append((peer, mutation))
        return batch

    # ------------------------------------------------------------ sessions and callbacks

    def _remember(self, peer: bytes, identity: tuple[str, str] | None) -> None:
        if identity is None:
            return   # no CURVE: every peer is INSECURE_PEER
        if peer not in self._peers and len(self._peers) >= MAX_PEERS:
            # Forget the older half; a connection still in use is remembered again at its
            # next message, before that message is applied.
            for old in list(self._peers)[:MAX_PEERS // 2]:
                del self._peers[old]
        self._peers[peer] = identity

    def peer_of(self, peer) -> tuple[str, str]:
        """(role, identity) of a ZMQ peer by its routing id."""
        return self._peers.get(peer, INSECURE_PEER) if isinstance(peer, bytes) \
            else INSECURE_PEER

    def _view(self, peer, m: master_pb2.Mutation) -> Namespace | ScopedNamespace:
        if isinstance(peer, _LocalCall):
            return peer.view if peer.view is not None else self.namespace
        return view_for(self.namespace, self.sessions, self.exports(), self.peer_of(peer),
                        m.session)

    def _own(self, peer, sid: int) -> None:
        """EACCES unless the session `sid` (if live) was opened by this peer's identity: no
        client may close, or take locks under, another's session."""
        s = self.sessions.get(sid) if sid else None
        if s is not None and s.identity != self.peer_of(peer)[1]:
            raise FsError(errno.EACCES, f"session {sid:x} was opened by another client")

    def _open_scope(self, peer, request: master_pb2.SessionRequest) -> Scope:
        """The export a session opened by `peer` for `request.subdir` gets (EACCES: none)."""
        role, identity = self.peer_of(peer)
        subdir = request.subdir or "/"
        if role == "admin":
            return Scope(canonical(subdir), IMPLICIT_EXPORT)
        return self.exports().resolve(identity, subdir)

    def _control(self, peer: bytes, m: master_pb2.Mutation, op: str) -> None:
        """Every message is answered, as mutations are (the mount ignores what it does not
        wait for)."""
        try:
            reply = self._control_reply(peer, m, op)
        except Exception as e:
            reply = _failed(m.id, op, e)
        self._answer(peer, reply)

    def _control_reply(self, peer: bytes, m: master_pb2.Mutation,
                       op: str) -> master_pb2.MutationReply:
        if op == "break_ack":
            self._waiting.pop(m.break_ack.break_id, None)
            return master_pb2.MutationReply(id=m.id, empty=master_pb2.Empty())
        if op == "lock":
            self._own(peer, m.session)
            return self._lock(m)
        if op == "close_session":
            # A clean unmount: its callbacks, locks and kept files go now, not after its
            # lease (changes to what it held would wait for that long).
            sid = m.close_session.session
            self._own(peer, sid)
            if sid in self.sessions:
                log.info("session %x closed", sid)
                self._end_session(sid)
            return master_pb2.MutationReply(id=m.id, empty=master_pb2.Empty())
        if op == "open_session":
            request = m.open_session
            scope = self._open_scope(peer, request)
            s = self.sessions.open(peer, request.session, identity=self.peer_of(peer)[1],
                                   scope=scope, callbacks=not request.no_callbacks)
            if self.peers is not None and request.session and s.sid == request.session:
                self.peers.session_moved(s.sid)   # resumed here: perhaps from another master
            log.info("session %x opened by %s for %s%s (%d live)", s.sid, s.identity,
                     scope.root, " read-only" if scope.read_only else "", len(self.sessions))
            if not self._sessions_known:
                self._sessions_known = True
                self.store.raise_counter(schema.COUNTER_SESSIONS, 1)
            sid = s.sid
        else:
            sid = m.renew_session.session
            if sid in self._waiting.values():
                # Not renewed while it owes an acknowledgement: its lease runs out, and the
                # mount, which counts from its last answered renewal, stops trusting its
                # cache before the master gives up on it.
                return master_pb2.MutationReply(
                    id=m.id, errno=errno.EAGAIN,
                    message="not renewed: the session owes a callback break's ack")
            if not self.sessions.renew(sid, peer, self.peer_of(peer)[1]):
                sid = 0   # unknown: the mount drops its caches and opens a session again
        return master_pb2.MutationReply(
            id=m.id, session=master_pb2.SessionReply(session=sid,
                                                     lease_s=self.sessions.lease_s))

    def _lock(self, m: master_pb2.Mutation) -> master_pb2.MutationReply:
        """Take, test or release a lock for the sender's session (locks.py)."""
        r = m.lock
        reply = master_pb2.MutationReply(id=m.id)
        if r.type > UNLOCK or r.start > r.end:
            raise FsError(errno.EINVAL, "lock: bad type or range")
        if not m.session or not self.sessions.alive(m.session):
            # Without a live session nobody would release the lock if the mount died.
            raise FsError(errno.ENOLCK, "lock: the mount has no live session")
        want = Lock(m.session, r.owner, r.flock, EXCLUSIVE if r.type == EXCLUSIVE else 0,
                    r.start, r.end, r.pid)
        if r.test:
            blocker = self.locks.conflict(r.ino, want) if r.type != UNLOCK else None
        else:
            blocker = self.locks.set(r.ino, want, unlock=r.type == UNLOCK)
        reply.lock.granted = blocker is None
        if blocker is not None:
            reply.lock.conflict.CopyFrom(master_pb2.LockRequest(
                ino=r.ino, owner=blocker.owner, flock=blocker.flock, type=blocker.type,
                start=blocker.start, end=blocker.end, pid=blocker.pid))
        return reply

    def _announce(self, changes: list[tuple[int, Keys]]) -> None:
        """Break the callbacks other sessions hold on what the batch changed, and wait."""
        if not changes:
            return
        drops: dict[int, Keys] = {}
        for sender, keys in changes:
            for sid, keys_of_sid in self.callbacks.take(keys, but=sender).items():
                drops.setdefault(sid, Keys()).update(keys_of_sid)
        for sender, keys in changes:
            if sender and self.sessions.granting(sender):
                # The sender caches what it changed from its answer: its callback.
                self.callbacks.grant(sender, paths=keys.paths, inos=keys.inos)
        if drops:
            self._break(drops)
        if self.peers is not None:
            every = Keys()
            for _, keys in changes:
                every.update(keys)
            self._tell_peers(every)

    def _tell_peers(self, keys: Keys) -> None:
        """Tell the other masters of this database what the batch changed (peers.py) and
        wait until each has broken its sessions' callbacks on it, has died, or a lease went
        by (its sessions' leases ran out by then). Their own notices are served meanwhile,
        so two masters waiting for each other both go on."""
        assert self.peers is not None
        if not any(m != self.peers.master_id for m in self.peers.live_masters()):
            return   # the only master: nobody else holds callbacks
        seq, others = self.peers.publish(keys)
        deadline = time.monotonic() + self.sessions.lease_s
        try:
            while not self._stop.is_set():
                missing = others - self.peers.acked(seq)
                missing &= set(self.peers.live_masters())
                if not missing:
                    return
                if time.monotonic() > deadline:
                    log.warning("%d masters did not acknowledge a change's callback breaks "
                                "within a lease", len(missing))
                    return
                self._remote_breaks()
                if self._poll(20):
                    self._receive(hold=True)
        finally:
            self.peers.done(seq)

    def _remote_breaks(self) -> None:
        """Break what this master's sessions hold on what another master changed, then
        acknowledge it. The callbacks are taken between commits (between_commits): a lookup
        that read before that master's commit registered its grant first and is found;
        one that reads after it sees the change."""
        while self.peers is not None and not self.peers.moved.empty():
            sid = self.peers.moved.get_nowait()
            if sid in self.sessions:
                log.info("session %x moved to another master: forgotten here", sid)
                self._forget_session(sid)
        while self.peers is not None and not self.peers.breaks.empty():
            origin, seq, part, keys = self.peers.breaks.get_nowait()
            with self.store.between_commits():
                drops = self.callbacks.take(keys, but=0)
            if drops:
                self._break(drops)
            self.peers.ack(origin, seq, part)

    def hold_changes_for_lease_from(self, wall_s: float) -> None:
        """Apply no change before a lease has passed since `wall_s` (time.time()): a master
        that died then may have given mounts callbacks they trust until that long."""
        until = time.monotonic() + max(0.0, wall_s + self.sessions.lease_s - time.time())
        if until > time.monotonic():
            log.info("a master died: changes wait %.1fs, until its mounts' leases ran out",
                     until - time.monotonic())
            self._quiet_until = max(self._quiet_until, until)

    def _break(self, drops: dict[int, Keys]) -> None:
        """Send each session its CallbackBreak; return once each is acknowledged or the
        session has ended."""
        for sid, keys in drops.items():
            s = self.sessions.get(sid)
            if s is None:
                self.callbacks.drop_session(sid)
                continue
            bid = next(self._break_ids)
            self._waiting[bid] = sid
            self._answer(s.peer, master_pb2.MutationReply(
                id=0, callback_break=master_pb2.CallbackBreak(
                    break_id=bid, paths=sorted(keys.paths), trees=sorted(keys.trees),
                    inos=sorted(keys.inos))))
        while self._waiting and not self._stop.is_set():
            now = time.monotonic()
            soonest = None
            for bid, sid in list(self._waiting.items()):
                s = self.sessions.get(sid)
                if s is None or s.expires <= now:
                    del self._waiting[bid]
                    log.warning("session %x did not acknowledge a callback break within its "
                                "lease: ended", sid)
                    self._end_session(sid)
                else:
                    soonest = s.expires if soonest is None else min(soonest, s.expires)
            if soonest is None:
                return
            if self._poll(max(1, min(200, int((soonest - now) * 1000) + 1))):
                self._receive(hold=True)

    def _forget_session(self, sid: int) -> None:
        """Drop what this master holds for a session: lease, callbacks, locks, breaks owed."""
        self.sessions.end(sid)
        self.callbacks.drop_session(sid)
        released = self.locks.drop_session(sid)
        if released:
            log.info("session %x: released %d locks", sid, released)
        self._waiting = {b: s for b, s in self._waiting.items() if s != sid}

    def _end_session(self, sid: int) -> None:
        """A session is over: forgotten, and the files it kept open after unlink freed."""
        self._forget_session(sid)
        try:
            freed = self.store.reclaim_orphans(sid)
        except Exception:
            log.exception("freeing the open files of session %x failed", sid)
            return
        if freed:
            log.info("session %x ended: freed %d files it kept open after unlink", sid, freed)

    def _housekeeping(self) -> None:
        """Sessions whose lease ran out end; sessions over their callback bound lose their
        oldest; once after start, files kept open by sessions nobody resumed are freed."""
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        for sid in self.sessions.expired():
            log.info("session %x expired", sid)
            self._end_session(sid)
        over = self.callbacks.overflowing()
        if over:
            self._break(over)
        if not self._grace_over and \
                time.monotonic() - self.sessions.started >= self.resume_grace:
            self._grace_over = True
            try:
                if self.peers is not None and len(self.peers.live_masters()) > 1:
                    # Another master may hold those sessions now (a mount failed over).
                    return
                for sid in self.store.orphan_sessions():
                    if sid not in self.sessions:
                        self._end_session(sid)
            except Exception:
                log.exception("freeing files kept open by sessions of a past run failed")

    def _answer(self, peer, reply: master_pb2.MutationReply) -> None:
        if isinstance(peer, _LocalCall):
            peer.reply = reply
            peer.done.set()
            return
        try:
            self._router.send_multipart([peer, reply.SerializeToString()], zmq.NOBLOCK)
        except zmq.Again:
            log.warning("mutation channel: a peer does not read its answers; dropped one")

    def apply_batch(self, batch: list[tuple[bytes, master_pb2.Mutation]],
                    changes: list | None = None) -> list:
        """Apply (peer, mutation) pairs as one transaction, each in its own savepoint;
        [(peer, MutationReply)] in order. If the commit fails, every one is answered EIO.
        What each successful one changed goes into `changes` as (sender session, Keys)."""
        durable = any(m.durable for _, m in batch)
        for attempt in range(CONFLICT_RETRIES + 1):
            replies = []
            found: list[tuple[int, Keys]] = []
            try:
                with self.store.batch(durable=durable, size=len(batch)):
                    for peer, m in batch:
                        replies.append(self._apply_one(peer, m, found))
                break
            except StoreConflict:
                # Another master's transaction won a race (PostgreSQL): nothing of this batch
                # is stored, so applying it again from the start is exact.
                if attempt < CONFLICT_RETRIES:
                    continue
                log.warning("mutation batch of %d lost %d races in a row", len(batch),
                            attempt + 1)
                replies = [master_pb2.MutationReply(id=m.id, errno=errno.EAGAIN,
                                                    message="busy: concurrent changes")
                           for _, m in batch]
                found = []
            except Exception as e:
                log.exception("mutation batch of %d failed to commit", len(batch))
                replies = [master_pb2.MutationReply(id=m.id, errno=errno.EIO,
                                                    message=f"commit failed: {e}")
                           for _, m in batch]
                found = []
                break
        if changes is not None:
            changes.extend(found)
        return [(peer, reply) for (peer, _), reply in zip(batch, replies, strict=True)]

    def _inode_before(self, op: str, request, session: int) -> int:
        """The inode a name held before `op` changes it, when another session may hold a
        callback on it (else 0: nobody needs to hear)."""
        path = path_before(op, request)
        if not path or not self.callbacks.anyone_but(session):
            return 0
        try:
            return self.store.getattr(path).ino
        except FsError:
            return 0

    def _apply_one(self, peer, m: master_pb2.Mutation,
                   found: list) -> master_pb2.MutationReply:
        reply = master_pb2.MutationReply(id=m.id)
        op = m.WhichOneof("op")
        if op is None or op not in mutations.TABLE:
            reply.errno, reply.message = errno.EINVAL, "mutation names no known operation"
            return reply
        request = getattr(m, op)
        try:
            view = self._view(peer, m)
            before = self._inode_before(op, request, m.session)
            answer = mutations.apply(view, op, request, m.session,  # type: ignore[arg-type]
                                     mutations.caller_of(m))
        except Exception as e:
            return _failed(m.id, op, e)
        getattr(reply, mutations.RESULT_FIELD[type(answer)]).CopyFrom(answer)
        keys = touched(op, request, answer, before)
        if keys:
            found.append((m.session, keys))
        return reply
