"""Exports: the file format and its errors, which export a session gets, squash, and the
ScopedNamespace that holds every call of a session to its export (cluster/master/exports.py,
scoped.py); the mount's side of a --subdir (fusefs/paths.py Subdir); named client
credentials (certs.py, curve.py)."""
from __future__ import annotations

import errno

import crc32c
import pytest

from cluster.common import curve
from cluster.common.certs import (
    check_client_name,
    identity_of_cert,
    identity_of_uris,
    load_cert,
    make_cluster_certs,
    role_of_cert,
)
from cluster.common.config import ConfigError
from cluster.common.errors import FsError
from cluster.master import exports, mutations
from cluster.master.exports import Export, ExportTable, Scope
from cluster.master.namespace import Namespace
from cluster.master.permissions import Caller
from cluster.master.scoped import ScopedNamespace, view_for
from cluster.master.sessions import SessionTable
from cluster.master.sqlite_store import SQLiteStore
from fusefs.paths import Subdir
from protos import master_pb2

pytestmark = pytest.mark.timeout(30)

RULES = """
[[export]]
path = "/team-a"
clients = ["team-a"]
access = "rw"

[[export]]
path = "/team-a/archive"
clients = ["team-a", "auditor"]
access = "ro"

[[export]]
path = "/pub"
clients = ["*"]
access = "ro"
root_squash = false

[[export]]
path = "/scratch"
clients = "*"
all_squash = true
anon_uid = 1234
anon_gid = 4321
"""

ALICE = Caller(1000, 1000, frozenset({1000, 50}))
ROOT = Caller(0, 0)


# ---------------------------------------------------------------- the file


def test_parse_reads_every_key_and_the_defaults():
    table = exports.parse(RULES)
    a, archive, pub, scratch = table.exports
    assert a == Export("/team-a", ("team-a",), read_only=False, root_squash=True)
    assert archive.read_only
    assert archive.clients == ("team-a", "auditor")
    assert pub.read_only
    assert not pub.root_squash
    assert pub.clients == ("*",)
    assert scratch.all_squash
    assert (scratch.anon_uid, scratch.anon_gid) == (1234, 4321)
    assert a.anon_uid == a.anon_gid == 65534


@pytest.mark.parametrize(("text", "says"), [
    ("[[export]\npath=", "exports:"),                                   # not TOML
    ('[[export]]\npath = "team-a"\nclients = ["a"]', "absolute"),
    ('[[export]]\npath = "/a"', "clients"),
    ('[[export]]\npath = "/a"\nclients = []', "clients"),
    ('[[export]]\npath = "/a"\nclients = ["a"]\naccess = "wr"', "access"),
    ('[[export]]\npath = "/a"\nclients = ["a"]\nroot_squash = "yes"', "root_squash"),
    ('[[export]]\npath = "/a"\nclients = ["a"]\nanon_uid = -1', "anon_uid"),
    ('[[export]]\npath = "/a"\nclients = ["a"]\nsquash = true', "unknown key 'squash'"),
    ('[[exports]]\npath = "/a"', "unknown table"),
    ('[[export]]\npath = "/a/../b"\nclients = ["a"]', "path"),
    ('[[export]]\npath = "/a"\nclients = ["a"]\n[[export]]\npath = "/a/"\nclients = ["a"]',
     "twice"),
])
def test_a_bad_file_is_one_config_error_line(text, says):
    with pytest.raises(ConfigError) as e:
        exports.parse(text)
    assert says in str(e.value)
    assert "\n" not in str(e.value)


def test_load_without_a_file_is_the_implicit_export(tmp_path):
    table = exports.load(None)
    assert table.exports == (exports.IMPLICIT_EXPORT,)
    scope = table.resolve("anyone", "/")
    assert scope.unrestricted
    with pytest.raises(ConfigError, match="cannot read exports file"):
        exports.load(str(tmp_path / "missing.toml"))
    path = tmp_path / "exports.toml"
    path.write_text(RULES)
    assert len(exports.load(str(path)).exports) == 4


