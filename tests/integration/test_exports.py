"""Exports through real processes: a secure cluster whose master is given an exports file,
named client credentials (`make_cluster_certs(clients=...)`, what `kelp certs --client`
makes), and FUSE mounts of subtrees (`--subdir`) with those credentials.

What a session may reach is the master's decision, so besides the mounts the tests talk to
the master directly with a team's credentials, as a program that ignores the mount would:
paths outside the export are ENOENT or EACCES whatever the client sends.
"""
from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import threading

import pytest

from cluster.common.certs import make_cluster_certs
from cluster.common.errors import FsError
from cluster.common.security import Transport
from fusefs.master_client import MasterClient
from fusefs.session import MountSession
from protos import master_pb2
from tests.harness import Mount, client_for, dump_logs, make_cluster, wait_until
from tests.integration.mountutil import needs_fuse, stop_all

pytestmark = [pytest.mark.timeout(120)]

EXPORTS = """
[[export]]
path = "/team-a"
clients = ["team-a"]
access = "rw"            # root_squash: the default

[[export]]
path = "/shelf"
clients = ["team-a"]
access = "ro"
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts as root (root squash)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("exports")
    rules = base / "exports.toml"
    rules.write_text(EXPORTS)
    cluster = make_cluster(base, volumes=1, secure=True,
                           extra_master_args=["--exports", str(rules)])
    make_cluster_certs(cluster.layout.tls_dir, clients=("team-a", "team-b"))
    try:
        cluster.start(timeout=40)
        admin = client_for(cluster)
        try:
            for d, mode, owner in (("/team-a", 0o777, 0), ("/team-b", 0o755, 0),
                                   ("/shelf", 0o755, 0)):
                admin.mkdirs(d)
                admin.master.call("SetAttr", master_pb2.SetAttrRequest(
                    path=d, mode=mode, uid=owner, gid=owner))
            for path, data, mode, owner in (
                    ("/team-b/secret", b"team b only\n", 0o644, 0),
                    ("/shelf/book", b"read me\n", 0o644, 0),
                    ("/team-a/alice-only", b"alice's\n", 0o600, 1000)):
                admin.upload(io.BytesIO(data), path)
                admin.master.call("SetAttr", master_pb2.SetAttrRequest(
                    path=path, mode=mode, uid=owner, gid=owner))
        finally:
            admin.close()
    except BaseException:
        dump_logs(cluster)
        cluster.stop()
        raise
    cluster.rules = rules
    yield cluster
    stop_all(cluster)


def team_dir(cluster, name: str) -> str:
    return os.path.join(cluster.layout.tls_dir, "clients", name)


def mount_of(cluster, mnt, team: str, subdir: str) -> Mount:
    return Mount(cluster, mnt, "--tls-dir", team_dir(cluster, team), "--subdir", subdir,
                 "--allow-other")


def try_mount(cluster, mnt, tls_dir: str, subdir: str) -> subprocess.CompletedProcess:
    """mount.py in the foreground, expected to refuse: its exit code and its line."""
    mnt.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "mount.py", str(mnt), "--master",
                           cluster.master_addr, "--tls-dir", tls_dir, "--subdir", subdir],
                          capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


@pytest.fixture(scope="module")
def team_a(cluster, tmp_path_factory):
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no FUSE")
    mount = mount_of(cluster, tmp_path_factory.mktemp("a") / "mnt", "team-a", "/team-a")
    try:
        mount.start()
    except BaseException:
        dump_logs(cluster)
        raise
    yield mount
    mount.stop()


# ---------------------------------------------------------------- through a mount


@pytest.mark.mount
@needs_fuse
def test_a_mount_of_an_export_sees_only_its_subtree(cluster, team_a):
    mnt = team_a.mountpoint
    assert sorted(os.listdir(mnt)) == ["alice-only"]
    (mnt / "notes").write_bytes(b"hello\n")
    os.mkdir(mnt / "sub")
    (mnt / "sub" / "deep").write_bytes(b"deep\n")
    big = os.urandom(300 << 10)          # past inline_max: committed through the gateway,
    (mnt / "big").write_bytes(big)       # which names the writer to the master
    assert (mnt / "big").read_bytes() == big
    assert not (mnt / "team-b").exists()
    assert not (mnt / "team-a").exists()
    admin = client_for(cluster)
    try:
        assert admin.read_all("/team-a/notes") == b"hello\n"
        assert admin.read_all("/team-a/sub/deep") == b"deep\n"
        assert admin.read_all("/team-a/big") == big
    finally:
        admin.close()


@pytest.mark.mount
@needs_fuse
@needs_root
def test_root_is_squashed_through_the_export(team_a):
    mnt = team_a.mountpoint
    (mnt / "by-root").write_bytes(b"x")
    st = os.stat(mnt / "by-root")
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    with pytest.raises(PermissionError):
        (mnt / "alice-only").read_bytes()
    with pytest.raises(PermissionError):
        os.chown(mnt / "by-root", 0, 0)


@pytest.mark.mount
@needs_fuse
def test_a_read_only_export_is_erofs(cluster, tmp_path):
    mount = mount_of(cluster, tmp_path / "ro", "team-a", "/shelf").start()
    try:
        mnt = mount.mountpoint
        assert (mnt / "book").read_bytes() == b"read me\n"
        for change in (lambda: (mnt / "new").write_bytes(b"x"),
                       lambda: os.mkdir(mnt / "d"),
                       lambda: os.unlink(mnt / "book"),
                       lambda: open(mnt / "book", "ab").close()):
            with pytest.raises(OSError, match="Read-only file system") as e:
                change()
            assert e.value.errno == errno.EROFS, change
        assert (mnt / "book").read_bytes() == b"read me\n"
    finally:
        mount.stop()


@pytest.mark.mount
@needs_fuse
def test_an_identity_without_an_export_cannot_mount(cluster, tmp_path):
    # the default client credentials: identity "client", in no export
    refused = try_mount(cluster, tmp_path / "m1", cluster.layout.tls_dir, "/team-a")
    assert refused.returncode == 1, refused.stderr
    assert "refused" in refused.stderr
    assert "no export of /team-a" in refused.stderr
    # another team's subtree
    refused = try_mount(cluster, tmp_path / "m2", team_dir(cluster, "team-b"), "/team-a")
    assert refused.returncode == 1, refused.stderr
    assert "no export of /team-a for client 'team-b'" in refused.stderr
    # the team's own identity, above its export
    refused = try_mount(cluster, tmp_path / "m3", team_dir(cluster, "team-a"), "/")
    assert refused.returncode == 1, refused.stderr
    assert not os.path.ismount(tmp_path / "m1")


# ---------------------------------------------------------------- the master, asked directly


class _Session:
    """A session opened as a mount opens one, with a team's credentials."""

    def __init__(self, cluster, team: str, subdir: str):
        self.transport = Transport("client", team_dir(cluster, team))
        self.master = MasterClient(cluster.master_addr, transport=self.transport, retry_for=10)
        self.session = MountSession(self.master.mutation_address, lambda brk: None,
                                    lambda: None, self.transport, subdir=subdir).start()
        self.master.session_id = lambda: self.session.sid

    def close(self):
        self.session.close()
        self.master.close()


