"""The mount's side of the master's permission checks: whom each call is made for
(fusefs/callers.py), what the operations ask the master to check (access bits, "now" times),
and the attribute cache that, without default_permissions, answers each caller only with what
the master told that caller. No kernel, no cluster: a fake master records what it is sent."""
from __future__ import annotations

import errno
import os

import pytest

from cluster.common.errors import FsError
from fusefs import callers
from fusefs.attrcache import AttrCache
from fusefs.file_operations import open_access
from fusefs.operations import UTIME_NOW, UTIME_OMIT, KelpOperations
from fusefs.options import MountOptions
from protos import master_pb2
from tests.errnos import raises_errno

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def _no_request():
    yield
    callers.end()


def as_request(monkeypatch, uid: int, gid: int, pid: int = 4242) -> None:
    """Make the next operations run as if the kernel sent them for (uid, gid, pid)."""
    monkeypatch.setattr(callers, "fuse_get_context", lambda: (uid, gid, pid))


def test_groups_are_read_from_proc_once_a_second(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "status").write_text("Name:\tsh\nGroups:\t4 24 27 \nNgid:\t0\n")
    assert callers.read_groups(7, 100, str(tmp_path)) == {100, 4, 24, 27}
    assert callers.read_groups(8, 100, str(tmp_path)) == {100}    # gone: the primary alone
    reads, now = [], [0.0]

    def reader(pid, gid):
        reads.append(pid)
        return frozenset({gid, 5})

    cache = callers.GroupCache(ttl=1.0, reader=reader, clock=lambda: now[0])
    assert cache.groups(7, 1) == {1, 5}
    now[0] = 0.9
    cache.groups(7, 1)
    assert reads == [7]
    now[0] = 1.1
    cache.groups(7, 1)
    assert reads == [7, 7]


def test_the_caller_of_a_request_and_outside_one(monkeypatch):
    monkeypatch.setattr(callers, "GROUPS", callers.GroupCache(
        reader=lambda pid, gid: frozenset({gid, 50, 60})))
    as_request(monkeypatch, 1000, 100)
    callers.begin()
    c = callers.current()
    assert (c.uid, c.gid, list(c.groups)) == (1000, 100, [50, 60])   # primary not repeated
    assert callers.key() == (1000, 100, (50, 60))
    # A release comes without credentials (pid 0): the mount's own, never more.
    as_request(monkeypatch, 0, 0, pid=0)
    callers.begin()
    c = callers.current()
    assert (c.uid, c.gid) == (os.geteuid(), os.getegid())


@pytest.mark.parametrize(("flags", "bits"), [
    (os.O_RDONLY, 4), (os.O_WRONLY, 2), (os.O_RDWR, 6), (os.O_WRONLY | os.O_TRUNC, 2),
    (os.O_RDONLY | os.O_TRUNC, 6), (os.O_WRONLY | os.O_APPEND | os.O_CREAT, 2)])
def test_what_an_open_asks(flags, bits):
    assert open_access(flags) == bits


def test_a_per_caller_cache_answers_each_caller_with_its_own_answers():
    who = ["alice"]
    cache = AttrCache(ttl=5, who=lambda: who[0])
    assert cache.per_caller
    a = master_pb2.Attr(ino=7)
    cache.put("/d/f", a)
    cache.put_absent("/d/g")
    cache.put_xattr_absent("/d/f", "user.x")
    assert cache.get("/d/f") is a
    assert cache.is_absent("/d/g")
    assert cache.xattr_absent("/d/f", "user.x")
    who[0] = "bob"
    assert cache.get("/d/f") is None
    assert not cache.is_absent("/d/g")
    assert not cache.xattr_absent("/d/f", "user.x")
    b = master_pb2.Attr(ino=7, size=1)
    cache.put("/d/f", b)                     # bob's answer replaces alice's
    assert cache.get("/d/f") is b
    who[0] = "alice"
    assert cache.get("/d/f") is None
    cache.put("/d/f", a)
    cache.invalidate_tree("/d")              # a change drops it for everyone
    assert cache.get("/d/f") is None
    shared = AttrCache(ttl=5)
    assert not shared.per_caller


class FakeMaster:
    """Records (method or op, request, caller) and answers from a tiny fixed tree."""

    def __init__(self):
        self.sent: list = []
        self.caller = lambda: None           # KelpOperations sets it
        self.session_id = lambda: 0
        self.lookup_session = lambda: 0
        self.inline_max = 0
        self.refuse: set[str] = set()        # paths answered EACCES

    def _attr(self, path):
        mode = 0o40755 if path in ("/", "/d") else 0o100644
        return master_pb2.Attr(ino=len(path) + 1, mode=mode, uid=0, gid=0, nlink=1)

    def call(self, method, request, timeout=None, retry=True):
        caller = request.caller if request.HasField("caller") else self.caller() \
            if "caller" in request.DESCRIPTOR.fields_by_name else None
        self.sent.append((method, request, caller))
        path = getattr(request, "path", "")
        if path in self.refuse:
            raise FsError(errno.EACCES, path)
        if method == "GetChunksAt":
            return master_pb2.FileChunks(attr=self._attr(path))
        return self._attr(path)

    def mutate(self, op, request, durable=False, caller=None):
        self.sent.append((op, request, caller if caller is not None else self.caller()))
        if op == "set_attr":
            return self._attr(request.path)
        return master_pb2.Attr(ino=99, mode=0o100644)

    def readdir_head(self, path, limit, timeout=5.0):
        return [], False