# ---------------------------------------------------------------- matching


def test_resolve_takes_the_longest_export_that_admits_the_identity():
    table = exports.parse(RULES)
    assert table.resolve("team-a", "/team-a") == Scope("/team-a", table.exports[0])
    assert table.resolve("team-a", "/team-a/src//") == Scope("/team-a/src", table.exports[0])
    deep = table.resolve("team-a", "/team-a/archive/2024")
    assert deep.root == "/team-a/archive/2024"
    assert deep.read_only
    assert table.resolve("auditor", "/team-a/archive").read_only
    assert table.resolve("team-b", "/pub").export.path == "/pub"


@pytest.mark.parametrize(("identity", "subdir"), [
    ("team-b", "/team-a"),          # another team's subtree
    ("auditor", "/team-a"),         # only the archive below it
    ("team-a", "/"),                # above its export
    ("team-a", "/team-ab"),         # a name that merely starts the same
    ("nobody-known", "/"),
])
def test_resolve_refuses_with_eacces(identity, subdir):
    with pytest.raises(FsError) as e:
        exports.parse(RULES).resolve(identity, subdir)
    assert e.value.errno == errno.EACCES


def test_scope_checks_paths_lexically():
    scope = exports.parse(RULES).resolve("team-a", "/team-a")
    assert scope.reaches("/team-a")
    assert scope.reaches("/team-a//x/")
    assert not scope.reaches("/team-ab/x")
    assert not scope.reaches("/")
    with pytest.raises(FsError) as e:
        scope.lookup("/team-b/f")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(FsError) as e:
        scope.change("/team-a/x", "/team-b/x")
    assert e.value.errno == errno.EACCES
    ro = exports.parse(RULES).resolve("team-a", "/team-a/archive")
    with pytest.raises(FsError) as e:
        ro.change("/team-a/archive/x")
    assert e.value.errno == errno.EROFS


def test_squash():
    a, _, pub, scratch = exports.parse(RULES).exports
    anon = Caller(65534, 65534)
    assert Scope("/team-a", a).squash(ROOT) == anon
    assert Scope("/team-a", a).squash(None) == anon          # callerless: the superuser
    assert Scope("/team-a", a).squash(ALICE) == ALICE
    assert Scope("/team-a", a).squash(Caller(1000, 0, frozenset({0, 7}))) == \
        Caller(1000, 65534, frozenset({7}))
    assert Scope("/pub", pub).squash(ROOT) == ROOT           # root_squash = false
    assert Scope("/scratch", scratch).squash(ALICE) == Caller(1234, 4321)


def test_sessionless_scope_goes_by_each_paths_export():
    table = exports.parse(RULES)
    anyone = table.sessionless()
    assert not anyone.unrestricted
    anyone.lookup("/pub/x")
    with pytest.raises(FsError) as e:
        anyone.lookup("/team-a/x")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(FsError) as e:
        anyone.change("/pub/x")
    assert e.value.errno == errno.EROFS
    anyone.change("/scratch/x")
    # a team's own export is for its sessions
    with pytest.raises(FsError) as e:
        anyone.lookup("/team-a/x")
    assert e.value.errno == errno.ENOENT
    two = exports.parse('[[export]]\npath = "/x"\nclients = ["*"]\n'
                        '[[export]]\npath = "/y"\nclients = ["*"]\n')
    with pytest.raises(FsError) as e:
        two.sessionless().change("/x/a", "/y/a")
    assert e.value.errno == errno.EXDEV
    assert ExportTable().sessionless().unrestricted


# ---------------------------------------------------------------- the namespace through a scope