def _errno(call) -> int:
    with pytest.raises(FsError) as e:
        call()
    return e.value.errno


def test_crafted_paths_outside_the_export_are_refused_by_the_master(cluster):
    s = _Session(cluster, "team-a", "/team-a")
    try:
        assert s.session.sid
        assert not s.session.refused
        m = s.master
        assert m.call("GetAttr", master_pb2.PathRequest(path="/team-a")).ino
        secret = client_for(cluster)
        try:
            secret_ino = secret.stat("/team-b/secret").ino
        finally:
            secret.close()
        assert _errno(lambda: m.call("GetAttr", master_pb2.PathRequest(
            path="/team-b/secret"))) == errno.ENOENT
        assert _errno(lambda: m.call("GetChunksAt", master_pb2.PathRequest(
            path="/team-a/../team-b/secret"))) in (errno.ENOENT, errno.EINVAL)
        assert _errno(lambda: list(m.readdir("/"))) == errno.ENOENT
        assert _errno(lambda: m.call("GetChunks", master_pb2.InoRequest(
            ino=secret_ino))) == errno.ENOENT
        assert _errno(lambda: m.call("GetAttrByIno", master_pb2.InoRequest(
            ino=secret_ino))) == errno.ENOENT
        assert _errno(lambda: m.mutate("mkdir", master_pb2.MkdirRequest(
            path="/team-b/planted", mode=0o755))) == errno.EACCES
        assert _errno(lambda: m.mutate("unlink", master_pb2.UnlinkRequest(
            path="/team-b/secret"))) == errno.EACCES
        assert _errno(lambda: m.mutate("rename", master_pb2.RenameRequest(
            old_path="/team-b/secret", new_path="/team-a/stolen"))) == errno.EACCES
        assert _errno(lambda: m.mutate("link", master_pb2.LinkRequest(
            existing_path="/team-b/secret", new_path="/team-a/stolen"))) == errno.EACCES
        assert _errno(lambda: m.mutate("set_attr", master_pb2.SetAttrRequest(
            ino=secret_ino, mode=0o777))) == errno.EACCES
    finally:
        s.close()


