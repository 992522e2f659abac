"""The metadata store: the namespace, chunk lists, xattrs, deletion queue and durable counters.

`MetadataStore` is the interface the master's servicer, topology and reaper call; the contract
test suite (tests/unit/test_metadata_store.py) runs against every implementation. `SQLiteStore`
is the default implementation (schema in schema.py); a PostgreSQL one can replace it.

Every public method is ONE transaction: a rename that replaces a target, an unlink that queues
the file's needles for deletion, a commit that replaces a chunk list either happen whole or not
at all. Whenever pieces stop being visible (overlay, truncate, delete) the fids that no piece of
that inode references any more go to the deletion queue in the same transaction.

Locking: SQLiteStore holds one sqlite3 connection (WAL mode) guarded by one lock; each method
takes the lock for its whole transaction. Transactions are short (a handful of indexed
statements), so a single writer is not the bottleneck the network is.
"""
from __future__ import annotations

import abc
import errno
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import crc32c

from cluster.common import chunkmap, durability
from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from cluster.common.fid import BadFid, Fid
from cluster.master import paths, schema
from cluster.master.schema import ROOT_INO

XATTR_CREATE = 1
XATTR_REPLACE = 2
MAX_REPLICATION = 8
MAX_FILE_SIZE = (1 << 63) - 1


@dataclass(frozen=True)
class Attr:
    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    nlink: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    replication: int = 0
    has_xattrs: bool = False
    rdev: int = 0             # st_rdev of a character or block device, else 0
    inline: bool = False      # a regular file whose bytes are in the store (inline_data)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


@dataclass(frozen=True)
class Content:
    """What a reader needs of a file: its attributes, its chunk list (empty for an inline
    file), the version that grows with every change, and an inline file's bytes and CRC."""
    attr: Attr
    pieces: list[Piece]
    version: int
    inline: bytes | None = None
    inline_crc: int = 0


@dataclass(frozen=True)
class ServerRecord:
    server_id: int
    name: str
    grpc_address: str
    http_address: str


@dataclass(frozen=True)
class ChunkRef:
    """One piece of one inode's chunk list, with a path naming the inode (fsck)."""
    ino: int
    path: str
    piece: Piece