@pytest.fixture
def ns(tmp_path):
    store = SQLiteStore(str(tmp_path / "meta.db"), synchronous="NORMAL")
    ns = Namespace(store, clock=lambda: 42)
    for d in ("/team-a", "/team-a/archive", "/team-b", "/pub", "/scratch"):
        ns.mkdir(d, 0o777, 0, 0)
        ns.setattr(d, 0, mode=0o777)
    for path, data in (("/team-a/f", b"a"), ("/team-b/secret", b"b"),
                       ("/team-a/archive/old", b"c")):
        attr = ns.create(path, 0o644, 1000, 1000)
        ns.write_inline(attr.ino, 0, data, crc32c.crc32c(data), len(data))
    ns.create("/team-a/mine", 0o600, 1000, 1000)
    yield ns
    store.close()


def scoped(ns, identity="team-a", subdir="/team-a", session=7) -> ScopedNamespace:
    return ScopedNamespace(ns, exports.parse(RULES).resolve(identity, subdir), session)


def errno_of(call) -> int:
    with pytest.raises(FsError) as e:
        call()
    return e.value.errno


def test_a_session_sees_only_its_subtree(ns):
    view = scoped(ns)
    assert view.getattr("/team-a/f", ALICE).size == 1
    assert [n for n, _ in view.readdir("/team-a", who=ALICE)] == ["archive", "f", "mine"]
    for call in (lambda: view.getattr("/team-b/secret", ALICE),
                 lambda: view.content_at("/team-b/secret", ALICE),
                 lambda: view.readdir("/", who=ALICE),
                 lambda: view.readlink("/team-b/secret", ALICE),
                 lambda: view.getxattr("/team-b/secret", "user.x", ALICE),
                 lambda: view.listxattr("/team-b", ALICE)):
        assert errno_of(call) == errno.ENOENT


def test_changes_outside_are_eacces_and_both_names_are_checked(ns):
    view = scoped(ns)
    for call in (lambda: view.create("/team-b/new", 0o644, 0, 0, who=ALICE),
                 lambda: view.mkdir("/team-b/d", 0o755, 0, 0, who=ALICE),
                 lambda: view.unlink("/team-b/secret", who=ALICE),
                 lambda: view.rename("/team-a/f", "/team-b/f", who=ALICE),
                 lambda: view.rename("/team-b/secret", "/team-a/stolen", who=ALICE),
                 lambda: view.link("/team-b/secret", "/team-a/stolen", who=ALICE),
                 lambda: view.symlink("/team-b/l", "/x", 0, 0, who=ALICE),
                 lambda: view.setattr("/team-b/secret", 0, who=ALICE, mode=0o777),
                 lambda: view.setxattr("/team-b/secret", "user.a", b"1", who=ALICE)):
        assert errno_of(call) == errno.EACCES
    assert ns.getattr("/team-b/secret").mode & 0o777 == 0o644
    view.rename("/team-a/f", "/team-a/g", who=ALICE)   # inside: fine


def test_a_read_only_export_refuses_every_change_with_erofs(ns):
    view = scoped(ns, subdir="/team-a/archive")
    old = ns.getattr("/team-a/archive/old")
    for call in (lambda: view.create("/team-a/archive/n", 0o644, 0, 0, who=ALICE),
                 lambda: view.mkdir("/team-a/archive/d", 0o755, 0, 0, who=ALICE),
                 lambda: view.unlink("/team-a/archive/old", who=ALICE),
                 lambda: view.setattr(None, old.ino, who=ALICE, size=0),
                 lambda: view.write_inline(old.ino, 0, b"x", crc32c.crc32c(b"x"), 1, who=ALICE),
                 lambda: view.commit(old.ino, [], 0, who=ALICE),
                 lambda: view.release_inode(old.ino)):
        assert errno_of(call) == errno.EROFS
    assert view.content_at("/team-a/archive/old", ALICE).inline == b"c"
    assert errno_of(lambda: view.getattr("/team-a/archive/old", ALICE, 2)) == errno.EROFS


