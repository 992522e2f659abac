"""SQLiteStore's foundation: one connection, its transactions, and the row helpers that both
halves of the store (sqlite_namespace.py, sqlite_chunks.py) work with inside them.

Locking: the store holds one sqlite3 connection (WAL mode) guarded by one lock; each method
takes the lock for its whole transaction (`_tx`). Transactions are short (a handful of indexed
statements), so a single writer is not the bottleneck the network is. `batch` groups many
operations into one transaction, each in its own savepoint, for one WAL append and one sync.

The helpers here take the open connection `c` and never commit: they are pieces of the
caller's transaction. They are shared because both halves resolve paths and read attributes,
and both make chunk pieces unreachable (a truncate, an overwrite, a deleted inode), whose
fids must reach the deletion queue in the same transaction.
"""
from __future__ import annotations

import errno
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from cluster.common import chunkmap, durability
from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from cluster.master import paths, schema
from cluster.master.schema import ROOT_INO
from cluster.master.store import Attr, MetadataStore

ATTR_COLS_PLAIN = "ino, mode, uid, gid, size, nlink, atime_ns, mtime_ns, ctime_ns, replication"
# has_xattrs lets a mount answer the getxattr calls `ls -l` makes for every file (ACLs,
# SELinux labels) without one RPC each; the xattrs table's primary key (ino, name) makes it an
# index probe.
ATTR_COLS = (ATTR_COLS_PLAIN
             + ", EXISTS(SELECT 1 FROM xattrs x WHERE x.ino = inodes.ino), rdev,"
             " inline_data IS NOT NULL")
# The same columns of `inodes i`, for a join (readdir).
ATTR_COLS_I = (", ".join("i." + c.strip() for c in ATTR_COLS_PLAIN.split(","))
               + ", EXISTS(SELECT 1 FROM xattrs x WHERE x.ino = i.ino), i.rdev,"
                 " i.inline_data IS NOT NULL")
SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


