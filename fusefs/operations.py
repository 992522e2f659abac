"""KelpOperations: the FUSE operations of a KelpFS mount (fusepy high-level, path based).

Each operation turns a POSIX call into metadata RPCs to the master, or into work on an open
file's FileHandle (writes buffered and streamed to a gateway, reads through the ChunkReader).
Every operation goes through `errno_boundary`, so a failure reaches the kernel as its errno
and never as fusepy's default EINVAL.

Caching: attributes by path for `attr_ttl` seconds (AttrCache), filled by getattr and by
ReadDir pages (which carry attributes, so `ls -l` costs one RPC per page). Every local change
invalidates what it touches. open() always asks the master afresh (close-to-open).

Open files: `_handles` maps fh -> FileHandle, `_by_ino` maps ino -> its open fhs. An unlinked
(or rename-replaced) inode that is still open here keeps its data on the master (keep_open)
until the last release, which calls ReleaseInode.

Locking: `_lock` guards `_handles`, `_by_ino` and `_unlinked`; it is never held across an RPC.
Each FileHandle has its own lock (see filehandle.py).

Known gaps (POSIX, docs/posix.md): atime is not updated by reads; supplementary groups are
read from /proc for access() only; a rename replacing a file that is open in ANOTHER mount
drops its data for that mount. With a session (the default), what the cache holds is true
until the master breaks it (docs/caching.md), and the kernel asks about every name
(entry_timeout 0), so a change through one hard-linked name shows through the others at
once; without one (--no-callbacks), after attr_ttl. An open for reading takes the chunk list
from the cache under the same callback, or resolves its name at the master (GetChunksAt).
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import stat as statmod
import threading
import time

from cluster.common.errors import FsError
from fusefs.attrcache import AttrCache
from fusefs.dirprefetch import DirPrefetcher
from fusefs.errno_boundary import errno_boundary
from fusefs.filehandle import FileHandle
from fusefs.fuse_binding import (
    CAN_INVALIDATE,
    FuseOSError,
    Operations,
    fuse_get_context,
    interrupted,
    invalidate_path,
)
from fusefs.invalidator import WAIT_S, KernelInvalidator
from fusefs.kernelsize import KernelSizes
from fusefs.locking import Locker
from fusefs.options import MountOptions
from fusefs.paths import parent_of
from fusefs.session import MountSession
from protos import master_pb2

log = logging.getLogger("fusefs.operations")

NAME_MAX = 255
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2 flags (linux/fs.h)
BLKSIZE = 128 * 1024  # st_blksize: what cp and friends use as their buffer size
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND


def check_path(path: str) -> str:
    """ENAMETOOLONG for a component over 255 bytes, checked here before any RPC."""
    for name in path.split("/"):
        if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise FuseOSError(errno.ENAMETOOLONG)
    return path


def attr_to_stat(attr: master_pb2.Attr, size: int | None = None) -> dict:
    size = attr.size if size is None else size
    return {
        "st_ino": attr.ino,
        "st_mode": attr.mode,
        "st_nlink": attr.nlink or 1,
        "st_uid": attr.uid,
        "st_gid": attr.gid,
        "st_size": size,
        "st_atime": attr.atime_ns,
        "st_mtime": attr.mtime_ns,
        "st_ctime": attr.ctime_ns,
        "st_blocks": (size + 511) // 512,
        "st_blksize": BLKSIZE,
        "st_rdev": attr.rdev,
    }


def caller() -> tuple[int, int, int]:
    """(uid, gid, pid) of the process making the current FUSE request (ours outside FUSE)."""
    try:
        uid, gid, pid = fuse_get_context()
        if pid:
            return uid, gid, pid
    except (ValueError, OSError, AttributeError):
        pass
    return os.getuid(), os.getgid(), os.getpid()


def _groups_of(pid: int, gid: int) -> set[int]:
    groups = {gid}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
                    break
    except (OSError, ValueError):
        pass
    return groups


class KelpOperations(Operations):
    use_ns = True  # fusepy passes and takes times as integer nanoseconds
    # libfuse: operations on an open, unlinked file (hard_remove) arrive with path None.
    flag_nullpath_ok = True
    # libfuse: utimens receives UTIME_NOW / UTIME_OMIT instead of a read-modify-write.
    flag_utime_omit_ok = True

    def __init__(self, client, options: MountOptions | None = None):
        self.client = client
        self.master = client.master
        self.options = options or MountOptions()
        self.cache = AttrCache(self.options.attr_ttl)
        self.prefetch = DirPrefetcher(self.master, self.cache, self.options.attr_ttl)
        self.kernel_sizes = KernelSizes()
        self._lock = threading.Lock()
        self._handles: dict[int, FileHandle] = {}
        self._by_ino: dict[int, set[int]] = {}
        self._unlinked: set[int] = set()
        self._next_fh = itertools.count(1)
        self.session: MountSession | None = None
        self.invalidator: KernelInvalidator | None = None
        self.locker = Locker(self.master.mutate, interrupted)

    # ------------------------------------------------------------------ helpers

    def _begin_op(self) -> None:
        self.cache.begin_op()

    # ------------------------------------------------------------------ session, callbacks

    def start_session(self, callbacks: bool = True) -> MountSession:
        """Open the session with the master: it holds this mount's locks and the files it
        keeps open after unlink. With `callbacks`, lookups come with callbacks too, the
        cache keeps answers until the master breaks them, and breaks reach the kernel."""
        session = MountSession(self.master.mutation_address, self._on_break,
                               self.cache.clear if callbacks else lambda: None)
        if callbacks:
            self.cache.use_session(session.trusted)
            self.master.lookup_session = lambda: session.sid
        self.master.session_id = lambda: session.sid
        self.invalidator = KernelInvalidator(invalidate_path)
        self.session = session.start()
        return session

    def stop_session(self) -> None:
        if self.session is not None:
            self.session.close()
        if self.invalidator is not None:
            self.invalidator.close()

    def _on_break(self, brk) -> None:
        """The master takes back callbacks (session thread): drop what the cache holds, the
        chunk lists open handles hold and what the kernel holds before acknowledging."""
        paths = self.cache.apply_break(brk.paths, brk.trees, brk.inos)   # and every name
        for ino in brk.inos:
            for h in self._handles_of(ino):
                h.mark_stale()
                if h.path:
                    paths.add(h.path)
        # The kernel's too, but without waiting on it for long (fusefs/invalidator.py).
        self.invalidator.submit(paths).wait(WAIT_S)

    def _call(self, method: str, request):
        """A lookup over gRPC."""
        return self.master.call(method, request)

    def _mutate(self, op: str, request):
        """A namespace change on the mutation channel (op: a Mutation.op field)."""
        return self.master.mutate(op, request)

    def _writable(self) -> None:
        if self.options.read_only:
            raise FuseOSError(errno.EROFS)

    def _lookup(self, path: str, fresh: bool = False) -> master_pb2.Attr:
        if not fresh:
            attr = self.cache.get(path)
            if attr is not None:
                return attr
            if self.cache.is_absent(path):
                raise FsError(errno.ENOENT, path)
        generation = self.cache.generation()
        try:
            attr = self._call("GetAttr", master_pb2.PathRequest(path=path))
        except FsError as e:
            if e.errno == errno.ENOENT:
                self.cache.put_absent(path, generation)
            raise
        self.cache.put(path, attr, generation)
        if not fresh:
            self.prefetch.found(path)  # a walk through the directory: list it once
        return attr

    def _handles_of(self, ino: int) -> list[FileHandle]:
        with self._lock:
            return [self._handles[fh] for fh in self._by_ino.get(ino, ()) if fh in self._handles]

    def _handle(self, fh) -> FileHandle:
        with self._lock:
            h = self._handles.get(fh)
        if h is None:
            raise FuseOSError(errno.EBADF)
        return h

    def _open_size(self, ino: int) -> int | None:
        """The size an open, written-to handle of `ino` sees (None if none is dirty)."""
        sizes = [h.size for h in self._handles_of(ino) if h.dirty]
        return max(sizes) if sizes else None

    def _commit_ino(self, ino: int, except_fh: int | None = None) -> None:
        """Commit the pending writes of every handle of `ino` (before a truncate, utimens...)."""
        for h in self._handles_of(ino):
            if h.fh != except_fh and h.dirty:
                h.commit()

    def _committed(self, h: FileHandle, attr: master_pb2.Attr | None) -> None:
        """Every handle's commit ends here (FileHandle.on_commit): drop what the cache held for
        the inode and keep the master's answer, so no getattr RPC follows."""
        self.cache.invalidate_ino(h.ino)
        if attr is not None:
            for other in self._handles_of(h.ino):
                if other is not h:
                    other.heard_inline(attr.inline)
        if attr is not None and h.ino not in self._unlinked:
            self.cache.put(h.path, attr)

    def _open_count(self, ino: int) -> int:
        return len(self._by_ino.get(ino, ()))  # a racy read is fine: a hint on the read path

    def _is_open(self, ino: int) -> bool:
        with self._lock:
            return bool(self._by_ino.get(ino))

    def keep_cache(self, fh: int) -> bool:
        """Asked by KelpFUSE.open: keep the kernel's pages of the file from earlier opens."""
        with self._lock:
            h = self._handles.get(fh)
        return h is not None and h.keep_cache

    def direct_io(self, fh: int) -> bool:
        """Asked by KelpFUSE.open: open this handle with direct_io, because the kernel holds
        another size for the file than the master (fusefs/kernelsize.py)."""
        with self._lock:
            h = self._handles.get(fh)
        return h is not None and h.direct_io

    def _new_handle_checked(self, path: str, flags: int, attr: master_pb2.Attr) -> int:
        """_new_handle, marked direct_io when the kernel was told another size than
        `attr.size`, the size the master just gave. Not for create: the record of the name
        may be a removed file's until the getattr libfuse sends after the create."""
        fh = self._new_handle(path, flags, attr)
        if self.kernel_sizes.differs(path, attr.size):
            self._handle(fh).direct_io = True
            log.info("open of %s with direct_io: the kernel holds another size than %d",
                     path, attr.size)
        return fh

    def _changed(self, *paths: str, links: bool = False, nlink_delta: int = 0,
                 at_ns: int = 0) -> None:
        """Local changes to `paths`: drop their cached attributes. Their parent directories
        changed too: move their cached mtime/ctime to now (and nlink by nlink_delta when a
        subdirectory came or went), or with `links` (a rename that may have moved a
        directory between parents) drop them."""
        now = at_ns or time.time_ns()
        for p in paths:
            self.cache.invalidate(p)
            if links:
                self.cache.invalidate(parent_of(p))
            else:
                self.cache.touch_dir(parent_of(p), now, nlink_delta)

    # ------------------------------------------------------------------ attributes

    @errno_boundary
    def getattr(self, path, fh=None):
        if path is not None:
            check_path(path)
        token = self.kernel_sizes.token()  # before anything below reads a size
        h = None
        if fh:
            with self._lock:
                h = self._handles.get(fh)
        if h is not None:
            attr = self.cache.get(path) if path else None
            if attr is None or attr.ino != h.ino:
                attr = self._call("GetAttrByIno", master_pb2.InoRequest(ino=h.ino))
        else:
            attr = self._lookup(path)
        st = attr_to_stat(attr, self._open_size(attr.ino))
        if path is not None and statmod.S_ISREG(attr.mode):
            self.kernel_sizes.reported(path, st["st_size"], token)
        return st

    @errno_boundary
    def access(self, path, amode):
        check_path(path)
        attr = self._lookup(path)
        if amode == os.F_OK:
            return 0
        if amode & os.W_OK and self.options.read_only:
            raise FuseOSError(errno.EROFS)
        uid, gid, pid = caller()
        mode = attr.mode
        if uid == 0:
            if amode & os.X_OK and not statmod.S_ISDIR(mode) and not mode & 0o111:
                raise FuseOSError(errno.EACCES)
            return 0
        if uid == attr.uid:
            bits = (mode >> 6) & 7
        elif attr.gid in _groups_of(pid, gid):
            bits = (mode >> 3) & 7
        else:
            bits = mode & 7
        if amode & ~bits & 7:
            raise FuseOSError(errno.EACCES)
        return 0

    def _setattr_request(self, path) -> master_pb2.SetAttrRequest:
        check_path(path)
        self._writable()
        return master_pb2.SetAttrRequest(path=path)

    def _set_attr(self, path, req: master_pb2.SetAttrRequest) -> int:
        attr = self._mutate("set_attr", req)
        self.cache.invalidate_ino(attr.ino)
        self.cache.put(path, attr)
        return 0

    @errno_boundary
    def chmod(self, path, mode):
        req = self._setattr_request(path)
        req.mode = mode & 0o7777
        return self._set_attr(path, req)

    @errno_boundary
    def chown(self, path, uid, gid):
        req = self._setattr_request(path)
        if uid is not None and uid != -1 and uid != 0xFFFFFFFF:
            req.uid = uid
        if gid is not None and gid != -1 and gid != 0xFFFFFFFF:
            req.gid = gid
        return self._set_attr(path, req)

    @errno_boundary
    def utimens(self, path, times=None):
        req = self._setattr_request(path)
        now = time.time_ns()
        if times is None:
            req.atime_ns = now
            req.mtime_ns = now
        else:
            atime, mtime = times
            if atime != UTIME_OMIT:
                req.atime_ns = now if atime == UTIME_NOW else int(atime)
            if mtime != UTIME_OMIT:
                req.mtime_ns = now if mtime == UTIME_NOW else int(mtime)
        # Pending writes would be committed later with mtime = now, undoing this (tar, cp -p).
        self._commit_ino(self._lookup(path).ino)
        return self._set_attr(path, req)

    @errno_boundary
    def truncate(self, path, length, fh=None):
        if path is not None:
            check_path(path)
        self._writable()
        h = None
        if fh:
            with self._lock:
                h = self._handles.get(fh)
        if h is not None:
            attr = h.truncate(length)
            self._commit_ino(h.ino, except_fh=h.fh)
        else:
            old = self._lookup(path)
            self._commit_ino(old.ino)
            attr = self._mutate("set_attr", master_pb2.SetAttrRequest(path=path, size=length))
        for other in self._handles_of(attr.ino):
            if other is not h:
                other.set_size_after_truncate(attr.size, attr.inline)
        self.cache.invalidate_ino(attr.ino)
        return 0

    # ------------------------------------------------------------------ directories

    @errno_boundary
    def readdir(self, path, fh=None):
        check_path(path)
        base = path.rstrip("/")
        # Each entry with its inode number and type (d_ino, d_type): libfuse 3 puts a
        # name without them in the listing with d_ino 0, which ls and glob skip.
        entries = [(".", None, 0), ("..", None, 0)]
        generation = self.cache.generation()
        for entry in self.master.readdir(path):
            self.cache.put(f"{base}/{entry.name}", entry.attr, generation)
            entries.append((entry.name, {"st_ino": entry.attr.ino, "st_mode": entry.attr.mode},
                            0))
        return entries

    @errno_boundary
    def mkdir(self, path, mode):
        check_path(path)
        self._writable()
        uid, gid, _ = caller()
        attr = self._mutate("mkdir", master_pb2.MkdirRequest(
            path=path, mode=mode & 0o7777, uid=uid, gid=gid))
        self._changed(path, nlink_delta=1, at_ns=attr.ctime_ns)
        self.cache.put(path, attr)
        return 0

    @errno_boundary
    def rmdir(self, path):
        check_path(path)
        self._writable()
        self._mutate("rmdir", master_pb2.PathRequest(path=path))
        self.cache.invalidate_tree(path)
        self._changed(path, nlink_delta=-1)
        return 0

    # ------------------------------------------------------------------ names

    @errno_boundary
    def unlink(self, path):
        check_path(path)
        self._writable()
        attr = self._lookup(path)
        keep = self._is_open(attr.ino)
        self._mutate("unlink", master_pb2.UnlinkRequest(path=path, keep_open=keep))
        if keep:
            with self._lock:
                self._unlinked.add(attr.ino)
        self.cache.invalidate_ino(attr.ino)
        self._changed(path)
        return 0

    def _exchange(self, a: str, b: str) -> int:
        """RENAME_EXCHANGE: the two names swap inodes; so do their records here."""
        self._mutate("rename", master_pb2.RenameRequest(old_path=a, new_path=b, exchange=True))
        self.cache.invalidate_tree(a)
        self.cache.invalidate_tree(b)
        self._changed(a, b, links=True)
        self.kernel_sizes.exchanged(a, b)
        self._move_handles({a: b, b: a})
        return 0

    def _move_handles(self, moves: dict[str, str]) -> None:
        """Open handles follow their file (or a directory above it) to its new name."""
        prefixes = [(old.rstrip("/") + "/", new.rstrip("/") + "/") for old, new in moves.items()]
        with self._lock:
            for h in self._handles.values():
                if h.path in moves:
                    h.path = moves[h.path]
                    continue
                for old, new in prefixes:
                    if h.path.startswith(old):
                        h.path = new + h.path[len(old):]
                        break

    @errno_boundary
    def rename(self, old, new, flags=0):
        """rename, and renameat2's RENAME_NOREPLACE and RENAME_EXCHANGE (libfuse 3 passes the
        flags; the master checks and swaps in the rename's own transaction). RENAME_WHITEOUT
        is not supported: EINVAL, which callers read as "unsupported"."""
        check_path(old)
        check_path(new)
        self._writable()
        if flags == RENAME_EXCHANGE:
            return self._exchange(old, new)
        if flags & ~RENAME_NOREPLACE:
            raise FuseOSError(errno.EINVAL)
        if new.startswith(old.rstrip("/") + "/"):
            raise FuseOSError(errno.EINVAL)  # a directory into its own subtree
        moved = self.cache.get(old)
        target = self.cache.get(new)   # replaced: its other names lose a link
        # Only a target open in this mount needs keeping alive; handles know their paths.
        with self._lock:
            target_open = any(h.path == new for h in self._handles.values())
        reply = self._mutate("rename", master_pb2.RenameRequest(
            old_path=old, new_path=new, keep_open=target_open,
            no_replace=bool(flags & RENAME_NOREPLACE)))
        if reply.replaced_ino and self._is_open(reply.replaced_ino):
            with self._lock:
                self._unlinked.add(reply.replaced_ino)
        self.cache.invalidate_tree(old)
        self.cache.invalidate_tree(new)
        if reply.replaced_ino:
            self.cache.invalidate_ino(reply.replaced_ino)
        if target is not None and (moved is None or target.ino != moved.ino):
            self.cache.invalidate_ino(target.ino)
        is_file = moved is not None and not statmod.S_ISDIR(moved.mode)
        self._changed(old, new, links=not is_file)
        if is_file and not reply.replaced_ino:
            # Same inode under its new name; only its ctime moved.
            renamed = master_pb2.Attr()
            renamed.CopyFrom(moved)
            renamed.ctime_ns = time.time_ns()
            self.cache.put(new, renamed)
        self.kernel_sizes.renamed(old, new)
        self._move_handles({old: new})
        return 0

    @errno_boundary
    def symlink(self, target, source):
        # fusepy: `ln -s source target` -> symlink(target, source); target is the new name.
        check_path(target)
        self._writable()
        uid, gid, _ = caller()
        attr = self._mutate("symlink", master_pb2.SymlinkRequest(
            path=target, target=source, uid=uid, gid=gid))
        self._changed(target, at_ns=attr.ctime_ns)
        self.cache.put(target, attr)
        return 0

    @errno_boundary
    def mknod(self, path, mode, dev):
        """A regular file, FIFO, unix socket (bind() makes one) or device node. Special files
        are metadata at the master; the kernel gives them their behaviour (a FIFO's pipe, a
        device's driver), so no open of one ever reaches us."""
        check_path(path)
        self._writable()
        if statmod.S_ISREG(mode):  # as create, so the mount's --replication applies
            self.release(path, self.create(path, statmod.S_IMODE(mode),
                                           os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            return 0
        uid, gid, _ = caller()
        attr = self._mutate("mknod", master_pb2.MknodRequest(
            path=path, mode=mode, rdev=dev, uid=uid, gid=gid))
        self._changed(path, at_ns=attr.ctime_ns)
        self.cache.put(path, attr)
        return 0

    @errno_boundary
    def ioctl(self, path, cmd, arg, fh, flags, data):
        raise FuseOSError(errno.ENOTTY)

    @errno_boundary
    def readlink(self, path):
        check_path(path)
        return self._call("Readlink", master_pb2.PathRequest(path=path)).target

    @errno_boundary
    def link(self, target, source):
        # fusepy: `ln source target` -> link(target, source); target is the new name.
        check_path(target)
        check_path(source)
        self._writable()
        attr = self._mutate("link", master_pb2.LinkRequest(existing_path=source, new_path=target))
        self.cache.invalidate_ino(attr.ino)   # every name of it: nlink and ctime moved
        self._changed(target, at_ns=attr.ctime_ns)   # the source's directory did not change
        self.cache.put(target, attr)
        return 0

    # ------------------------------------------------------------------ files

    def _new_handle(self, path: str, flags: int, attr: master_pb2.Attr) -> int:
        fh = next(self._next_fh)
        h = FileHandle(fh, attr.ino, path, flags, attr, self.client,
                       chunk_size=self.options.chunk_size,
                       replication=self.options.replication, on_commit=self._committed)
        with self._lock:
            self._handles[fh] = h
            self._by_ino.setdefault(attr.ino, set()).add(fh)
        return fh

    @errno_boundary
    def create(self, path, mode, flags=os.O_WRONLY | os.O_CREAT):
        check_path(path)
        self._writable()
        uid, gid, _ = caller()
        truncate = bool(flags & os.O_TRUNC)
        if truncate:
            try:
                self._commit_ino(self._lookup(path).ino)
            except FsError as e:
                if e.errno != errno.ENOENT:
                    raise
        is_new = self.cache.is_absent(path)  # the kernel looked it up just before
        attr = self._mutate("create", master_pb2.CreateRequest(
            path=path, mode=mode & 0o7777, uid=uid, gid=gid,
            exclusive=bool(flags & os.O_EXCL), truncate=truncate,
            replication=self.options.replication))
        self._changed(path)
        self.cache.put(path, attr)
        if is_new:
            # A new file has no xattrs: spare the getxattr(security.capability) the kernel
            # sends before the first write.
            self.cache.put_xattr_absent(path, "security.capability")
        if truncate:
            for other in self._handles_of(attr.ino):
                other.set_size_after_truncate(attr.size, attr.inline)
        return self._new_handle(path, flags, attr)

    @errno_boundary
    def open(self, path, flags):
        check_path(path)
        if flags & _WRITE_FLAGS:
            self._writable()
            return self._open_for_writing(path, flags)
        # Close-to-open: the name is resolved at the master and the chunk list taken in one
        # RPC, so a file another mount replaced (written to a temp name, renamed over this
        # one) opens as the new file, never as the inode number this mount's cache still
        # remembers for the name (that inode may be gone, or still open somewhere with its
        # old bytes). Pending writes of this mount to the file are committed first, so this
        # handle sees them.
        cached = self.cache.get(path)
        if cached is not None:
            self._commit_ino(cached.ino)
        # With a session, the last open's answer stays true until the master breaks it.
        snapshot = self.cache.get_content(path)
        if snapshot is not None and not self._handles_of(snapshot.attr.ino):
            fh = self._new_handle_checked(path, flags, snapshot.attr)
            h = self._handle(fh)
            h.adopt_snapshot(snapshot)
            # Nothing changed since the last open took this answer (a change would have
            # dropped it, here and in the kernel), so the pages that open read stay valid.
            h.keep_cache = CAN_INVALIDATE and not h.direct_io   # breaks reach the kernel
            return fh
        generation = self.cache.generation()
        snapshot = self._call("GetChunksAt", master_pb2.PathRequest(path=path))
        ino = snapshot.attr.ino
        if (cached is None or cached.ino != ino) and \
                any(h.dirty for h in self._handles_of(ino)):
            self._commit_ino(ino)
            snapshot = self._call("GetChunks", master_pb2.InoRequest(ino=ino))
        if cached is not None and cached.ino != ino:
            self.cache.invalidate_ino(cached.ino)
        fh = self._new_handle_checked(path, flags, snapshot.attr)
        self._handle(fh).adopt_snapshot(snapshot)
        # The kernel asks getattr right after open: answer with what the master just said
        # (and, with a session, the next open of the name too).
        self.cache.put_content(path, snapshot, generation)
        return fh

    def _open_for_writing(self, path: str, flags: int) -> int:
        # A handle that writes needs the current size (O_APPEND) now, from the master.
        attr = self._lookup(path, fresh=True)
        if statmod.S_ISDIR(attr.mode) and flags & (os.O_WRONLY | os.O_RDWR):
            raise FuseOSError(errno.EISDIR)
        # Writes through other handles of this mount become visible to this open.
        self._commit_ino(attr.ino)
        if flags & os.O_TRUNC and flags & (os.O_WRONLY | os.O_RDWR):
            # Only libfuse 3 (atomic_o_trunc) passes O_TRUNC to open; libfuse 2 truncates
            # with a setattr first. The kernel then drops its size to 0 for this name.
            attr = self._mutate("set_attr", master_pb2.SetAttrRequest(ino=attr.ino, size=0))
            for other in self._handles_of(attr.ino):
                other.set_size_after_truncate(0, False)
            self.cache.invalidate_ino(attr.ino)
            self.kernel_sizes.truncated(path)
        return self._new_handle_checked(path, flags, attr)

    @errno_boundary
    def read(self, path, size, offset, fh):
        h = self._handle(fh)
        # Writes through this and other handles of this mount are visible to this one (as on
        # a local disk): commit them first, then read a fresh chunk list. This handle's own
        # pending writes are committed by FileHandle.read.
        if self._open_count(h.ino) > 1 and \
                any(o.dirty for o in self._handles_of(h.ino) if o is not h):
            self._commit_ino(h.ino, except_fh=fh)
            h.forget_snapshot()
        return h.read(offset, size)

    @errno_boundary
    def write(self, path, data, offset, fh):
        h = self._handle(fh)
        if self.options.read_only:
            raise FuseOSError(errno.EROFS)
        floor = 0
        if h.append:
            floor = max((o.size for o in self._handles_of(h.ino) if o is not h), default=0)
        written = h.write(data, offset, floor)
        # The kernel now takes the file to be at least this long, whatever happens later.
        if path is not None:
            self.kernel_sizes.grew(path, offset + written)
        return written

    @errno_boundary
    def flush(self, path, fh):
        h = self._handle(fh)
        if h.dirty:
            h.commit()
            if self.options.sync_on_close:
                self._make_durable(h.ino)
        return 0

    @errno_boundary
    def fsync(self, path, datasync, fh):
        """Commit what is buffered, then make the file durable (O_SYNC and O_DSYNC writes
        reach here too: the kernel fsyncs after each one)."""
        h = self._handle(fh)
        if h.dirty:
            h.commit()
        self._make_durable(h.ino)
        return 0

    @errno_boundary
    def fsyncdir(self, path, datasync, fh):
        self._make_durable(0)
        return 0

    def _make_durable(self, ino: int) -> None:
        """The file's chunks on every replica, then the master's log (holding every change
        this mount was answered for, since the master applies them in order), on stable
        storage. close() alone leaves them in each server's operating system."""
        if ino:
            self.client.gateway.sync(ino)
        self.master.mutate("sync", master_pb2.Empty(), durable=True)

    @errno_boundary
    def release(self, path, fh):
        with self._lock:
            h = self._handles.get(fh)
        if h is None:
            return 0
        try:
            if h.dirty:
                h.commit()
                if self.options.sync_on_close:
                    self._make_durable(h.ino)
        finally:
            h.close()
            with self._lock:
                self._handles.pop(fh, None)
                fhs = self._by_ino.get(h.ino)
                last = False
                if fhs is not None:
                    fhs.discard(fh)
                    if not fhs:
                        del self._by_ino[h.ino]
                        last = True
                release_ino = last and h.ino in self._unlinked
                if release_ino:
                    self._unlinked.discard(h.ino)
            if release_ino:
                self._mutate("release_inode", master_pb2.InoRequest(ino=h.ino))
        return 0

    # ------------------------------------------------------------------ file system

    # ------------------------------------------------------------------ locks

    @errno_boundary
    def lock(self, path, fh, cmd, lock, owner=0):
        """fcntl locks, held by the master across mounts (fusefs/locking.py)."""
        self.locker.fcntl(self._handle(fh).ino, owner, cmd, lock)
        return 0

    @errno_boundary
    def flock(self, path, fh, op, owner=0):
        self.locker.flock(self._handle(fh).ino, owner, op)
        return 0

    @errno_boundary
    def statfs(self, path):
        st = self._call("StatFs", master_pb2.Empty())
        bs = st.block_size or 4096
        files = st.files
        return {
            "f_bsize": bs,
            "f_frsize": bs,
            "f_blocks": st.total_bytes // bs,
            "f_bfree": st.free_bytes // bs,
            "f_bavail": st.free_bytes // bs,
            "f_files": files + (1 << 30),
            "f_ffree": 1 << 30,
            "f_favail": 1 << 30,
            "f_namemax": NAME_MAX,
        }

    # ------------------------------------------------------------------ xattrs

    @errno_boundary
    def setxattr(self, path, name, value, options, position=0):
        check_path(path)
        self._writable()
        self._mutate("set_xattr", master_pb2.XattrRequest(
            path=path, name=name, value=bytes(value), flags=options))
        self.cache.invalidate(path)  # drops the cached has_xattrs too
        return 0

    @errno_boundary
    def getxattr(self, path, name, position=0):
        check_path(path)
        if self.cache.xattr_absent(path, name) or not self._may_have_xattrs(path):
            raise FuseOSError(errno.ENODATA)
        try:
            return self._call("GetXattr", master_pb2.XattrRequest(path=path, name=name)).value
        except FsError as e:
            if e.errno == errno.ENODATA:
                self.cache.put_xattr_absent(path, name)
            raise

    @errno_boundary
    def listxattr(self, path):
        check_path(path)
        if not self._may_have_xattrs(path):
            return []
        return list(self._call("ListXattr", master_pb2.PathRequest(path=path)).names)

    @errno_boundary
    def removexattr(self, path, name):
        check_path(path)
        self._writable()
        self._mutate("remove_xattr", master_pb2.XattrRequest(path=path, name=name))
        self.cache.invalidate(path)
        return 0

    def _may_have_xattrs(self, path: str) -> bool:
        """False when the cached attributes say the inode has none: `ls -l` asks for ACLs
        and SELinux labels of every file, and each would otherwise be an RPC."""
        attr = self.cache.get(path)
        return attr is None or attr.has_xattrs

    # ------------------------------------------------------------------ lifecycle

    def destroy(self, path):
        """Unmount: commit whatever is still pending (the kernel normally released it all)."""
        with self._lock:
            handles = list(self._handles.values())
        for h in handles:
            try:
                h.commit()
            except Exception:
                log.exception("commit of %s at unmount failed", h.path)