def test_root_is_squashed_for_checks_and_new_owners(ns):
    view = scoped(ns)
    attr = view.create("/team-a/by-root", 0o644, 0, 0, who=ROOT)
    assert (attr.uid, attr.gid) == (65534, 65534)
    attr = view.mkdir("/team-a/dir-by-root", 0o755, 0, 0, who=ROOT)
    assert (attr.uid, attr.gid) == (65534, 65534)
    # root cannot read alice's 0600 file, nor chown
    assert errno_of(lambda: view.content_at("/team-a/mine", ROOT, 4)) == errno.EACCES
    assert errno_of(lambda: view.setattr("/team-a/f", 0, who=ROOT, uid=0)) == errno.EPERM
    # ... and a call without a caller is the superuser, squashed the same
    assert errno_of(lambda: view.content_at("/team-a/mine", None, 4)) == errno.EACCES
    # a session of an export without root_squash keeps root
    pub = ScopedNamespace(ns, exports.parse(RULES).resolve("x", "/pub"))
    assert pub.getattr("/pub", ROOT).ino


def test_all_squash_makes_everyone_anon(ns):
    view = scoped(ns, identity="someone", subdir="/scratch")
    attr = view.create("/scratch/f", 0o644, 1000, 1000, who=ALICE)
    assert (attr.uid, attr.gid) == (1234, 4321)


def test_inode_calls_reach_only_inodes_linked_under_the_root(ns):
    view = scoped(ns)
    inside = ns.getattr("/team-a/f").ino
    deep = ns.getattr("/team-a/archive/old").ino
    outside = ns.getattr("/team-b/secret").ino
    assert view.getattr_ino(inside).ino == inside
    assert view.content_ino(deep).inline == b"c"
    assert errno_of(lambda: view.getattr_ino(outside)) == errno.ENOENT
    assert errno_of(lambda: view.content_ino(outside)) == errno.ENOENT
    data = b"x"
    for call in (lambda: view.write_inline(outside, 0, data, crc32c.crc32c(data), 1,
                                           who=ALICE),
                 lambda: view.commit(outside, [], 0, who=ALICE),
                 lambda: view.setattr(None, outside, who=ALICE, size=0),
                 lambda: view.release_inode(outside)):
        assert errno_of(call) == errno.EACCES
    view.write_inline(inside, 0, data, crc32c.crc32c(data), 1, who=ALICE)
    # a hard link into the subtree (made by an administrator) makes the inode reachable
    ns.link("/team-b/secret", "/team-a/linked")
    assert view.getattr_ino(outside).ino == outside


def test_a_file_this_session_keeps_open_after_unlink_stays_reachable(ns):
    view = scoped(ns, session=77)
    ino = ns.getattr("/team-a/f").ino
    view.unlink("/team-a/f", keep_open=True, session=77, who=ALICE)
    assert view.getattr_ino(ino).ino == ino
    assert errno_of(lambda: scoped(ns, session=78).getattr_ino(ino)) == errno.ENOENT
    view.release_inode(ino)


def test_the_mutation_table_goes_through_the_view(ns):
    view = scoped(ns)
    request = master_pb2.MkdirRequest(path="/team-b/x", mode=0o755)
    assert errno_of(lambda: mutations.apply(view, "mkdir", request, 7, ALICE)) == errno.EACCES
    request = master_pb2.CreateRequest(path="/team-a/x", mode=0o644)
    assert mutations.apply(view, "create", request, 7, ROOT).uid == 65534


# ---------------------------------------------------------------- sessions and identities


