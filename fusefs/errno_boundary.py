"""The one boundary between the file system's failures and the errno the kernel sees.

fusepy reports any exception that is not an OSError as EINVAL ("Invalid argument"), which
hides real failures. Every operation of KelpOperations is wrapped by `errno_boundary`:

* FsError (our own, raised by the clients and the operations) -> FuseOSError(its errno)
* OSError (including FuseOSError) passes unchanged
* grpc.RpcError -> the errno of cluster.common.errors.oserror_from_rpc
* zmq.ZMQError -> EIO (a broken write stream: the data is not known to be safe)
* anything else -> logged with its traceback, then EIO
"""
from __future__ import annotations

import errno
import functools
import logging

import grpc

from cluster.common.errors import FsError, oserror_from_rpc
from fusefs.fuse_binding import FuseOSError

try:  # pyzmq is a dependency, but keep the boundary importable without it
    import zmq
    _ZMQ_ERRORS: tuple = (zmq.ZMQError,)
except ImportError:  # pragma: no cover
    _ZMQ_ERRORS = ()

log = logging.getLogger("fusefs")

# Failures that are part of normal use (a shell probing names, a missing xattr, a lock held
# elsewhere, a wait for one interrupted, a change on a read-only export): not logged.
_QUIET = {errno.ENOENT, errno.ENODATA, errno.EEXIST, errno.ENOTEMPTY, errno.EACCES, errno.EPERM,
          errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EINVAL, errno.EXDEV,
          errno.EAGAIN, errno.EINTR, errno.EROFS}


def to_fuse_error(exc: BaseException, where: str = "") -> OSError:
    """The OSError (FuseOSError) the kernel should see for `exc`."""
    if isinstance(exc, FsError):
        err = exc.errno or errno.EIO
        if err not in _QUIET:
            log.warning("%s: %s", where, exc.status_message())
        return FuseOSError(err)
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, grpc.RpcError):
        os_err = oserror_from_rpc(exc)
        if os_err.errno not in _QUIET:
            log.warning("%s: rpc failed: %s", where, os_err)
        return FuseOSError(os_err.errno or errno.EIO)
    if _ZMQ_ERRORS and isinstance(exc, _ZMQ_ERRORS):
        log.warning("%s: gateway stream failed: %s", where, exc)
        return FuseOSError(errno.EIO)
    log.error("%s: unexpected %s", where, type(exc).__name__, exc_info=exc)
    return FuseOSError(errno.EIO)


def errno_boundary(func):
    """Wrap a FUSE operation so that every failure leaves it as an OSError with a real errno.
    It also tells the operations object that an operation begins (`_begin_op`, if it has
    one): the attribute cache must know which answers may predate a callback break."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        begin = getattr(args[0], "_begin_op", None) if args else None
        if begin is not None:
            begin()
        try:
            return func(*args, **kwargs)
        except OSError:
            raise
        except Exception as exc:
            raise to_fuse_error(exc, func.__name__) from exc

    return wrapper
