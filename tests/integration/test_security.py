"""A secure cluster, as `kelp up` runs one: every port refuses whoever lacks the cluster's
credentials, roles are checked per method, and the credentials are readable by their owner
only, so another user of the machine cannot reach the cluster at all.

Real processes on loopback ports (tests/harness.py) with credentials made in the cluster's
data dir, a real FUSE mount over mTLS and CURVE, and a child process running as uid 65534.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
import zmq

from cluster.common import curve, rpc, tls
from cluster.common.certs import make_cluster_certs
from cluster.common.security import Transport
from protos import master_pb2, master_pb2_grpc, volume_pb2, volume_pb2_grpc
from tests.harness import Mount, dump_logs, kelp, make_cluster
from tests.integration.mountutil import needs_fuse, sh, stop_all
from tools.local_cluster import REPO_ROOT

pytestmark = [pytest.mark.timeout(120)]

NOBODY = 65534


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    base = tmp_path_factory.mktemp("secure")
    cluster = make_cluster(base, volumes=2, secure=True)
    mount = None
    try:
        cluster.start(timeout=40)
        if os.path.exists("/dev/fuse"):
            mount = Mount(cluster, base / "mnt", "--allow-other").start()
    except BaseException:
        dump_logs(cluster)
        if mount is not None:
            mount.stop()
        cluster.stop()
        raise
    yield cluster, mount
    stop_all(cluster, *([mount] if mount else []))


def _grpc_addresses(cluster) -> list[tuple[str, str]]:
    return [(spec.kind, spec.grpc_address) for spec in cluster.nodes.values()
            if spec.kind in ("master", "volume")]


@pytest.mark.mount
@needs_fuse
def test_a_mount_of_a_secure_cluster_copies_a_tree_and_a_large_file(secure, tmp_path):
    _, mount = secure
    src = tmp_path / "src"
    shutil.copytree(os.path.dirname(rpc.__file__), src)      # a tree of small files
    (src / "big.bin").write_bytes(os.urandom(9 << 20))       # and one over two chunks
    sh(f"cp -r {src} {mount.mountpoint}/tree")
    sh(f"diff -r {src} {mount.mountpoint}/tree")
    assert (mount.mountpoint / "tree" / "big.bin").stat().st_size == 9 << 20


def test_every_grpc_port_refuses_a_plain_connection(secure):
    cluster, _ = secure
    for kind, address in _grpc_addresses(cluster):
        assert not rpc.check_health(address, timeout=2), f"{kind} {address} answered in clear"
    with grpc.insecure_channel(cluster.master_addr) as ch:
        with pytest.raises(grpc.RpcError) as refused:
            master_pb2_grpc.MasterStub(ch).GetChunksAt(
                master_pb2.PathRequest(path="/"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    volume = next(a for k, a in _grpc_addresses(cluster) if k == "volume")
    with grpc.insecure_channel(volume) as ch:
        with pytest.raises(grpc.RpcError) as refused:
            volume_pb2_grpc.VolumeStub(ch).ReadNeedle(
                volume_pb2.ReadRequest(volume_id=1, key=1, cookie=1), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused(secure, tmp_path):
    cluster, _ = secure
    other = tmp_path / "other-ca"
    make_cluster_certs(other)
    for kind, address in _grpc_addresses(cluster):
        assert not tls.check_health(address, other, "admin", timeout=2), \
            f"{kind} {address} trusted a certificate of another CA"
        assert tls.check_health(address, cluster.layout.tls_dir, "admin", timeout=5)


def test_a_volume_certificate_cannot_run_admin_or_namespace_rpcs(secure):
    cluster, _ = secure
    as_volume = Transport("volume", cluster.layout.tls_dir)
    with as_volume.channel(cluster.master_addr, "master") as ch:
        stub = master_pb2_grpc.MasterStub(ch)
        for call in (lambda: stub.Vacuum(master_pb2.VacuumRequest(), timeout=5),
                     lambda: stub.Unlink(master_pb2.UnlinkRequest(path="/x"), timeout=5),
                     # a streaming call fails on its first read
                     lambda: list(stub.ListChunks(master_pb2.ListChunksRequest(), timeout=5))):
            with pytest.raises(grpc.RpcError) as denied:
                call()
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "role volume" in denied.value.details()
        stub.ClusterStatus(master_pb2.Empty(), timeout=5)   # what every role may ask


def _silent(address: str, configure) -> bool:
    """A DEALER set up by `configure` sends an open_session to `address`; True if no answer
    comes within 2 s (the frame never reached a handler)."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        configure(sock)
        sock.connect(f"tcp://{address}")
        m = master_pb2.Mutation(id=1, open_session=master_pb2.SessionRequest())
        sock.send(m.SerializeToString())
        answered = sock.poll(2000, zmq.POLLIN)
        sock.close(0)
        return not answered
    finally:
        ctx.term()