def test_view_for_picks_by_role_session_and_identity(ns):
    table = exports.parse(RULES)
    sessions = SessionTable()
    s = sessions.open(b"peer", identity="team-a", scope=table.resolve("team-a", "/team-a"))
    view = view_for(ns, sessions, table, ("client", "team-a"), s.sid)
    assert isinstance(view, ScopedNamespace)
    assert view.scope.root == "/team-a"
    # another identity naming the session
    assert errno_of(lambda: view_for(ns, sessions, table, ("client", "team-b"), s.sid)) == \
        errno.EACCES
    # the CLI is the administrator's
    assert view_for(ns, sessions, table, ("admin", "admin"), 0) is ns
    # a gateway commits as the session's mount, callerless commits not squashed
    gw = view_for(ns, sessions, table, ("gateway", "gateway"), s.sid)
    assert isinstance(gw, ScopedNamespace)
    assert gw._who(None) is None
    assert view_for(ns, sessions, table, ("gateway", "gateway"), 0) is ns
    # ... checking the session against the client that sent the chunk
    assert isinstance(view_for(ns, sessions, table, ("gateway", "gateway"), s.sid,
                               "client:team-a"), ScopedNamespace)
    assert errno_of(lambda: view_for(ns, sessions, table, ("gateway", "gateway"), s.sid,
                                     "client:team-b")) == errno.EACCES
    assert view_for(ns, sessions, table, ("gateway", "gateway"), 0, "admin:admin") is ns
    forged = view_for(ns, sessions, table, ("gateway", "gateway"), 0, "client:team-b")
    assert isinstance(forged, ScopedNamespace)
    assert forged.scope.unrestricted is False
    # no session: what "*" exports give
    anyone = view_for(ns, sessions, table, ("client", "team-b"), 0)
    assert errno_of(lambda: anyone.getattr("/team-a/f", ALICE)) == errno.ENOENT
    assert anyone.getattr("/pub", ALICE).ino
    # a session the master does not know (yet): try again
    assert errno_of(lambda: view_for(ns, sessions, table, ("client", "team-a"), 12345)) == \
        errno.EAGAIN
    # without exports, everything as before (an insecure cluster: peer None)
    assert view_for(ns, SessionTable(), ExportTable(), None, 12345) is ns


def test_a_session_renews_only_for_its_identity():
    sessions = SessionTable()
    s = sessions.open(b"p", identity="team-a")
    assert not sessions.renew(s.sid, b"q", "team-b")
    assert sessions.renew(s.sid, b"q", "team-a")
    quiet = sessions.open(b"p", callbacks=False)
    assert sessions.alive(quiet.sid)
    assert not sessions.granting(quiet.sid)


# ---------------------------------------------------------------- the mount's subdir


def test_subdir_translates_both_ways():
    sub = Subdir("/team-a/")
    assert sub.root == "/team-a"
    assert sub.to_cluster("/") == "/team-a"
    assert sub.to_cluster("/x/y") == "/team-a/x/y"
    assert sub.to_mount("/team-a") == "/"
    assert sub.to_mount("/team-a/x") == "/x"
    assert sub.to_mount("/team-ab/x") is None
    assert sub.to_mount("/") is None
    assert sub.tree_to_mount("/") == "/"
    assert sub.tree_to_mount("/team-a") == "/"
    assert sub.tree_to_mount("/team-a/d") == "/d"
    assert sub.tree_to_mount("/team-b") is None
    request = master_pb2.RenameRequest(old_path="/a", new_path="/b")
    out = sub.request(request)
    assert (out.old_path, out.new_path) == ("/team-a/a", "/team-a/b")
    assert request.old_path == "/a"   # a copy
    by_ino = master_pb2.SetAttrRequest(ino=5, size=0)
    assert sub.request(by_ino).path == ""
    assert Subdir("/").request(request) is request
    with pytest.raises(ValueError, match="may not hold"):
        Subdir("/a/../b")


# ---------------------------------------------------------------- named clients


def test_named_client_credentials(tmp_path):
    root = tmp_path / "tls"
    make_cluster_certs(root, clients=("team-a",))
    sub = root / "clients" / "team-a"
    cert = load_cert(sub / "client.crt")
    assert role_of_cert(cert) == "client"
    assert identity_of_cert(cert) == "team-a"
    assert identity_of_cert(load_cert(root / "client.crt")) == "client"
    assert identity_of_cert(load_cert(root / "admin.crt")) == "admin"
    for name in ("ca.crt", "curve/client.key", "curve/client.key_secret", "curve/master.key",
                 "curve/gateway.key"):
        assert (sub / name).exists(), name
    ring = curve.KeyRing.of(root)
    public = curve.load_keypair(curve.Credentials.of(sub, "client"))[0]
    assert ring.role_of(public) == "client"
    assert ring.identity_of(public) == "team-a"
    assert ring.user_id(public) == "client:team-a"
    # idempotent, and a plain run keeps (completes) the named clients made before
    again = make_cluster_certs(root)
    assert not again.created
    assert identity_of_cert(load_cert(sub / "client.crt")) == "team-a"


