"""PostgresStore's foundation: connections, transactions, group commit and conflict retry over
PostgreSQL (psycopg 3). The operations are the shared SQL of sql_rows.py and its siblings.

Isolation: every writing transaction is SERIALIZABLE. Several masters write one database, and
the namespace's invariants span rows no single row lock covers: a rename must not move a
directory under its own descendant while another rename moves that descendant (a cycle), and
two creates of one name must not both succeed. SERIALIZABLE makes PostgreSQL detect every such
interleaving and abort one side with a serialization failure (or a deadlock, for crossing row
locks); we then run the whole operation again, from its first read. Explicit row locks would
also work but need each operation to know, before reading, every row it will depend on (all
of a rename's ancestors), which is the bug-prone part. Its price, measured (docs/scaling.md):
its index predicate locks cover B-tree pages, so masters creating in neighbouring
directories abort each other too (602 times in 900 creates of three writers); the design that
replaces it is described there. Reads run at REPEATABLE READ, READ ONLY: one snapshot, never
aborted; a read that is one statement (getattr, walk) runs with no BEGIN at all, since a
statement is its own snapshot.

Within one master, writes are serialized by a process lock anyway (as SQLiteStore's are), so
conflicts only come from other masters; reads use a connection per thread and run in
parallel with writes. `between_commits` holds that lock, which keeps this master's commits
out; other masters' commits reach this one's callbacks through LISTEN/NOTIFY (peers.py).

Durability: PostgreSQL's default synchronous_commit=on flushes the commit record before
COMMIT returns, so every acknowledged mutation is on stable storage (a stronger promise than
close() needs; `durable` batches need nothing more).
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from cluster.common.errors import FsError
from cluster.master import paths, pg_schema, schema
from cluster.master.schema import ROOT_INO
from cluster.master.sql_rows import ATTR_COLS, ATTR_COLS_I, SqlRows
from cluster.master.store import Attr, MetadataStore, StoreConflict

log = logging.getLogger(__name__)

# Errors after which running the same transaction again is right: it changed nothing.
RETRYABLE = (pgerrors.SerializationFailure, pgerrors.DeadlockDetected)
MAX_ATTEMPTS = 30
INO_BLOCK = 1024      # inode numbers a master reserves at a time
TX_IDLE = psycopg.pq.TransactionStatus.IDLE


@functools.lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    """The shared SQL's `?` placeholders as psycopg's `%s` (a literal % doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgCursor:
    """A statement's results in pipeline mode: fetching waits for them (psycopg does);
    `rowcount` must too, so it syncs the pipeline first."""

    __slots__ = ("_conn", "_cur")

    def __init__(self, conn: PgConn, cur: psycopg.Cursor):
        self._conn, self._cur = conn, cur

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cur.fetchall())

    @property
    def rowcount(self) -> int:
        self._conn.sync()
        return self._cur.rowcount


class PgConn:
    """A psycopg connection that takes the shared SQL: `?` placeholders, sqlite3's
    `execute(...).fetchone()` and `executemany` shapes.

    Transactions run in libpq's pipeline mode: a statement whose result nobody reads (an
    INSERT, an UPDATE, BEGIN, COMMIT) does not wait for the server, it goes with the next
    one that is read. A create's four writes and its commit then cost one round trip, not
    five; on loopback a round trip is most of what a statement costs."""

    def __init__(self, conn: psycopg.Connection):
        self.raw = conn
        self.pipe: psycopg.Pipeline | None = None

    def execute(self, sql: str, params: Any = ()) -> PgCursor:
        return PgCursor(self, self.raw.execute(_pg_sql(sql), params))

    def executemany(self, sql: str, rows: Any) -> None:
        rows = list(rows)
        if rows:
            with self.raw.cursor() as cur:
                cur.executemany(_pg_sql(sql), rows)

    def sync(self) -> None:
        """Wait for every statement sent so far; an error of any of them raises here."""
        if self.pipe is not None:
            self.pipe.sync()

    @contextmanager
    def pipelined(self) -> Iterator[None]:
        if self.pipe is not None:      # already inside (a batch's operation)
            yield
            return
        with self.raw.pipeline() as pipe:
            self.pipe = pipe
            try:
                yield
            finally:
                self.pipe = None

    def rollback(self) -> None:
        """End a failed or abandoned transaction (nothing to do on a closed connection)."""
        if self.raw.closed or self.raw.broken:
            return
        if self.raw.info.transaction_status != TX_IDLE:
            self.raw.execute("ROLLBACK")


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


