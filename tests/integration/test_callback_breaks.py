"""The master's mutation channel breaking callbacks over real ZMQ sockets on a loopback port:
a change is answered only after every other holder acknowledged its break, or its lease ran
out; a closed session holds nothing up; after a restart, changes wait out the last run's
leases while sessions open at once."""
from __future__ import annotations

import threading
import time

import pytest
import zmq

from cluster.master.mutation_server import MutationServer
from cluster.master.namespace import Namespace
from cluster.master.sessions import SessionTable
from cluster.master.sqlite_store import SQLiteStore
from protos import master_pb2


class _Mount:
    """A mount's two sockets, by hand: one for the session, one for mutations."""

    def __init__(self, ctx, address: str):
        self.session_sock = ctx.socket(zmq.DEALER)
        self.session_sock.connect(f"tcp://{address}")
        self.mutations = ctx.socket(zmq.DEALER)
        self.mutations.connect(f"tcp://{address}")
        self.session_sock.send(master_pb2.Mutation(
            id=1, open_session=master_pb2.SessionRequest()).SerializeToString())
        self.sid = self._recv(self.session_sock).session.session

    @staticmethod
    def _recv(sock, timeout_ms: int = 5000) -> master_pb2.MutationReply:
        assert sock.poll(timeout_ms), "no message"
        reply = master_pb2.MutationReply()
        reply.ParseFromString(sock.recv())
        return reply

    def mutate(self, op: str, request, mid: int = 7) -> master_pb2.MutationReply:
        m = master_pb2.Mutation(id=mid, session=self.sid)
        getattr(m, op).CopyFrom(request)
        self.mutations.send(m.SerializeToString())
        return self._recv(self.mutations)


@pytest.fixture
def server(tmp_path):
    store = SQLiteStore(str(tmp_path / "meta.db"), synchronous="NORMAL")
    srv = MutationServer(Namespace(store), store, "127.0.0.1", 0,
                         sessions=SessionTable(lease_s=2.0)).start()
    ctx = zmq.Context()
    yield srv, ctx
    ctx.destroy(linger=0)
    srv.stop()
    store.close()


@pytest.mark.timeout(30)
def test_a_change_is_answered_only_after_the_holder_acknowledged_its_break(server):
    srv, ctx = server
    a, b = _Mount(ctx, srv.address), _Mount(ctx, srv.address)
    srv.callbacks.grant(b.sid, paths=["/f"])          # B looked /f up: "no such name"
    done = {}

    def create():
        done["reply"] = a.mutate("create", master_pb2.CreateRequest(path="/f", mode=0o644))

    t = threading.Thread(target=create)
    t.start()
    brk = _Mount._recv(b.session_sock)
    assert brk.id == 0
    assert list(brk.callback_break.paths) == ["/f"]
    time.sleep(0.3)
    assert "reply" not in done                         # A waits for B's ack
    ack = master_pb2.Mutation(id=2, break_ack=master_pb2.BreakAck(
        break_id=brk.callback_break.break_id))
    b.session_sock.send(ack.SerializeToString())
    t.join(5)
    assert done["reply"].errno == 0
    assert done["reply"].attr.ino
    # A caches what it created: it holds the callback now, so B's chmod breaks it
    m = master_pb2.Mutation(id=8, session=b.sid,
                            set_attr=master_pb2.SetAttrRequest(path="/f", mode=0o600))
    b.mutations.send(m.SerializeToString())
    brk = _Mount._recv(a.session_sock)
    assert "/f" in brk.callback_break.paths
    a.session_sock.send(master_pb2.Mutation(id=3, break_ack=master_pb2.BreakAck(
        break_id=brk.callback_break.break_id)).SerializeToString())
    assert _Mount._recv(b.mutations).attr.mode & 0o777 == 0o600


@pytest.mark.timeout(30)
def test_a_holder_that_never_acknowledges_holds_changes_up_for_its_lease_only(server):
    srv, ctx = server
    a, b = _Mount(ctx, srv.address), _Mount(ctx, srv.address)
    srv.callbacks.grant(b.sid, paths=["/g"])
    started = time.monotonic()
    reply = a.mutate("create", master_pb2.CreateRequest(path="/g", mode=0o644))
    took = time.monotonic() - started
    assert reply.errno == 0
    assert 1.0 < took < 4.0, took                     # B's 2 s lease, not forever
    assert b.sid not in srv.sessions                  # B's session ended


@pytest.mark.timeout(30)
def test_after_a_restart_changes_wait_out_the_last_runs_leases(tmp_path):
    """A mount of the last run may trust its cache for a lease after the master died: the new
    master applies no change before that, but opens sessions at once."""
    store = SQLiteStore(str(tmp_path / "meta.db"), synchronous="NORMAL")
    first = MutationServer(Namespace(store), store, "127.0.0.1", 0,
                           sessions=SessionTable(lease_s=1.5)).start()
    ctx = zmq.Context()
    try:
        _Mount(ctx, first.address)                 # a session: this master had mounts
        first.stop()
        again = MutationServer(Namespace(store), store, "127.0.0.1", 0,
                               sessions=SessionTable(lease_s=1.5)).start()
        try:
            started = time.monotonic()
            m = _Mount(ctx, again.address)          # sessions open during the quiet time
            assert time.monotonic() - started < 1.0
            assert m.mutate("mkdir", master_pb2.MkdirRequest(path="/d", mode=0o755)).errno == 0
            assert time.monotonic() - started >= 1.3
        finally:
            again.stop()
    finally:
        ctx.destroy(linger=0)
        store.close()


@pytest.mark.timeout(30)
def test_a_closed_session_holds_nothing_up(server):
    """A clean unmount ends its session: a change to what it had cached is answered at once,
    not after its lease."""
    srv, ctx = server
    a, b = _Mount(ctx, srv.address), _Mount(ctx, srv.address)
    srv.callbacks.grant(b.sid, paths=["/h"])
    b.session_sock.send(master_pb2.Mutation(
        id=5, close_session=master_pb2.SessionRequest(session=b.sid)).SerializeToString())
    assert _Mount._recv(b.session_sock).WhichOneof("result") == "empty"
    assert b.sid not in srv.sessions
    started = time.monotonic()
    assert a.mutate("create", master_pb2.CreateRequest(path="/h", mode=0o644)).errno == 0
    assert time.monotonic() - started < 0.5
