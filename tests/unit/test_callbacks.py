"""Sessions, callbacks and locks on the master, and the mount's Locker: the tables called
directly (tests/integration/test_callback_breaks.py has the mutation channel breaking
callbacks over real ZMQ sockets)."""
from __future__ import annotations

import pytest

from cluster.master.callbacks import CallbackTable, Keys, ancestors
from cluster.master.sessions import SessionTable
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



def test_a_directorys_mode_or_owner_change_breaks_everything_below_it():
    d = master_pb2.Attr(ino=5, mode=0o40700)
    f = master_pb2.Attr(ino=6, mode=0o100600)
    assert touched("set_attr", master_pb2.SetAttrRequest(path="/d/", mode=0o700), d).trees \
        == {"/d"}
    assert touched("set_attr", master_pb2.SetAttrRequest(path="/d", gid=3), d).trees == {"/d"}
    assert touched("set_attr", master_pb2.SetAttrRequest(path="/d", mtime_ns=1), d).trees \
        == set()
    assert touched("set_attr", master_pb2.SetAttrRequest(path="/f", mode=0), f).trees == set()
    assert touched("set_attr", master_pb2.SetAttrRequest(ino=5, mode=0), d).trees == set()


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