class MetadataStore(abc.ABC):
    """What the master needs from a metadata backend. Paths are absolute; errors are FsError."""

    @contextmanager
    def batch(self, durable: bool = False) -> Iterator[None]:
        """Group commit of the calls made inside (see SQLiteStore.batch). This default runs
        each call as its own transaction, which keeps every promise but the speed."""
        yield

    @contextmanager
    def between_commits(self) -> Iterator[None]:
        """The reads made inside, and whatever the caller does with their answers, happen
        between two commits: a callback granted inside is registered before any later
        commit's break is worked out (callbacks.py). This default promises nothing; a
        backend with callbacks must."""
        yield

    # ---- namespace
    @abc.abstractmethod
    def getattr(self, path: str) -> Attr: ...

    @abc.abstractmethod
    def getattr_ino(self, ino: int) -> Attr: ...

    @abc.abstractmethod
    def readdir(self, path: str, after: str = "", limit: int = 1000) -> list[tuple[str, Attr]]:
        """Entries named bytewise after `after`, sorted by name, at most `limit`."""

    @abc.abstractmethod
    def mkdir(self, path: str, mode: int, uid: int = 0, gid: int = 0,
              parents: bool = False) -> Attr: ...

    @abc.abstractmethod
    def create(self, path: str, mode: int, uid: int = 0, gid: int = 0, exclusive: bool = False,
               truncate: bool = False, replication: int = 0) -> Attr: ...

    @abc.abstractmethod
    def mknod(self, path: str, mode: int, rdev: int = 0, uid: int = 0, gid: int = 0) -> Attr:
        """A new regular file, FIFO, socket or device (`mode` holds the type); EEXIST if the
        name exists. rdev is kept for devices only."""

    @abc.abstractmethod
    def unlink(self, path: str, keep_open: int = 0) -> int:
        """Remove a non-directory name; returns the ino if it lost its last link, else 0.
        A regular file that did is kept as an orphan tagged `keep_open` when that is not 0
        (the session holding it open; 1: a client without one)."""

    @abc.abstractmethod
    def rmdir(self, path: str) -> None: ...

    @abc.abstractmethod
    def exchange(self, a: str, b: str) -> None:
        """Swap what two existing names name (RENAME_EXCHANGE); EINVAL if either is a
        directory the other would end up inside."""

    @abc.abstractmethod
    def rename(self, old: str, new: str, no_replace: bool = False,
               keep_open: int = 0) -> int:
        """Move old to new, replacing new atomically; returns the replaced ino that lost its
        last link (0 if none), kept as unlink keeps it."""

    @abc.abstractmethod
    def symlink(self, path: str, target: str, uid: int = 0, gid: int = 0) -> Attr: ...

    @abc.abstractmethod
    def readlink(self, path: str) -> str: ...

    @abc.abstractmethod
    def link(self, existing: str, new: str) -> Attr: ...

    @abc.abstractmethod
    def setattr(self, path: str | None = None, ino: int = 0, *, mode: int | None = None,
                uid: int | None = None, gid: int | None = None,
                size: int | None = None, atime_ns: int | None = None,
                mtime_ns: int | None = None) -> Attr: ...

    @abc.abstractmethod
    def getxattr(self, path: str, name: str) -> bytes: ...

    @abc.abstractmethod
    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None: ...

    @abc.abstractmethod
    def listxattr(self, path: str) -> list[str]: ...

    @abc.abstractmethod
    def removexattr(self, path: str, name: str) -> None: ...

    # ---- chunk lists
    @abc.abstractmethod
    def get_chunks(self, ino: int) -> tuple[Attr, list[Piece], int]: ...

    @abc.abstractmethod
    def get_chunks_at(self, path: str) -> tuple[Attr, list[Piece], int]:
        """get_chunks of the file `path` names now, resolved in the same transaction. An open
        uses it so that a name another client replaced (an editor's write-and-rename) opens
        the new file, not a cached inode number."""

    @abc.abstractmethod
    def commit(self, ino: int, pieces: list[Piece], size: int, mtime_ns: int = 0,
               exact: bool = False) -> Attr:
        """Lay `pieces` over the file's chunk list. The size grows to `size` and to the end of
        every piece but never shrinks, unless `exact` (a whole-file replacement): then it is
        exactly `size` and bytes past it are cut."""

    @abc.abstractmethod
    def content(self, ino: int = 0, path: str = "") -> Content:
        """Attributes, chunk list and inline bytes of the file `ino` (or `path`) names, read
        in one transaction."""

    @abc.abstractmethod
    def write_inline(self, ino: int, offset: int, data: bytes, crc: int, size: int = 0,
                     mtime_ns: int = 0, exact: bool = False, limit: int = 65536) -> Attr:
        """Write `data` (whose CRC32C the writer computed as `crc`; EINVAL if it does not
        match) at `offset` of a file kept inline, growing it to at least `size` (exactly
        `size`, everything else dropped, with `exact`). EFBIG, changing nothing, when the
        result would not stay inline: its bytes past `limit`, or (without `exact`) a file
        whose bytes are in chunks. The writer then goes through the gateway."""

    @abc.abstractmethod
    def release_inode(self, ino: int) -> None: ...

    @abc.abstractmethod
    def reclaim_orphans(self, session: int) -> int:
        """Free the files `session` kept open after their last name went; how many."""

    @abc.abstractmethod
    def orphan_sessions(self) -> set[int]:
        """The sessions keeping unlinked files open (1, "no session", is not one)."""

    @abc.abstractmethod
    def count_inodes(self) -> int: ...

    # ---- deletion queue
    @abc.abstractmethod
    def due_deletions(self, limit: int) -> list[tuple[str, int]]:
        """(fid, attempts) rows whose retry time has come, oldest first."""

    @abc.abstractmethod
    def deletions_done(self, fids: Iterable[str]) -> None: ...

    @abc.abstractmethod
    def deletions_retry(self, fids: Iterable[str], delay_s: float) -> None: ...

    @abc.abstractmethod
    def pending_deletions(self) -> int: ...

    # ---- fsck
    @abc.abstractmethod
    def chunk_refs(self) -> tuple[list[ChunkRef], list[str]]:
        """Every piece of every inode (by ino, then file offset) and every fid queued for
        deletion, from one snapshot."""

    @abc.abstractmethod
    def inline_checks(self) -> list[tuple[int, str, int, bool]]:
        """(ino, a path, bytes, CRC32C matches) of every inline file (fsck)."""

    @abc.abstractmethod
    def queue_orphans(self, fids: Iterable[str]) -> tuple[int, int]:
        """Queue fids no chunk references for deletion; (queued, skipped as referenced)."""

    @abc.abstractmethod
    def counter(self, name: str) -> int:
        """The current value of a durable counter (0 if never advanced)."""

    # ---- volume servers and counters
    @abc.abstractmethod
    def register_server(self, server_id: int, name: str, grpc_address: str,
                        http_address: str) -> int: ...

    @abc.abstractmethod
    def get_server(self, server_id: int) -> ServerRecord | None: ...

    @abc.abstractmethod
    def server_ids(self) -> list[int]:
        """Every volume-server id ever registered."""

    @abc.abstractmethod
    def advance_counter(self, name: str, step: int) -> int:
        """Reserve [value, value + step) of a durable counter; returns value."""

    @abc.abstractmethod
    def raise_counter(self, name: str, at_least: int) -> None: ...

    def close(self) -> None:  # pragma: no cover - optional
        pass


_ATTR_COLS_PLAIN = "ino, mode, uid, gid, size, nlink, atime_ns, mtime_ns, ctime_ns, replication"
# has_xattrs lets a mount answer the getxattr calls `ls -l` makes for every file (ACLs,
# SELinux labels) without one RPC each; the xattrs table's primary key (ino, name) makes it an
# index probe.
_ATTR_COLS = (_ATTR_COLS_PLAIN
              + ", EXISTS(SELECT 1 FROM xattrs x WHERE x.ino = inodes.ino), rdev,"
              " inline_data IS NOT NULL")
_ATTR_COLS_I = (", ".join("i." + c.strip() for c in _ATTR_COLS_PLAIN.split(","))
                + ", EXISTS(SELECT 1 FROM xattrs x WHERE x.ino = i.ino), i.rdev,"
                  " i.inline_data IS NOT NULL")
# The file types mknod makes: a regular file, or a special file that is metadata only.
MKNOD_TYPES = (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)
_SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def _validate_pieces(pieces: list[Piece]) -> None:
    for p in pieces:
        try:
            Fid.parse(p.fid)
        except BadFid as e:
            raise FsError(errno.EINVAL, str(e)) from None
        if p.length <= 0 or p.file_offset < 0 or p.needle_offset < 0:
            raise FsError(errno.EINVAL, f"bad chunk {p.fid}: empty or negative range")
        if p.needle_offset + p.length > p.needle_size:
            raise FsError(errno.EINVAL, f"bad chunk {p.fid}: range past the needle's "
                                        f"{p.needle_size} bytes")
        if p.file_offset + p.length > MAX_FILE_SIZE:
            raise FsError(errno.EFBIG, f"chunk {p.fid} ends past the largest file size")


