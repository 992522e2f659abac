"""The cluster's credentials on disk: a private CA, one TLS certificate per role, one ZMQ CURVE
key pair per role, and the set of CURVE public keys the ZMQ servers admit.

Why roles and not hosts: what a peer may do depends on what it is (a volume server may
heartbeat, a mount may read), so the role is written into every certificate (subject OU and a
URI SAN `kelpfs:role:<role>`) and the gRPC servers read it back (cluster.common.tls). Every
certificate also names its role as a DNS SAN `<role>.kelpfs`, so a caller can insist that the
server it reaches *is* a master (tls.secure_channel(server_role=...)) whatever its address.

The files and their modes: cluster.common.credentials.

make_cluster_certs() is idempotent: valid files are kept, missing or broken ones are (re)made,
and force=True re-issues every leaf (TLS and CURVE) under the same CA, for rotation.

Named clients (`clients=("team-a",)`, `kelp certs DIR --client team-a`): a client-role
certificate that also carries the URI SAN `kelpfs:client:team-a`, and a CURVE key pair whose
public key is admitted as `curve/clients/team-a.key` with `name = "team-a"`. They are written
as a self-contained credentials directory, `DIR/clients/team-a/` (ca.crt, client.crt,
client.key, curve/client.key*, and the master's and the gateway's public keys): a mount takes
it as its `--tls-dir` unchanged, so it is what an administrator hands to a team. The master
learns the identity from either credential (the exports, cluster/master/exports.py); the
default `client` credential's identity is "client", `admin`'s "admin".
"""
from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.common import curve
from cluster.common.credentials import (
    ROLES,
    CertReport,
    Credentials,
    CredentialsError,
    private_dir,
    read_file,
    read_private,
    write_file,
)

log = logging.getLogger(__name__)

# Roles whose processes call ZMQ servers (the gateway's and the master's ROUTER): their CURVE
# public keys go into curve/clients/ by default.
ZMQ_CLIENT_ROLES = ("client", "admin")
# Roles that never serve TLS: their certificates are for client authentication only, so a
# stolen mount certificate cannot stand in for a server.
CLIENT_ONLY_ROLES = ("client", "admin")
ROLE_URI_PREFIX = "kelpfs:role:"
CLIENT_URI_PREFIX = "kelpfs:client:"
ROLE_DNS_SUFFIX = ".kelpfs"
CLIENTS_DIR = "clients"   # DIR/clients/<name>/: one named client's own credentials directory


def check_client_name(name: str) -> str:
    """A named client's identity: 1..64 ASCII letters, digits, '-' and '_', and not a
    role's name (those are the role credentials' own identities)."""
    ok = 0 < len(name) <= 64 and name.isascii() and \
        name.replace("-", "").replace("_", "").isalnum()
    if not ok:
        raise ValueError(f"bad client name {name!r}: use 1..64 letters, digits, '-' and '_'")
    if name in ROLES:
        raise ValueError(f"client name {name!r} is a role's; the {name} credentials have it "
                         "already")
    return name


@dataclass(frozen=True)
class CertOptions:
    """How make_cluster_certs issues. `hosts` go into every leaf as SANs (IP or DNS), so one
    role's certificate serves on every machine that runs that role."""

    hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    roles: tuple[str, ...] = ROLES
    zmq_client_roles: tuple[str, ...] = ZMQ_CLIENT_ROLES
    clients: tuple[str, ...] = ()   # named clients (DIR/clients/<name>/)
    organization: str = "KelpFS"
    ca_days: int = 3650
    leaf_days: int = 365
    renew_days: int = 30   # a leaf expiring within this many days counts as invalid


# -- certificates ----------------------------------------------------------------------------


