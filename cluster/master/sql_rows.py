"""The SQL both metadata stores share: the row helpers every operation works with inside its
transaction, written in the SQL that SQLite and PostgreSQL both speak.

The operations (sql_namespace.py, sql_chunks.py, sql_servers.py) are written once against
`Conn`, a connection that takes `?` placeholders; SQLiteBase (sqlite_base.py) hands them a
sqlite3 connection and PostgresBase (pg_base.py) a psycopg one behind an adapter. Each backend
owns only what differs: connections, transactions, group commit, the schema's DDL. Keeping to
the common dialect (`INSERT ... ON CONFLICT`, `RETURNING`, `CASE` instead of two-argument MAX)
is what lets the one contract suite (tests/unit/test_metadata_store.py) vouch for both.

The helpers take the open connection `c` and never commit: they are pieces of the caller's
transaction. They are shared because both halves resolve paths and read attributes, and both
make chunk pieces unreachable (a truncate, an overwrite, a deleted inode), whose fids must
reach the deletion queue in the same transaction.
"""
from __future__ import annotations

import errno
import stat
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from cluster.common import chunkmap
from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from cluster.master import paths
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


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Any: ...


class Conn(Protocol):
    """What the operations need of a connection: sqlite3's own, or pg_base.PgConn."""

    def execute(self, sql: str, params: Any = ...) -> Any: ...

    def executemany(self, sql: str, rows: Any) -> Any: ...


class SqlRows(MetadataStore):
    """The row helpers of a MetadataStore over SQL; a backend supplies `_tx` and `_now`."""

    _now: Callable[[], int]

    def _tx(self, write: bool = True) -> Any:
        raise NotImplementedError

    def _attr(self, c: Conn, ino: int, what: str = "") -> Attr:
        row = c.execute(f"SELECT {ATTR_COLS} FROM inodes WHERE ino=?", (ino,)).fetchone()
        if row is None:
            raise FsError(errno.ENOENT, what or f"inode {ino}")
        return Attr(*row)

    @staticmethod
    def _lookup(c: Conn, parent: int, name: str) -> tuple[int, int] | None:
        """(ino, mode) of `name` in directory `parent`, or None."""
        return c.execute(
            "SELECT e.ino, i.mode FROM entries e JOIN inodes i ON i.ino = e.ino"
            " WHERE e.parent=? AND e.name=?",
            (parent, name),
        ).fetchone()

    def _walk(self, c: Conn, parts: list[str], path: str) -> int:
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

    def _resolve(self, c: Conn, path: str) -> int:
        parts = paths.split(path)
        if not parts:
            return ROOT_INO
        parent = self._walk(c, parts[:-1], path)
        found = self._lookup(c, parent, parts[-1])
        if found is None:
            raise FsError(errno.ENOENT, path)
        return found[0]

    def _resolve_parent(self, c: Conn, path: str) -> tuple[int, str]:
        parent_parts, name = paths.split_parent(path)
        return self._walk(c, parent_parts, path), name

    @staticmethod
    def _pieces(c: Conn, ino: int) -> list[Piece]:
        return [
            Piece(*row)
            for row in c.execute(
                "SELECT file_offset, length, fid, needle_offset, needle_size, crc32c"
                " FROM chunks WHERE ino=? ORDER BY file_offset",
                (ino,),
            )
        ]

    def _queue(self, c: Conn, fids: Iterable[str]) -> None:
        now = self._now()
        c.executemany(
            "INSERT INTO deletion_queue (fid, queued_at, attempts, next_try_ns)"
            " VALUES (?, ?, 0, 0) ON CONFLICT DO NOTHING",
            [(f, now) for f in sorted(fids)],
        )

    def _rewrite_from(self, c: Conn, ino: int, lo: int,
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

    def _delete_inode(self, c: Conn, ino: int) -> None:
        gone = {r[0] for r in c.execute("SELECT DISTINCT fid FROM chunks WHERE ino=?", (ino,))}
        c.execute("DELETE FROM chunks WHERE ino=?", (ino,))
        c.execute("DELETE FROM xattrs WHERE ino=?", (ino,))
        c.execute("DELETE FROM inodes WHERE ino=?", (ino,))
        self._queue(c, gone)
