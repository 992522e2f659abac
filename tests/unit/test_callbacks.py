"""Sessions and callbacks on the master: the tables alone, then the mutation channel breaking
a callback over a real ZMQ socket before it answers the change."""
from __future__ import annotations

import threading
import time

import pytest
import zmq

from cluster.master.callbacks import CallbackTable, Keys, ancestors
from cluster.master.mutation_server import MutationServer
from cluster.master.namespace import Namespace
from cluster.master.sessions import SessionTable
from cluster.master.sqlite_store import SQLiteStore
from cluster.master.touched import touched
from protos import master_pb2


def test_ancestors():
    assert ancestors("/a/b/c") == ["/a/b", "/a", "/"]
    assert ancestors("/") == []


def test_take_finds_holders_of_names_trees_and_inodes_but_not_the_sender():
    t = CallbackTable()
    t.grant(1, paths=["/d/f"], inos=[7])
    t.grant(2, paths=["/d/g"])
    t.grant(3, paths=["/x"])
    out = t.take(Keys(paths={"/d/f"}), but=3)
    assert set(out) == {1}
    assert out[1].paths == {"/d/f"}
    assert t.take(Keys(paths={"/d/f"})) == {}            # taken: broken once
    out = t.take(Keys(trees={"/d"}))                      # a rename of /d reaches both
    assert set(out) == {1, 2}
    assert out[2].trees == {"/d"}
    out = t.take(Keys(inos={7}), but=1)
    assert out == {}
    assert set(t.take(Keys(inos={7}))) == {1}


def test_a_session_over_its_bound_loses_its_oldest_keys_first():
    t = CallbackTable(max_keys=10)
    for i in range(8):
        t.grant(1, inos=[100 + i])
    t.grant(1, inos=[200, 201, 202])
    over = t.overflowing()
    assert set(over) == {1}
    assert over[1].inos == {100, 101}
    assert t.count(1) == 9
    t.drop_session(1)
    assert t.count(1) == 0
    assert not t.anyone_but(0)


def test_sessions_expire_and_resume_only_unknown_ids():
    now = [100.0]
    s = SessionTable(lease_s=5, clock=lambda: now[0])
    a = s.open(b"peer-a")
    assert s.alive(a.sid)
    assert a.sid > 1
    b = s.open(b"peer-b", resume=a.sid)            # a live id cannot be taken over
    assert b.sid != a.sid
    now[0] += 4
    assert s.renew(a.sid, b"peer-a")
    now[0] += 4
    assert s.expired() == [b.sid]
    assert s.alive(a.sid)
    assert not s.renew(b.sid, b"peer-b")
    c = s.open(b"peer-c", resume=b.sid)             # after expiry (or a restart): resumed
    assert c.sid == b.sid


def test_touched_keys_are_canonical_and_name_the_parent():
    attr = master_pb2.Attr(ino=9)
    k = touched("create", master_pb2.CreateRequest(path="/a//b/"), attr)
    assert k.paths == {"/a/b", "/a"}
    assert k.inos == {9}
    k = touched("rename", master_pb2.RenameRequest(old_path="/x", new_path="/y/z"),
                master_pb2.RenameResponse(replaced_ino=4), before=3)
    assert k.paths == {"/x", "/", "/y/z", "/y"}
    assert k.trees == {"/x", "/y/z"}
    assert k.inos == {3, 4}


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


# ---------------------------------------------------------------- locks

def test_lock_table_follows_linux_semantics():
    from cluster.master.locks import EOF_END, EXCLUSIVE, SHARED, Lock, LockTable
    t = LockTable()
    a = Lock(1, 10, False, EXCLUSIVE, 0, 99)
    assert t.set(5, a) is None
    assert t.set(5, Lock(2, 20, False, SHARED, 50, 60)) == a          # overlaps: refused
    assert t.set(5, Lock(2, 20, False, EXCLUSIVE, 100, 200)) is None  # next to it: fine
    assert t.set(5, Lock(1, 10, False, SHARED, 0, 9)) is None         # own lock: replaced
    assert t.conflict(5, Lock(2, 20, False, SHARED, 0, 9)) is None    # shared with shared
    assert t.set(5, Lock(1, 10, False, SHARED, 40, 59), unlock=True) is None
    held = sorted((lk.start, lk.end, lk.type) for lk in t.held(5) if lk.owner == 10)
    assert held == [(0, 9, SHARED), (10, 39, EXCLUSIVE), (60, 99, EXCLUSIVE)]
    assert t.conflict(5, Lock(2, 21, True, EXCLUSIVE, 0, EOF_END)) is None  # flock apart
    assert t.drop_session(1) == 3
    assert [lk.owner for lk in t.held(5)] == [20]


def test_the_mount_waits_for_a_blocking_lock_and_fails_a_non_blocking_one():
    import errno
    import fcntl
    from types import SimpleNamespace

    from cluster.common.errors import FsError
    from fusefs.locking import Locker
    answers = [False, False, True]
    sent = []

    def mutate(op, request):
        sent.append(request)
        return master_pb2.LockReply(granted=answers.pop(0) if answers else True)

    lk = Locker(mutate)
    lk.flock(3, 9, fcntl.LOCK_EX)                  # waits through two refusals
    assert len(sent) == 3
    assert sent[0].flock
    assert sent[0].type == 1
    answers[:] = [False]
    with pytest.raises(FsError) as e:
        lk.fcntl(3, 9, fcntl.F_SETLK, SimpleNamespace(l_type=fcntl.F_WRLCK, l_whence=0,
                                                      l_start=10, l_len=5, l_pid=1))
    assert e.value.errno == errno.EAGAIN
    assert sent[-1].start == 10
    assert sent[-1].end == 14


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
