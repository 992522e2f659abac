"""The master's permission checks wired into the Namespace (cluster/master/namespace.py), the
mutation table and the gRPC lookups: each case runs one call for nobody (or another user) on
a tree root made, and a refused call changes nothing. The rules themselves are tested table by
table in test_permissions.py; this checks that each call asks the right ones of the right
inodes."""
from __future__ import annotations

import errno
import stat

import crc32c
import grpc
import pytest

from cluster.common.errors import FsError
from cluster.master import mutations
from cluster.master.callbacks import CallbackTable
from cluster.master.namespace import Namespace
from cluster.master.namespace_rpc import NamespaceRpc
from cluster.master.permissions import MAY_EXEC, MAY_READ, MAY_WRITE, Caller
from cluster.master.sessions import SessionTable
from cluster.master.sqlite_store import SQLiteStore
from protos import master_pb2

pytestmark = pytest.mark.timeout(20)

NOBODY = Caller(65534, 65534)
ALICE = Caller(1000, 1000, frozenset({1000, 50}))
ROOT = Caller(0, 0)
NOBODY_PB = master_pb2.Caller(uid=65534, gid=65534)


@pytest.fixture
def ns(tmp_path):
    store = SQLiteStore(str(tmp_path / "meta.db"), synchronous="NORMAL")
    ns = Namespace(store, clock=lambda: 42)
    build_tree(ns)
    yield ns
    store.close()


def put(ns: Namespace, path: str, mode: int, uid: int = 0, gid: int = 0, data: bytes = b""):
    attr = ns.create(path, mode, uid, gid)
    ns.setattr(path, 0, mode=mode)   # exactly `mode`
    if data:
        ns.write_inline(attr.ino, 0, data, crc32c.crc32c(data), len(data))
    return attr


def build_tree(ns: Namespace) -> None:
    """As root: f600, f644, f666; sub (0755, empty), closed (0700, with g and a symlink l),
    open (0777, with mine owned by nobody), sticky (1777, with rootf 0666 and mine owned by
    nobody), alice (0755, alice's, setgid, group 50)."""
    for name, mode in (("f600", 0o600), ("f644", 0o644), ("f666", 0o666)):
        put(ns, f"/{name}", mode, data=b"secret")
    for name, mode in (("sub", 0o755), ("closed", 0o700), ("open", 0o777),
                       ("sticky", 0o1777)):
        ns.mkdir(f"/{name}", 0o755, 0, 0)
        ns.setattr(f"/{name}", 0, mode=mode)
    put(ns, "/closed/g", 0o644, data=b"hidden")
    ns.symlink("/closed/l", "g", 0, 0)
    ns.setxattr("/closed/g", "user.a", b"1")
    put(ns, "/sticky/rootf", 0o666)
    for path in ("/open/mine", "/sticky/mine"):
        put(ns, path, 0o644, 65534, 65534)
    ns.mkdir("/alice", 0o2755, 1000, 50)
    ns.setxattr("/f644", "user.a", b"1")
    ns.setxattr("/f644", "trusted.t", b"1")


def snapshot(ns: Namespace) -> dict:
    """Every name with its attributes (times aside: a refused call must not even touch)."""
    out = {}
    todo = ["/"]
    while todo:
        d = todo.pop()
        for name, a in ns.store.readdir(d):
            path = f"{d.rstrip('/')}/{name}"
            out[path] = (a.ino, a.mode, a.uid, a.gid, a.size, a.nlink, a.mtime_ns, a.ctime_ns)
            if a.is_dir:
                todo.append(path)
    return out


def outcome(fn) -> str:
    try:
        fn()
    except FsError as e:
        return errno.errorcode[e.errno]
    return "OK"


def m(op: str, **fields) -> tuple[str, object]:
    """A mutation (its Mutation.op field and its request) as the table runs it."""
    return op, getattr(master_pb2.Mutation(), op).__class__(**fields)


def ino_of(ns, path):
    return ns.store.getattr(path).ino


