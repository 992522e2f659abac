"""Where the cluster's credentials live on disk, and reading and writing them safely.

Layout of a credentials directory (mode 0700; secrets 0600, created with that mode):

    ca.crt ca.key                 the cluster CA (P-256); ca.key only needed to issue
    <role>.crt <role>.key         TLS leaf certificate and key, one per role
    curve/<role>.key              CURVE public key (Z85, ZeroMQ certificate format)
    curve/<role>.key_secret       CURVE public and secret key (0600)
    curve/clients/*.key           public keys the ZMQ servers admit (cluster.common.curve)

The TLS half is made by cluster.common.certs, the CURVE half by cluster.common.curve; both go
through write_file (a secret is never readable by others, not even for a moment) and read
secrets through read_private (refused, as ssh refuses, when others could read or swap them).
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ROLES = ("master", "volume", "gateway", "client", "admin")


class CredentialsError(Exception):
    """A credentials file is missing, unreadable, too open, or does not verify."""


@dataclass(frozen=True)
class Credentials:
    """Where one role's files are in a credentials directory (nothing is read here)."""

    dir: Path
    role: str

    @classmethod
    def of(cls, directory: str | os.PathLike, role: str) -> Credentials:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
        return cls(Path(directory), role)

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def cert(self) -> Path:
        return self.dir / f"{self.role}.crt"

    @property
    def key(self) -> Path:
        return self.dir / f"{self.role}.key"

    @property
    def curve_dir(self) -> Path:
        return self.dir / "curve"

    @property
    def curve_public(self) -> Path:
        return self.curve_dir / f"{self.role}.key"

    @property
    def curve_secret(self) -> Path:
        return self.curve_dir / f"{self.role}.key_secret"

    @property
    def curve_clients(self) -> Path:
        return self.curve_dir / "clients"

    def tls_pem(self) -> tuple[bytes, bytes, bytes]:
        """(CA certificate, own certificate, own private key) as PEM, what gRPC takes."""
        return read_file(self.ca_cert), read_file(self.cert), read_private(self.key)


@dataclass
class CertReport:
    """What make_cluster_certs did, by path (for a CLI to print; never any key material)."""

    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def read_file(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CredentialsError(f"cannot read {path}: {e.strerror}") from None


def read_private(path: Path) -> bytes:
    """A secret's bytes, refused when another user could read or replace it."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise CredentialsError(f"cannot read {path}: {e.strerror}") from None
    if st.st_mode & 0o077:
        raise CredentialsError(f"{path} is open to other users (mode "
                               f"{stat.S_IMODE(st.st_mode):o}); it must be 0600")
    if st.st_uid != os.getuid():
        raise CredentialsError(f"{path} belongs to uid {st.st_uid}, not to us")
    return read_file(path)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` through a new file created with `mode` (never a chmod after it,
    so there is no moment when a key is readable), then rename it over the old one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def private_dir(path: Path) -> Path:
    """Make `path` (mode 0700) or check an existing one is ours, tightening it if it is open
    to others: the keys' own modes do not stop another user renaming files in the dir."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise CredentialsError(f"{path} belongs to uid {st.st_uid}, not to us")
    if st.st_mode & 0o077:
        log.warning("%s was open to other users (mode %o); making it 0700", path,
                    stat.S_IMODE(st.st_mode))
        path.chmod(0o700)
    return path


def fingerprint(public: bytes) -> str:
    """A short name for a public key in logs (never the key itself, never a secret)."""
    return "sha256:" + hashlib.sha256(public).hexdigest()[:16]


class Throttle:
    """At most one log line per key every `interval` s: a peer retrying a refused handshake
    many times a second must not flood the log (the suppressed count goes in the next line)."""

    def __init__(self, interval: float = 60.0, capacity: int = 1024):
        self.interval = interval
        self.capacity = capacity
        self._lock = threading.Lock()
        self._last: dict[object, tuple[float, int]] = {}

    def admit(self, key: object) -> int | None:
        """None to stay quiet, else how many lines were suppressed since the last one."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (-self.interval - 1.0, 0))
            if now - last < self.interval:
                self._last[key] = (last, suppressed + 1)
                return None
            if len(self._last) >= self.capacity:
                self._last.clear()
            self._last[key] = (now, 0)
            return suppressed
