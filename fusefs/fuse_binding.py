"""The one module that knows which FUSE binding the mount runs on.

libfuse 3 through `mfusepy` (the maintained fusepy) is the default: 1 MiB write requests and
read-ahead instead of libfuse 2's 128 KiB, rename flags, and the file handle on ftruncate (so
ftruncate of an open file whose name was removed works; the kernel sends fstat, fchmod,
fchown and futimens without one, so those stay ESTALE, docs/posix.md). Where
libfuse 3 or mfusepy is missing, the mount falls back to fusepy on libfuse 2. `KELP_FUSE=2`
forces the fallback (to test it, or to compare); `KELP_FUSE=3` refuses to fall back.
`LIBFUSE` says which is in use ("libfuse 3 (mfusepy)"); the mount logs it at start.

Everything else in fusefs/ (and the bench's pass-through) imports FUSE, Operations,
FuseOSError and fuse_get_context from here, and mounts through `KelpFUSE`, which adds to either
binding what the driver needs from it:

* `create(path, mode, flags)` gets the open flags, so O_EXCL and O_TRUNC reach the driver
  (fusepy's high-level `create` hides them unless raw_fi is on);
* `open` sets direct_io and keep_cache on the handles the driver asks for
  (`Operations.direct_io(fh) -> bool`, fusefs/kernelsize.py says why; `Operations.keep_cache
  (fh) -> bool`, docs/caching.md; both optional);
* an `ioctl` on an open file whose name was removed (path NULL with flag_nullpath_ok) does not
  crash fusepy's path decoding;
* fcntl and flock locks reach the driver with the kernel's lock owner
  (`Operations.lock(path, fh, cmd, struct_flock, owner)`, `Operations.flock(path, fh, op,
  owner)`); on libfuse 2 they stay local to the mount, as fusepy gives no owner;
* on libfuse 3, truncate passes the file handle the kernel gives with ftruncate
  (`Operations.truncate(path, length, fh)`; mfusepy drops it), and rename its flags
  (`Operations.rename(old, new, flags=0)`).

`invalidate_path(path)` drops what the kernel caches for a path (its attributes and its
pages) through libfuse 3's fuse_invalidate_path, which mfusepy does not wrap: the mount calls
it when the master breaks a callback, from its session thread (never from a thread serving a
FUSE request: the kernel may wait for that request to finish). `CAN_INVALIDATE` says whether
it works; on libfuse 2 it does not, and the mount gives the kernel no time to cache instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
from typing import TYPE_CHECKING

log = logging.getLogger(__name__)


def _choose():
    """(module, major version): mfusepy on libfuse 3 when both are here, else fusepy."""
    wanted = os.environ.get("KELP_FUSE", "")
    if wanted != "2" and ctypes.util.find_library("fuse3"):
        # mfusepy looks for libfuse 2 first; it is told to load libfuse 3.
        os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
        try:
            import mfusepy
            return mfusepy, mfusepy.fuse_version_major
        except (ImportError, OSError) as e:
            if wanted == "3":
                raise
            log.warning("libfuse 3 is installed but mfusepy cannot use it (%s): "
                        "falling back to fusepy on libfuse 2", e)
    elif wanted == "3":
        raise ImportError("KELP_FUSE=3, but libfuse 3 (libfuse3.so.3) is not installed")
    import fuse
    return fuse, 2


_fuse, LIBFUSE_MAJOR = _choose()
REQUEST_BYTES = 1 << 20  # the largest FUSE read/write request and read-ahead we ask for
LIBFUSE = (f"libfuse {LIBFUSE_MAJOR} ({_fuse.__name__ if _fuse.__name__ != 'fuse' else 'fusepy'})")

if TYPE_CHECKING:
    # Both bindings have the one API fusepy defined; the type checker reads it as mfusepy's
    # (an untyped library: its names are Any to mypy, so classes may derive from them).
    from mfusepy import FUSE, FuseOSError, Operations, fuse_exit, fuse_get_context
else:
    FUSE = _fuse.FUSE
    FuseOSError = _fuse.FuseOSError
    Operations = _fuse.Operations
    fuse_exit = _fuse.fuse_exit
    fuse_get_context = _fuse.fuse_get_context

__all__ = [
    "CAN_INVALIDATE",
    "FUSE",
    "LIBFUSE",
    "LIBFUSE_MAJOR",
    "FuseOSError",
    "KelpFUSE",
    "Operations",
    "fuse_exit",
    "fuse_get_context",
    "invalidate_path",
]

CAN_INVALIDATE = _fuse.__name__ == "mfusepy" and LIBFUSE_MAJOR >= 3 and \
    hasattr(_fuse._libfuse, "fuse_invalidate_path")
_mounted = {"fuse": None}   # libfuse's struct fuse * of this process's mount, set at init
if CAN_INVALIDATE:
    _fuse._libfuse.fuse_invalidate_path.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
    _fuse._libfuse.fuse_invalidate_path.restype = ctypes.c_int


class StructFlock(ctypes.Structure):
    """Linux's struct flock (mfusepy declares it only for the BSDs)."""
    _fields_ = [("l_type", ctypes.c_short), ("l_whence", ctypes.c_short),
                ("l_start", ctypes.c_int64), ("l_len", ctypes.c_int64),
                ("l_pid", ctypes.c_int32)]


