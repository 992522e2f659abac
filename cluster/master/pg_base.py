"""PostgresStore's foundation: connections, transactions, group commit and conflict retry over
PostgreSQL (psycopg 3). The operations are the shared SQL of sql_rows.py and its siblings.

Isolation: every writing transaction is SERIALIZABLE. Several masters write one database, and
the namespace's invariants span rows no single row lock covers: a rename must not move a
directory under its own descendant while another rename moves that descendant (a cycle), and
two creates of one name must not both succeed. SERIALIZABLE makes PostgreSQL detect every such
interleaving and abort one side with a serialization failure (or a deadlock, for crossing row
locks); we then run the whole operation again, from its first read. Explicit row locks would
also work but need each operation to know, before reading, every row it will depend on (all
of a rename's ancestors), which is the bug-prone part. Reads run at REPEATABLE READ, READ
ONLY: one snapshot, never aborted.

Within one master, writes are serialized by a process lock anyway (as SQLiteStore's are), so
conflicts only come from other masters; reads use a connection per thread and run in
parallel with writes. `between_commits` holds that lock, which keeps this master's commits
out; other masters' commits reach this one's callbacks through LISTEN/NOTIFY (peers.py).

Durability: PostgreSQL's default synchronous_commit=on flushes the commit record before
COMMIT returns, so every acknowledged mutation is on stable storage (a stronger promise than
close() needs; `durable` batches need nothing more).
"""
from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from cluster.master import pg_schema
from cluster.master.sql_rows import SqlRows
from cluster.master.store import MetadataStore, StoreConflict

log = logging.getLogger(__name__)

# Errors after which running the same transaction again is right: it changed nothing.
RETRYABLE = (pgerrors.SerializationFailure, pgerrors.DeadlockDetected)
MAX_ATTEMPTS = 30


@functools.lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    """The shared SQL's `?` placeholders as psycopg's `%s` (a literal % doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConn:
    """A psycopg connection that takes the shared SQL: `?` placeholders, sqlite3's
    `execute(...).fetchone()` and `executemany` shapes."""

    def __init__(self, conn: psycopg.Connection):
        self.raw = conn

    def execute(self, sql: str, params: Any = ()) -> psycopg.Cursor:
        return self.raw.execute(_pg_sql(sql), params)

    def executemany(self, sql: str, rows: Any) -> None:
        rows = list(rows)
        if rows:
            with self.raw.cursor() as cur:
                cur.executemany(_pg_sql(sql), rows)


def retry_conflicts(fn: Callable) -> Callable:
    """Run a store method again, whole, when its transaction lost a race with another writer;
    inside a batch the batch is retried instead (StoreConflict)."""
    @functools.wraps(fn)
    def call(self: PostgresBase, *args, **kw):
        try:
            if self._depth():
                return fn(self, *args, **kw)
            for attempt in range(MAX_ATTEMPTS):
                try:
                    return fn(self, *args, **kw)
                except RETRYABLE:
                    time.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** attempt)))
            return fn(self, *args, **kw)
        except pgerrors.NumericValueOutOfRange as e:
            # What SQLite raises for a number past 64 bits: the RPC layer's EINVAL.
            raise OverflowError(str(e).splitlines()[0]) from None
    return call


def retrying_methods(cls: type) -> type:
    """Class decorator: every public MetadataStore method of `cls` retries conflicts."""
    names = set(MetadataStore.__abstractmethods__) | {"walk", "linked_under"}
    for name in sorted(names):
        setattr(cls, name, retry_conflicts(getattr(cls, name)))
    return cls


class PostgresBase(SqlRows):
    """The connections and transactions of a MetadataStore over PostgreSQL."""

    def __init__(self, dsn: str, clock: Callable[[], int] = time.time_ns,
                 application_name: str = "kelp-master"):
        self._dsn = dsn
        self._app = application_name
        self._now = clock
        self._lock = threading.RLock()      # this process's writers; between_commits
        self._local = threading.local()     # per thread: conn, depth, doomed
        self._all: list[psycopg.Connection] = []
        self._all_lock = threading.Lock()
        setup = self._connect()
        try:
            pg_schema.create_schema(setup, self._now())
        finally:
            setup.close()

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self._dsn, autocommit=True, application_name=self._app)

    def _conn(self) -> PgConn:
        """This thread's connection, made again if the server dropped the last one."""
        st = self._local
        conn = getattr(st, "conn", None)
        if conn is None or conn.raw.closed or conn.raw.broken:
            raw = self._connect()
            with self._all_lock:
                self._all.append(raw)
            conn = st.conn = PgConn(raw)
        return conn

    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for c in conns:
            with suppress(psycopg.Error):
                c.close()

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[PgConn]:
        """One transaction; inside a batch() on this thread, one savepoint of the batch's
        transaction instead, so a failing operation rolls back alone."""
        st = self._local
        conn = self._conn()
        if self._depth():
            st.depth += 1
            conn.execute("SAVEPOINT op")
            try:
                yield conn
            except BaseException as e:
                if isinstance(e, RETRYABLE):
                    st.doomed = True    # the batch cannot commit: StoreConflict at its end
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                raise
            finally:
                st.depth -= 1
            conn.execute("RELEASE op")
            return
        if not write:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")
            return
        with self._lock:
            conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            try:
                yield conn
            except BaseException:
                self._rollback(conn)
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _rollback(conn: PgConn) -> None:
        if not conn.raw.closed:
            conn.execute("ROLLBACK")

    @contextmanager
    def between_commits(self) -> Iterator[None]:
        """Holding the writers' lock keeps this master's commits out."""
        with self._lock:
            yield

    @contextmanager
    def batch(self, durable: bool = False) -> Iterator[None]:
        """Group commit, as SQLiteStore.batch: every call inside runs in its own savepoint of
        one SERIALIZABLE transaction. If any of them, or the commit, lost a race with another
        master, the whole batch is rolled back and StoreConflict raised: the caller applies
        the same operations again. Every commit is durable (synchronous_commit=on)."""
        with self._lock:
            st = self._local
            conn = self._conn()
            conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            st.depth, st.doomed = 1, False
            try:
                yield
            except BaseException:
                st.depth = 0
                self._rollback(conn)
                raise
            st.depth = 0
            if st.doomed:
                self._rollback(conn)
                raise StoreConflict("a concurrent transaction of another master won")
            try:
                conn.execute("COMMIT")
            except RETRYABLE as e:
                raise StoreConflict(str(e)) from e
