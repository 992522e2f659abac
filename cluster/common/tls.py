"""gRPC with mutual TLS and a per-method role check, for every port the cluster serves.

Why mutual: an insecure port lets any local user (or anyone on the LAN) read, write and
delete needles and files. With these credentials a server accepts only peers holding a
certificate from the cluster CA, and RoleCheck then lets each peer call only what its role
needs (cluster.common.rolepolicy), so e.g. a mount's key cannot delete needles.

Server:  server, health = secure_server()                    # RoleCheck(DEFAULT_POLICY) in
         rpc.add_servicer(server, add_MasterServicer_to_server, servicer)
         port = bind_secure(server, host, port, creds_dir, "master")
Client:  ch = secure_channel("host:port", creds_dir, "client", server_role="master")
         rpc.ChannelCache(channel_factory(creds_dir, "master", server_role="volume"))
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health

from cluster.common import rpc
from cluster.common.certs import (
    ROLE_DNS_SUFFIX,
    identity_of_pem,
    identity_of_uris,
    role_of_pem,
    role_of_uris,
)
from cluster.common.credentials import Credentials, CredentialsError, Throttle
from cluster.common.rolepolicy import DEFAULT_POLICY, RolePolicy

log = logging.getLogger(__name__)


# -- credentials -----------------------------------------------------------------------------


def server_credentials(directory: str | os.PathLike, role: str, *,
                       reloading: bool = False) -> grpc.ServerCredentials:
    """TLS for a server of `role`: presents the role's certificate, and requires a client
    certificate signed by the cluster CA. With `reloading`, each new handshake picks up
    files re-issued on disk (make_cluster_certs(force=True)) without a restart."""
    creds = Credentials.of(directory, role)
    ca, cert, key = creds.tls_pem()
    if not reloading:
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                           require_client_auth=True)
    fetcher = CertReloader(creds)
    return grpc.dynamic_ssl_server_credentials(fetcher.initial, fetcher,
                                               require_client_authentication=True)


class CertReloader:
    """gRPC's certificate_configuration_fetcher: a new configuration when any of the role's
    files changed since the last one, else None (keep the current one)."""

    def __init__(self, creds: Credentials):
        self.creds = creds
        self._stamp = self._stat()
        self.initial = self._configuration()

    def _stat(self) -> tuple:
        c = self.creds
        return tuple((st.st_mtime_ns, st.st_ino)
                     for st in map(os.stat, (c.ca_cert, c.cert, c.key)))

    def _configuration(self):
        ca, cert, key = self.creds.tls_pem()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def __call__(self):
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return None
            config = self._configuration()
        except (OSError, CredentialsError) as e:
            log.warning("keeping the current TLS certificate: %s", e)
            return None
        self._stamp = stamp
        log.info("TLS certificate of role %s reloaded from %s", self.creds.role, self.creds.dir)
        return config


def channel_credentials(directory: str | os.PathLike, role: str) -> grpc.ChannelCredentials:
    """TLS for a caller of `role`: trusts only the cluster CA and presents the role's
    certificate (the server's RoleCheck reads the role from it)."""
    ca, cert, key = Credentials.of(directory, role).tls_pem()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


def _channel_options(directory: str | os.PathLike, server_role: str | None,
                     options: list[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    opts: list[tuple[str, Any]] = list(rpc.CHANNEL_OPTIONS if options is None else options)
    if server_role is not None:
        Credentials.of(directory, server_role)   # validates the name
        opts.append(("grpc.ssl_target_name_override", server_role + ROLE_DNS_SUFFIX))
    return opts


def secure_channel(address: str, directory: str | os.PathLike, role: str,
                   options: list[tuple[str, Any]] | None = None, *,
                   server_role: str | None = None) -> grpc.Channel:
    """A long-lived mTLS channel to host:port (rpc.CHANNEL_OPTIONS unless `options`).

    server_role: check that the server's certificate is that role's ("master", "volume")
    instead of checking it names the host, so addresses need not be in the certificates and
    a volume server cannot pose as the master."""
    return grpc.secure_channel(address, channel_credentials(directory, role),
                               options=_channel_options(directory, server_role, options))


def channel_factory(directory: str | os.PathLike, role: str, *,
                    server_role: str | None = None) -> Callable[[str], grpc.Channel]:
    """address -> secure channel, e.g. for rpc.ChannelCache(factory) or VolumePool(factory).
    The credentials are read once, not per channel."""
    creds = channel_credentials(directory, role)
    opts = _channel_options(directory, server_role, None)
    return lambda address: grpc.secure_channel(address, creds, options=opts)


def bind_secure(server: grpc.Server, host: str, port: int, directory: str | os.PathLike,
                role: str, *, reloading: bool = False) -> int:
    """rpc.bind over mTLS: bind host:port (0 = any free port); returns the port bound."""
    bound = server.add_secure_port(f"{host}:{port}",
                                   server_credentials(directory, role, reloading=reloading))
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port} (in use?)")
    return bound


def secure_server(policy: RolePolicy = DEFAULT_POLICY, max_workers: int = 16
                  ) -> tuple[grpc.Server, health.HealthServicer]:
    """rpc.make_server with RoleCheck(policy) in front of every method (health included)."""
    return rpc.make_server(max_workers, interceptors=[RoleCheck(policy)])


def check_health(address: str, directory: str | os.PathLike, role: str,
                 timeout: float = 1.0) -> bool:
    """rpc.check_health over mTLS."""
    return rpc.check_health(address, timeout, channel_factory(directory, role))


# -- the role check --------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _role_of_pem(pem: bytes) -> str | None:
    return role_of_pem(pem)


@functools.lru_cache(maxsize=64)
def _identity_of_pem(pem: bytes) -> str | None:
    return identity_of_pem(pem)


def peer_identity(context: grpc.ServicerContext) -> tuple[str, str] | None:
    """(role, client identity) of the peer of a call, from its certificate: the identity is
    a named client's `kelpfs:client:<name>`, else the role; None as peer_role."""
    auth = context.auth_context()
    if b"ssl" not in auth.get("transport_security_type", ()):
        return None
    uris = auth.get("peer_uri")
    if uris:
        role, identity = role_of_uris(uris), identity_of_uris(uris)
    else:
        pems = auth.get("x509_pem_cert")
        if not pems:
            return None
        role, identity = _role_of_pem(pems[0]), _identity_of_pem(pems[0])
    return (role, identity) if role is not None and identity is not None else None


def peer_role(context: grpc.ServicerContext) -> str | None:
    """The role of the peer of a call, from the certificate it presented over TLS; None when
    the call did not come over TLS or the certificate names no single role."""
    found = peer_identity(context)
    return found[0] if found else None


class RoleCheck(grpc.ServerInterceptor):
    """Refuses a call with PERMISSION_DENIED unless the policy lets the peer's role make it.

    The check runs inside the method handler (the interceptor itself gets no context) and
    before the servicer sees the request; refusals are logged, at most one line a minute per
    (role, method)."""

    def __init__(self, policy: RolePolicy = DEFAULT_POLICY,
                 role_of: Callable[[grpc.ServicerContext], str | None] = peer_role):
        self.policy = policy
        self.role_of = role_of
        self._log_throttle = Throttle()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        allowed = self.policy.allowed(method)

        def check(context: grpc.ServicerContext) -> None:
            role = self.role_of(context)
            if role is not None and role in allowed:
                return
            self._refused(method, role, context)

        return _checked(handler, check)

    def _refused(self, method: str, role: str | None, context: grpc.ServicerContext) -> None:
        who = f"role {role}" if role else "a peer without a cluster role"
        suppressed = self._log_throttle.admit((role, method))
        if suppressed is not None:
            more = f" ({suppressed} more since the last line)" if suppressed else ""
            log.warning("refused %s from %s (%s)%s", method, who, context.peer(), more)
        context.abort(grpc.StatusCode.PERMISSION_DENIED, f"EACCES: {who} may not call {method}")


def _checked(handler: grpc.RpcMethodHandler,
             check: Callable[[grpc.ServicerContext], None]) -> grpc.RpcMethodHandler:
    """`handler` with check(context) run before its behaviour, for all four call shapes."""
    de, se = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        def unary_unary(request, context):
            check(context)
            return inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, de, se)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        def unary_stream(request, context):
            check(context)
            yield from inner_us(request, context)

        return grpc.unary_stream_rpc_method_handler(unary_stream, de, se)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        def stream_unary(requests, context):
            check(context)
            return inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, de, se)
    inner_ss = handler.stream_stream

    def stream_stream(requests, context):
        check(context)
        yield from inner_ss(requests, context)

    return grpc.stream_stream_rpc_method_handler(stream_stream, de, se)