MUTATIONS = {
    # a directory without write permission for others
    "create in 0755": (m("create", path="/sub/new", mode=0o644), "EACCES"),
    "mkdir in 0755": (m("mkdir", path="/sub/new", mode=0o755), "EACCES"),
    "mknod in 0755": (m("mknod", path="/sub/p", mode=stat.S_IFIFO | 0o644), "EACCES"),
    "symlink in 0755": (m("symlink", path="/sub/s", target="x"), "EACCES"),
    "link in 0755": (m("link", existing_path="/f666", new_path="/sub/l"), "EACCES"),
    "rename in 0755": (m("rename", old_path="/f666", new_path="/new"), "EACCES"),
    "rename into 0755": (m("rename", old_path="/open/mine", new_path="/sub/x"), "EACCES"),
    "unlink in 0755": (m("unlink", path="/f666"), "EACCES"),
    "rmdir in 0755": (m("rmdir", path="/sub"), "EACCES"),
    "mkdir -p under 0755": (m("mkdir", path="/sub/a/b", mode=0o755, parents=True), "EACCES"),
    # a directory without search permission
    "create in 0700": (m("create", path="/closed/new", mode=0o644), "EACCES"),
    "unlink in 0700": (m("unlink", path="/closed/g"), "EACCES"),
    "setattr in 0700": (m("set_attr", path="/closed/g", mode=0o777), "EACCES"),
    "missing name in 0700": (m("unlink", path="/closed/nope"), "EACCES"),   # search first
    "missing name in 0755": (m("unlink", path="/sub/nope"), "ENOENT"),      # then ENOENT
    "existing name in 0755": (m("mkdir", path="/sub", mode=0o755), "EEXIST"),
    # root's files
    "O_CREAT of existing 0600": (m("create", path="/f600", mode=0o644), "EACCES"),
    "O_CREAT|O_TRUNC of 0644": (m("create", path="/f644", mode=0o644, truncate=True,
                                  access=MAY_READ), "EACCES"),
    "O_CREAT of existing 0644 for reading": (m("create", path="/f644", mode=0o644,
                                               access=MAY_READ), "OK"),
    "O_EXCL of existing 0600": (m("create", path="/f600", mode=0o644, exclusive=True),
                                "EEXIST"),
    "truncate 0644": (m("set_attr", path="/f644", size=0), "EACCES"),
    "truncate 0666": (m("set_attr", path="/f666", size=1), "OK"),
    "chmod not owner": (m("set_attr", path="/f666", mode=0o777), "EPERM"),
    "chown to self": (m("set_attr", path="/f666", uid=65534, gid=65534), "EPERM"),
    "times not owner": (m("set_attr", path="/f666", atime_ns=1, mtime_ns=1), "EPERM"),
    "times now 0644": (m("set_attr", path="/f644", atime_ns=1, mtime_ns=1, times_now=True),
                       "EACCES"),
    "times now 0666": (m("set_attr", path="/f666", atime_ns=1, mtime_ns=1, times_now=True),
                       "OK"),
    "link 0600 (protected_hardlinks)": (m("link", existing_path="/f600",
                                          new_path="/open/l"), "EPERM"),
    "link 0666": (m("link", existing_path="/f666", new_path="/open/l"), "OK"),
    # sticky directory
    "unlink other's in sticky": (m("unlink", path="/sticky/rootf"), "EPERM"),
    "rename other's in sticky": (m("rename", old_path="/sticky/rootf",
                                   new_path="/sticky/x"), "EPERM"),
    "rename over other's in sticky": (m("rename", old_path="/sticky/mine",
                                        new_path="/sticky/rootf"), "EPERM"),
    "exchange with other's in sticky": (m("rename", old_path="/sticky/mine",
                                          new_path="/sticky/rootf", exchange=True), "EPERM"),
    "unlink own in sticky": (m("unlink", path="/sticky/mine"), "OK"),
    "rename own in sticky": (m("rename", old_path="/sticky/mine", new_path="/sticky/y"), "OK"),
    "a directory to another parent": (m("rename", old_path="/sub", new_path="/open/sub"),
                                      "EACCES"),
    # an owner
    "chmod own": (m("set_attr", path="/open/mine", mode=0o600), "OK"),
    "times own": (m("set_attr", path="/open/mine", atime_ns=1, mtime_ns=1), "OK"),
    "chown own to root": (m("set_attr", path="/open/mine", uid=0), "EPERM"),
    "chgrp own to a foreign group": (m("set_attr", path="/open/mine", gid=0), "EPERM"),
    "rename own in 0777": (m("rename", old_path="/open/mine", new_path="/open/yours"), "OK"),
    # xattrs
    "setxattr user.* of 0644": (m("set_xattr", path="/f644", name="user.b", value=b"x"),
                                "EACCES"),
    "setxattr user.* of 0666": (m("set_xattr", path="/f666", name="user.b", value=b"x"),
                                "OK"),
    "setxattr trusted.*": (m("set_xattr", path="/f666", name="trusted.b", value=b"x"),
                           "EPERM"),
    "removexattr user.* of 0644": (m("remove_xattr", path="/f644", name="user.a"), "EACCES"),
    "setxattr in 0700": (m("set_xattr", path="/closed/g", name="user.b", value=b"x"),
                         "EACCES"),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_mutations_for_nobody(ns, case):
    (op, request), want = MUTATIONS[case]
    before = snapshot(ns)
    assert outcome(lambda: mutations.apply(ns, op, request, 0, NOBODY)) == want
    if want != "OK":
        assert snapshot(ns) == before
        assert ns.store.content(path="/f600").inline == b"secret"


@pytest.mark.parametrize("case", [c for c, (_, want) in MUTATIONS.items()
                                  if want in ("EACCES", "EPERM")])
def test_what_nobody_may_not_do_root_may(ns, case):
    op, request = MUTATIONS[case][0]
    assert outcome(lambda: mutations.apply(ns, op, request, 0, ROOT)) not in ("EACCES",
                                                                              "EPERM")


@pytest.mark.parametrize("case", ["unlink other's in sticky", "chmod not owner",
                                  "create in 0700", "setxattr trusted.*"])
def test_a_request_without_a_caller_is_the_superusers(ns, case):
    op, request = MUTATIONS[case][0]
    mutations.apply(ns, op, request)


def test_a_caller_in_the_request_counts_when_the_envelope_has_none(ns):
    request = master_pb2.PathRequest(path="/sub", caller=NOBODY_PB)
    assert outcome(lambda: mutations.apply(ns, "rmdir", request)) == "EACCES"
    envelope = master_pb2.Mutation(caller=master_pb2.Caller(uid=0))
    assert mutations.caller_of(envelope) == ROOT
    assert mutations.caller_of(master_pb2.Mutation()) is None
    assert mutations.caller_of(master_pb2.MkdirRequest()) is None   # no such field
    mutations.apply(ns, "rmdir", request, 0, mutations.caller_of(envelope))
    assert outcome(lambda: ns.store.getattr("/sub")) == "ENOENT"


def test_new_inodes_belong_to_the_caller_whatever_the_request_says(ns):
    a = mutations.apply(ns, "create", master_pb2.CreateRequest(
        path="/open/f", mode=0o2755, uid=0, gid=0), 0, NOBODY)
    assert (a.uid, a.gid) == (65534, 65534)
    assert a.mode & 0o7777 == 0o2755       # its own group: setgid stays
    d = ns.mkdir("/open/d", 0o755, 0, 0, who=NOBODY)
    assert (d.uid, d.gid) == (65534, 65534)
    s = ns.symlink("/open/s", "t", 0, 0, who=NOBODY)
    assert (s.uid, s.gid) == (65534, 65534)
    # In alice's setgid directory a file takes its group (50); setgid only for its members.
    f = ns.create("/alice/f", 0o2755, 0, 0, who=ALICE)
    assert (f.uid, f.gid, f.mode & 0o7777) == (1000, 50, 0o2755)
    ns.setattr("/alice", 0, mode=0o2777)
    g = ns.create("/alice/g", 0o2755, 0, 0, who=NOBODY)
    assert (g.uid, g.gid, g.mode & 0o7777) == (65534, 50, 0o755)
    # Root makes what the request says (the CLI's uploads, a mount's root).
    r = ns.create("/open/r", 0o644, 7, 8, who=ROOT)
    assert (r.uid, r.gid) == (7, 8)


def test_chmod_by_a_non_member_clears_setgid(ns):
    ns.setattr("/open/mine", 0, gid=12)
    a = ns.setattr("/open/mine", 0, who=NOBODY, mode=0o2755)
    assert a.mode & 0o7777 == 0o755
    a = ns.setattr("/open/mine", 0, who=ROOT, mode=0o2755)
    assert a.mode & 0o7777 == 0o2755


def test_times_now_are_the_masters_clock(ns):
    a = ns.setattr("/f666", 0, who=NOBODY, times_now=True, atime_ns=7, mtime_ns=None)
    assert (a.atime_ns, a.mtime_ns != 42) == (42, True)
    a = ns.setattr("/f666", 0, times_now=True, atime_ns=None, mtime_ns=9)
    assert a.mtime_ns == 42


def test_commits_to_an_open_file(ns):
    f644, mine = ino_of(ns, "/f644"), ino_of(ns, "/open/mine")
    ns.setattr("/open/mine", 0, mode=0o444)   # created read-only, written through its open

    def inline(ino, who):
        return lambda: ns.write_inline(ino, 0, b"x", crc32c.crc32c(b"x"), 1, who=who)

    assert outcome(inline(f644, NOBODY)) == "EACCES"
    assert outcome(lambda: ns.commit(f644, [], 10, who=NOBODY)) == "EACCES"
    assert outcome(lambda: ns.setattr(None, f644, who=NOBODY, size=0)) == "EACCES"
    assert ns.store.content(path="/f644").inline == b"secret"
    assert outcome(lambda: ns.commit(mine, [], 10, who=NOBODY)) == "OK"
    ns.setattr(None, mine, size=0)
    assert outcome(inline(mine, NOBODY)) == "OK"
    assert outcome(lambda: ns.setattr(None, mine, who=NOBODY, size=0)) == "OK"   # ftruncate
    assert outcome(lambda: ns.setattr("/open/mine", 0, who=NOBODY, size=0)) == "EACCES"
    assert outcome(inline(f644, None)) == "OK"   # a gateway's commit: no caller


LOOKUPS = {
    "stat in 0700": (lambda ns: ns.getattr("/closed/g", NOBODY), "EACCES"),
    "stat of a missing name in 0700": (lambda ns: ns.getattr("/closed/x", NOBODY), "EACCES"),
    "stat of a missing name": (lambda ns: ns.getattr("/sub/x", NOBODY), "ENOENT"),
    "stat through a file": (lambda ns: ns.getattr("/f600/x", NOBODY), "ENOTDIR"),
    "stat of 0600": (lambda ns: ns.getattr("/f600", NOBODY), "OK"),
    "stat of /": (lambda ns: ns.getattr("/", NOBODY), "OK"),
    "access r of 0600": (lambda ns: ns.getattr("/f600", NOBODY, MAY_READ), "EACCES"),
    "access w of 0666": (lambda ns: ns.getattr("/f666", NOBODY, MAY_WRITE), "OK"),
    "access x of 0644 for root": (lambda ns: ns.getattr("/f644", ROOT, MAY_EXEC), "EACCES"),
    "access x of a dir for root": (lambda ns: ns.getattr("/closed", ROOT, MAY_EXEC), "OK"),
    "access x of 0700 dir": (lambda ns: ns.getattr("/closed", NOBODY, MAY_EXEC), "EACCES"),
    "open 0600 for reading": (lambda ns: ns.content_at("/f600", NOBODY, MAY_READ), "EACCES"),
    "open 0644 for reading": (lambda ns: ns.content_at("/f644", NOBODY, MAY_READ), "OK"),
    "open 0644 for writing": (lambda ns: ns.content_at("/f644", NOBODY, MAY_WRITE), "EACCES"),
    "open in 0700": (lambda ns: ns.content_at("/closed/g", NOBODY, MAY_READ), "EACCES"),
    "list 0700": (lambda ns: ns.readdir("/closed", who=NOBODY), "EACCES"),
    "list 0755": (lambda ns: ns.readdir("/sub", who=NOBODY), "OK"),
    "list a file": (lambda ns: ns.readdir("/f644", who=NOBODY), "ENOTDIR"),
    "readlink in 0700": (lambda ns: ns.readlink("/closed/l", NOBODY), "EACCES"),
    "getxattr user.* of 0600": (lambda ns: ns.getxattr("/f600", "user.a", NOBODY), "EACCES"),
    "getxattr user.* of 0644": (lambda ns: ns.getxattr("/f644", "user.a", NOBODY), "OK"),
    "getxattr trusted.*": (lambda ns: ns.getxattr("/f644", "trusted.t", NOBODY), "ENODATA"),
    "getxattr in 0700": (lambda ns: ns.getxattr("/closed/g", "user.a", NOBODY), "EACCES"),
    "listxattr in 0700": (lambda ns: ns.listxattr("/closed/g", NOBODY), "EACCES"),
}


@pytest.mark.parametrize("case", list(LOOKUPS))
def test_lookups_for_nobody(ns, case):
    fn, want = LOOKUPS[case]
    assert outcome(lambda: fn(ns)) == want


def test_the_owner_and_root_see_what_nobody_may_not(ns):
    assert ns.getattr("/closed/g", ROOT).ino == ino_of(ns, "/closed/g")
    assert [n for n, _ in ns.readdir("/closed", who=ROOT)] == ["g", "l"]
    assert ns.content_at("/closed/g", ROOT, MAY_READ | MAY_WRITE).inline == b"hidden"
    assert ns.listxattr("/f644", NOBODY) == ["user.a"]
    assert ns.listxattr("/f644", ROOT) == ["trusted.t", "user.a"]
    ns.setattr("/closed", 0, uid=65534)       # now nobody's own
    assert [n for n, _ in ns.readdir("/closed", who=NOBODY)] == ["g", "l"]
    assert ns.readlink("/closed/l", NOBODY) == "g"


class _Context:
    """What rpc.servicer_method needs of a gRPC context."""

    def __init__(self):
        self.code = None

    def abort(self, code, message):
        self.code, self.message = code, message
        raise Exception()   # grpcio's abort raises a bare Exception

    def is_active(self):
        return True


class _Servicer(NamespaceRpc):
    def __init__(self, ns):
        self.namespace, self.store = ns, ns.store
        self.sessions, self.callbacks = SessionTable(), CallbackTable()
        self.mutation_server = None


@pytest.mark.parametrize(("method", "request_", "code", "prefix"), [
    ("GetAttr", master_pb2.PathRequest(path="/closed/g", caller=NOBODY_PB),
     grpc.StatusCode.PERMISSION_DENIED, "EACCES"),
    ("GetChunksAt", master_pb2.PathRequest(path="/f600", caller=NOBODY_PB, access=MAY_READ),
     grpc.StatusCode.PERMISSION_DENIED, "EACCES"),
    ("Readlink", master_pb2.PathRequest(path="/closed/l", caller=NOBODY_PB),
     grpc.StatusCode.PERMISSION_DENIED, "EACCES"),
    ("GetXattr", master_pb2.XattrRequest(path="/f600", name="user.a", caller=NOBODY_PB),
     grpc.StatusCode.PERMISSION_DENIED, "EACCES"),
    ("ListXattr", master_pb2.PathRequest(path="/closed/g", caller=NOBODY_PB),
     grpc.StatusCode.PERMISSION_DENIED, "EACCES"),
    ("SetAttr", master_pb2.SetAttrRequest(path="/f666", mode=0o777),   # no caller: root's
     None, ""),
    ("Rmdir", master_pb2.PathRequest(path="/sub", caller=NOBODY_PB),
     grpc.StatusCode.PERMISSION_DENIED, "EACCES"),
    ("Unlink", master_pb2.UnlinkRequest(path="/sticky/rootf"), None, ""),
])
def test_grpc_lookups_and_mutations_take_the_requests_caller(ns, method, request_, code,
                                                            prefix):
    context = _Context()
    try:
        getattr(_Servicer(ns), method)(request_, context)
    except Exception:
        assert context.code is not None
    assert context.code == code
    if code is not None:
        assert context.message.startswith(prefix)


def test_grpc_readdir_checks_read_permission(ns):
    servicer, context = _Servicer(ns), _Context()
    with pytest.raises(Exception):   # noqa: B017, PT011  grpcio's abort: a bare Exception
        list(servicer.ReadDir(master_pb2.ReadDirRequest(path="/closed", caller=NOBODY_PB),
                              context))
    assert context.code == grpc.StatusCode.PERMISSION_DENIED
    pages = list(servicer.ReadDir(master_pb2.ReadDirRequest(path="/closed"), _Context()))
    assert [e.name for e in pages[0].entries] == ["g", "l"]
