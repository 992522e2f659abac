"""A throwaway PostgreSQL server of our own, for tests and benchmarks of the PostgreSQL
metadata store: `initdb` into a fresh directory, `pg_ctl start` on a free loopback port with
its socket in that directory, `pg_ctl stop` at the end. It uses Debian's `postgresql` package
binaries (/usr/lib/postgresql/<version>/bin); `make deps` installs them.

PostgreSQL refuses to run as root, so when we are root the directory is given to the
`postgres` system user and every server command runs as that user (runuser). The server
trusts connections from loopback and its socket only: it is a private, temporary cluster,
never a production database.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

from tools.local_cluster import free_port

SUPERUSER = "kelp"


class NoPostgres(RuntimeError):
    """The PostgreSQL server binaries are not installed here."""


def server_bindir() -> str:
    """The newest installed PostgreSQL server's bin directory; NoPostgres if none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    on_path = shutil.which("postgres")
    if on_path:
        return os.path.dirname(on_path)
    raise NoPostgres("PostgreSQL server binaries not found (apt-get install postgresql)")


@dataclass
class LocalPostgres:
    """One private PostgreSQL cluster. `durable=False` turns fsync off: fine for a test's
    throwaway data, never for a benchmark of commit costs."""
    durable: bool = True
    base: str = ""
    port: int = 0
    listen: str = "127.0.0.1"     # the address it serves (a test host's, in a namespace)
    trust: str = ""               # a network (CIDR) whose clients it also trusts
    # Runs the server's commands inside something, e.g. `nsenter --net=...` (a test host).
    prefix: list[str] = field(default_factory=list)
    _as_user: list[str] = field(default_factory=list)

    def start(self) -> LocalPostgres:
        bindir = server_bindir()
        self.base = tempfile.mkdtemp(prefix="kelp-pg-")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        data = os.path.join(self.base, "data")
        self._run([os.path.join(bindir, "initdb"), "-D", data, "-A", "trust", "-U", SUPERUSER,
                   "-E", "UTF8", "--locale=C", "--no-sync"])
        if self.trust:
            with open(os.path.join(data, "pg_hba.conf"), "a") as fh:
                fh.write(f"host all all {self.trust} trust\n")
        self.port = self.port or free_port()
        settings = [f"-p {self.port}", f"-k {self.base}",
                    f"-c listen_addresses={self.listen}",
                    "-c max_connections=200", "-c shared_buffers=128MB"]
        if not self.durable:
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run([os.path.join(bindir, "pg_ctl"), "-D", data, "-l",
                   os.path.join(self.base, "server.log"), "-o", " ".join(settings),
                   "-w", "-t", "60", "start"])
        return self

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(self.prefix + self._as_user + argv, capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{os.path.basename(argv[0])} failed: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")

    def dsn(self, dbname: str = "postgres", **options: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in options.items())
        return (f"postgresql://{SUPERUSER}@{self.listen}:{self.port}/{dbname}"
                f"?sslmode=disable{extra}")

    def create_database(self, name: str) -> str:
        """A new, empty database; its DSN."""
        import psycopg
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        if not self.base:
            return
        data = os.path.join(self.base, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run([os.path.join(server_bindir(), "pg_ctl"), "-D", data,
                           "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = ""

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
