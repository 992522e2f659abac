"""The metadata store's interface: the namespace, chunk lists, xattrs, deletion queue and
durable counters, as the master sees them, whatever database holds them.

`MetadataStore` is what the master's servicer, topology and reaper call, and the records it
answers with (`Attr`, `Content`, `ServerRecord`, `ChunkRef`); nothing here knows a schema. The
contract test suite (tests/unit/test_metadata_store.py) runs against every implementation.
`SQLiteStore` (sqlite_store.py) is the default one; `PostgresStore` (pg_store.py) serves
several masters over one database. The checks
of what a caller hands in that do not depend on the storage (`validate_pieces`, the mknod
file types, the largest file size) live here too, so every backend refuses the same things.

Every public method is ONE transaction: a rename that replaces a target, an unlink that queues
the file's needles for deletion, a commit that replaces a chunk list either happen whole or not
at all. Whenever pieces stop being visible (overlay, truncate, delete) the fids that no piece of
that inode references any more go to the deletion queue in the same transaction.
"""
from __future__ import annotations

import abc
import errno
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from cluster.common.fid import BadFid, Fid

XATTR_CREATE = 1
XATTR_REPLACE = 2
MAX_FILE_SIZE = (1 << 63) - 1
# The file types mknod makes: a regular file, or a special file that is metadata only.
MKNOD_TYPES = (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)


class StoreConflict(Exception):
    """A batch lost a race with another writer of the same database (another master) and was
    rolled back whole: nothing of it is stored. Apply the same operations again."""


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
    def batch(self, durable: bool = False, size: int = 0) -> Iterator[None]:
        """Group commit of the calls made inside (see SQLiteStore.batch); `size`, when known,
        is how many operations it holds (1 lets a backend skip the savepoints). This default
        runs each call as its own transaction, which keeps every promise but the speed."""
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

    def linked_under(self, ino: int, directory: int, session: int = 0) -> bool:
        """Whether inode `ino` is `directory` or has a name somewhere below it, or is a file
        whose last name went while `session` kept it open (exports: a session of a subtree
        reaches only what is in it, cluster/master/scoped.py). This default knows no links
        and says no; a backend that serves exported subtrees overrides it."""
        return ino == directory

    def walk(self, path: str) -> list[Attr]:
        """The attributes of the root and of each name of `path` in turn, as one lookup
        would see them: it stops at the first name that does not exist, and after a name
        that is not a directory. So the list is one longer than the path's names when the
        whole path resolves. The master's permission checks read it (search permission on
        every directory on the way; namespace.py). This default asks getattr once per prefix
        (not one snapshot, and quadratic in the depth); a backend should override it with
        one transaction and one lookup per name, as SQLiteStore does."""
        parts = [p for p in path.split("/") if p]
        out = [self.getattr("/")]
        for i in range(len(parts)):
            if not out[-1].is_dir:
                break
            try:
                out.append(self.getattr("/" + "/".join(parts[: i + 1])))
            except FsError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR):
                    break
                raise
        return out

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

    def close(self) -> None:  # noqa: B027  optional, not abstract: a backend may hold nothing
        """Release the backend's connections; the store is not used afterwards."""


def validate_pieces(pieces: list[Piece]) -> None:
    """EINVAL for a piece no backend may store: a bad fid, an empty or negative range, a
    range past its needle; EFBIG for one that ends past the largest file size."""
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
