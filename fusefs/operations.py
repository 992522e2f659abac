"""KelpOperations: the FUSE operations of a KelpFS mount (fusepy high-level, path based).

Each operation turns a POSIX call into metadata RPCs to the master, or into work on an open
file's FileHandle (writes buffered and streamed to a gateway, reads through the ChunkReader).
Every operation goes through `errno_boundary`, so a failure reaches the kernel as its errno
and never as fusepy's default EINVAL.

Caching: attributes by path for `attr_ttl` seconds (AttrCache), filled by getattr and by
ReadDir pages (which carry attributes, so `ls -l` costs one RPC per page). Every local change
invalidates what it touches. open() always asks the master afresh (close-to-open).

The operations are split by what they work on, a module each. KelpOperations (here), the
class fusepy is given, holds the namespace half (attributes, directories, names, xattrs) and
the session with the master; it builds on FileOperations (file_operations.py: open files and
their data), which builds on OperationsBase (operations_base.py: the state and the helpers
both halves share).

Known gaps (POSIX, docs/posix.md): atime is not updated by reads; a rename replacing a file
that is open in ANOTHER mount drops its data for that mount. With a session (the default),
what the cache holds is true until the master breaks it (docs/caching.md), and the kernel
asks about every name (entry_timeout 0), so a change through one hard-linked name shows
through the others at once; without one (--no-callbacks), after attr_ttl. An open for
reading takes the chunk list from the cache under the same callback, or resolves its name at
the master (GetChunksAt).
"""
from __future__ import annotations

import errno
import logging
import os
import stat as statmod
import time

from cluster.common.errors import FsError
from fusefs.errno_boundary import errno_boundary
from fusefs.file_operations import FileOperations
from fusefs.fuse_binding import FuseOSError, invalidate_path
from fusefs.invalidator import WAIT_S, KernelInvalidator
from fusefs.operations_base import NAME_MAX, attr_to_stat, caller, check_path
from fusefs.session import MountSession
from protos import master_pb2

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2 flags (linux/fs.h)

log = logging.getLogger(__name__)


class KelpOperations(FileOperations):
    """The FUSE operations of one mount: the namespace half here, the rest inherited."""

    use_ns = True  # fusepy passes and takes times as integer nanoseconds
    # libfuse: operations on an open, unlinked file (hard_remove) arrive with path None.
    flag_nullpath_ok = True
    # libfuse: utimens receives UTIME_NOW / UTIME_OMIT instead of a read-modify-write.
    flag_utime_omit_ok = True

    # ------------------------------------------------------------------ session, callbacks

    def start_session(self, callbacks: bool = True) -> MountSession:
        """Open the session with the master: it holds this mount's locks and the files it
        keeps open after unlink. With `callbacks`, lookups come with callbacks too, the
        cache keeps answers until the master breaks them, and breaks reach the kernel."""
        several = self.master.pool.several
        session = MountSession(self.master.mutation_address, self._on_break,
                               self._drop_caches if callbacks else lambda: None,
                               self.master.transport, subdir=self.master.subdir.root,
                               callbacks=callbacks,
                               address_source=lambda: self.master.mutation_address,
                               on_silent=(lambda _: self.master.suspect(self.master.address))
                               if several else None)
        # Another master (several were given): reopen the session there and drop every
        # cache, whatever the old master's callbacks protected.
        self.master.on_failover.append(self._on_failover)
        if callbacks:
            self.cache.use_session(session.trusted)
        # Every call names the session: the master holds it to the session's export, and
        # grants callbacks on lookups only when the session was opened with them.
        self.master.session_id = lambda: session.sid
        self.invalidator = KernelInvalidator(invalidate_path)
        self.session = session
        session.start()
        return session

    def _drop_caches(self) -> None:
        """Every cache the master's callbacks protected goes (the session was lost, or the
        mount moved to another master): the attribute cache and the listings and open
        answers in it, the prefetcher's counts, open handles' chunk lists (marked stale),
        and the kernel's attributes and pages of every path cached (not waited for)."""
        paths = self.cache.clear()
        self.prefetch.reset()
        with self._lock:
            handles = list(self._handles.values())
        for h in handles:
            h.mark_stale()
            if h.path:
                paths.add(h.path)
        if self.invalidator is not None and paths:
            self.invalidator.submit(paths)

    def _on_failover(self, old: str, new: str) -> None:
        """The master client moved from `old` to `new` (gRPC addresses)."""
        log.warning("master %s lost; continuing with master %s", old, new)
        self._drop_caches()
        if self.session is not None:
            self.session.reconnect()

    def stop_session(self) -> None:
        if self.session is not None:
            self.session.close()
        if self.invalidator is not None:
            self.invalidator.close()

    def _on_break(self, brk) -> None:
        """The master takes back callbacks (session thread): drop what the cache holds, the
        chunk lists open handles hold and what the kernel holds before acknowledging."""
        # The master names cluster paths; this mount's are below its --subdir.
        subdir = self.master.subdir
        names = [p for p in map(subdir.to_mount, brk.paths) if p is not None]
        trees = [t for t in map(subdir.tree_to_mount, brk.trees) if t is not None]
        paths = self.cache.apply_break(names, trees, brk.inos)   # and every name
        for ino in brk.inos:
            for h in self._handles_of(ino):
                h.mark_stale()
                if h.path:
                    paths.add(h.path)
        # The kernel's too, but without waiting on it for long (fusefs/invalidator.py).
        invalidator = self.invalidator
        assert invalidator is not None   # made by start_session before the session starts
        invalidator.submit(paths).wait(WAIT_S)

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
        """access(2), and chdir's search check: the kernel asks only without
        default_permissions, and the master answers for the caller (R_OK, W_OK and X_OK are
        its MAY_* bits)."""
        check_path(path)
        if amode & os.W_OK and self.options.read_only:
            raise FuseOSError(errno.EROFS)
        self._lookup(path, access=amode & (os.R_OK | os.W_OK | os.X_OK))
        return 0

    def _setattr_request(self, path) -> master_pb2.SetAttrRequest:
        check_path(path)
        self._writable()
        return master_pb2.SetAttrRequest(path=path)

    def _set_attr(self, path, req: master_pb2.SetAttrRequest) -> int:
        attr = self._mutate("set_attr", req)
        self.cache.invalidate_ino(attr.ino)
        if self.cache.per_caller and statmod.S_ISDIR(attr.mode) and any(
                req.HasField(f) for f in ("mode", "uid", "gid")):
            # Who may search it changed: what callers were told below it may be no longer
            # theirs to know (the master breaks the same for other mounts).
            self.cache.invalidate_tree(path)
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
            req.times_now = True
        else:
            atime, mtime = times
            if atime != UTIME_OMIT:
                req.atime_ns = now if atime == UTIME_NOW else int(atime)
            if mtime != UTIME_OMIT:
                req.mtime_ns = now if mtime == UTIME_NOW else int(mtime)
            # "Now" alone may be set by anyone who may write the file, an explicit time only
            # by its owner: the master must know which (it then sets its own clock).
            req.times_now = all(t in (UTIME_NOW, UTIME_OMIT) for t in times) and \
                UTIME_NOW in times
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
        entries: list[tuple[str, dict[str, int] | None, int]] = [(".", None, 0), ("..", None, 0)]
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

    # ------------------------------------------------------------------ file system

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
