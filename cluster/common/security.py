"""One process's transport security: how it serves and how it calls, secure or not.

Every node and client is built with one `Transport`: with a credentials directory (`kelp
certs DIR`, or the one `kelp up` makes) its gRPC servers speak mutual TLS with the role check
in front of every method (tls.py, rolepolicy.py), its gRPC channels present the role's
certificate and accept only the expected server role, and its ZMQ sockets speak CURVE with
a ZAP handler that admits only the cluster's known keys (curve.py). Without a directory it is
the plain transport, which `check_bind` allows only on loopback unless the operator says
`--insecure`. The nodes never branch on security themselves: they ask their Transport.
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import zmq
from grpc_health.v1 import health

from cluster.common import curve, rpc, tls
from cluster.common.config import ConfigError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(node: str, ip: str, tls_dir: str | None, insecure: bool) -> None:
    """Refuse to serve a non-loopback address in the clear unless told `--insecure`: any
    host that reaches the port could otherwise rewrite the namespace or read any chunk."""
    if tls_dir or is_loopback(ip):
        return
    if not insecure:
        raise ConfigError(f"{node}: refusing to listen on {ip} without TLS; give --tls-dir "
                          f"DIR (made by `kelp certs DIR`) or --insecure to allow it")
    log.warning("%s listens on %s without TLS or CURVE (--insecure): any host that reaches "
                "its ports can read and change everything", node, ip)


@dataclass
class Transport:
    """How a process of `role` talks: `tls_dir` None is the plain transport."""
    role: str
    tls_dir: str | None = None
    _auth: curve.ZapAuthenticator | None = field(default=None, repr=False)

    @property
    def secure(self) -> bool:
        return self.tls_dir is not None

    # -- gRPC

    def make_server(self, max_workers: int = 16) -> tuple[grpc.Server, health.HealthServicer]:
        if self.tls_dir is None:
            return rpc.make_server(max_workers)
        return tls.secure_server(max_workers=max_workers)

    def bind(self, server: grpc.Server, host: str, port: int) -> int:
        if self.tls_dir is None:
            return rpc.bind(server, host, port)
        return tls.bind_secure(server, host, port, self.tls_dir, self.role, reloading=True)

    def channel(self, address: str, server_role: str) -> grpc.Channel:
        return self.channel_factory(server_role)(address)

    def channel_factory(self, server_role: str) -> Callable[[str], grpc.Channel]:
        if self.tls_dir is None:
            return rpc.channel
        return tls.channel_factory(self.tls_dir, self.role, server_role=server_role)

    def volume_stubs(self) -> rpc.VolumeStubs:
        return rpc.VolumeStubs(self.channel_factory("volume"))

    # -- ZMQ

    def zmq_server(self, sock: zmq.Socket) -> None:
        """Before bind: CURVE with this role's keys, a ZAP handler on the socket's context
        admitting the cluster's known client keys (started once per process)."""
        if self.tls_dir is None:
            return
        if self._auth is None or self._auth.context is not sock.context:
            self._auth = curve.ZapAuthenticator(sock.context, curve.KeyRing.of(self.tls_dir))
            self._auth.start()
        curve.curve_server(sock, self.tls_dir, self.role, self._auth)

    def zmq_client(self, sock: zmq.Socket, server_role: str) -> None:
        """Before connect: CURVE with this role's keys, talking only to `server_role`."""
        if self.tls_dir is not None:
            curve.curve_client(sock, self.tls_dir, self.role, server_role)

    def reload(self) -> None:
        """Re-read the admitted CURVE keys (after `kelp certs --force` or a new client key);
        TLS certificates are re-read at each handshake already."""
        if self._auth is not None:
            count = self._auth.keyring.reload()
            log.info("%s: %d CURVE client keys admitted after reload", self.role, count)

    def close(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


PLAIN = Transport("client")
