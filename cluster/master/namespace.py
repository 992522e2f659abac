"""Namespace: the master's file-system operations, with no transport in sight.

Plain arguments in, plain results (store.Attr, ints) or an FsError carrying an errno out. The
ZMQ mutation channel (mutation_server.py) and the gRPC servicer (server.py) are both thin
adapters over it, through the one table in mutations.py, so an operation behaves the same
whichever way it arrives; its unit tests need no network. The store holds the transactional
logic; this class adds the checks that belong to the protocol rather than the storage (value
ranges a client may send, permissions) and the counters.

Permissions: every operation takes `who`, the Caller it is made for (None: the superuser, as
for the CLI and a gateway's commits; see master.proto's Caller). For anyone but root it is
checked before anything is changed or revealed, with cluster/master/permissions.py's rules,
against the attributes the store has: `MetadataStore.walk` gives those of every directory on
the path in one transaction (one indexed lookup per name), so a check costs one more lookup
per name than the operation itself; root and callerless calls cost nothing more. The lookups
check and read between the same two commits (`between_commits`); the mutations run on the
mutation thread inside one batch, so nothing changes between their check and their change.
Calls by inode number (GetChunks, GetAttrByIno, ReleaseInode) are what a mount does with a
file it has open, and are not checked (as an open file descriptor is not); the commits to
an open file are (`may_write_open`).
"""
from __future__ import annotations

import errno
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from cluster.common.replication import check_replication
from cluster.master import paths
from cluster.master import permissions as perm
from cluster.master.permissions import MAY_WRITE, Caller
from cluster.master.store import Attr, Content, MetadataStore


def _invalid(message: str) -> FsError:
    return FsError(errno.EINVAL, message)


MAX_INO = (1 << 63) - 1   # inode numbers are SQLite INTEGERs


def _check_ino(ino: int) -> int:
    if not 0 <= ino <= MAX_INO:
        raise _invalid(f"inode number {ino} is out of range")
    return ino


def _orphan_tag(keep_open: bool, session: int) -> int:
    """inodes.orphan for a file that loses its last name: 0 (delete it now), the session
    that keeps it open, or 1 for a client without a session."""
    return (session or 1) if keep_open else 0


def _checked(who: Caller | None) -> bool:
    """Whether a call made for `who` is checked: root and the callerless are not."""
    return who is not None and not who.is_root


@dataclass(frozen=True)
class _Found:
    """What a walk down a path found: the directory its last name is in (None when the way
    there does not resolve) and what that name holds (None: nothing)."""
    parent: Attr | None
    target: Attr | None


