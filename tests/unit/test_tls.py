"""Units of the security library (cluster/common/certs, credentials, curve, rolepolicy, tls):
files, modes, roles, rotation, verification, the role table and the role check. No sockets:
tests/integration/test_secure_transport.py runs them over real gRPC and ZMQ connections."""
from __future__ import annotations

import datetime
import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import zmq
from cryptography import x509
from cryptography.x509.oid import NameOID

from cluster.common import certs, curve, tls
from cluster.common.credentials import (
    ROLES,
    Credentials,
    CredentialsError,
    Throttle,
    fingerprint,
    read_private,
    write_file,
)
from cluster.common.rolepolicy import DEFAULT_POLICY, HEALTH, MASTER, VOLUME, RolePolicy
from protos import master_pb2, volume_pb2

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """One credentials directory for the read-only tests (key generation is not free)."""
    d = tmp_path_factory.mktemp("creds") / "kelp"
    certs.make_cluster_certs(d)
    return d


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# -- files and modes -------------------------------------------------------------------------


def test_every_role_gets_a_certificate_a_key_and_a_curve_pair(made):
    assert (made / "ca.crt").is_file()
    assert (made / "ca.key").is_file()
    for role in ROLES:
        c = Credentials.of(made, role)
        for path in (c.cert, c.key, c.curve_public, c.curve_secret):
            assert path.is_file(), path
    assert sorted(p.name for p in (made / "curve" / "clients").iterdir()) == \
        ["admin.key", "client.key"]


def test_secrets_are_0600_and_directories_0700(made):
    assert mode(made) == 0o700
    assert mode(made / "curve") == 0o700
    assert mode(made / "ca.key") == 0o600
    for role in ROLES:
        c = Credentials.of(made, role)
        assert mode(c.key) == 0o600
        assert mode(c.curve_secret) == 0o600
        assert mode(c.cert) & 0o022 == 0


def test_no_temporary_files_are_left_behind(made):
    assert not [p for p in made.rglob(".*")]


def test_write_file_creates_with_its_mode_even_under_a_lax_umask(tmp_path):
    old = os.umask(0)
    try:
        write_file(tmp_path / "k", b"secret", 0o600)
    finally:
        os.umask(old)
    assert mode(tmp_path / "k") == 0o600
    assert (tmp_path / "k").read_bytes() == b"secret"


def test_an_open_directory_is_tightened(tmp_path):
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    certs.make_cluster_certs(d, options=certs.CertOptions(roles=("master",),
                                                          zmq_client_roles=()))
    assert mode(d) == 0o700


def test_a_key_others_can_read_is_refused(made, tmp_path):
    key = tmp_path / "leaky.key"
    key.write_bytes((made / "client.key").read_bytes())
    key.chmod(0o644)
    with pytest.raises(CredentialsError, match="0600"):
        read_private(key)


# -- roles, verification ---------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_each_certificate_names_its_role(made, role):
    cert = certs.load_cert(Credentials.of(made, role).cert)
    assert certs.role_of_cert(cert) == role
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == role
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert f"{role}.kelpfs" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    certs.verify_leaf(cert, certs.load_cert(made / "ca.crt"))


def test_mounts_and_the_cli_cannot_serve_tls(made):
    def usages(role):
        cert = certs.load_cert(Credentials.of(made, role).cert)
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    server = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
    assert server not in usages("client")
    assert server not in usages("admin")
    assert server in usages("master")


def test_a_certificate_from_another_ca_does_not_verify(made, tmp_path):
    other = tmp_path / "other"
    certs.make_cluster_certs(other)
    ours = certs.load_cert(made / "ca.crt")
    theirs = certs.load_cert(other / "client.crt")
    with pytest.raises(CredentialsError, match="not issued by"):
        certs.verify_leaf(theirs, ours)


def test_an_expired_certificate_does_not_verify(made):
    cert = certs.load_cert(made / "volume.crt")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=400)
    with pytest.raises(CredentialsError, match="not valid now"):
        certs.verify_leaf(cert, certs.load_cert(made / "ca.crt"), later)


def test_role_of_uris_wants_exactly_one_known_role():
    assert certs.role_of_uris([b"kelpfs:role:gateway"]) == "gateway"
    assert certs.role_of_uris(["https://x", "kelpfs:role:admin"]) == "admin"
    assert certs.role_of_uris([]) is None
    assert certs.role_of_uris(["kelpfs:role:root"]) is None
    assert certs.role_of_uris(["kelpfs:role:client", "kelpfs:role:master"]) is None
    assert certs.role_of_pem(b"not a certificate") is None