def test_identity_uris_and_names():
    assert identity_of_uris(["kelpfs:role:client", "kelpfs:client:team-a"]) == "team-a"
    assert identity_of_uris(["kelpfs:role:admin"]) == "admin"
    assert identity_of_uris(["kelpfs:client:team-a"]) is None       # no role
    assert identity_of_uris(["kelpfs:role:client", "kelpfs:client:a",
                             "kelpfs:client:b"]) is None
    for bad in ("", "client", "admin", "a/b", "a b", "x" * 65):
        with pytest.raises(ValueError, match="client name"):
            check_client_name(bad)
    assert check_client_name("team-a_1") == "team-a_1"


# ---------------------------------------------------------------- the gRPC servicer


class _Context:
    """A gRPC context whose peer presented a client certificate of `identity`."""

    def __init__(self, identity: str, role: str = "client"):
        self.code = None
        uris = [f"kelpfs:role:{role}".encode()]
        if identity != role:
            uris.append(f"kelpfs:client:{identity}".encode())
        self._auth = {"transport_security_type": [b"ssl"], "peer_uri": uris}

    def auth_context(self):
        return self._auth

    def abort(self, code, message):
        self.code, self.message = code, message
        raise RuntimeError(message)   # grpcio's abort raises

    def is_active(self):
        return True


def _servicer(ns):
    from cluster.master.callbacks import CallbackTable
    from cluster.master.namespace_rpc import NamespaceRpc

    class Servicer(NamespaceRpc):
        def __init__(self):
            self.namespace, self.store = ns, ns.store
            self.sessions, self.callbacks = SessionTable(), CallbackTable()
            self.mutation_server = None
            self.exports = exports.parse(RULES)

    return Servicer()


def test_the_servicer_holds_each_call_to_its_peers_session(ns):
    import grpc
    servicer = _servicer(ns)
    s = servicer.sessions.open(b"p", identity="team-a",
                               scope=servicer.exports.resolve("team-a", "/team-a"))

    def status(method, request, identity="team-a", role="client"):
        context = _Context(identity, role)
        try:
            result = getattr(servicer, method)(request, context)
            if method == "ReadDir":
                list(result)
        except RuntimeError:
            return context.code
        return None

    secret = ns.getattr("/team-b/secret").ino
    assert status("GetAttr", master_pb2.PathRequest(path="/team-a/f", session=s.sid)) is None
    assert status("GetAttr", master_pb2.PathRequest(path="/team-b/secret", session=s.sid)) \
        == grpc.StatusCode.NOT_FOUND
    assert status("GetChunks", master_pb2.InoRequest(ino=secret, session=s.sid)) == \
        grpc.StatusCode.NOT_FOUND
    assert status("ReadDir", master_pb2.ReadDirRequest(path="/", session=s.sid)) == \
        grpc.StatusCode.NOT_FOUND
    # no session: no "*" export covers /team-b
    assert status("Mkdir", master_pb2.MkdirRequest(path="/team-b/x")) == \
        grpc.StatusCode.PERMISSION_DENIED
    # another identity naming the session
    assert status("GetAttr", master_pb2.PathRequest(path="/team-a/f", session=s.sid),
                  identity="team-b") == grpc.StatusCode.PERMISSION_DENIED
    # the CLI sees everything
    assert status("GetChunks", master_pb2.InoRequest(ino=secret), "admin", "admin") is None