class Namespace:
    def __init__(self, store: MetadataStore, on_commit: Callable[[], None] = lambda: None,
                 inline_max: int = 65536, clock: Callable[[], int] = time.time_ns):
        self.store = store
        self._on_commit = on_commit
        self.inline_max = inline_max  # bytes a file may keep inline; 0: none
        self._clock = clock           # "now" for SetAttr's times_now

    # ------------------------------------------------------------ permission helpers

    def _walk(self, path: str, who: Caller) -> _Found:
        """Check search permission on every directory `path` goes through (EACCES), and
        return what it found. A path that does not resolve gives None where it stops; the
        store's own call then fails as it always did (ENOENT, ENOTDIR), after the search
        check, as Linux orders them."""
        parts = paths.split(path)
        chain = self.store.walk(path)
        perm.may_search([a for a in chain[:len(parts)] if a.is_dir], who, path)
        parent = chain[len(parts) - 1] if parts and len(chain) >= len(parts) else None
        if parent is not None and not parent.is_dir:
            parent = None
        target = chain[len(parts)] if len(chain) > len(parts) else None
        return _Found(parent, target)

    def _may_create(self, path: str, who: Caller, uid: int, gid: int, mode: int,
                    found: _Found | None = None) -> tuple[int, int, int]:
        """Checks for a new name at `path` (`found`: its walk, if made already): write and
        search on its directory. Returns the owner, group and mode the new inode gets: a
        caller other than root makes its own files (whatever uid and gid the request says),
        and a setgid bit it may not give (the group, inherited from a setgid directory, is
        not its) is dropped, as Linux's inode_init_owner does. An existing name or a missing
        directory is left to the store (EEXIST, ENOENT)."""
        if found is None:
            found = self._walk(path, who)
        if found.target is not None or found.parent is None:
            return uid, gid, mode
        perm.may_create(found.parent, who, path)
        # The store gives the inode a setgid directory's group; the caller's otherwise.
        group = found.parent.gid if found.parent.mode & stat.S_ISGID else who.gid
        if mode & stat.S_ISGID and not stat.S_ISDIR(mode) and not who.in_group(group):
            mode &= ~stat.S_ISGID
        return who.uid, who.gid, mode

    def _mkdir_parents(self, path: str, who: Caller) -> None:
        """mkdir -p: the first missing directory is made in the deepest existing one."""
        parts = paths.split(path)
        chain = self.store.walk(path)
        perm.may_search([a for a in chain[:len(parts)] if a.is_dir], who, path)
        if len(chain) <= len(parts) and chain[-1].is_dir:
            perm.may_create(chain[-1], who, path)

    def _may_delete(self, path: str, who: Caller) -> None:
        found = self._walk(path, who)
        if found.parent is not None and found.target is not None:
            perm.may_delete(found.parent, found.target, who, path)

    # ------------------------------------------------------------ lookups

    def getattr(self, path: str, who: Caller | None = None, access: int = 0) -> Attr:
        """The attributes `path` names; with `access` (MAY_* bits), EACCES unless `who` has
        that access to it (access(2), and an open that asks the attributes)."""
        if not _checked(who):
            attr = self.store.getattr(path)
            if who is not None:
                perm.may_open(attr, who, access, path)   # root: execute needs an x bit
            return attr
        assert who is not None
        found = self._walk(path, who)
        attr = found.target if found.target is not None else self.store.getattr(path)
        perm.may_open(attr, who, access, path)
        return attr

    def getattr_ino(self, ino: int) -> Attr:
        """By inode number: what a mount asks about a file it has open (not checked, as an
        open file descriptor is not)."""
        return self.store.getattr_ino(_check_ino(ino))

    def content_ino(self, ino: int) -> Content:
        """An open file's chunk list again (GetChunks): not checked, as getattr_ino."""
        return self.store.content(ino=_check_ino(ino))

    def content_at(self, path: str, who: Caller | None = None, access: int = 0) -> Content:
        """The file `path` names, read as an open reads it (GetChunksAt), after the checks
        of an open asking `access`."""
        if not _checked(who):
            content = self.store.content(path=path)
            if who is not None:
                perm.may_open(content.attr, who, access, path)
            return content
        assert who is not None
        with self.store.between_commits():
            found = self._walk(path, who)
            if found.target is not None:
                perm.may_open(found.target, who, access, path)
            content = self.store.content(path=path)
            perm.may_open(content.attr, who, access, path)
            return content

    def readdir(self, path: str, after: str = "", limit: int = 1000,
                who: Caller | None = None) -> list[tuple[str, Attr]]:
        if not _checked(who):
            return self.store.readdir(path, after, limit)
        assert who is not None
        with self.store.between_commits():
            found = self._walk(path, who)
            if found.target is not None and found.target.is_dir:
                perm.may_readdir(found.target, who, path)
            return self.store.readdir(path, after, limit)

    def readlink(self, path: str, who: Caller | None = None) -> str:
        if _checked(who):
            assert who is not None
            with self.store.between_commits():
                self._walk(path, who)
                return self.store.readlink(path)
        return self.store.readlink(path)

    def getxattr(self, path: str, name: str, who: Caller | None = None) -> bytes:
        if not _checked(who):
            return self.store.getxattr(path, name)
        assert who is not None
        paths.validate_xattr_name(name)
        with self.store.between_commits():
            found = self._walk(path, who)
            if found.target is not None:
                perm.may_getxattr(found.target, who, name, path)
            return self.store.getxattr(path, name)

    def listxattr(self, path: str, who: Caller | None = None) -> list[str]:
        if not _checked(who):
            return self.store.listxattr(path)
        assert who is not None
        with self.store.between_commits():
            self._walk(path, who)
            return perm.visible_xattrs(self.store.listxattr(path), who)

    # ------------------------------------------------------------ mutations

    def mkdir(self, path: str, mode: int, uid: int, gid: int, parents: bool = False,
              who: Caller | None = None) -> Attr:
        if _checked(who):
            assert who is not None
            if parents:
                self._mkdir_parents(path, who)
                uid, gid = who.uid, who.gid
            else:
                uid, gid, mode = self._may_create(path, who, uid, gid, stat.S_IFDIR | mode)
        return self.store.mkdir(path, mode, uid, gid, parents)

    def create(self, path: str, mode: int, uid: int, gid: int, exclusive: bool = False,
               truncate: bool = False, replication: int = 0, who: Caller | None = None,
               access: int = 0) -> Attr:
        """`access`: what the open asks of a file that exists already (0: write)."""
        check_replication(replication, zero_is_default=True)
        if _checked(who):
            assert who is not None
            found = self._walk(path, who)
            if found.target is None:
                uid, gid, mode = self._may_create(path, who, uid, gid, stat.S_IFREG | mode,
                                                  found)
            elif not exclusive and not found.target.is_dir:
                want = (access or MAY_WRITE) | (MAY_WRITE if truncate else 0)
                perm.may_open(found.target, who, want, path)
        return self.store.create(path, mode & 0o7777, uid, gid, exclusive, truncate,
                                 replication)

    def mknod(self, path: str, mode: int, rdev: int, uid: int, gid: int,
              who: Caller | None = None) -> Attr:
        if _checked(who):
            assert who is not None
            uid, gid, mode = self._may_create(path, who, uid, gid, mode)
        return self.store.mknod(path, mode, rdev, uid, gid)

    def symlink(self, path: str, target: str, uid: int, gid: int,
                who: Caller | None = None) -> Attr:
        if _checked(who):
            assert who is not None
            uid, gid, _ = self._may_create(path, who, uid, gid, stat.S_IFLNK | 0o777)
        return self.store.symlink(path, target, uid, gid)

    def link(self, existing: str, new: str, who: Caller | None = None) -> Attr:
        if _checked(who):
            assert who is not None
            source = self._walk(existing, who).target
            found = self._walk(new, who)
            if source is not None and found.parent is not None and found.target is None:
                perm.may_link(source, found.parent, who, new)
        return self.store.link(existing, new)

    def unlink(self, path: str, keep_open: bool = False, session: int = 0,
               who: Caller | None = None) -> int:
        """With keep_open, a file whose last name this was stays (as an orphan) until the
        client releases it or its `session` ends."""
        if _checked(who):
            assert who is not None
            self._may_delete(path, who)
        return self.store.unlink(path, _orphan_tag(keep_open, session))

    def rmdir(self, path: str, who: Caller | None = None) -> None:
        if _checked(who):
            assert who is not None
            self._may_delete(path, who)
        self.store.rmdir(path)

    def _may_rename(self, old: str, new: str, who: Caller, no_replace: bool = False,
                    exchange: bool = False) -> None:
        src, dst = self._walk(old, who), self._walk(new, who)
        if src.parent is None or src.target is None or dst.parent is None:
            return   # the store says what is missing
        if dst.target is not None and (dst.target.ino == src.target.ino or no_replace):
            return   # nothing moves, or EEXIST (both come before the permission checks)
        perm.may_rename(src.parent, src.target, dst.parent, dst.target, who,
                        same_parent=src.parent.ino == dst.parent.ino, exchange=exchange,
                        what=f"{old} -> {new}")

    def rename(self, old: str, new: str, no_replace: bool = False,
               keep_open: bool = False, session: int = 0, who: Caller | None = None) -> int:
        if _checked(who):
            assert who is not None
            self._may_rename(old, new, who, no_replace=no_replace)
        return self.store.rename(old, new, no_replace, _orphan_tag(keep_open, session))

    def exchange(self, a: str, b: str, who: Caller | None = None) -> int:
        """renameat2's RENAME_EXCHANGE: the two names swap inodes in one transaction."""
        if _checked(who):
            assert who is not None
            self._may_rename(a, b, who, exchange=True)
        self.store.exchange(a, b)
        return 0

    def setattr(self, path: str | None, ino: int, who: Caller | None = None,
                times_now: bool = False, **changes: int | None) -> Attr:
        """Set what `changes` holds (mode, uid, gid, size, atime_ns, mtime_ns; None: keep).
        By `ino` the change comes through an open file (fchmod, ftruncate of a file that may
        be unlinked): no path to search, and a truncate is a write to the open file.
        `times_now`: the times are "now" (UTIME_NOW): the master's clock sets them, and a
        writer who is not the owner may."""
        if not ino and not path:
            raise _invalid("SetAttr needs a path or an ino")
        _check_ino(ino)
        if times_now:
            now = self._clock()
            for key in ("atime_ns", "mtime_ns"):
                if changes.get(key) is not None:
                    changes[key] = now
        if _checked(who):
            assert who is not None
            attr = self.store.getattr_ino(ino) if ino else self._walk(path or "/", who).target
            if attr is not None:
                changes["mode"] = perm.may_setattr(
                    attr, who, mode=changes.get("mode"), uid=changes.get("uid"),
                    gid=changes.get("gid"), size=changes.get("size"),
                    times=changes.get("atime_ns") is not None
                    or changes.get("mtime_ns") is not None,
                    times_now=times_now, open_file=bool(ino), what=path or f"inode {ino}")
        return self.store.setattr(path or None, ino, **changes)

    def _may_xattr(self, path: str, name: str, who: Caller) -> None:
        paths.validate_xattr_name(name)
        found = self._walk(path, who)
        if found.target is not None:
            perm.may_setxattr(found.target, who, name, path)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0,
                 who: Caller | None = None) -> None:
        if _checked(who):
            assert who is not None
            self._may_xattr(path, name, who)
        self.store.setxattr(path, name, value, flags)

    def removexattr(self, path: str, name: str, who: Caller | None = None) -> None:
        if _checked(who):
            assert who is not None
            self._may_xattr(path, name, who)
        self.store.removexattr(path, name)

    def _may_write_open(self, ino: int, who: Caller | None) -> None:
        if _checked(who):
            assert who is not None
            perm.may_write_open(self.store.getattr_ino(ino), who, f"inode {ino}")

    def commit(self, ino: int, pieces: list[Piece], size: int, mtime_ns: int = 0,
               exact: bool = False, who: Caller | None = None) -> Attr:
        self._may_write_open(_check_ino(ino), who)
        attr = self.store.commit(ino, pieces, size, mtime_ns, exact=exact)
        self._on_commit()
        return attr

    def write_inline(self, ino: int, offset: int, data: bytes, crc: int, size: int = 0,
                     mtime_ns: int = 0, exact: bool = False, who: Caller | None = None) -> Attr:
        self._may_write_open(_check_ino(ino), who)
        attr = self.store.write_inline(ino, offset, data, crc, size, mtime_ns, exact,
                                       limit=self.inline_max)
        self._on_commit()
        return attr

    def release_inode(self, ino: int) -> None:
        self.store.release_inode(_check_ino(ino))