# -- idempotence and rotation ----------------------------------------------------------------


def test_a_second_run_keeps_every_file(tmp_path):
    d = tmp_path / "c"
    first = certs.make_cluster_certs(d)
    before = snapshot(d)
    again = certs.make_cluster_certs(d)
    assert again.created == []
    assert sorted(again.kept) == sorted(set(first.created) - {d / "ca.key"})   # not needed
    assert snapshot(d) == before


def test_a_missing_or_broken_file_is_remade_alone(tmp_path):
    d = tmp_path / "c"
    certs.make_cluster_certs(d)
    before = snapshot(d)
    (d / "volume.key").unlink()
    (d / "curve" / "gateway.key_secret").write_bytes(b"garbage")
    report = certs.make_cluster_certs(d)
    assert sorted(p.name for p in report.created) == \
        ["gateway.key", "gateway.key_secret", "volume.crt", "volume.key"]
    after = snapshot(d)
    assert after["ca.crt"] == before["ca.crt"]
    assert after["master.crt"] == before["master.crt"]
    assert after["volume.crt"] != before["volume.crt"]


def test_force_rotates_every_leaf_under_the_same_ca(tmp_path):
    d = tmp_path / "c"
    certs.make_cluster_certs(d)
    before = snapshot(d)
    certs.make_cluster_certs(d, force=True)
    after = snapshot(d)
    assert after["ca.crt"] == before["ca.crt"]
    assert after["ca.key"] == before["ca.key"]
    changed = {name for name in before if before[name] != after[name]}
    assert changed == set(before) - {"ca.crt", "ca.key"}
    ca = certs.load_cert(d / "ca.crt")
    for role in ROLES:
        certs.verify_leaf(certs.load_cert(d / f"{role}.crt"), ca)
    assert curve.load_public(d / "curve" / "clients" / "client.key")[0] == \
        curve.load_keypair(Credentials.of(d, "client"))[0]
    assert mode(d / "master.key") == 0o600


