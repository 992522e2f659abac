"""What both halves of a mount's FUSE operations share (operations.py, file_operations.py).

OperationsBase holds the mount's state: the master client, the attribute cache and directory
prefetcher, what the kernel was told about sizes, and the table of open files (whose
operations are FileOperations'). Its helpers are the ones every operation uses: checking a
path before any RPC, a lookup through the cache, a lookup or mutation RPC, refusing writes
on a read-only mount, and dropping cached attributes after a local change.

Permissions: every call to the master carries the FUSE caller (fusefs/callers.py), which the
master checks; with `default_permissions` (the default) the kernel has checked it already.
Without it, the attribute cache answers each caller only with what the master told that
caller (AttrCache's `who`), and a directory's chmod or chown drops what is cached below it.

Locking: `_lock` guards `_handles`, `_by_ino` and `_unlinked`; it is never held across an RPC.
Each FileHandle has its own lock (see filehandle.py).
"""
from __future__ import annotations

import errno
import itertools
import os
import threading
import time

from cluster.common.errors import FsError
from fusefs import callers
from fusefs.attrcache import AttrCache
from fusefs.dirprefetch import DirPrefetcher
from fusefs.filehandle import FileHandle
from fusefs.fuse_binding import FuseOSError, Operations, fuse_get_context, interrupted
from fusefs.invalidator import KernelInvalidator
from fusefs.kernelsize import KernelSizes
from fusefs.locking import Locker
from fusefs.options import MountOptions
from fusefs.paths import parent_of
from fusefs.session import MountSession
from protos import master_pb2

NAME_MAX = 255
BLKSIZE = 128 * 1024  # st_blksize: what cp and friends use as their buffer size


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


class OperationsBase(Operations):
    """The state and shared helpers of KelpOperations (operations.py), which fusepy is given."""

    def __init__(self, client, options: MountOptions | None = None):
        self.client = client
        self.master = client.master
        self.options = options or MountOptions()
        self.master.caller = callers.current
        self.cache = AttrCache(self.options.attr_ttl, who=None if
                               self.options.default_permissions else callers.key)
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
        """Called by errno_boundary as each operation begins."""
        callers.begin()
        self.cache.begin_op()

    def _call(self, method: str, request):
        """A lookup over gRPC."""
        return self.master.call(method, request)

    def _mutate(self, op: str, request):
        """A namespace change on the mutation channel (op: a Mutation.op field)."""
        return self.master.mutate(op, request)

    def _writable(self) -> None:
        if self.options.read_only:
            raise FuseOSError(errno.EROFS)

    def _lookup(self, path: str, fresh: bool = False, access: int = 0) -> master_pb2.Attr:
        """The attributes of `path`, from the cache unless `fresh`. With `access` (MAY_*
        bits: 4 read, 2 write, 1 execute) the master also checks that the caller has that
        access to the file (EACCES), so the answer never comes from the cache."""
        fresh = fresh or bool(access)
        if not fresh:
            attr = self.cache.get(path)
            if attr is not None:
                return attr
            if self.cache.is_absent(path):
                raise FsError(errno.ENOENT, path)
        generation = self.cache.generation()
        try:
            attr = self._call("GetAttr", master_pb2.PathRequest(path=path, access=access))
        except FsError as e:
            if e.errno == errno.ENOENT:
                self.cache.put_absent(path, generation)
            raise
        self.cache.put(path, attr, generation)
        if not fresh:
            self.prefetch.found(path)  # a walk through the directory: list it once
        return attr

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