def test_a_session_cannot_be_used_by_another_identity_or_without_one(cluster):
    s = _Session(cluster, "team-a", "/team-a")
    other = MasterClient(cluster.master_addr, retry_for=10,
                         transport=Transport("client", team_dir(cluster, "team-b")))
    try:
        other.session_id = lambda: s.session.sid
        assert _errno(lambda: other.call("GetAttr", master_pb2.PathRequest(
            path="/team-a"))) == errno.EACCES
        assert _errno(lambda: other.mutate("mkdir", master_pb2.MkdirRequest(
            path="/team-a/x", mode=0o755))) == errno.EACCES
        other.session_id = lambda: 0     # no session: no "*" export, nothing to see
        assert _errno(lambda: other.call("GetAttr", master_pb2.PathRequest(
            path="/team-a"))) == errno.ENOENT
        assert _errno(lambda: other.call("Mkdir", master_pb2.MkdirRequest(
            path="/team-a/x", mode=0o755))) == errno.EACCES
    finally:
        other.close()
        s.close()


def test_sighup_reloads_the_exports_for_new_sessions(cluster):
    refused = _Session(cluster, "team-b", "/team-b")
    try:
        assert refused.session.refused
    finally:
        refused.close()
    original = cluster.rules.read_text()
    cluster.rules.write_text(original + '\n[[export]]\npath = "/team-b"\nclients = ["team-b"]\n'
                                        'access = "ro"\n')
    master = next(s for s in cluster.nodes.values() if s.kind == "master")
    try:
        os.kill(master.pid, signal.SIGHUP)
        done = threading.Event()

        def opens() -> bool:
            s = _Session(cluster, "team-b", "/team-b")
            try:
                ok = bool(s.session.sid) and not s.session.refused
                if ok:
                    assert s.master.call("GetAttr", master_pb2.PathRequest(
                        path="/team-b/secret")).size == len(b"team b only\n")
                    assert _errno(lambda: s.master.mutate("unlink", master_pb2.UnlinkRequest(
                        path="/team-b/secret"))) == errno.EROFS
                    done.set()
                return ok
            finally:
                s.close()

        wait_until(opens, timeout=15, interval=0.5, what="team-b's export after SIGHUP")
        assert done.is_set()
    finally:
        cluster.rules.write_text(original)
        os.kill(master.pid, signal.SIGHUP)


def test_kelp_certs_client_makes_a_directory_to_hand_over(tmp_path):
    from tests.harness import kelp
    out = kelp("certs", str(tmp_path / "tls"), "--client", "team-x", "--client", "team-y",
               check=True).stdout.decode()
    for name in ("team-x", "team-y"):
        sub = tmp_path / "tls" / "clients" / name
        assert f"client {name}: {sub}" in out
        assert (sub / "client.crt").exists()
        assert (sub / "curve" / "client.key_secret").stat().st_mode & 0o077 == 0
        assert (tmp_path / "tls" / "curve" / "clients" / f"{name}.key").exists()
    bad = kelp("certs", str(tmp_path / "tls"), "--client", "admin")
    assert bad.returncode == 1
    assert "is a role's" in bad.stderr.decode()
