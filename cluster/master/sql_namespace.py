"""The namespace operations of the SQL stores: names, attributes, links and xattrs (mkdir,
create, mknod, unlink, rmdir, rename, exchange, symlink, link, setattr, ...).

Each public method is one transaction (the backend's `_tx`). The helpers here are the ones
only the namespace needs: allocating inodes, keeping a directory's mtime and link count,
dropping a name (a file that loses its last one is deleted, or kept as an orphan while a
session holds it open: see `_drop_link`).
"""
from __future__ import annotations

import errno
import stat

import crc32c

from cluster.common import chunkmap
from cluster.common.errors import FsError
from cluster.common.replication import check_replication
from cluster.master import paths, schema
from cluster.master.schema import ROOT_INO
from cluster.master.sql_rows import ATTR_COLS_I, Conn, SqlRows
from cluster.master.store import (
    MAX_FILE_SIZE,
    MKNOD_TYPES,
    XATTR_CREATE,
    XATTR_REPLACE,
    Attr,
)


class SqlNamespace(SqlRows):
    """The namespace operations of the SQL stores (SQLite, PostgreSQL)."""

    # ------------------------------------------------------------ helpers (inside a tx)

    def _existing(self, c: Conn, path: str) -> tuple[int, str, int, int]:
        """(parent ino, name, ino, mode) of the entry `path` names; ENOENT if none."""
        parent, name = self._resolve_parent(c, path)
        found = self._lookup(c, parent, name)
        if found is None:
            raise FsError(errno.ENOENT, path)
        return parent, name, found[0], found[1]

    def _alloc_ino(self, c: Conn) -> int:
        return c.execute(
            "UPDATE counters SET value = value + 1 WHERE name=? RETURNING value - 1",
            (schema.COUNTER_NEXT_INO,),
        ).fetchone()[0]

    def _new_inode(self, c: Conn, mode: int, uid: int, gid: int, nlink: int,
                   now: int, size: int = 0, target: str | None = None, replication: int = 0,
                   parent: int = 0, rdev: int = 0) -> int:
        return self._made_inode(c, mode, uid, gid, nlink, now, size, target, replication,
                                parent, rdev).ino

    def _made_inode(self, c: Conn, mode: int, uid: int, gid: int, nlink: int,
                    now: int, size: int = 0, target: str | None = None, replication: int = 0,
                    parent: int = 0, rdev: int = 0) -> Attr:
        """A new inode's row; its attributes as stored, known without reading them back
        (a round trip saved on every create)."""
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
        return Attr(ino, mode, uid, gid, size, nlink, now, now, now, replication, rdev=rdev)

    @staticmethod
    def _touch_dir(c: Conn, ino: int, now: int, nlink_delta: int = 0) -> None:
        c.execute(
            "UPDATE inodes SET mtime_ns=?, ctime_ns=?, nlink = nlink + ? WHERE ino=?",
            (now, now, nlink_delta, ino),
        )

    def _drop_link(self, c: Conn, ino: int, keep_open: int, now: int) -> int:
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

    def _is_dir_empty(self, c: Conn, ino: int) -> bool:
        return c.execute("SELECT 1 FROM entries WHERE parent=? LIMIT 1", (ino,)).fetchone() is None

    # ------------------------------------------------------------ namespace

    def getattr(self, path: str) -> Attr:
        with self._tx(write=False) as c:
            return self._attr(c, self._resolve(c, path), path)

    def getattr_ino(self, ino: int) -> Attr:
        with self._tx(write=False) as c:
            return self._attr(c, ino)

    MAX_LINK_WALK = 10_000   # inodes visited going up before linked_under gives up (no)

    def linked_under(self, ino: int, directory: int, session: int = 0) -> bool:
        """Up the entries from `ino` (every hard link's parent, then each directory's one
        parent) until `directory` or the root: one indexed lookup per step."""
        with self._tx(write=False) as c:
            if session:
                row = c.execute("SELECT orphan FROM inodes WHERE ino=?", (ino,)).fetchone()
                if row is not None and row[0] == session:
                    return True
            todo, seen = [ino], {ino}
            while todo and len(seen) < self.MAX_LINK_WALK:
                node = todo.pop()
                if node == directory:
                    return True
                for (parent,) in c.execute("SELECT parent FROM entries WHERE ino=?", (node,)):
                    if parent not in seen:
                        seen.add(parent)
                        todo.append(parent)
            return False

    def walk(self, path: str) -> list[Attr]:
        """One transaction, one indexed lookup (with the attributes) per name."""
        parts = paths.split(path)
        with self._tx(write=False) as c:
            out = [self._attr(c, ROOT_INO)]
            for name in parts:
                if not out[-1].is_dir:
                    break
                row = c.execute(
                    f"SELECT {ATTR_COLS_I} FROM entries e JOIN inodes i ON i.ino = e.ino"
                    " WHERE e.parent=? AND e.name=?", (out[-1].ino, name)).fetchone()
                if row is None:
                    break
                out.append(Attr(*row))
            return out

    def readdir(self, path: str, after: str = "", limit: int = 1000) -> list[tuple[str, Attr]]:
        with self._tx(write=False) as c:
            ino = self._resolve(c, path)
            if not stat.S_ISDIR(self._attr(c, ino, path).mode):
                raise FsError(errno.ENOTDIR, path)
            rows = c.execute(
                f"SELECT e.name, {ATTR_COLS_I} FROM entries e JOIN inodes i ON i.ino = e.ino"
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
        check_replication(replication, zero_is_default=True)
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
            made = self._made_inode(c, stat.S_IFREG | (mode & 0o7777), uid, gid, 1, now,
                                    replication=replication, parent=parent)
            c.execute("INSERT INTO entries (parent, name, ino) VALUES (?,?,?)",
                      (parent, name, made.ino))
            self._touch_dir(c, parent, now)
            return made

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

    def _is_within(self, c: Conn, ino: int, ancestor: int) -> bool:
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
            row = c.execute("SELECT value FROM xattrs WHERE ino=? AND name=?",
                            (ino, name)).fetchone()
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
            c.execute("INSERT INTO xattrs (ino, name, value) VALUES (?,?,?)"
                      " ON CONFLICT (ino, name) DO UPDATE SET value = excluded.value",
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