def interrupted() -> bool:
    """Whether the request this thread serves was interrupted (the caller got a signal)."""
    fn = getattr(_fuse._libfuse, "fuse_interrupted", None) if hasattr(_fuse, "_libfuse") \
        else None
    return bool(fn()) if fn is not None else False


def invalidate_path(path: str) -> bool:
    """Drop the kernel's cached attributes and pages of `path`; False if the kernel had none
    (or this binding cannot)."""
    handle = _mounted["fuse"]
    if handle is None:
        return False
    return _fuse._libfuse.fuse_invalidate_path(
        handle, path.encode("utf-8", "surrogateescape")) == 0


def _path(fuse, path):
    """A path from libfuse (bytes, or NULL for an open file whose name was removed)."""
    return None if path is None else path.decode(fuse.encoding, "surrogateescape")


def _open_flags(operations, fi) -> None:
    """direct_io and keep_cache, as the driver asks for each handle (both optional)."""
    wants_direct_io = getattr(operations, "direct_io", None)
    if wants_direct_io is not None and wants_direct_io(fi.fh):
        fi.direct_io = 1
    wants_keep_cache = getattr(operations, "keep_cache", None)
    if wants_keep_cache is not None and wants_keep_cache(fi.fh):
        fi.keep_cache = 1


class _MfusepyFUSE(FUSE):
    """mfusepy: it calls the operations' methods directly, passes the open flags to create
    and handles a NULL ioctl path itself."""

    def init_fuse_3(self, conn, config):
        """Request sizes and read-ahead are negotiated here on libfuse 3 (its fuse_new
        refuses them as -o options). nullpath_ok stays off: on libfuse 3 it would take
        the path from every operation with a file handle, while off an open file whose
        name was removed (hard_remove) still comes with path None and its handle."""
        if conn:
            conn.contents.max_write = REQUEST_BYTES
            conn.contents.max_readahead = REQUEST_BYTES
        if CAN_INVALIDATE:
            _mounted["fuse"] = _fuse._libfuse.fuse_get_context().contents.fuse
        return super().init_fuse_3(conn, config)

    def destroy(self, private_data):
        _mounted["fuse"] = None
        return super().destroy(private_data)

    def open(self, path, fip):
        fi = fip.contents
        fi.fh = self.operations.open(_path(self, path), fi.flags)
        _open_flags(self.operations, fi)
        return 0

    def lock(self, path, fip, cmd, lock):
        """fcntl locks, with the lock owner (mfusepy passes neither it nor a usable
        struct flock on Linux)."""
        fi = fip.contents
        fl = ctypes.cast(lock, ctypes.POINTER(StructFlock)).contents
        return self.operations.lock(_path(self, path), fi.fh, cmd, fl, fi.lock_owner)

    def flock(self, path, fip, op):
        fi = fip.contents
        return self.operations.flock(_path(self, path), fi.fh, op, fi.lock_owner)

    def release(self, path, fip):
        """The last close of an open file that held a flock lock releases it (the
        kernel says so with flock_release; libfuse's high-level API does not pass it
        on)."""
        fi = fip.contents
        if fi.flock_release:
            try:
                self.operations.flock(_path(self, path), fi.fh, fcntl.LOCK_UN,
                                      fi.lock_owner)
            except OSError:
                log.warning("releasing a flock lock at close failed", exc_info=True)
        return self.operations.release(_path(self, path), fi.fh)

    def rename_fuse_3(self, old, new, flags):
        return self.operations.rename(_path(self, old), _path(self, new), flags)

    def truncate_fuse_3(self, path, length, fip):
        fh = fip.contents.fh if fip else None
        return self.operations.truncate(_path(self, path), length, fh)


class _FusepyFUSE(FUSE):
    """fusepy on libfuse 2: it calls `operations(name, *args)`."""

    def create(self, path, mode, fip):
        fi = fip.contents
        fi.fh = self.operations("create", _path(self, path), mode, fi.flags)
        return 0

    def open(self, path, fip):
        fi = fip.contents
        fi.fh = self.operations("open", _path(self, path), fi.flags)
        _open_flags(self.operations, fi)
        return 0

    def ioctl(self, path, cmd, arg, fip, flags, data):
        return self.operations("ioctl", _path(self, path), cmd, arg, fip.contents.fh,
                               flags, data)

    def lock(self, path, fip, cmd, lock):
        """ENOSYS: fusepy gives no lock owner, so the kernel keeps locks itself (local
        to this mount) instead."""
        return -errno.ENOSYS

    def flock(self, path, fip, op):
        return -errno.ENOSYS


# What the mount runs on: the class written for the binding _choose() loaded. The other one
# derives from the same FUSE too, but is never instantiated (its methods fit the other API).
KelpFUSE = _MfusepyFUSE if _fuse.__name__ == "mfusepy" else _FusepyFUSE


def kernel_options() -> dict:
    """The -o options that depend on the binding. libfuse 3 negotiates 1 MiB requests (the
    kernel's limit, 256 pages) and 1 MiB read-ahead in KelpFUSE.init_fuse_3 instead; libfuse 2
    cannot negotiate more than 32 pages and needs big_writes to get even those."""
    if LIBFUSE_MAJOR >= 3:
        # libfuse 3.14 defaults max_idle_threads to "unlimited" and then rejects its own
        # default with a warning ("Ignoring invalid max threads value 4294967295"); a bound
        # that no burst of requests reaches keeps its threads alive between bursts.
        return {"max_idle_threads": 64}
    return {"big_writes": True, "max_write": 128 << 10, "max_readahead": REQUEST_BYTES}
