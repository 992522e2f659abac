"""ZMQ CURVE for the cluster's ZMQ ports (the gateway's and the master's ROUTER): encrypted
traffic, and only the clients whose public keys are authorised get a message through.

Why a ZAP handler: a CURVE server alone encrypts but admits *any* client key, which is no
defence against another user of the machine (they make their own key pair). libzmq asks the
ZAP handler bound on inproc://zeromq.zap.01 of the socket's context about every handshake;
ours (ZapAuthenticator, pyzmq's ThreadAuthenticator with a key-set callback) admits a key only
if it is in curve/clients/, and gives the connection the ZMQ User-Id "role:identity" (the
key's role, and the client identity its file names: `name = "team-a"` for a named client of
`kelp certs --client`, else the role itself), so a server may also check what kind of peer
sent a message (peer_role) and which client it is (peer_identity; the master's exports).
Servers also set ZAP_ENFORCE_DOMAIN: without a running handler handshakes fail instead of
succeeding.

Usage (server):   auth = ZapAuthenticator(ctx, KeyRing.of(dir)); auth.start()
                  curve_server(router, dir, "gateway", auth); router.bind(...)
       (client):  curve_client(dealer, dir, "client", "gateway"); dealer.connect(...)
"""
from __future__ import annotations

import datetime
import logging
import os
import threading
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from cluster.common.credentials import (
    ROLES,
    CertReport,
    Credentials,
    CredentialsError,
    Throttle,
    fingerprint,
    private_dir,
    read_file,
    read_private,
    write_file,
)

log = logging.getLogger(__name__)

ZAP_DOMAIN = "kelpfs"


# -- key files (ZeroMQ's certificate format, so zmq tools read them too) ----------------------


