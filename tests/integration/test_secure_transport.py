"""The security library over real connections on 127.0.0.1 (port 0): gRPC with mutual TLS and
the role check (tls, rolepolicy), ZMQ with CURVE and the ZAP key set (curve).

The gRPC servers are tiny Volume and Master servicers registered the way the nodes register
theirs (rpc.add_servicer), behind tls.secure_server's RoleCheck."""
from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import zmq

from cluster.common import certs, curve, rpc, tls
from protos import master_pb2, master_pb2_grpc, volume_pb2, volume_pb2_grpc

pytestmark = pytest.mark.timeout(60)

LOCAL_POOL = [("grpc.use_local_subchannel_pool", 1)]   # no connection shared between tests


class TinyVolume(volume_pb2_grpc.VolumeServicer):
    def ReadNeedle(self, request, context):
        return volume_pb2.ReadResponse(data=b"needle %d" % request.key)

    def Compact(self, request, context):
        return volume_pb2.CompactResponse()


class TinyMaster(master_pb2_grpc.MasterServicer):
    def ListChunks(self, request, context):
        yield master_pb2.ChunkRefPage()
        yield master_pb2.ChunkRefPage()


@pytest.fixture(scope="module")
def creds(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sec") / "creds"
    certs.make_cluster_certs(d)
    return d


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> Path:
    """Another cluster's credentials: a CA our servers do not trust."""
    d = tmp_path_factory.mktemp("sec") / "foreign"
    certs.make_cluster_certs(d)
    return d


def serve(creds: Path, role: str, add_fn, servicer, reloading: bool = False) -> tuple:
    server, health = tls.secure_server(max_workers=4)
    rpc.add_servicer(server, add_fn, servicer)
    port = tls.bind_secure(server, "127.0.0.1", 0, creds, role, reloading=reloading)
    server.start()
    rpc.set_serving(health)
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def volume_addr(creds) -> Iterator[str]:
    server, address = serve(creds, "volume", volume_pb2_grpc.add_VolumeServicer_to_server,
                            TinyVolume())
    yield address
    server.stop(0)


@pytest.fixture(scope="module")
def master_addr(creds) -> Iterator[str]:
    server, address = serve(creds, "master", master_pb2_grpc.add_MasterServicer_to_server,
                            TinyMaster())
    yield address
    server.stop(0)


def read(channel: grpc.Channel) -> volume_pb2.ReadResponse:
    return volume_pb2_grpc.VolumeStub(channel).ReadNeedle(
        volume_pb2.ReadRequest(volume_id=1, key=7), timeout=5)


def refused(channel: grpc.Channel) -> grpc.StatusCode:
    with channel, pytest.raises(grpc.RpcError) as e:
        read(channel)
    return e.value.code()


# -- gRPC ------------------------------------------------------------------------------------


def test_a_mount_certificate_reads(creds, volume_addr):
    with tls.secure_channel(volume_addr, creds, "client", LOCAL_POOL) as ch:
        assert read(ch).data == b"needle 7"


def test_a_plain_channel_is_refused(volume_addr):
    assert refused(grpc.insecure_channel(volume_addr, options=LOCAL_POOL)) == \
        grpc.StatusCode.UNAVAILABLE


def test_tls_without_a_client_certificate_is_refused(creds, volume_addr):
    only_ca = grpc.ssl_channel_credentials((creds / "ca.crt").read_bytes())
    assert refused(grpc.secure_channel(volume_addr, only_ca, options=LOCAL_POOL)) == \
        grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused(creds, foreign, volume_addr):
    # Theirs trusts our server's CA, so only the server's check can refuse it.
    mixed = grpc.ssl_channel_credentials(
        root_certificates=(creds / "ca.crt").read_bytes(),
        private_key=(foreign / "client.key").read_bytes(),
        certificate_chain=(foreign / "client.crt").read_bytes())
    assert refused(grpc.secure_channel(volume_addr, mixed, options=LOCAL_POOL)) == \
        grpc.StatusCode.UNAVAILABLE


def test_a_client_does_not_trust_a_server_of_another_ca(foreign, volume_addr):
    assert refused(tls.secure_channel(volume_addr, foreign, "client", LOCAL_POOL)) == \
        grpc.StatusCode.UNAVAILABLE


def test_a_volume_certificate_may_not_compact(creds, volume_addr, caplog):
    with caplog.at_level(logging.WARNING, logger="cluster.common.tls"), \
            tls.secure_channel(volume_addr, creds, "volume", LOCAL_POOL) as ch, \
            pytest.raises(grpc.RpcError) as e:
        volume_pb2_grpc.VolumeStub(ch).Compact(volume_pb2.VolumeRef(volume_id=1), timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.value.details() == \
        "EACCES: role volume may not call /kelp.volume.Volume/Compact"
    assert "refused /kelp.volume.Volume/Compact from role volume" in caplog.text
    with tls.secure_channel(volume_addr, creds, "master", LOCAL_POOL) as ch:
        volume_pb2_grpc.VolumeStub(ch).Compact(volume_pb2.VolumeRef(volume_id=1), timeout=5)


def test_a_streaming_method_is_checked_too(creds, master_addr):
    request = master_pb2.ListChunksRequest()
    with tls.secure_channel(master_addr, creds, "admin", LOCAL_POOL) as ch:
        assert len(list(master_pb2_grpc.MasterStub(ch).ListChunks(request, timeout=5))) == 2
    with tls.secure_channel(master_addr, creds, "client", LOCAL_POOL) as ch, \
            pytest.raises(grpc.RpcError) as e:
        list(master_pb2_grpc.MasterStub(ch).ListChunks(request, timeout=5))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_server_role_pins_what_the_server_is(creds, volume_addr):
    with tls.secure_channel(volume_addr, creds, "client", LOCAL_POOL,
                            server_role="volume") as ch:
        assert read(ch).data == b"needle 7"
    # The volume server's certificate is not a master's: the handshake fails.
    assert refused(tls.secure_channel(volume_addr, creds, "client", LOCAL_POOL,
                                      server_role="master")) == grpc.StatusCode.UNAVAILABLE


def test_channel_factory_feeds_a_channel_cache(creds, volume_addr):
    cache = rpc.VolumeStubs(tls.channel_factory(creds, "client", server_role="volume"))
    try:
        reply = cache.get(volume_addr).ReadNeedle(volume_pb2.ReadRequest(key=3), timeout=5)
        assert reply.data == b"needle 3"
    finally:
        cache.close()


def test_every_role_may_check_health(creds, volume_addr):
    for role in certs.ROLES:
        assert tls.check_health(volume_addr, creds, role, timeout=5)
    assert not rpc.check_health(volume_addr, timeout=1)      # the plain check cannot


def test_a_reloading_server_picks_up_a_new_ca(tmp_path):
    d = tmp_path / "live"
    certs.make_cluster_certs(d)
    old = tmp_path / "old"
    shutil.copytree(d, old)
    server, address = serve(d, "volume", volume_pb2_grpc.add_VolumeServicer_to_server,
                            TinyVolume(), reloading=True)
    try:
        with tls.secure_channel(address, old, "client", LOCAL_POOL) as ch:
            assert read(ch).data == b"needle 7"
        # A new cluster identity in the same place (the CA itself replaced).
        for p in d.glob("*.*"):
            p.unlink()
        certs.make_cluster_certs(d)
        with tls.secure_channel(address, d, "client", LOCAL_POOL) as ch:
            assert read(ch).data == b"needle 7"
        assert refused(tls.secure_channel(address, old, "client", LOCAL_POOL)) == \
            grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


# -- ZMQ CURVE -------------------------------------------------------------------------------


HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class Server:
    """A CURVE ROUTER, its authenticator, and a monitor of its handshakes (so a test knows a
    refused peer did try, rather than that nothing happened)."""

    def __init__(self, ctx: zmq.Context, creds: Path, role: str,
                 auth: curve.ZapAuthenticator):
        self.router = ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        curve.curve_server(self.router, creds, role, auth)
        self.monitor = self.router.get_monitor_socket(HANDSHAKE_EVENTS)
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.auth = auth

    def handshake(self, timeout_ms: int = 10_000) -> int:
        """The next handshake event (zmq.EVENT_HANDSHAKE_*)."""
        assert self.monitor.poll(timeout_ms), "no handshake within the timeout"
        return zmq.utils.monitor.recv_monitor_message(self.monitor)["event"]

    def refused(self) -> int:
        """Wait for a refused handshake, then check no message reached recv."""
        event = self.handshake()
        assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert self.router.poll(500) == 0
        return event

    def drain(self) -> None:
        while self.monitor.poll(300):
            self.monitor.recv_multipart()

    def close(self) -> None:
        self.router.disable_monitor()
        self.monitor.close(linger=0)
        self.router.close()


@pytest.fixture
def gateway(creds) -> Iterator[Server]:
    """A CURVE ROUTER with role gateway's keys, admitting the keys in curve/clients/."""
    ctx = zmq.Context()
    auth = curve.ZapAuthenticator(ctx, curve.KeyRing.of(creds))
    auth.start()
    server = Server(ctx, creds, "gateway", auth)
    yield server
    server.close()
    auth.stop()
    ctx.term()


@pytest.fixture
def client_ctx() -> Iterator[zmq.Context]:
    """The connecting side, in its own context as it would be in its own process."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def dealer(ctx: zmq.Context, endpoint: str, setup) -> zmq.Socket:
    """A connected DEALER that sent one message (keep it referenced: a collected socket
    closes before it ever handshakes)."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    setup(sock)
    sock.connect(endpoint)
    sock.send(b"hello")
    return sock


def test_a_known_key_gets_through_and_carries_its_role(creds, gateway, client_ctx):
    sock = dealer(client_ctx, gateway.endpoint,
                  lambda s: curve.curve_client(s, creds, "client", "gateway"))
    assert gateway.handshake() == zmq.EVENT_HANDSHAKE_SUCCEEDED
    assert gateway.router.poll(10_000)
    identity, body = gateway.router.recv_multipart(copy=False)
    assert body.bytes == b"hello"
    assert curve.peer_role(body) == "client"
    gateway.router.send_multipart([identity.bytes, b"welcome"])
    assert sock.poll(10_000)
    assert sock.recv() == b"welcome"


def test_an_unknown_key_never_reaches_recv(creds, gateway, client_ctx, caplog):
    public, secret = zmq.curve_keypair()

    def stranger(s):
        s.curve_publickey, s.curve_secretkey = public, secret
        s.curve_serverkey = curve.server_public(creds, "gateway")

    with caplog.at_level(logging.WARNING, logger="cluster.common.curve"):
        sock = dealer(client_ctx, gateway.endpoint, stranger)
        assert gateway.refused() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    sock.close()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert curve.fingerprint(public) in refusals[0]
    assert public.decode() not in caplog.text
    assert secret.decode() not in caplog.text


def test_a_plain_client_never_reaches_recv(gateway, client_ctx):
    sock = dealer(client_ctx, gateway.endpoint, lambda s: None)
    gateway.refused()
    sock.close()


def test_a_known_key_talking_to_the_wrong_server_key_gets_nowhere(creds, gateway, client_ctx):
    sock = dealer(client_ctx, gateway.endpoint,
                  lambda s: curve.curve_client(s, creds, "client", "master"))
    gateway.refused()
    sock.close()


def test_an_authenticator_narrowed_to_mounts_refuses_the_cli(creds, client_ctx):
    ctx = zmq.Context()
    with curve.ZapAuthenticator(ctx, curve.KeyRing.of(creds, roles=("client",))) as auth:
        server = Server(ctx, creds, "gateway", auth)
        cli = dealer(client_ctx, server.endpoint,
                     lambda s: curve.curve_client(s, creds, "admin", "gateway"))
        assert server.refused() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        mount = dealer(client_ctx, server.endpoint,
                       lambda s: curve.curve_client(s, creds, "client", "gateway"))
        assert server.router.poll(10_000)
        assert curve.peer_role(server.router.recv_multipart(copy=False)[1]) == "client"
        for sock in (cli, mount):
            sock.close()
        server.close()
    ctx.term()


def test_reload_admits_a_new_key_and_revokes_a_removed_one(tmp_path, client_ctx):
    d = tmp_path / "c"
    certs.make_cluster_certs(d)
    ctx = zmq.Context()
    ring = curve.KeyRing.of(d)
    with curve.ZapAuthenticator(ctx, ring) as auth:
        server = Server(ctx, d, "master", auth)
        public, secret = zmq.curve_keypair()

        def laptop(s):
            s.curve_publickey, s.curve_secretkey = public, secret
            s.curve_serverkey = curve.server_public(d, "master")

        sockets = [dealer(client_ctx, server.endpoint, laptop)]
        assert server.refused() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        sockets[0].close()
        curve.authorize_key(d, "laptop", public, "admin")
        ring.reload()
        sockets.append(dealer(client_ctx, server.endpoint, laptop))
        assert server.router.poll(10_000)
        assert curve.peer_role(server.router.recv_multipart(copy=False)[1]) == "admin"

        for sock in sockets:
            sock.close()
        server.drain()   # the laptop's handshakes (a refused peer may have retried)

        (d / "curve" / "clients" / "client.key").unlink()
        ring.reload()
        mount = dealer(client_ctx, server.endpoint,
                       lambda s: curve.curve_client(s, d, "client", "master"))
        assert server.refused() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        mount.close()
        server.close()
    ctx.term()


def test_curve_server_refuses_to_run_without_a_handler(creds):
    ctx, other = zmq.Context(), zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    try:
        not_started = curve.ZapAuthenticator(ctx, curve.KeyRing.of(creds))
        with pytest.raises(certs.CredentialsError, match="ZapAuthenticator"):
            curve.curve_server(router, creds, "gateway", not_started)
        with curve.ZapAuthenticator(other, curve.KeyRing.of(creds)) as elsewhere, \
                pytest.raises(certs.CredentialsError, match="own context"):
            curve.curve_server(router, creds, "gateway", elsewhere)
    finally:
        router.close()
        ctx.term()
        other.term()
