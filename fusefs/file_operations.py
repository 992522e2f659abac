"""The file-data half of a mount's FUSE operations: open files and what is done with them.

create and open make a FileHandle (filehandle.py: writes buffered and streamed to a gateway,
reads through the ChunkReader); read, write, flush, fsync and release work on it; lock and
flock are held by the master for the handle's inode. The namespace half (operations.py)
builds on this one: a getattr, truncate, unlink or rename must know what is open here.

Open files: `_handles` maps fh -> FileHandle, `_by_ino` maps ino -> its open fhs. An unlinked
(or rename-replaced) inode that is still open here keeps its data on the master (keep_open)
until the last release, which calls ReleaseInode. Pending writes of one handle are committed
before another handle of the same inode reads, opens, truncates or sets times, so this mount
sees its own writes as on a local disk.
"""
from __future__ import annotations

import errno
import logging
import os
import stat as statmod

from cluster.common.errors import FsError
from fusefs import callers
from fusefs.errno_boundary import errno_boundary
from fusefs.filehandle import FileHandle
from fusefs.fuse_binding import CAN_INVALIDATE, FuseOSError
from fusefs.operations_base import OperationsBase, caller, check_path
from protos import master_pb2

log = logging.getLogger(__name__)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND
MAY_WRITE, MAY_READ = 2, 4   # the access bits the master checks (master.proto PathRequest)


def open_access(flags: int) -> int:
    """What an open with `flags` asks of the file, as Linux's may_open does: read and/or
    write by the access mode, and write for O_TRUNC."""
    bits = {os.O_RDONLY: MAY_READ, os.O_WRONLY: MAY_WRITE}.get(flags & os.O_ACCMODE,
                                                               MAY_READ | MAY_WRITE)
    return bits | (MAY_WRITE if flags & os.O_TRUNC else 0)


class FileOperations(OperationsBase):
    """Open files: the handle table, and the operations on a handle."""

    # ------------------------------------------------------------------ the handle table

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

    def _new_handle(self, path: str, flags: int, attr: master_pb2.Attr) -> int:
        fh = next(self._next_fh)
        h = FileHandle(fh, attr.ino, path, flags, attr, self.client,
                       chunk_size=self.options.chunk_size,
                       replication=self.options.replication, on_commit=self._committed,
                       caller=callers.current())
        with self._lock:
            self._handles[fh] = h
            self._by_ino.setdefault(attr.ino, set()).add(fh)
        return fh

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

    # ------------------------------------------------------------------ files

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
            replication=self.options.replication, access=open_access(flags)))
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
        snapshot = self._call("GetChunksAt", master_pb2.PathRequest(path=path,
                                                                     access=MAY_READ))
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
        # A handle that writes needs the current size (O_APPEND) now, from the master, which
        # checks that the caller may open the file so.
        attr = self._lookup(path, access=open_access(flags))
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