class SQLiteStore(MetadataStore):
    """MetadataStore over one SQLite database file in WAL mode."""

    def __init__(self, path: str, synchronous: str = "FULL", clock=time.time_ns):
        sync = synchronous.upper()
        if sync not in _SYNC_MODES:
            raise ValueError(f"sqlite_synchronous must be one of {_SYNC_MODES}, got {synchronous!r}")
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

    @classmethod
    def open_dir(cls, data_dir: str, synchronous: str = "FULL") -> SQLiteStore:
        os.makedirs(data_dir, exist_ok=True)
        return cls(os.path.join(data_dir, "meta.db"), synchronous)

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

    def _existing(self, c, path: str) -> tuple[int, str, int, int]:
        """(parent ino, name, ino, mode) of the entry `path` names; ENOENT if none."""
        parent, name = self._resolve_parent(c, path)
        found = self._lookup(c, parent, name)
        if found is None:
            raise FsError(errno.ENOENT, path)
        return parent, name, found[0], found[1]

    def _attr(self, c, ino: int, what: str = "") -> Attr:
        row = c.execute(f"SELECT {_ATTR_COLS} FROM inodes WHERE ino=?", (ino,)).fetchone()
        if row is None:
            raise FsError(errno.ENOENT, what or f"inode {ino}")
        return Attr(*row)

    @staticmethod
    def _lookup(c, parent: int, name: str) -> tuple[int, int] | None:
        """(ino, mode) of `name` in directory `parent`, or None."""
        return c.execute(
            "SELECT e.ino, i.mode FROM entries e JOIN inodes i ON i.ino = e.ino"
            " WHERE e.parent=? AND e.name=?",
            (parent, name),
        ).fetchone()

    def _walk(self, c, parts: list[str], path: str) -> int:
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

    def _resolve(self, c, path: str) -> int:
        parts = paths.split(path)
        if not parts:
            return ROOT_INO
        parent = self._walk(c, parts[:-1], path)
        found = self._lookup(c, parent, parts[-1])
        if found is None:
            raise FsError(errno.ENOENT, path)
        return found[0]

    def _resolve_parent(self, c, path: str) -> tuple[int, str]:
        parent_parts, name = paths.split_parent(path)
        return self._walk(c, parent_parts, path), name

    def _alloc_ino(self, c) -> int:
        return c.execute(
            "UPDATE counters SET value = value + 1 WHERE name=? RETURNING value - 1",
            (schema.COUNTER_NEXT_INO,),
        ).fetchone()[0]

    def _new_inode(self, c, mode: int, uid: int, gid: int, nlink: int, now: int,
                   size: int = 0, target: str | None = None, replication: int = 0,
                   parent: int = 0, rdev: int = 0) -> int:
        if parent:
            # A setgid directory passes its group on, and to subdirectories its setgid bit
            # (what Linux file systems do; shared group directories rely on it).
            row = c.execute("SELECT mode, gid FROM inodes WHERE ino=?", (parent,)).fetchone()
            if row is not None and row[0] & stat.S_ISGID:
                gid = row[1]
                if stat.S_ISDIR(mode):
                    mode |= stat.S_ISGID
        ino = self._alloc_ino(c)
        c.execute(
            "INSERT INTO inodes (ino, mode, uid, gid, size, atime_ns, mtime_ns, ctime_ns, nlink,"
            " target, replication, rdev) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (ino, mode, uid, gid, size, now, now, now, nlink, target, replication, rdev),
        )
        return ino

    @staticmethod
    def _touch_dir(c, ino: int, now: int, nlink_delta: int = 0) -> None:
        c.execute(
            "UPDATE inodes SET mtime_ns=?, ctime_ns=?, nlink = nlink + ? WHERE ino=?",
            (now, now, nlink_delta, ino),
        )

    @staticmethod
    def _pieces(c, ino: int) -> list[Piece]:
        return [
            Piece(*row)
            for row in c.execute(
                "SELECT file_offset, length, fid, needle_offset, needle_size, crc32c"
                " FROM chunks WHERE ino=? ORDER BY file_offset",
                (ino,),
            )
        ]

    def _queue(self, c, fids: Iterable[str]) -> None:
        now = self._now()
        c.executemany(
            "INSERT OR IGNORE INTO deletion_queue (fid, queued_at, attempts, next_try_ns)"
            " VALUES (?, ?, 0, 0)",
            [(f, now) for f in sorted(fids)],
        )

    def _rewrite_from(self, c, ino: int, lo: int,
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

    def _delete_inode(self, c, ino: int) -> None:
        gone = {r[0] for r in c.execute("SELECT DISTINCT fid FROM chunks WHERE ino=?", (ino,))}
        c.execute("DELETE FROM chunks WHERE ino=?", (ino,))
        c.execute("DELETE FROM xattrs WHERE ino=?", (ino,))
        c.execute("DELETE FROM inodes WHERE ino=?", (ino,))
        self._queue(c, gone)

    def _drop_link(self, c, ino: int, keep_open: int, now: int) -> int:
        """One name of a non-directory inode went; returns ino if that was its last.
        `keep_open` (0: no) goes into inodes.orphan: the session that still has the file open
        (1: a client without a session), whose end frees the inode."""
        nlink = c.execute(
            "UPDATE inodes SET nlink = nlink - 1, ctime_ns=? WHERE ino=? RETURNING nlink",
            (now, ino),
        ).fetchone()[0]
        if nlink > 0:
            return 0
        if keep_open:
            c.execute("UPDATE inodes SET orphan=? WHERE ino=?", (int(keep_open), ino))
        else:
            self._delete_inode(c, ino)
        return ino

    def _is_dir_empty(self, c, ino: int) -> bool:
        return c.execute("SELECT 1 FROM entries WHERE parent=? LIMIT 1", (ino,)).fetchone() is None

    # ------------------------------------------------------------ namespace

    def getattr(self, path: str) -> Attr:
        with self._tx(write=False) as c:
            return self._attr(c, self._resolve(c, path), path)

    def getattr_ino(self, ino: int) -> Attr:
        with self._tx(write=False) as c:
            return self._attr(c, ino)

    def readdir(self, path: str, after: str = "", limit: int = 1000) -> list[tuple[str, Attr]]:
        with self._tx(write=False) as c:
            ino = self._resolve(c, path)
            if not stat.S_ISDIR(self._attr(c, ino, path).mode):
                raise FsError(errno.ENOTDIR, path)
            rows = c.execute(
                f"SELECT e.name, {_ATTR_COLS_I} FROM entries e JOIN inodes i ON i.ino = e.ino"
                " WHERE e.parent=? AND e.name > ? ORDER BY e.name LIMIT ?",
                (ino, after or "", max(1, limit)),
            ).fetchall()
        return [(row[0], Attr(*row[1:])) for row in rows]

    def mkdir(self, path: str, mode: int, uid: int = 0, gid: int = 0,
              parents: bool = False) -> Attr:
        parts = paths.split(path)
        mode = stat.S_IFDIR | (mode & 0o7777)
        with self._tx() as c:
            if not parts:
                if parents:
                    return self._attr(c, ROOT_INO)
                raise FsError(errno.EEXIST, path)
            now = self._now()
            ino = ROOT_INO
            for i, name in enumerate(parts):
                last = i == len(parts) - 1
                found = self._lookup(c, ino, name)
                if found is not None:
                    if last and not parents:
                        raise FsError(errno.EEXIST, path)
                    if not stat.S_ISDIR(found[1]):
                        raise FsError(errno.EEXIST if last else errno.ENOTDIR, path)
                    ino = found[0]
                    continue
                if not parents and not last:
                    raise FsError(errno.ENOENT, path)
                child = self._new_inode(c, mode, uid, gid, 2, now, parent=ino)
                c.execute("INSERT INTO entries (parent, name, ino) VALUES (?,?,?)",
                          (ino, name, child))
                self._touch_dir(c, ino, now, +1)
                ino = child
            return self._attr(c, ino)

    def create(self, path: str, mode: int, uid: int = 0, gid: int = 0, exclusive: bool = False,
               truncate: bool = False, replication: int = 0) -> Attr:
        if not 0 <= replication <= MAX_REPLICATION:
            raise FsError(errno.EINVAL, f"replication {replication} is not 0..{MAX_REPLICATION}")
        with self._tx() as c:
            parent, name = self._resolve_parent(c, path)
            found = self._lookup(c, parent, name)
            now = self._now()
            if found is not None:
                ino, old_mode = found
                if exclusive:
                    raise FsError(errno.EEXIST, path)
                if stat.S_ISDIR(old_mode):
                    raise FsError(errno.EISDIR, path)
                if truncate and stat.S_ISREG(old_mode):
                    attr = self._attr(c, ino)
                    if attr.size:
                        self._rewrite_from(c, ino, 0, lambda old: [])
                        c.execute(
                            "UPDATE inodes SET size=0, mtime_ns=?, ctime_ns=?, inline_data=NULL,"
                            " inline_crc=NULL, version = version + 1 WHERE ino=?",
                            (now, now, ino),
                        )
                return self._attr(c, ino)
            ino = self._new_inode(c, stat.S_IFREG | (mode & 0o7777), uid, gid, 1, now,
                                  replication=replication, parent=parent)
            c.execute("INSERT INTO entries (parent, name, ino) VALUES (?,?,?)", (parent, name, ino))
            self._touch_dir(c, parent, now)
            return self._attr(c, ino)

    def mknod(self, path: str, mode: int, rdev: int = 0, uid: int = 0, gid: int = 0) -> Attr:
        kind = stat.S_IFMT(mode)
        if kind not in MKNOD_TYPES:
            raise FsError(errno.EINVAL, f"mknod of file type {kind:#o}")
        if kind not in (stat.S_IFCHR, stat.S_IFBLK):
            rdev = 0
        if not 0 <= rdev < 1 << 64:
            raise FsError(errno.EINVAL, f"device number {rdev}")
        with self._tx() as c:
            parent, name = self._resolve_parent(c, path)
            if self._lookup(c, parent, name) is not None:
                raise FsError(errno.EEXIST, path)
            now = self._now()
            ino = self._new_inode(c, kind | (mode & 0o7777), uid, gid, 1, now, parent=parent,
                                  rdev=rdev)
            c.execute("INSERT INTO entries (parent, name, ino) VALUES (?,?,?)", (parent, name, ino))
            self._touch_dir(c, parent, now)
            return self._attr(c, ino)

    def unlink(self, path: str, keep_open: int = 0) -> int:
        with self._tx() as c:
            parent, name, ino, mode = self._existing(c, path)
            if stat.S_ISDIR(mode):
                raise FsError(errno.EISDIR, path)
            now = self._now()
            c.execute("DELETE FROM entries WHERE parent=? AND name=?", (parent, name))
            self._touch_dir(c, parent, now)
            return self._drop_link(c, ino, keep_open if stat.S_ISREG(mode) else 0, now)

    def rmdir(self, path: str) -> None:
        with self._tx() as c:
            parent, name, ino, mode = self._existing(c, path)
            if not stat.S_ISDIR(mode):
                raise FsError(errno.ENOTDIR, path)
            if not self._is_dir_empty(c, ino):
                raise FsError(errno.ENOTEMPTY, path)
            c.execute("DELETE FROM entries WHERE parent=? AND name=?", (parent, name))
            self._delete_inode(c, ino)
            self._touch_dir(c, parent, self._now(), -1)

    def _is_within(self, c, ino: int, ancestor: int) -> bool:
        """Whether directory `ino` is `ancestor` or lies below it."""
        seen = 0
        while True:
            if ino == ancestor:
                return True
            if ino == ROOT_INO:
                return False
            row = c.execute("SELECT parent FROM entries WHERE ino=? LIMIT 1", (ino,)).fetchone()
            if row is None:
                return False
            ino = row[0]
            seen += 1
            if seen > 100_000:  # a cycle would be a corrupted tree; refuse rather than spin
                raise FsError(errno.ELOOP, "directory tree has a cycle")

    def rename(self, old: str, new: str, no_replace: bool = False,
               keep_open: int = 0) -> int:
        with self._tx() as c:
            old_parent, old_name = self._resolve_parent(c, old)
            found = self._lookup(c, old_parent, old_name)
            if found is None:
                raise FsError(errno.ENOENT, old)
            src, src_mode = found
            new_parent, new_name = self._resolve_parent(c, new)
            if old_parent == new_parent and old_name == new_name:
                return 0
            src_dir = stat.S_ISDIR(src_mode)
            if src_dir and self._is_within(c, new_parent, src):
                raise FsError(errno.EINVAL, f"{new} is inside {old}")
            dst = self._lookup(c, new_parent, new_name)
            if dst is not None and dst[0] == src:
                return 0  # two names of one inode: POSIX says do nothing
            if dst is not None and no_replace:
                raise FsError(errno.EEXIST, new)
            now = self._now()
            replaced = 0
            new_parent_delta = 1 if src_dir and old_parent != new_parent else 0
            if dst is not None:
                dst_ino, dst_mode = dst
                dst_dir = stat.S_ISDIR(dst_mode)
                if src_dir and not dst_dir:
                    raise FsError(errno.ENOTDIR, new)
                if dst_dir and not src_dir:
                    raise FsError(errno.EISDIR, new)
                c.execute("DELETE FROM entries WHERE parent=? AND name=?", (new_parent, new_name))
                if dst_dir:
                    if not self._is_dir_empty(c, dst_ino):
                        raise FsError(errno.ENOTEMPTY, new)
                    self._delete_inode(c, dst_ino)
                    new_parent_delta -= 1
                    replaced = dst_ino
                else:
                    replaced = self._drop_link(
                        c, dst_ino, keep_open if stat.S_ISREG(dst_mode) else 0, now)
            c.execute("DELETE FROM entries WHERE parent=? AND name=?", (old_parent, old_name))
            c.execute("INSERT INTO entries (parent, name, ino) VALUES (?,?,?)",
                      (new_parent, new_name, src))
            if old_parent != new_parent:
                self._touch_dir(c, old_parent, now, -1 if src_dir else 0)
            self._touch_dir(c, new_parent, now, new_parent_delta)
            c.execute("UPDATE inodes SET ctime_ns=? WHERE ino=?", (now, src))
            return replaced

    def exchange(self, a: str, b: str) -> None:
        with self._tx() as c:
            a_parent, a_name = self._resolve_parent(c, a)
            b_parent, b_name = self._resolve_parent(c, b)
            found_a = self._lookup(c, a_parent, a_name)
            found_b = self._lookup(c, b_parent, b_name)
            if found_a is None or found_b is None:
                raise FsError(errno.ENOENT, a if found_a is None else b)
            (a_ino, a_mode), (b_ino, b_mode) = found_a, found_b
            if a_ino == b_ino:
                return   # the same inode (or the same name): nothing moves
            a_dir, b_dir = stat.S_ISDIR(a_mode), stat.S_ISDIR(b_mode)
            if (a_dir and self._is_within(c, b_parent, a_ino)) or \
                    (b_dir and self._is_within(c, a_parent, b_ino)):
                raise FsError(errno.EINVAL, f"{a} and {b}: one is inside the other")
            now = self._now()
            c.execute("UPDATE entries SET ino=? WHERE parent=? AND name=?",
                      (b_ino, a_parent, a_name))
            c.execute("UPDATE entries SET ino=? WHERE parent=? AND name=?",
                      (a_ino, b_parent, b_name))
            # A directory moving to another parent takes its '..' link with it.
            delta = int(b_dir) - int(a_dir) if a_parent != b_parent else 0
            self._touch_dir(c, a_parent, now, delta)
            if b_parent != a_parent:
                self._touch_dir(c, b_parent, now, -delta)
            c.execute("UPDATE inodes SET ctime_ns=? WHERE ino IN (?, ?)", (now, a_ino, b_ino))

    def symlink(self, path: str, target: str, uid: int = 0, gid: int = 0) -> Attr:
        paths.validate_symlink_target(target)
        with self._tx() as c:
            parent, name = self._resolve_parent(c, path)
            if self._lookup(c, parent, name) is not None:
                raise FsError(errno.EEXIST, path)
            now = self._now()
            ino = self._new_inode(c, stat.S_IFLNK | 0o777, uid, gid, 1, now,
                                  size=len(target.encode("utf-8", "surrogatepass")), target=target,
                                  parent=parent)
            c.execute("INSERT INTO entries (parent, name, ino) VALUES (?,?,?)", (parent, name, ino))
            self._touch_dir(c, parent, now)
            return self._attr(c, ino)

    def readlink(self, path: str) -> str:
        with self._tx(write=False) as c:
            ino = self._resolve(c, path)
            row = c.execute("SELECT mode, target FROM inodes WHERE ino=?", (ino,)).fetchone()
            if row is None:
                raise FsError(errno.ENOENT, path)
            if not stat.S_ISLNK(row[0]):
                raise FsError(errno.EINVAL, f"{path} is not a symlink")
            return row[1]

    def link(self, existing: str, new: str) -> Attr:
        with self._tx() as c:
            src = self._resolve(c, existing)
            attr = self._attr(c, src, existing)
            if attr.is_dir:
                raise FsError(errno.EPERM, f"{existing} is a directory")
            parent, name = self._resolve_parent(c, new)
            if self._lookup(c, parent, name) is not None:
                raise FsError(errno.EEXIST, new)
            now = self._now()
            c.execute("INSERT INTO entries (parent, name, ino) VALUES (?,?,?)", (parent, name, src))
            c.execute("UPDATE inodes SET nlink = nlink + 1, ctime_ns=? WHERE ino=?", (now, src))
            self._touch_dir(c, parent, now)
            return self._attr(c, src)

    def setattr(self, path: str | None = None, ino: int = 0, *, mode: int | None = None,
                uid: int | None = None, gid: int | None = None,
                size: int | None = None, atime_ns: int | None = None,
                mtime_ns: int | None = None) -> Attr:
        if size is not None and not 0 <= size <= MAX_FILE_SIZE:
            raise FsError(errno.EFBIG if size > 0 else errno.EINVAL, f"size {size}")
        with self._tx() as c:
            if ino:
                target = ino
                attr = self._attr(c, ino)
            elif path is not None:
                target = self._resolve(c, path)
                attr = self._attr(c, target, path)
            else:
                raise FsError(errno.EINVAL, "setattr needs a path or an ino")
            what = path or f"inode {ino}"
            now = self._now()
            sets: dict[str, int | bytes] = {}
            if mode is not None:
                sets["mode"] = (attr.mode & ~0o7777) | (mode & 0o7777)
            if uid is not None:
                sets["uid"] = uid
            if gid is not None:
                sets["gid"] = gid
            if size is not None:
                if attr.is_dir:
                    raise FsError(errno.EISDIR, what)
                if not attr.is_file:
                    raise FsError(errno.EINVAL, f"{what} is not a regular file")
                self._rewrite_from(c, target, size, lambda old: chunkmap.truncate(old, size))
                if attr.inline:  # cut the inline bytes; a grow reads zeros past them
                    data = bytes(c.execute("SELECT inline_data FROM inodes WHERE ino=?",
                                           (target,)).fetchone()[0])[:size]
                    sets["inline_data"], sets["inline_crc"] = data, crc32c.crc32c(data)
                sets["size"] = size
                sets["mtime_ns"] = now
                c.execute("UPDATE inodes SET version = version + 1 WHERE ino=?", (target,))
            if atime_ns is not None:
                sets["atime_ns"] = atime_ns
            if mtime_ns is not None:
                sets["mtime_ns"] = mtime_ns
            sets["ctime_ns"] = now
            cols = ", ".join(f"{k}=?" for k in sets)
            c.execute(f"UPDATE inodes SET {cols} WHERE ino=?", (*sets.values(), target))
            return self._attr(c, target)

    # ------------------------------------------------------------ xattrs

    def getxattr(self, path: str, name: str) -> bytes:
        paths.validate_xattr_name(name)
        with self._tx(write=False) as c:
            ino = self._resolve(c, path)
            row = c.execute("SELECT value FROM xattrs WHERE ino=? AND name=?", (ino, name)).fetchone()
            if row is None:
                raise FsError(errno.ENODATA, f"{path}: no xattr {name!r}")
            return bytes(row[0])

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        paths.validate_xattr_name(name)
        if len(value) > paths.XATTR_VALUE_MAX:
            raise FsError(errno.E2BIG, f"xattr value is {len(value)} bytes, "
                                       f"limit {paths.XATTR_VALUE_MAX}")
        if flags & ~(XATTR_CREATE | XATTR_REPLACE) or flags == XATTR_CREATE | XATTR_REPLACE:
            raise FsError(errno.EINVAL, f"bad xattr flags {flags}")
        with self._tx() as c:
            ino = self._resolve(c, path)
            exists = c.execute(
                "SELECT 1 FROM xattrs WHERE ino=? AND name=?", (ino, name)).fetchone() is not None
            if flags & XATTR_CREATE and exists:
                raise FsError(errno.EEXIST, f"{path}: xattr {name!r} exists")
            if flags & XATTR_REPLACE and not exists:
                raise FsError(errno.ENODATA, f"{path}: no xattr {name!r}")
            c.execute("INSERT OR REPLACE INTO xattrs (ino, name, value) VALUES (?,?,?)",
                      (ino, name, bytes(value)))
            c.execute("UPDATE inodes SET ctime_ns=? WHERE ino=?", (self._now(), ino))

    def listxattr(self, path: str) -> list[str]:
        with self._tx(write=False) as c:
            ino = self._resolve(c, path)
            return [r[0] for r in c.execute(
                "SELECT name FROM xattrs WHERE ino=? ORDER BY name", (ino,))]

    def removexattr(self, path: str, name: str) -> None:
        paths.validate_xattr_name(name)
        with self._tx() as c:
            ino = self._resolve(c, path)
            cur = c.execute("DELETE FROM xattrs WHERE ino=? AND name=?", (ino, name))
            if cur.rowcount == 0:
                raise FsError(errno.ENODATA, f"{path}: no xattr {name!r}")
            c.execute("UPDATE inodes SET ctime_ns=? WHERE ino=?", (self._now(), ino))

    # ------------------------------------------------------------ chunk lists

    def get_chunks(self, ino: int) -> tuple[Attr, list[Piece], int]:
        with self._tx(write=False) as c:
            return self._chunks(c, ino)

    def get_chunks_at(self, path: str) -> tuple[Attr, list[Piece], int]:
        with self._tx(write=False) as c:
            return self._chunks(c, self._resolve(c, path))

    def _chunks(self, c, ino: int) -> tuple[Attr, list[Piece], int]:
        attr = self._attr(c, ino)
        if attr.is_dir:
            raise FsError(errno.EISDIR, f"inode {ino}")
        version = c.execute("SELECT version FROM inodes WHERE ino=?", (ino,)).fetchone()[0]
        return attr, self._pieces(c, ino), version

    def content(self, ino: int = 0, path: str = "") -> Content:
        with self._tx(write=False) as c:
            if not ino:
                ino = self._resolve(c, path)
            attr, pieces, version = self._chunks(c, ino)
            data, crc = c.execute("SELECT inline_data, inline_crc FROM inodes WHERE ino=?",
                                  (ino,)).fetchone()
            return Content(attr, pieces, version, None if data is None else bytes(data),
                           crc or 0)

    def write_inline(self, ino: int, offset: int, data: bytes, crc: int, size: int = 0,
                     mtime_ns: int = 0, exact: bool = False, limit: int = 65536) -> Attr:
        if crc32c.crc32c(data) != crc:
            raise FsError(errno.EINVAL, f"inline write of {len(data)} bytes: CRC32C "
                                        f"{crc:08x} does not match the data")
        if offset < 0 or not 0 <= size <= MAX_FILE_SIZE:
            raise FsError(errno.EINVAL, f"inline write at {offset}, size {size}")
        end = offset + len(data)
        if end > limit:
            raise FsError(errno.EFBIG, f"{end} bytes do not fit inline (limit {limit})")
        with self._tx() as c:
            attr = self._attr(c, ino)
            if not attr.is_file:
                raise FsError(errno.EISDIR if attr.is_dir else errno.EINVAL, f"inode {ino}")
            old = c.execute("SELECT inline_data FROM inodes WHERE ino=?", (ino,)).fetchone()[0]
            has_chunks = c.execute("SELECT 1 FROM chunks WHERE ino=? LIMIT 1",
                                   (ino,)).fetchone() is not None
            if exact:
                body, new_size = bytearray(offset) + data, size
                if has_chunks:
                    self._rewrite_from(c, ino, 0, lambda old: [])
            else:
                if has_chunks:
                    raise FsError(errno.EFBIG, f"inode {ino} keeps its bytes in chunks")
                body = bytearray(old or b"")
                if len(body) < offset:
                    body += bytes(offset - len(body))
                body[offset:end] = data
                new_size = max(size, attr.size, end)
            body = bytes(body[:new_size])
            now = self._now()
            c.execute(
                "UPDATE inodes SET inline_data=?, inline_crc=?, size=?, mtime_ns=?, ctime_ns=?,"
                " version = version + 1 WHERE ino=?",
                (body, crc32c.crc32c(body), new_size, mtime_ns or now, now, ino))
            return self._attr(c, ino)

    def commit(self, ino: int, pieces: list[Piece], size: int, mtime_ns: int = 0,
               exact: bool = False) -> Attr:
        _validate_pieces(pieces)
        if not 0 <= size <= MAX_FILE_SIZE:
            raise FsError(errno.EFBIG if size > 0 else errno.EINVAL, f"size {size}")
        with self._tx() as c:
            attr = self._attr(c, ino)
            if attr.is_dir:
                raise FsError(errno.EISDIR, f"inode {ino}")
            if not attr.is_file:
                raise FsError(errno.EINVAL, f"inode {ino} is not a regular file")
            if not exact:
                size = max([size, attr.size] + [p.end for p in pieces])
            if attr.inline:
                self._move_out_of_line(c, ino, pieces, exact)
            lo = min([size] + [p.file_offset for p in pieces])
            # Pieces past the new size are cut too: a later grow must read zeros there.
            self._rewrite_from(
                c, ino, lo, lambda old: chunkmap.truncate(chunkmap.overlay(old, pieces), size),
                pieces)
            now = self._now()
            c.execute(
                "UPDATE inodes SET size=?, mtime_ns=?, ctime_ns=?, version = version + 1"
                " WHERE ino=?",
                (size, mtime_ns or now, now, ino),
            )
            return self._attr(c, ino)

    def _move_out_of_line(self, c, ino: int, pieces: list[Piece], exact: bool) -> None:
        """A commit of chunks to an inline file: the chunks take the place of the inline
        bytes, so they must cover them (the writer copied them into its first chunk) unless
        the commit replaces the whole file. ESTALE otherwise: the writer did not know the
        file had become inline, and must write again with its bytes."""
        data = c.execute("SELECT inline_data FROM inodes WHERE ino=?", (ino,)).fetchone()[0]
        covered = chunkmap.covered_prefix(chunkmap.overlay([], pieces))
        if data and not exact and covered < len(data):
            raise FsError(errno.ESTALE, f"a commit to inline inode {ino} covers {covered} of "
                                        f"its {len(data)} bytes: they would be lost")
        c.execute("UPDATE inodes SET inline_data=NULL, inline_crc=NULL WHERE ino=?", (ino,))

    def release_inode(self, ino: int) -> None:
        with self._tx() as c:
            row = c.execute("SELECT nlink, orphan FROM inodes WHERE ino=?", (ino,)).fetchone()
            # Still linked (or already gone): nothing to do, so a repeated release is harmless.
            if row is not None and row[0] <= 0 and row[1]:
                self._delete_inode(c, ino)

    def reclaim_orphans(self, session: int) -> int:
        """Free the files that `session` kept open after their last name went (it ended
        without releasing them: a mount killed, or its lease ran out); how many."""
        with self._tx() as c:
            inos = [r[0] for r in c.execute(
                "SELECT ino FROM inodes WHERE orphan=? AND nlink <= 0", (session,))]
            for ino in inos:
                self._delete_inode(c, ino)
            return len(inos)

    def orphan_sessions(self) -> set[int]:
        """The sessions that keep unlinked files open (1, "no session", is not one)."""
        with self._tx(write=False) as c:
            return {r[0] for r in c.execute(
                "SELECT DISTINCT orphan FROM inodes WHERE orphan > 1")}

    def count_inodes(self) -> int:
        with self._tx(write=False) as c:
            return c.execute("SELECT COUNT(*) FROM inodes").fetchone()[0]

    # ------------------------------------------------------------ deletion queue

    def due_deletions(self, limit: int) -> list[tuple[str, int]]:
        with self._tx(write=False) as c:
            return [tuple(r) for r in c.execute(
                "SELECT fid, attempts FROM deletion_queue WHERE next_try_ns <= ?"
                " ORDER BY next_try_ns, queued_at LIMIT ?",
                (self._now(), limit),
            )]

    def deletions_done(self, fids: Iterable[str]) -> None:
        with self._tx() as c:
            c.executemany("DELETE FROM deletion_queue WHERE fid=?", [(f,) for f in fids])

    def deletions_retry(self, fids: Iterable[str], delay_s: float) -> None:
        with self._tx() as c:
            due = self._now() + int(delay_s * 1e9)
            c.executemany(
                "UPDATE deletion_queue SET attempts = attempts + 1, next_try_ns=? WHERE fid=?",
                [(due, f) for f in fids],
            )

    def pending_deletions(self) -> int:
        with self._tx(write=False) as c:
            return c.execute("SELECT COUNT(*) FROM deletion_queue").fetchone()[0]

    # ------------------------------------------------------------ fsck

    @staticmethod
    def _paths(c, inos: set[int]) -> dict[int, str]:
        """One path per inode in `inos` (the bytewise-first name of a hard-linked one)."""
        parent_of: dict[int, tuple[int, str]] = {}
        for parent, name, ino in c.execute(
                "SELECT parent, name, ino FROM entries ORDER BY name"):
            parent_of.setdefault(ino, (parent, name))
        memo: dict[int, str] = {ROOT_INO: "/"}

        def path(ino: int) -> str:
            chain, cur = [], ino
            while cur not in memo:
                up = parent_of.get(cur)
                if up is None or len(chain) > 4096:
                    memo[cur] = f"<unlinked ino {cur}>"
                    break
                chain.append(cur)
                cur = up[0]
            for node in reversed(chain):
                parent, name = parent_of[node]
                base = memo[parent]
                memo[node] = (base.rstrip("/") + "/" + name) if base.startswith("/") else \
                    f"{base}/{name}"
            return memo[ino]

        return {ino: path(ino) for ino in inos}

    def chunk_refs(self) -> tuple[list[ChunkRef], list[str]]:
        with self._tx(write=False) as c:
            rows = c.execute(
                "SELECT ino, file_offset, length, fid, needle_offset, needle_size, crc32c"
                " FROM chunks ORDER BY ino, file_offset").fetchall()
            paths = self._paths(c, {r[0] for r in rows})
            queued = [r[0] for r in c.execute("SELECT fid FROM deletion_queue ORDER BY fid")]
        return [ChunkRef(r[0], paths[r[0]], Piece(*r[1:])) for r in rows], queued

    def inline_checks(self) -> list[tuple[int, str, int, bool]]:
        with self._tx(write=False) as c:
            rows = c.execute("SELECT ino, inline_data, inline_crc FROM inodes"
                             " WHERE inline_data IS NOT NULL ORDER BY ino").fetchall()
            paths = self._paths(c, {r[0] for r in rows})
        return [(ino, paths.get(ino, f"<inode {ino}>"), len(data),
                 crc32c.crc32c(bytes(data)) == (crc or 0)) for ino, data, crc in rows]

    def queue_orphans(self, fids: Iterable[str]) -> tuple[int, int]:
        wanted = set(fids)
        for f in wanted:
            try:
                Fid.parse(f)
            except BadFid as e:
                raise FsError(errno.EINVAL, str(e)) from None
        with self._tx() as c:
            # Checked in the same transaction as the insert: a commit that references one of
            # these fids either happened before (skipped here) or happens after (and then
            # finds it queued only if it reuses a needle fsck saw unreferenced — see
            # docs/fsck-vacuum.md on the age guard).
            referenced = {r[0] for r in c.execute("SELECT DISTINCT fid FROM chunks")} & wanted
            todo = wanted - referenced
            before = c.execute("SELECT COUNT(*) FROM deletion_queue").fetchone()[0]
            self._queue(c, todo)
            after = c.execute("SELECT COUNT(*) FROM deletion_queue").fetchone()[0]
        return after - before, len(referenced)

    # ------------------------------------------------------------ servers and counters

    def counter(self, name: str) -> int:
        with self._tx(write=False) as c:
            row = c.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
            return row[0] if row else 0

    def register_server(self, server_id: int, name: str, grpc_address: str,
                        http_address: str) -> int:
        with self._tx() as c:
            if server_id:
                cur = c.execute(
                    "UPDATE servers SET name=?, grpc_address=?, http_address=? WHERE server_id=?",
                    (name, grpc_address, http_address, server_id),
                )
                if cur.rowcount:
                    return server_id
                # An id this database never issued (e.g. the master's data dir was replaced):
                # adopt it, so the server keeps its identity; AUTOINCREMENT then skips past it.
                c.execute(
                    "INSERT INTO servers (server_id, name, grpc_address, http_address,"
                    " registered_ns) VALUES (?,?,?,?,?)",
                    (server_id, name, grpc_address, http_address, self._now()),
                )
                return server_id
            cur = c.execute(
                "INSERT INTO servers (name, grpc_address, http_address, registered_ns)"
                " VALUES (?,?,?,?)",
                (name, grpc_address, http_address, self._now()),
            )
            return cur.lastrowid

    def get_server(self, server_id: int) -> ServerRecord | None:
        with self._tx(write=False) as c:
            row = c.execute(
                "SELECT server_id, name, grpc_address, http_address FROM servers"
                " WHERE server_id=?", (server_id,)).fetchone()
            return ServerRecord(*row) if row else None

    def server_ids(self) -> list[int]:
        with self._tx(write=False) as c:
            return [r[0] for r in c.execute("SELECT server_id FROM servers ORDER BY server_id")]

    def advance_counter(self, name: str, step: int) -> int:
        with self._tx() as c:
            row = c.execute(
                "UPDATE counters SET value = value + ? WHERE name=? RETURNING value - ?",
                (step, name, step),
            ).fetchone()
            if row is None:
                c.execute("INSERT INTO counters (name, value) VALUES (?, ?)", (name, 1 + step))
                return 1
            return row[0]

    def raise_counter(self, name: str, at_least: int) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
                (name, at_least),
            )