class FakeClient:
    def __init__(self):
        self.master = FakeMaster()


@pytest.fixture
def ops(monkeypatch):
    monkeypatch.setattr(callers, "GROUPS", callers.GroupCache(
        reader=lambda pid, gid: frozenset({gid})))
    client = FakeClient()
    return KelpOperations(client, MountOptions(mountpoint="/unused",
                                               default_permissions=False)), client.master


def test_every_call_carries_the_requests_caller(ops, monkeypatch):
    ops, master = ops
    as_request(monkeypatch, 65534, 65534)
    ops.getattr("/d/f")
    ops.mkdir("/d/new", 0o755)
    ops.chmod("/d/f", 0o600)
    for what, _, caller in master.sent:
        assert (caller.uid, caller.gid) == (65534, 65534), what


def test_opens_ask_the_master_for_the_access_they_need(ops, monkeypatch):
    ops, master = ops
    as_request(monkeypatch, 65534, 65534)
    fh = ops.open("/d/f", os.O_RDONLY)
    ops.release("/d/f", fh)
    fh = ops.open("/d/f", os.O_RDWR | os.O_APPEND)
    ops.release("/d/f", fh)
    asked = [(m, r.access) for m, r, _ in master.sent if m in ("GetChunksAt", "GetAttr")]
    assert ("GetChunksAt", 4) in asked
    assert ("GetAttr", 6) in asked
    master.refuse.add("/d/f")
    with raises_errno(errno.EACCES):
        ops.open("/d/f", os.O_RDONLY)
    with raises_errno(errno.EACCES):
        ops.open("/d/f", os.O_WRONLY)


def test_access_is_the_masters_answer(ops, monkeypatch):
    ops, master = ops
    as_request(monkeypatch, 65534, 65534)
    assert ops.access("/d/f", os.R_OK | os.X_OK) == 0
    assert master.sent[-1][1].access == os.R_OK | os.X_OK
    master.refuse.add("/d/f")
    with raises_errno(errno.EACCES):
        ops.access("/d/f", os.W_OK)


@pytest.mark.parametrize(("times", "now"), [
    (None, True), ((UTIME_NOW, UTIME_NOW), True), ((UTIME_OMIT, UTIME_NOW), True),
    ((5, UTIME_NOW), False), ((5, 6), False), ((UTIME_OMIT, 6), False)])
def test_utimens_tells_now_from_explicit_times(ops, monkeypatch, times, now):
    ops, master = ops
    ops.utimens("/d/f", times)
    [request] = [r for op, r, _ in master.sent if op == "set_attr"]
    assert request.times_now is now


def test_without_default_permissions_a_cached_answer_is_not_anothers(ops, monkeypatch):
    ops, master = ops
    as_request(monkeypatch, 0, 0)
    ops.getattr("/d/f")
    ops.getattr("/d/f")                            # root's second lookup: from the cache
    assert sum(m == "GetAttr" for m, _, _ in master.sent) == 1
    as_request(monkeypatch, 65534, 65534)
    master.refuse.add("/d/f")
    with raises_errno(errno.EACCES):
        ops.getattr("/d/f")                        # nobody asks the master, which refuses
    as_request(monkeypatch, 0, 0)
    ops.getattr("/d/f")                            # root's answer is still root's
    assert sum(m == "GetAttr" for m, _, _ in master.sent) == 2


def test_a_directorys_chmod_drops_what_callers_were_told_below_it(ops, monkeypatch):
    ops, master = ops
    as_request(monkeypatch, 65534, 65534)
    ops.getattr("/d/f")
    as_request(monkeypatch, 0, 0)
    ops.chmod("/d", 0o700)
    as_request(monkeypatch, 65534, 65534)
    master.refuse.add("/d/f")
    with raises_errno(errno.EACCES):
        ops.getattr("/d/f")


def test_an_open_files_commits_are_its_openers(monkeypatch):
    from tests.unit.test_operations import FakeClient as HandleClient
    from tests.unit.test_operations import _handle
    client = HandleClient(inline_max=1 << 16)
    h = _handle(client)
    h.caller = master_pb2.Caller(uid=1000, gid=1000)
    h.write(b"abc", 0)
    h.commit()
    assert client.master.callers == [h.caller]