def role_of_cert(cert: x509.Certificate) -> str | None:
    """The role a certificate names in its URI SAN (one of ROLES), else None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return role_of_uris(san.get_values_for_type(x509.UniformResourceIdentifier))


def role_of_uris(uris) -> str | None:
    """The one role named by `kelpfs:role:<role>` URIs (str or bytes); None when there is
    none, or more than one (a certificate must not be two things at once)."""
    roles = set()
    for uri in uris:
        text = uri.decode("ascii", "replace") if isinstance(uri, bytes) else uri
        if text.startswith(ROLE_URI_PREFIX):
            roles.add(text[len(ROLE_URI_PREFIX):])
    if len(roles) != 1:
        return None
    role = roles.pop()
    return role if role in ROLES else None


def identity_of_uris(uris) -> str | None:
    """The client identity a certificate's URIs name: its one `kelpfs:client:<name>`, else
    its role (the role credentials' identity); None without a role, or with two names."""
    role = role_of_uris(uris)
    if role is None:
        return None
    names = set()
    for uri in uris:
        text = uri.decode("ascii", "replace") if isinstance(uri, bytes) else uri
        if text.startswith(CLIENT_URI_PREFIX):
            names.add(text[len(CLIENT_URI_PREFIX):])
    if len(names) > 1:
        return None
    return names.pop() if names else role


def identity_of_cert(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return identity_of_uris(san.get_values_for_type(x509.UniformResourceIdentifier))


def identity_of_pem(pem: bytes) -> str | None:
    try:
        return identity_of_cert(x509.load_pem_x509_certificate(pem))
    except ValueError:
        return None


def role_of_pem(pem: bytes) -> str | None:
    try:
        return role_of_cert(x509.load_pem_x509_certificate(pem))
    except ValueError:
        return None


def verify_leaf(cert: x509.Certificate, ca: x509.Certificate,
                now: datetime.datetime | None = None) -> None:
    """Raise CredentialsError unless `cert` was signed by `ca` and is within its validity."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise CredentialsError(f"{cert.subject.rfc4514_string()} was not issued by "
                               f"{ca.subject.rfc4514_string()}: {e or 'bad signature'}") from None
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CredentialsError(f"{cert.subject.rfc4514_string()} is not valid now "
                               f"({cert.not_valid_before_utc} .. {cert.not_valid_after_utc})")


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(hosts: tuple[str, ...], role: str, name: str | None = None) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    names.append(x509.DNSName(role + ROLE_DNS_SUFFIX))
    names.append(x509.UniformResourceIdentifier(ROLE_URI_PREFIX + role))
    if name:
        names.append(x509.UniformResourceIdentifier(CLIENT_URI_PREFIX + name))
    return names


def _issue_ca(opts: CertOptions) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, opts.organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{opts.organization} cluster CA")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=opts.ca_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue_leaf(role: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
               opts: CertOptions, name: str | None = None
               ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new key and a certificate for it naming `role` (and client identity `name`),
    signed by the CA."""
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role not in CLIENT_ONLY_ROLES:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, opts.organization),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                         x509.NameAttribute(NameOID.COMMON_NAME,
                                            f"kelpfs-{role}" + (f"-{name}" if name else ""))])
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + datetime.timedelta(days=opts.leaf_days),
                                 ca.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(_san(opts.hosts, role, name)),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(read_file(path))
    except ValueError as e:
        raise CredentialsError(f"{path}: not a PEM certificate ({e})") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(read_private(path), password=None)
    except ValueError as e:
        raise CredentialsError(f"{path}: not a PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CredentialsError(f"{path}: not an EC key")
    return key


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    return cert.public_key() == key.public_key()


def _leaf_problem(creds: Credentials, ca: x509.Certificate, opts: CertOptions,
                  name: str | None = None) -> str | None:
    """Why the role's existing certificate must be re-issued, or None to keep it."""
    try:
        cert, key = load_cert(creds.cert), _load_key(creds.key)
        verify_leaf(cert, ca, datetime.datetime.now(datetime.UTC)
                    + datetime.timedelta(days=opts.renew_days))
    except CredentialsError as e:
        return str(e)
    if not _same_key(cert, key):
        return "key does not match certificate"
    if role_of_cert(cert) != creds.role:
        return f"certificate names role {role_of_cert(cert)!r}"
    if name and identity_of_cert(cert) != name:
        return f"certificate names client {identity_of_cert(cert)!r}"
    want = set(_san(opts.hosts, creds.role, name))
    have = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    if not want <= have:
        return "hosts changed"
    return None


class _Ca:
    """The cluster CA of a directory: made when absent, its key read only when a leaf must
    be issued (a node's copy of the directory may well leave ca.key out)."""

    def __init__(self, root: Path, opts: CertOptions, report: CertReport):
        paths = Credentials(root, ROLES[0])
        self.cert_path, self.key_path = paths.ca_cert, paths.ca_key
        self._key: ec.EllipticCurvePrivateKey | None = None
        if self.cert_path.exists() or self.key_path.exists():
            self.cert = load_cert(self.cert_path)
            report.kept.append(self.cert_path)
            return
        self.cert, self._key = _issue_ca(opts)
        write_file(self.key_path, _key_pem(self._key), 0o600)
        write_file(self.cert_path, self.cert.public_bytes(serialization.Encoding.PEM), 0o644)
        report.created += [self.cert_path, self.key_path]
        log.info("made cluster CA %s", self.cert_path)

    def key(self) -> ec.EllipticCurvePrivateKey:
        if self._key is None:
            key = _load_key(self.key_path)
            if not _same_key(self.cert, key):
                raise CredentialsError(f"{self.key_path} does not match {self.cert_path}")
            self._key = key
        return self._key


def make_cluster_certs(directory: str | os.PathLike,
                       hosts: tuple[str, ...] | None = None, *, force: bool = False,
                       options: CertOptions | None = None,
                       clients: tuple[str, ...] | None = None) -> CertReport:
    """Make (or complete) a credentials directory (layout: cluster.common.credentials).

    An existing CA is never replaced (every peer trusts it): a broken one is an error for a
    person to resolve. `force` re-issues all leaves (TLS key+certificate and CURVE pair).
    `clients`: named clients to make (or complete) as well, each in DIR/clients/<name>/;
    those made before are completed (and with `force` re-issued) whether named or not.
    """
    opts = options or CertOptions()
    if hosts is not None:
        opts = replace(opts, hosts=tuple(hosts))
    made = Path(directory) / CLIENTS_DIR
    known = tuple(sorted(p.name for p in made.iterdir() if p.is_dir())) if made.is_dir() else ()
    wanted = tuple(clients) if clients is not None else ()
    opts = replace(opts, clients=tuple(dict.fromkeys((*opts.clients, *known, *wanted))))
    for name in opts.clients:
        check_client_name(name)
    for role in opts.roles:
        Credentials.of(directory, role)   # validates the role name
    if not set(opts.zmq_client_roles) <= set(opts.roles):
        raise ValueError("zmq_client_roles must be among roles")
    root = private_dir(Path(directory))
    report = CertReport()
    ca = _Ca(root, opts, report)
    for role in opts.roles:
        creds = Credentials(root, role)
        problem = "forced" if force else _leaf_problem(creds, ca.cert, opts)
        if problem is None:
            report.kept += [creds.cert, creds.key]
            continue
        if creds.cert.exists():
            log.info("re-issuing %s: %s", creds.cert, problem)
        cert, key = issue_leaf(role, ca.cert, ca.key(), opts)
        write_file(creds.key, _key_pem(key), 0o600)
        write_file(creds.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        report.created += [creds.cert, creds.key]
    curve.make_curve_keys(root, opts.roles, opts.zmq_client_roles, force=force, report=report)
    for name in opts.clients:
        _make_named_client(root, name, ca, opts, force, report)
    return report


def _copy(source: Path, target: Path, report: CertReport) -> None:
    data = read_file(source)
    try:
        if target.read_bytes() == data:
            report.kept.append(target)
            return
    except OSError:
        pass
    write_file(target, data, 0o644)
    report.created.append(target)


def _make_named_client(root: Path, name: str, ca: _Ca, opts: CertOptions, force: bool,
                       report: CertReport) -> None:
    """DIR/clients/<name>/: a credentials directory for the client role whose certificate
    and CURVE key name the client; its public key admitted in DIR/curve/clients/<name>.key.
    The CA certificate and the servers' public keys are copied in (again whenever they
    changed), so the directory is all a mount needs."""
    sub = private_dir(root / CLIENTS_DIR / name)
    creds = Credentials(sub, "client")
    _copy(Credentials(root, "client").ca_cert, creds.ca_cert, report)
    problem = "forced" if force else _leaf_problem(creds, ca.cert, opts, name)
    if problem is None:
        report.kept += [creds.cert, creds.key]
    else:
        if creds.cert.exists():
            log.info("re-issuing %s: %s", creds.cert, problem)
        cert, key = issue_leaf("client", ca.cert, ca.key(), opts, name)
        write_file(creds.key, _key_pem(key), 0o600)
        write_file(creds.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        report.created += [creds.cert, creds.key]
    curve.make_curve_keys(sub, ("client",), (), force=force, report=report)
    private_dir(creds.curve_dir)
    for server in ("master", "gateway"):
        server_creds = Credentials(root, server)
        if server_creds.curve_public.exists():
            _copy(server_creds.curve_public, Credentials(sub, server).curve_public, report)
    public = curve.load_keypair(creds)[0]
    path = curve.authorize_key(root, name, public, "client", identity=name)
    report.kept.append(path)