class SQLiteBase(MetadataStore):
    """The connection and transactions of a MetadataStore over one SQLite database file in
    WAL mode; the operations are the subclasses' (SQLiteStore puts them together)."""

    def __init__(self, path: str, synchronous: str = "FULL",
                 clock: Callable[[], int] = time.time_ns):
        sync = synchronous.upper()
        if sync not in SYNC_MODES:
            raise ValueError(f"sqlite_synchronous must be one of {SYNC_MODES}, got {synchronous!r}")
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._now = clock
        self._lock = threading.RLock()   # re-entered by the calls inside a batch()
        self._batch_depth = 0            # > 0 while a batch() is open (under the lock)
        self._path = path
        self._sync = sync
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={sync}")
        self._conn.execute("PRAGMA busy_timeout=10000")
        schema.create_schema(self._conn, self._now())

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; inside a batch() on this thread, one savepoint of the batch's
        transaction instead, so a failing operation rolls back alone."""
        with self._lock:
            c = self._conn
            if self._batch_depth:
                self._batch_depth += 1
                c.execute("SAVEPOINT op")
                try:
                    yield c
                except BaseException:
                    c.execute("ROLLBACK TO op")
                    c.execute("RELEASE op")
                    raise
                finally:
                    self._batch_depth -= 1
                c.execute("RELEASE op")
                return
            c.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    @contextmanager
    def between_commits(self) -> Iterator[None]:
        """One connection under one lock: holding it keeps every commit out."""
        with self._lock:
            yield

    @contextmanager
    def batch(self, durable: bool = False) -> Iterator[None]:
        """Group commit: every store call made inside runs in its own savepoint of one
        transaction, committed once at the end (one WAL append, one sync instead of one per
        operation). With `durable`, the commit reaches stable storage before this returns
        whatever `synchronous` says (an fsync the caller acknowledges depends on it). The
        batch holds the store for its whole length: keep it to one round of queued work."""
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            self._batch_depth = 1
            try:
                yield
            except BaseException:
                self._batch_depth = 0
                c.execute("ROLLBACK")
                raise
            self._batch_depth = 0
            c.execute("COMMIT")
            if durable and self._sync != "FULL" and self._sync != "EXTRA":
                self._sync_wal()

    def _sync_wal(self) -> None:
        """fsync the write-ahead log: what synchronous=FULL does at each commit."""
        if self._path == ":memory:":
            return
        try:
            fd = os.open(self._path + "-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed away: the data is in the database file, synced by SQLite
        try:
            durability.fsync(fd, "master wal")
        finally:
            os.close(fd)

    # ------------------------------------------------------------ helpers (inside a tx)

    def _attr(self, c: sqlite3.Connection, ino: int, what: str = "") -> Attr:
        row = c.execute(f"SELECT {ATTR_COLS} FROM inodes WHERE ino=?", (ino,)).fetchone()
        if row is None:
            raise FsError(errno.ENOENT, what or f"inode {ino}")
        return Attr(*row)

    @staticmethod
    def _lookup(c: sqlite3.Connection, parent: int, name: str) -> tuple[int, int] | None:
        """(ino, mode) of `name` in directory `parent`, or None."""
        return c.execute(
            "SELECT e.ino, i.mode FROM entries e JOIN inodes i ON i.ino = e.ino"
            " WHERE e.parent=? AND e.name=?",
            (parent, name),
        ).fetchone()

    def _walk(self, c: sqlite3.Connection, parts: list[str], path: str) -> int:
        """The directory inode named by `parts` (each must exist and be a directory)."""
        ino = ROOT_INO
        for name in parts:
            found = self._lookup(c, ino, name)
            if found is None:
                raise FsError(errno.ENOENT, path)
            if not stat.S_ISDIR(found[1]):
                raise FsError(errno.ENOTDIR, path)
            ino = found[0]
        return ino

    def _resolve(self, c: sqlite3.Connection, path: str) -> int:
        parts = paths.split(path)
        if not parts:
            return ROOT_INO
        parent = self._walk(c, parts[:-1], path)
        found = self._lookup(c, parent, parts[-1])
        if found is None:
            raise FsError(errno.ENOENT, path)
        return found[0]

    def _resolve_parent(self, c: sqlite3.Connection, path: str) -> tuple[int, str]:
        parent_parts, name = paths.split_parent(path)
        return self._walk(c, parent_parts, path), name

    @staticmethod
    def _pieces(c: sqlite3.Connection, ino: int) -> list[Piece]:
        return [
            Piece(*row)
            for row in c.execute(
                "SELECT file_offset, length, fid, needle_offset, needle_size, crc32c"
                " FROM chunks WHERE ino=? ORDER BY file_offset",
                (ino,),
            )
        ]

    def _queue(self, c: sqlite3.Connection, fids: Iterable[str]) -> None:
        now = self._now()
        c.executemany(
            "INSERT OR IGNORE INTO deletion_queue (fid, queued_at, attempts, next_try_ns)"
            " VALUES (?, ?, 0, 0)",
            [(f, now) for f in sorted(fids)],
        )

    def _rewrite_from(self, c: sqlite3.Connection, ino: int, lo: int,
                      transform: Callable[[list[Piece]], list[Piece]],
                      written: Iterable[Piece] = ()) -> None:
        """Replace the inode's pieces that reach past file offset `lo` by `transform(them)`.

        A write at or after `lo` or a truncate at `lo` cannot change the pieces that end
        before it, so an append to a file of thousands of pieces touches one or two rows, not
        all. Fids of the old pieces or of `written` (pieces just committed, perhaps shadowed
        at once) that no piece of the inode references afterwards are queued for deletion.
        """
        row = c.execute(
            "SELECT MAX(file_offset) FROM chunks WHERE ino=? AND file_offset <= ?", (ino, lo)
        ).fetchone()
        start = row[0] if row[0] is not None else lo
        old = [
            Piece(*r)
            for r in c.execute(
                "SELECT file_offset, length, fid, needle_offset, needle_size, crc32c"
                " FROM chunks WHERE ino=? AND file_offset >= ? ORDER BY file_offset",
                (ino, start),
            )
        ]
        new = transform(old)
        old_set, new_set = set(old), set(new)
        c.executemany(
            "DELETE FROM chunks WHERE ino=? AND file_offset=?",
            [(ino, p.file_offset) for p in old if p not in new_set],
        )
        c.executemany(
            "INSERT INTO chunks (ino, file_offset, length, fid, needle_offset, needle_size,"
            " crc32c) VALUES (?,?,?,?,?,?,?)",
            [
                (ino, p.file_offset, p.length, p.fid, p.needle_offset, p.needle_size, p.crc32c)
                for p in new
                if p not in old_set
            ],
        )
        gone = (chunkmap.fids(old) | chunkmap.fids(written)) - chunkmap.fids(new)
        if gone and start > 0:
            # A needle may be split into parts, some of them before `start`: still in use.
            marks = ",".join("?" * len(gone))
            gone -= {r[0] for r in c.execute(
                f"SELECT DISTINCT fid FROM chunks WHERE ino=? AND file_offset < ?"
                f" AND fid IN ({marks})", (ino, start, *sorted(gone)))}
        self._queue(c, gone)

    def _delete_inode(self, c: sqlite3.Connection, ino: int) -> None:
        gone = {r[0] for r in c.execute("SELECT DISTINCT fid FROM chunks WHERE ino=?", (ino,))}
        c.execute("DELETE FROM chunks WHERE ino=?", (ino,))
        c.execute("DELETE FROM xattrs WHERE ino=?", (ino,))
        c.execute("DELETE FROM inodes WHERE ino=?", (ino,))
        self._queue(c, gone)
