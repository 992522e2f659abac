"""SQLiteStore's foundation: one sqlite3 connection, its transactions and group commit. The
operations themselves are the shared SQL of sql_rows.py and its siblings.

Locking: the store holds one sqlite3 connection (WAL mode) guarded by one lock; each method
takes the lock for its whole transaction (`_tx`). Transactions are short (a handful of indexed
statements), so a single writer is not the bottleneck the network is. `batch` groups many
operations into one transaction, each in its own savepoint, for one WAL append and one sync.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cluster.common import durability
from cluster.master import schema
from cluster.master.sql_rows import SqlRows

SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


class SQLiteBase(SqlRows):
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
    def batch(self, durable: bool = False, size: int = 0) -> Iterator[None]:
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