def test_zmq_ports_answer_only_known_curve_keys(secure):
    cluster, _ = secure
    master_zmq = cluster.nodes[cluster.layout.master_name].zmq_address
    server_public = curve.server_public(cluster.layout.tls_dir, "master")

    def unknown_key(sock):
        public, secret = zmq.curve_keypair()
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = server_public

    assert _silent(master_zmq, lambda sock: None), "a plain ZMQ peer got an answer"
    assert _silent(master_zmq, unknown_key), "an unknown CURVE key got an answer"
    assert _silent(cluster.gateway_addr, lambda sock: None)
    assert not _silent(master_zmq, lambda sock: Transport(
        "client", cluster.layout.tls_dir).zmq_client(sock, "master")), \
        "the cluster's own client key got no answer"


def test_binding_a_public_address_in_the_clear_is_refused(tmp_path):
    for node, extra in (("master", ["--data", str(tmp_path / "m")]),
                        ("volume", ["--dir", str(tmp_path / "v")]),
                        ("gateway", [])):
        r = kelp(node, "-ip", "0.0.0.0", "-p", "0", *extra, timeout=30)
        assert r.returncode == 2, (node, r.stderr.decode())
        err = r.stderr.decode()
        assert "--insecure" in err, err
        assert "0.0.0.0" in err, err
        assert "Traceback" not in err


# Run as uid 65534 by test_another_user_...: everything it needs is imported (and the foreign
# CA's credentials read) while it is still root, because a user's own files, the interpreter's
# standard library included, may be closed to nobody; then it drops to nobody and tries.
NOBODY_SCRIPT = """
import encodings.idna, json, os, sys
import grpc, zmq
from cluster.common import rpc, tls
from protos import master_pb2
args = json.loads(sys.argv[1])
foreign = {kind: tls.channel_factory(args["other_ca"], "admin", server_role=kind)
           for kind in ("master", "volume")}
os.setgroups([]); os.setgid(65534); os.setuid(65534)
failures = []
for path in args["keys"]:
    try:
        open(path, "rb").read()
        failures.append("read " + path)
    except PermissionError:
        pass
for kind, address in args["grpc"]:
    if rpc.check_health(address, timeout=3):
        failures.append("plain gRPC answered at " + address)
    if rpc.check_health(address, 3, foreign[kind]):
        failures.append("a certificate of another CA was trusted at " + address)
open_session = master_pb2.Mutation(id=1, open_session=master_pb2.SessionRequest())
for address, server_key in args["zmq"]:
    for curve in (False, True):
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if curve and server_key:
            sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
            sock.curve_serverkey = server_key.encode()
        sock.connect("tcp://" + address)
        sock.send(open_session.SerializeToString())
        if sock.poll(2000, zmq.POLLIN):
            failures.append(("a CURVE" if curve else "a plain") + " peer got an answer at "
                            + address)
        sock.close(0)
        ctx.term()
print(json.dumps(failures))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as uid 65534")
def test_another_user_can_neither_read_the_credentials_nor_reach_the_cluster(secure, tmp_path):
    """As uid 65534, without the cluster's credentials: every key file is unreadable; every
    gRPC port refuses a plain connection and one with a certificate from another CA; the
    master's and the gateway's ZMQ ports answer neither a plain peer nor an unknown key."""
    cluster, _ = secure
    tls_dir = cluster.layout.tls_dir
    assert stat.S_IMODE(os.stat(tls_dir).st_mode) == 0o700
    other = tmp_path / "other-ca"
    make_cluster_certs(other)
    args = {
        "keys": [os.path.join(tls_dir, n) for n in ("ca.key", "client.key", "admin.key",
                                                     "curve/client.key_secret")],
        "grpc": _grpc_addresses(cluster),
        "other_ca": str(other),
        "zmq": [(cluster.nodes[cluster.layout.master_name].zmq_address,
                 curve.server_public(tls_dir, "master").decode()),
                (cluster.gateway_addr, curve.server_public(tls_dir, "gateway").decode())],
    }
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    r = subprocess.run([sys.executable, "-c", NOBODY_SCRIPT, json.dumps(args)],
                       capture_output=True, text=True, timeout=90, env=env, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


@pytest.mark.mount
@needs_fuse
def test_file_modes_hold_for_another_user_through_the_mount(secure):
    _, mount = secure
    secret = mount.mountpoint / "secret"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        "cat", str(secret)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r.stdout
    assert "Permission denied" in r.stderr


def test_no_secret_reaches_a_log_status_or_metrics(secure):
    """Neither a private key nor a CURVE secret appears in any node's /status, /metrics or log."""
    cluster, _ = secure
    tls_dir = cluster.layout.tls_dir
    secrets = [Path(tls_dir, f"curve/{role}.key_secret").read_text()
               .split('secret-key = "')[1].split('"')[0]
               for role in ("master", "gateway", "client", "admin")]
    pages = []
    for spec in cluster.nodes.values():
        for page in ("status", "metrics"):
            with urllib.request.urlopen(f"http://{spec.http_address}/{page}", timeout=10) as r:
                pages.append(r.read().decode())
        pages.append(spec.log_path(cluster.root).read_text(errors="replace"))
    for text in pages:
        assert "PRIVATE KEY" not in text
        assert not any(secret in text for secret in secrets)