def test_new_hosts_reissue_the_leaves(tmp_path):
    d = tmp_path / "c"
    certs.make_cluster_certs(d)
    report = certs.make_cluster_certs(d, hosts=("127.0.0.1", "localhost", "kelp-1.lan"))
    assert {p.name for p in report.created} == {f"{r}.{e}" for r in ROLES for e in ("crt", "key")}
    san = certs.load_cert(d / "master.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "kelp-1.lan" in san.get_values_for_type(x509.DNSName)


def test_a_ca_key_that_does_not_match_is_an_error(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    certs.make_cluster_certs(a)
    certs.make_cluster_certs(b)
    write_file(a / "ca.key", (b / "ca.key").read_bytes(), 0o600)
    certs.make_cluster_certs(a)                      # nothing to issue: the key is not read
    with pytest.raises(CredentialsError, match="does not match"):
        certs.make_cluster_certs(a, force=True)


def test_a_node_copy_without_the_ca_key_is_checked_but_cannot_issue(tmp_path):
    d = tmp_path / "node"
    certs.make_cluster_certs(d)
    (d / "ca.key").unlink()
    assert certs.make_cluster_certs(d).created == []
    (d / "gateway.crt").unlink()
    with pytest.raises(CredentialsError, match=r"ca\.key"):
        certs.make_cluster_certs(d)


def test_unknown_roles_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown role"):
        Credentials.of(tmp_path, "root")
    with pytest.raises(ValueError, match="unknown role"):
        certs.make_cluster_certs(tmp_path / "x", options=certs.CertOptions(roles=("root",)))


# -- CURVE key files and the key ring --------------------------------------------------------


def test_curve_pairs_load_and_match(made):
    for role in ROLES:
        public, secret = curve.load_keypair(Credentials.of(made, role))
        assert zmq.curve_public(secret) == public
        assert curve.server_public(made, role) == public


def test_a_curve_secret_that_does_not_match_its_public_key_is_refused(made, tmp_path):
    c = Credentials.of(tmp_path, "client")
    c.curve_dir.mkdir(mode=0o700)
    text = (made / "curve" / "client.key_secret").read_bytes()
    other_public = curve.server_public(made, "master")
    mine = curve.load_keypair(Credentials.of(made, "client"))[0]
    write_file(c.curve_secret, text.replace(mine, other_public), 0o600)
    with pytest.raises(CredentialsError, match="does not belong"):
        curve.load_keypair(c)


def test_the_key_ring_admits_listed_keys_with_their_roles(made, caplog):
    ring = curve.KeyRing.of(made)
    client = curve.server_public(made, "client")
    assert ring.role_of(client) == "client"
    assert ring.role_of(curve.server_public(made, "admin")) == "admin"
    assert ring.callback("kelpfs", client)
    stranger, _ = zmq.curve_keypair()
    with caplog.at_level(logging.WARNING, logger="cluster.common.curve"):
        assert not ring.callback("kelpfs", stranger)
        assert not ring.callback("kelpfs", stranger)   # the second refusal is not logged
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1
    assert fingerprint(stranger) in lines[0]
    assert stranger.decode() not in caplog.text


def test_the_key_ring_narrows_by_role_and_reloads(tmp_path):
    d = tmp_path / "c"
    certs.make_cluster_certs(d)
    mounts_only = curve.KeyRing.of(d, roles=("client",))
    assert mounts_only.role_of(curve.server_public(d, "admin")) is None
    ring = curve.KeyRing.of(d)
    extra, _ = zmq.curve_keypair()
    assert ring.role_of(extra) is None
    path = curve.authorize_key(d, "laptop-2", extra, "client")
    assert ring.role_of(extra) is None            # until reloaded
    assert ring.reload() == 3
    assert ring.role_of(extra) == "client"
    path.unlink()
    (d / "curve" / "clients" / "junk.key").write_text("no key here\n")
    assert ring.reload() == 2                     # revoked; the junk file is skipped
    assert ring.role_of(extra) is None


def test_authorize_key_refuses_odd_names_and_roles(made):
    key, _ = zmq.curve_keypair()
    with pytest.raises(ValueError, match="key name"):
        curve.authorize_key(made, "../evil", key, "client")
    with pytest.raises(ValueError, match="bad role"):
        curve.authorize_key(made, "x", key, "root")


def test_throttle_counts_what_it_suppresses():
    t = Throttle(interval=3600)
    assert t.admit("k") == 0
    assert t.admit("k") is None
    assert t.admit("k") is None
    assert t.admit("other") == 0
    t.interval = 0
    assert t.admit("k") == 2


# -- the role table --------------------------------------------------------------------------


def proto_methods() -> list[str]:
    return [f"/{s.full_name}/{m.name}"
            for module in (master_pb2, volume_pb2)
            for s in module.DESCRIPTOR.services_by_name.values() for m in s.methods]


def test_every_rpc_of_the_protos_has_its_own_row():
    missing = [m for m in proto_methods() if m not in DEFAULT_POLICY.rules]
    assert not missing, f"no role policy for {missing}"
    stale = [m for m in DEFAULT_POLICY.rules if m.startswith("/") and m not in proto_methods()]
    assert not stale, f"policy rows for methods the protos do not have: {stale}"


@pytest.mark.parametrize(("method", "allowed"), [
    (f"/{MASTER}/SendHeartbeat", {"volume"}),
    (f"/{MASTER}/RegisterVolumeServer", {"volume"}),
    (f"/{MASTER}/SendGatewayHeartbeat", {"gateway"}),
    (f"/{MASTER}/Assign", {"gateway"}),
    (f"/{MASTER}/CommitChunks", {"gateway"}),
    (f"/{MASTER}/GetAttr", {"client", "admin"}),
    (f"/{MASTER}/Rename", {"client", "admin"}),
    (f"/{MASTER}/LookupVolume", {"client", "admin", "gateway"}),
    (f"/{MASTER}/Vacuum", {"admin"}),
    (f"/{MASTER}/QueueOrphans", {"admin"}),
    (f"/{MASTER}/ClusterStatus", set(ROLES)),
    (f"/{VOLUME}/WriteNeedle", {"gateway"}),
    (f"/{VOLUME}/ReadNeedle", {"client", "admin", "volume"}),
    (f"/{VOLUME}/DeleteNeedle", {"master", "admin"}),
    (f"/{VOLUME}/Compact", {"master", "admin"}),
    (f"/{VOLUME}/AllocateVolume", {"master", "admin"}),
    (f"/{HEALTH}/Check", set(ROLES)),
    ("/kelp.master.Master/NotYetDecided", set()),
    ("/some.Other/Thing", set()),
])
def test_the_default_table(method, allowed):
    assert set(DEFAULT_POLICY.allowed(method)) == allowed
    for role in ROLES:
        assert DEFAULT_POLICY.permits(method, role) == (role in allowed)
    assert not DEFAULT_POLICY.permits(method, None)


def test_a_policy_can_be_widened_without_touching_the_default():
    method = f"/{VOLUME}/WriteNeedle"
    wider = DEFAULT_POLICY.allow(method, "admin")
    assert wider.permits(method, "admin")
    assert not DEFAULT_POLICY.permits(method, "admin")
    with pytest.raises(ValueError, match="unknown roles"):
        DEFAULT_POLICY.allow(method, "root")
    assert RolePolicy(rules={VOLUME: frozenset({"master"})}).permits(f"/{VOLUME}/X", "master")


# -- the role check, with stand-ins for gRPC's context ---------------------------------------


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, auth: dict):
        self._auth = auth
        self.aborted: tuple | None = None

    def auth_context(self):
        return self._auth

    def peer(self):
        return "ipv4:127.0.0.1:4242"

    def abort(self, code, details):
        self.aborted = (code, details)
        raise Aborted(details)


def tls_auth(role: str) -> dict:
    return {"transport_security_type": [b"ssl"], "peer_uri": [f"kelpfs:role:{role}".encode()]}


def intercepted(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    details = SimpleNamespace(method=method, invocation_metadata=())
    return tls.RoleCheck().intercept_service(lambda _d: handler, details)


def test_peer_role_reads_the_uri_or_the_certificate(made):
    assert tls.peer_role(FakeContext(tls_auth("volume"))) == "volume"
    pem = (made / "gateway.crt").read_bytes()
    assert tls.peer_role(FakeContext({"transport_security_type": [b"ssl"],
                                      "x509_pem_cert": [pem]})) == "gateway"
    assert tls.peer_role(FakeContext({})) is None                   # an insecure port
    assert tls.peer_role(FakeContext({"transport_security_type": [b"insecure"],
                                      "peer_uri": [b"kelpfs:role:admin"]})) is None


def test_role_check_lets_an_allowed_role_through():
    handler = intercepted(f"/{VOLUME}/ReadNeedle", grpc.unary_unary_rpc_method_handler(
        lambda request, context: ("read", request)))
    assert handler.unary_unary("req", FakeContext(tls_auth("client"))) == ("read", "req")


def test_role_check_refuses_with_permission_denied_and_one_log_line(caplog):
    handler = intercepted(f"/{VOLUME}/Compact", grpc.unary_unary_rpc_method_handler(
        lambda request, context: pytest.fail("the servicer must not run")))
    with caplog.at_level(logging.WARNING, logger="cluster.common.tls"):
        for _ in range(3):
            context = FakeContext(tls_auth("volume"))
            with pytest.raises(Aborted):
                handler.unary_unary("req", context)
    code, message = context.aborted
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert message == f"EACCES: role volume may not call /{VOLUME}/Compact"
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


def test_role_check_guards_streaming_methods_too():
    stream = intercepted(f"/{MASTER}/ListChunks", grpc.unary_stream_rpc_method_handler(
        lambda request, context: iter(["page1", "page2"])))
    assert list(stream.unary_stream("req", FakeContext(tls_auth("admin")))) == \
        ["page1", "page2"]
    with pytest.raises(Aborted):
        list(stream.unary_stream("req", FakeContext(tls_auth("client"))))
    upload = intercepted(f"/{VOLUME}/WriteNeedle", grpc.stream_unary_rpc_method_handler(
        lambda requests, context: sum(requests)))
    assert upload.stream_unary(iter([1, 2]), FakeContext(tls_auth("gateway"))) == 3
    with pytest.raises(Aborted):
        upload.stream_unary(iter([1, 2]), FakeContext({}))


def test_role_check_leaves_unknown_methods_to_grpc():
    details = SimpleNamespace(method="/x.Y/Z", invocation_metadata=())
    assert tls.RoleCheck().intercept_service(lambda _d: None, details) is None


def test_the_server_certificate_reloads_only_when_its_files_change(tmp_path):
    d = tmp_path / "c"
    certs.make_cluster_certs(d)
    reloader = tls.CertReloader(Credentials.of(d, "master"))
    assert reloader.initial is not None
    assert reloader() is None
    certs.make_cluster_certs(d, force=True)
    assert reloader() is not None
    assert reloader() is None