# The inodes along a path in one statement (a round trip per name otherwise): depth k is
# the inode parts[:k] names. It goes on from an inode only while that one is a directory,
# so it stops after the first missing name and after the first name that is not a directory.
_CHAIN = (
    "WITH RECURSIVE w(depth, ino, mode) AS ("
    " SELECT 0, ino, mode FROM inodes WHERE ino = ?"
    " UNION ALL SELECT w.depth + 1, e.ino, i.mode FROM w"
    " JOIN entries e ON e.parent = w.ino AND e.name = (?::text[])[w.depth + 1]"
    " JOIN inodes i ON i.ino = e.ino"
    f" WHERE w.depth < ? AND (w.mode & {0o170000}) = {stat.S_IFDIR})")


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
        self._ino_lock = threading.Lock()
        self._ino_next = self._ino_end = 0
        setup = self._connect()
        try:
            pg_schema.create_schema(setup, self._now())
        finally:
            setup.close()

    def _connect(self) -> psycopg.Connection:
        # No server-side prepared statements: when the server refuses one statement of a
        # pipeline it skips those queued behind it, and psycopg can then believe a statement
        # prepared that the server never saw ("prepared statement does not exist" on its
        # next use). Unnamed statements cost a parse each, and are always right.
        return psycopg.connect(self._dsn, autocommit=True, application_name=self._app,
                               prepare_threshold=None)

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

    # ------------------------------------------------------------ paths in one round trip

    def _chain(self, c: PgConn, parts: list[str]) -> list[tuple[int, int]]:
        """(ino, mode) of the root and of each name of `parts` in turn, as far as they go."""
        return c.execute(_CHAIN + " SELECT ino, mode FROM w ORDER BY depth",
                         (ROOT_INO, parts, len(parts))).fetchall()

    def _end_of(self, c: PgConn, parts: list[str], path: str) -> tuple[int, int]:
        """The (ino, mode) `parts` names: ENOTDIR if the way passes a non-directory, ENOENT
        if a name is missing (the errors SqlRows._walk and _resolve give, in that order)."""
        chain = self._chain(c, parts)
        ino, mode = chain[-1]
        if len(chain) <= len(parts):
            raise FsError(errno.ENOENT if stat.S_ISDIR(mode) else errno.ENOTDIR, path)
        return ino, mode

    def _walk(self, c: Any, parts: list[str], path: str) -> int:
        if not parts:
            return ROOT_INO
        ino, mode = self._end_of(c, parts, path)
        if not stat.S_ISDIR(mode):
            raise FsError(errno.ENOTDIR, path)
        return ino

    def _resolve(self, c: Any, path: str) -> int:
        parts = paths.split(path)
        return self._end_of(c, parts, path)[0] if parts else ROOT_INO

    def _read1(self, sql: str, params: tuple) -> list[Any]:
        """The rows of one statement: one snapshot by itself (no BEGIN and COMMIT, so one
        round trip), or part of the batch's transaction inside one."""
        return self._conn().execute(sql, params).fetchall()

    def walk(self, path: str) -> list[Attr]:
        parts = paths.split(path)
        return [Attr(*row) for row in self._read1(
            _CHAIN + f" SELECT {ATTR_COLS_I} FROM w JOIN inodes i ON i.ino = w.ino"
            " ORDER BY w.depth", (ROOT_INO, parts, len(parts)))]

    def getattr(self, path: str) -> Attr:
        """One statement: the walk, whose last step is the answer when it got all the way."""
        chain = self.walk(path)
        if len(chain) <= len(paths.split(path)):
            raise FsError(errno.ENOENT if chain[-1].is_dir else errno.ENOTDIR, path)
        return chain[-1]

    def getattr_ino(self, ino: int) -> Attr:
        rows = self._read1(f"SELECT {ATTR_COLS} FROM inodes WHERE ino=?", (ino,))
        if not rows:
            raise FsError(errno.ENOENT, f"inode {ino}")
        return Attr(*rows[0])

    def _alloc_ino(self, c: Any) -> int:
        """Inode numbers come from a block this master reserved in a transaction of its own
        (the counter row is not written by every create, where every master's creates
        would contend for it); a block cut short by a restart leaves a harmless gap."""
        with self._ino_lock:
            if self._ino_next >= self._ino_end:
                with psycopg.connect(self._dsn, autocommit=True) as own:
                    first = own.execute(
                        "UPDATE counters SET value = value + %s WHERE name = %s"
                        " RETURNING value - %s",
                        (INO_BLOCK, schema.COUNTER_NEXT_INO, INO_BLOCK)).fetchone()[0]
                self._ino_next, self._ino_end = first, first + INO_BLOCK
            self._ino_next += 1
            return self._ino_next - 1

    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    @property
    def _alone(self) -> bool:
        return getattr(self._local, "alone", False)

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
        if self._depth() and self._alone:
            # The batch's only operation: its transaction is the operation's, so no
            # savepoint; a failure makes the batch roll back instead of commit.
            st.depth += 1
            try:
                yield conn
            except BaseException as e:
                st.undo = True
                if isinstance(e, RETRYABLE):
                    st.doomed = True
                raise
            finally:
                st.depth -= 1
            return
        if self._depth():
            st.depth += 1
            conn.execute("SAVEPOINT op")
            try:
                yield conn
                conn.execute("RELEASE op")
                if write:   # a read has had its answers, so its errors, already
                    conn.sync()   # this operation's errors are its own, not the next one's
            except BaseException as e:
                if isinstance(e, RETRYABLE):
                    st.doomed = True    # the batch cannot commit: StoreConflict at its end
                self._undo_savepoint(conn)
                raise
            finally:
                st.depth -= 1
            return
        begin = "BEGIN ISOLATION LEVEL SERIALIZABLE" if write else \
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        with self._lock if write else contextlib.nullcontext():
            try:
                with conn.pipelined():
                    conn.execute(begin)
                    yield conn
                    conn.execute("COMMIT")   # a read-only one's too: nothing to undo
            except BaseException:
                conn.rollback()
                raise

    @staticmethod
    def _undo_savepoint(conn: PgConn) -> None:
        """Roll a batch's operation back to its savepoint (after its own error, or one of a
        statement it sent that the sync just reported)."""
        with contextlib.suppress(psycopg.Error):   # one of its statements: undone below
            conn.sync()
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        conn.sync()

    @contextmanager
    def between_commits(self) -> Iterator[None]:
        """Holding the writers' lock keeps this master's commits out."""
        with self._lock:
            yield

    @contextmanager
    def batch(self, durable: bool = False, size: int = 0) -> Iterator[None]:
        """Group commit, as SQLiteStore.batch: every call inside runs in its own savepoint of
        one SERIALIZABLE transaction. If any of them, or the commit, lost a race with another
        master, the whole batch is rolled back and StoreConflict raised: the caller applies
        the same operations again. Every commit is durable (synchronous_commit=on)."""
        with self._lock:
            st = self._local
            conn = self._conn()
            try:
                with conn.pipelined():
                    conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                    st.depth, st.doomed, st.undo, st.alone = 1, False, False, size == 1
                    try:
                        yield
                    finally:
                        st.depth, st.alone = 0, False
                    if st.doomed:
                        raise StoreConflict("a concurrent transaction of another master won")
                    conn.execute("ROLLBACK" if st.undo else "COMMIT")
            except RETRYABLE as e:
                conn.rollback()
                raise StoreConflict(str(e)) from e
            except BaseException:
                conn.rollback()
                raise