def _zpl(public: bytes, secret: bytes | None, role: str, name: str | None = None) -> bytes:
    kind = "Secret" if secret else "Public"
    lines = [f"#   ****  Generated on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%S}"
             " by KelpFS  ****",
             f"#   ZeroMQ CURVE {kind} Certificate",
             "#   Exchange securely, or use a secure mechanism to verify the contents",
             "#   of this file after exchange.",
             "", "metadata", f'    role = "{role}"',
             *([f'    name = "{name}"'] if name else []), "curve",
             f'    public-key = "{public.decode("ascii")}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return ("\n".join(lines) + "\n").encode("ascii")


def _parse(data: bytes, path: Path) -> dict[str, bytes]:
    """The `name = "value"` lines of a key file (role, public-key, secret-key)."""
    out: dict[str, bytes] = {}
    for raw in data.splitlines():
        line = raw.strip()
        if line.startswith(b"#") or b"=" not in line:
            continue
        name, value = line.split(b"=", 1)
        out[name.strip().decode("ascii", "replace")] = value.strip().strip(b"\"'")
    public = out.get("public-key", b"")
    if len(public) != 40:
        raise CredentialsError(f"{path}: no Z85 public-key")
    return out


def load_public(path: Path) -> tuple[bytes, str | None]:
    """(Z85 public key, role it names or None) of a public key file."""
    fields = _parse(read_file(path), path)
    role = fields.get("role", b"").decode("ascii", "replace")
    return fields["public-key"], role if role in ROLES else None


def load_client_key(path: Path) -> tuple[bytes, str | None, str]:
    """(Z85 public key, role or None, client identity) of an admitted key file: the identity
    is its `name` (a named client's), else its role."""
    fields = _parse(read_file(path), path)
    role = fields.get("role", b"").decode("ascii", "replace")
    name = fields.get("name", b"").decode("ascii", "replace")
    known = role if role in ROLES else None
    return fields["public-key"], known, name or role


def load_keypair(creds: Credentials) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys of a role, the secret file checked to be private."""
    path = creds.curve_secret
    fields = _parse(read_private(path), path)
    secret = fields.get("secret-key", b"")
    if len(secret) != 40:
        raise CredentialsError(f"{path}: no Z85 secret-key")
    try:
        if zmq.curve_public(secret) != fields["public-key"]:
            raise CredentialsError(f"{path}: public-key does not belong to secret-key")
    except zmq.ZMQError:
        raise CredentialsError(f"{path}: secret-key is not Z85") from None
    return fields["public-key"], secret


def server_public(directory: str | os.PathLike, role: str) -> bytes:
    """The Z85 public key a client needs to reach the `role` server (e.g. "gateway")."""
    return load_public(Credentials.of(directory, role).curve_public)[0]


def authorize_key(directory: str | os.PathLike, name: str, public: bytes, role: str,
                  identity: str | None = None) -> Path:
    """Admit one more client key (e.g. a second mount's own key) as `role`, with client
    identity `identity` (None: the role's); a running server sees it after KeyRing.reload()."""
    if role not in ROLES or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"bad role {role!r} or key name {name!r}")
    clients = private_dir(Credentials.of(directory, role).curve_clients)
    path = clients / f"{name}.key"
    want = _zpl(public, None, role, identity)
    try:
        if load_client_key(path) == (public, role, identity or role):
            return path
    except CredentialsError:
        pass
    write_file(path, want, 0o644)
    return path


def make_curve_keys(directory: Path, roles: tuple[str, ...], client_roles: tuple[str, ...],
                    *, force: bool = False, report: CertReport | None = None) -> CertReport:
    """One key pair per role (kept when valid unless `force`), and client_roles' public keys
    in curve/clients/. Called by certs.make_cluster_certs."""
    report = report if report is not None else CertReport()
    for role in roles:
        creds = Credentials.of(directory, role)
        private_dir(creds.curve_dir)
        try:
            if force:
                raise CredentialsError("forced")
            public, _ = load_keypair(creds)
            if load_public(creds.curve_public)[0] != public:
                raise CredentialsError("public key file differs")
            report.kept += [creds.curve_public, creds.curve_secret]
        except CredentialsError:
            public, secret = zmq.curve_keypair()
            write_file(creds.curve_secret, _zpl(public, secret, role), 0o600)
            write_file(creds.curve_public, _zpl(public, None, role), 0o644)
            report.created += [creds.curve_public, creds.curve_secret]
    for role in client_roles:
        creds = Credentials.of(directory, role)
        private_dir(creds.curve_clients)
        path = creds.curve_clients / f"{role}.key"
        want = load_public(creds.curve_public)[0]
        try:
            if load_public(path) == (want, role):
                report.kept.append(path)
                continue
        except CredentialsError:
            pass
        write_file(path, _zpl(want, None, role), 0o644)
        report.created.append(path)
    return report


# -- the authorised set and the ZAP handler --------------------------------------------------


class KeyRing:
    """The client public keys a ZMQ server admits, each with its role, read from a directory
    of *.key files; `roles` narrows it (e.g. only mounts and the CLI). reload() re-reads the
    directory (a key added or revoked) and is safe while the handler runs."""

    def __init__(self, clients_dir: Path, roles: tuple[str, ...] | None = None):
        self.clients_dir = Path(clients_dir)
        self.roles = tuple(roles) if roles is not None else ROLES
        self._keys: dict[bytes, tuple[str, str]] = {}   # public -> (role, identity)
        self._refusals = Throttle()
        self.reload()

    @classmethod
    def of(cls, directory: str | os.PathLike, roles: tuple[str, ...] | None = None) -> KeyRing:
        return cls(Credentials.of(directory, ROLES[0]).curve_clients, roles)

    def reload(self) -> int:
        """Re-read the directory; returns how many keys are admitted. A file that does not
        parse or names no role is skipped with a warning, never admitted."""
        keys: dict[bytes, tuple[str, str]] = {}
        try:
            paths = sorted(self.clients_dir.glob("*.key"))
        except OSError as e:
            raise CredentialsError(f"cannot list {self.clients_dir}: {e.strerror}") from None
        for path in paths:
            try:
                public, role, identity = load_client_key(path)
            except CredentialsError as e:
                log.warning("skipping client key %s", e)
                continue
            if role is None:
                log.warning("skipping client key %s: it names no role", path)
            elif role in self.roles:
                keys[public] = (role, identity)
        self._keys = keys   # one assignment: the handler thread sees the old or the new set
        log.info("admitting %d CURVE client keys from %s", len(keys), self.clients_dir)
        return len(keys)

    def role_of(self, public_z85: bytes) -> str | None:
        found = self._keys.get(public_z85)
        return found[0] if found else None

    def identity_of(self, public_z85: bytes) -> str | None:
        """The client identity of an admitted key ("team-a"; the role for a role's key)."""
        found = self._keys.get(public_z85)
        return found[1] if found else None

    def user_id(self, public_z85: bytes) -> str:
        """The ZMQ User-Id of a connection made with this key: "role:identity"."""
        found = self._keys.get(public_z85)
        return f"{found[0]}:{found[1]}" if found else ""

    def callback(self, domain: str, public_z85: bytes) -> bool:
        """pyzmq's credentials-provider hook: admit or refuse one handshake."""
        if public_z85 in self._keys:
            return True
        suppressed = self._refusals.admit(public_z85)
        if suppressed is not None:
            more = f" ({suppressed} more refusals since the last line)" if suppressed else ""
            log.warning("refused ZMQ client key %s (domain %s): not authorised%s",
                        fingerprint(public_z85), domain, more)
        return False


class ZapAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler thread for one context, admitting exactly the KeyRing's keys and
    naming each connection's User-Id "role:identity" after the key's file."""

    def __init__(self, context: zmq.Context, keyring: KeyRing, domain: str = ZAP_DOMAIN):
        zap_log = logging.getLogger(__name__ + ".zap")
        if zap_log.level == logging.NOTSET:
            # pyzmq logs every decision with the whole public key at DEBUG; our own line (a
            # fingerprint, KeyRing.callback) is the one that matters.
            zap_log.setLevel(logging.INFO)
        super().__init__(context, log=zap_log)
        self.keyring = keyring
        self.domain = domain
        self._start_lock = threading.Lock()

    def start(self) -> None:
        with self._start_lock:
            super().start()
            self.configure_curve_callback(self.domain, credentials_provider=self.keyring)

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.keyring.user_id(zmq.utils.z85.encode(client_public_key))

    def __enter__(self) -> ZapAuthenticator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- sockets ---------------------------------------------------------------------------------


def curve_server(socket: zmq.Socket, directory: str | os.PathLike, role: str,
                 authenticator: ZapAuthenticator) -> None:
    """Make `socket` (before bind) a CURVE server with `role`'s key pair, whose handshakes
    the running `authenticator` of the same context decides."""
    if not authenticator.is_alive() or authenticator.context is not socket.context:
        raise CredentialsError("curve_server needs a started ZapAuthenticator on the "
                               "socket's own context (without one any key would be admitted)")
    public, secret = load_keypair(Credentials.of(directory, role))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.zap_domain = authenticator.domain.encode()
    socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    socket.curve_server = True


def curve_client(socket: zmq.Socket, directory: str | os.PathLike, role: str,
                 server: bytes | str) -> None:
    """Make `socket` (before connect) a CURVE client with `role`'s key pair that talks only
    to the server holding `server`: a Z85 public key, or a role whose public key is read
    from the directory (e.g. "gateway")."""
    server_key = server_public(directory, server) if isinstance(server, str) else server
    public, secret = load_keypair(Credentials.of(directory, role))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_key


def _user_id(frame: zmq.Frame) -> tuple[str, str] | None:
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    role, _, identity = str(user or "").partition(":")
    return (role, identity or role) if role in ROLES else None


def peer_role(frame: zmq.Frame) -> str | None:
    """The role of the client that sent `frame` (received with copy=False on a curve_server
    socket), from the User-Id the ZAP handler gave its connection."""
    found = _user_id(frame)
    return found[0] if found else None


def peer_identity(frame: zmq.Frame) -> tuple[str, str] | None:
    """(role, client identity) of the client that sent `frame`, as peer_role; None on a
    socket without CURVE (an insecure cluster)."""
    return _user_id(frame)
