"""Namespace: the master's file-system operations, with no transport in sight.

Plain arguments in, plain results (store.Attr, ints) or an FsError carrying an errno out. The
ZMQ mutation channel (mutation_server.py) and the gRPC servicer (server.py) are both thin
adapters over it, through the one table in mutations.py, so an operation behaves the same
whichever way it arrives; its unit tests need no network. The store holds the transactional
logic; this class adds the checks that belong to the protocol rather than the storage (value
ranges a client may send) and the counters.
"""
from __future__ import annotations

import errno
from collections.abc import Callable

from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from cluster.common.replication import check_replication
from cluster.master.store import Attr, MetadataStore


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


class Namespace:
    def __init__(self, store: MetadataStore, on_commit: Callable[[], None] = lambda: None,
                 inline_max: int = 65536):
        self.store = store
        self._on_commit = on_commit
        self.inline_max = inline_max  # bytes a file may keep inline; 0: none

    # ------------------------------------------------------------ mutations

    def mkdir(self, path: str, mode: int, uid: int, gid: int, parents: bool = False) -> Attr:
        return self.store.mkdir(path, mode, uid, gid, parents)

    def create(self, path: str, mode: int, uid: int, gid: int, exclusive: bool = False,
               truncate: bool = False, replication: int = 0) -> Attr:
        check_replication(replication, zero_is_default=True)
        return self.store.create(path, mode, uid, gid, exclusive, truncate, replication)

    def mknod(self, path: str, mode: int, rdev: int, uid: int, gid: int) -> Attr:
        return self.store.mknod(path, mode, rdev, uid, gid)

    def symlink(self, path: str, target: str, uid: int, gid: int) -> Attr:
        return self.store.symlink(path, target, uid, gid)

    def link(self, existing: str, new: str) -> Attr:
        return self.store.link(existing, new)

    def unlink(self, path: str, keep_open: bool = False, session: int = 0) -> int:
        """With keep_open, a file whose last name this was stays (as an orphan) until the
        client releases it or its `session` ends."""
        return self.store.unlink(path, _orphan_tag(keep_open, session))

    def rmdir(self, path: str) -> None:
        self.store.rmdir(path)

    def rename(self, old: str, new: str, no_replace: bool = False,
               keep_open: bool = False, session: int = 0) -> int:
        return self.store.rename(old, new, no_replace, _orphan_tag(keep_open, session))

    def exchange(self, a: str, b: str) -> int:
        """renameat2's RENAME_EXCHANGE: the two names swap inodes in one transaction."""
        self.store.exchange(a, b)
        return 0

    def setattr(self, path: str | None, ino: int, **changes: int | None) -> Attr:
        if not ino and not path:
            raise _invalid("SetAttr needs a path or an ino")
        _check_ino(ino)
        return self.store.setattr(path or None, ino, **changes)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0) -> None:
        self.store.setxattr(path, name, value, flags)

    def removexattr(self, path: str, name: str) -> None:
        self.store.removexattr(path, name)

    def commit(self, ino: int, pieces: list[Piece], size: int, mtime_ns: int = 0,
               exact: bool = False) -> Attr:
        attr = self.store.commit(_check_ino(ino), pieces, size, mtime_ns, exact=exact)
        self._on_commit()
        return attr

    def write_inline(self, ino: int, offset: int, data: bytes, crc: int, size: int = 0,
                     mtime_ns: int = 0, exact: bool = False) -> Attr:
        attr = self.store.write_inline(_check_ino(ino), offset, data, crc, size, mtime_ns, exact,
                                       limit=self.inline_max)
        self._on_commit()
        return attr

    def release_inode(self, ino: int) -> None:
        self.store.release_inode(_check_ino(ino))
