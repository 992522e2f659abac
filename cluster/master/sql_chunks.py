"""The file-data operations of the SQL stores: chunk lists and inline bytes, freeing unlinked
inodes (released, or orphans of a session that ended), the deletion queue, and fsck's view
of them.

Every change that makes a piece unreachable queues its fid for deletion in the same
transaction (SqlRows._rewrite_from, _delete_inode); the reaper (reaper.py) drains the queue.
"""
from __future__ import annotations

import errno
from collections.abc import Iterable

import crc32c

from cluster.common import chunkmap
from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from cluster.common.fid import BadFid, Fid
from cluster.master.schema import ROOT_INO
from cluster.master.sql_rows import Conn, SqlRows
from cluster.master.store import MAX_FILE_SIZE, Attr, ChunkRef, Content, validate_pieces


class SqlChunks(SqlRows):
    """The chunk-list, orphan, deletion-queue and fsck operations of the SQL stores."""

    # ------------------------------------------------------------ chunk lists

    def get_chunks(self, ino: int) -> tuple[Attr, list[Piece], int]:
        with self._tx(write=False) as c:
            return self._chunks(c, ino)

    def get_chunks_at(self, path: str) -> tuple[Attr, list[Piece], int]:
        with self._tx(write=False) as c:
            return self._chunks(c, self._resolve(c, path))

    def _chunks(self, c: Conn, ino: int) -> tuple[Attr, list[Piece], int]:
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
            stored = bytes(body[:new_size])
            now = self._now()
            c.execute(
                "UPDATE inodes SET inline_data=?, inline_crc=?, size=?, mtime_ns=?, ctime_ns=?,"
                " version = version + 1 WHERE ino=?",
                (stored, crc32c.crc32c(stored), new_size, mtime_ns or now, now, ino))
            return self._attr(c, ino)

    def commit(self, ino: int, pieces: list[Piece], size: int, mtime_ns: int = 0,
               exact: bool = False) -> Attr:
        validate_pieces(pieces)
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

    def _move_out_of_line(self, c: Conn, ino: int, pieces: list[Piece],
                          exact: bool) -> None:
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
    def _paths(c: Conn, inos: set[int]) -> dict[int, str]:
        """One path per inode in `inos` (the bytewise-first name of a hard-linked one)."""
        parent_of: dict[int, tuple[int, str]] = {}
        for parent, name, ino in c.execute(
                "SELECT parent, name, ino FROM entries ORDER BY name"):
            parent_of.setdefault(ino, (parent, name))
        memo: dict[int, str] = {ROOT_INO: "/"}

        def path(ino: int) -> str:
            chain: list[int] = []
            cur = ino
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
