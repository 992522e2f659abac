"""A pure fusepy pass-through of a local directory: the ceiling of any fusepy file system here.

    python -m bench.passthrough BACKING_DIR MOUNTPOINT

Runs in the foreground until unmounted (fusermount -u, SIGINT or SIGTERM). Every FUSE call is
mapped onto the same call on BACKING_DIR with the os module: no caches, no RPCs, no locks. It
mounts through the project's binding (fusefs.fuse_binding.KelpFUSE, multithreaded; libfuse 3
through mfusepy, or fusepy on libfuse 2) with exactly the kernel options KelpFS's mount.py
uses (mount.fuse_kwargs of the MountOptions defaults: 1 MiB requests on libfuse 3, 128 KiB
with big_writes on libfuse 2, max_readahead=1 MiB, attr_timeout 1 s, entry_timeout=0,
negative_timeout=0, use_ino, hard_remove, default_permissions), only named differently in
/proc/mounts. Whatever KelpFS's mount costs beyond this target's numbers is KelpFS's own work;
what this target costs beyond the local disk is the price of FUSE + libfuse + its Python
binding + the Python interpreter that every such file system pays.

Open files are plain file descriptors of this process (the FUSE fh is the fd), so reads and
writes are os.pread/os.pwrite on them. New files and directories belong to the calling user
(lchown when the caller is not this process's user). Extended attributes are not kept:
getxattr answers ENODATA and listxattr an empty list (what KelpFS answers from its attribute
cache for an inode without xattrs), setxattr and removexattr are refused with ENOTSUP.
"""
from __future__ import annotations

import argparse
import errno
import os
import stat
import sys

from fusefs.fuse_binding import FuseOSError, KelpFUSE, Operations, fuse_get_context

_STAT_KEYS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
              "st_blksize", "st_rdev")


def stat_dict(st: os.stat_result) -> dict:
    """An os.stat_result as fusepy's attribute dict, times in integer nanoseconds (use_ns)."""
    d = {k: getattr(st, k) for k in _STAT_KEYS}
    d["st_atime"] = st.st_atime_ns
    d["st_mtime"] = st.st_mtime_ns
    d["st_ctime"] = st.st_ctime_ns
    return d


class Passthrough(Operations):
    """Each operation is the same call on `root` + path. Errors are OSErrors from the os
    calls; fusepy turns any OSError into -errno for the kernel."""

    use_ns = True           # utimens gets and getattr returns integer nanoseconds
    flag_nullpath_ok = True  # an open file whose name was removed (hard_remove) keeps working

    def __init__(self, root: str):
        self.root = os.path.realpath(root).rstrip("/")
        self.uid, self.gid = os.geteuid(), os.getegid()

    def _real(self, path: str) -> str:
        if path is None:
            raise FuseOSError(errno.ENOENT)
        return self.root + path

    def _own(self, real: str) -> None:
        """Give a new entry to the calling user, as a kernel file system would."""
        uid, gid, _ = fuse_get_context()
        if uid != self.uid or gid != self.gid:
            os.lchown(real, uid, gid)

    # -- attributes -----------------------------------------------------------------------

    def getattr(self, path, fh=None):
        if fh:
            return stat_dict(os.fstat(fh))
        return stat_dict(os.lstat(self._real(path)))

    def chmod(self, path, mode):
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path, uid, gid):
        os.lchown(self._real(path), uid, gid)
        return 0

    def utimens(self, path, times=None):
        if times is None:
            os.utime(self._real(path), follow_symlinks=False)
        else:
            os.utime(self._real(path), ns=times, follow_symlinks=False)
        return 0

    def truncate(self, path, length, fh=None):
        if fh:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._real(path), length)
        return 0

    def statfs(self, path):
        st = os.statvfs(self.root)
        return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                                            "f_bavail", "f_files", "f_ffree", "f_favail",
                                            "f_flag", "f_namemax")}

    def getxattr(self, path, name, position=0):
        raise FuseOSError(errno.ENODATA)

    def listxattr(self, path):
        return []

    # -- names ----------------------------------------------------------------------------

    def readdir(self, path, fh):
        # With d_ino and d_type, as the driver lists (libfuse 3 would give a bare name d_ino 0).
        entries = [(".", None, 0), ("..", None, 0)]
        with os.scandir(self._real(path)) as it:
            for e in it:
                kind = (stat.S_IFDIR if e.is_dir(follow_symlinks=False) else
                        stat.S_IFLNK if e.is_symlink() else stat.S_IFREG)
                entries.append((e.name, {"st_ino": e.inode(), "st_mode": kind}, 0))
        return entries

    def mkdir(self, path, mode):
        real = self._real(path)
        os.mkdir(real, mode)
        self._own(real)
        return 0

    def rmdir(self, path):
        os.rmdir(self._real(path))
        return 0

    def mknod(self, path, mode, dev):
        real = self._real(path)
        os.mknod(real, mode, dev)
        self._own(real)
        return 0

    def unlink(self, path):
        os.unlink(self._real(path))
        return 0

    def rename(self, old, new, flags=0):
        if flags:
            raise FuseOSError(errno.EINVAL)  # as the driver for RENAME_EXCHANGE
        os.rename(self._real(old), self._real(new))
        return 0

    def symlink(self, target, source):
        # fusepy: `ln -s source target` -> symlink(target, source); target is the new name,
        # source the link's text (not a path in this file system, so not mapped).
        real = self._real(target)
        os.symlink(source, real)
        self._own(real)
        return 0

    def readlink(self, path):
        return os.readlink(self._real(path))

    def link(self, target, source):
        # fusepy: `ln source target` -> link(target, source); target is the new name.
        os.link(self._real(source), self._real(target))
        return 0

    # -- open files -----------------------------------------------------------------------

    def create(self, path, mode, flags=None):
        # KelpFUSE passes the open flags (fi.flags) as a third argument; plain fusepy does not.
        if flags is None:
            flags = os.O_WRONLY | os.O_TRUNC
        real = self._real(path)
        fd = os.open(real, flags | os.O_CREAT, mode)
        try:
            self._own(real)
        except OSError:
            os.close(fd)
            raise
        return fd

    def open(self, path, flags):
        return os.open(self._real(path), flags)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh):
        return 0  # nothing is buffered here: every write already went to the fd

    def fsync(self, path, datasync, fh):
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0


def fuse_kwargs() -> dict:
    """mount.py's kernel options for the default MountOptions, under another name."""
    from fusefs.options import MountOptions
    from mount import fuse_kwargs as kelp_fuse_kwargs

    kw = kelp_fuse_kwargs(MountOptions())
    kw["fsname"] = "kelp-passthrough"
    kw["subtype"] = "passthrough"
    return kw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.passthrough",
                                description="Mount BACKING_DIR at MOUNTPOINT through fusepy.")
    p.add_argument("backing_dir")
    p.add_argument("mountpoint")
    args = p.parse_args(argv)
    for d in (args.backing_dir, args.mountpoint):
        if not os.path.isdir(d):
            print(f"bench.passthrough: not a directory: {d}", file=sys.stderr)
            return 1
    os.umask(0)  # the kernel already applied the caller's umask to the modes we get
    KelpFUSE(Passthrough(args.backing_dir), args.mountpoint, **fuse_kwargs())
    return 0


if __name__ == "__main__":
    sys.exit(main())
