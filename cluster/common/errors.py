"""The one table between POSIX errno, gRPC status codes and ZMQ failures.

Servers raise `FsError(errno.X, "what")` from their logic; the gRPC layer turns it into a
status whose code comes from `STATUS_FOR_ERRNO` and whose message starts with the errno name
("ENOTEMPTY: /a/b"). Clients turn any `grpc.RpcError` back into an `OSError` with
`oserror_from_rpc`, using the errno name in the message when there is one and the status code
otherwise (as SeaweedFS's mount does: NotFound -> ENOENT, Unavailable -> EAGAIN, ...). Every
failure a user sees goes through these functions, so none reaches fusepy as a stray exception
(which it would report as EINVAL).
"""
from __future__ import annotations

import errno
import os

import grpc

# errno -> the status a server answers with.
STATUS_FOR_ERRNO: dict[int, grpc.StatusCode] = {
    errno.ENOENT: grpc.StatusCode.NOT_FOUND,
    errno.ENODATA: grpc.StatusCode.NOT_FOUND,
    errno.EEXIST: grpc.StatusCode.ALREADY_EXISTS,
    errno.EINVAL: grpc.StatusCode.INVALID_ARGUMENT,
    errno.ENAMETOOLONG: grpc.StatusCode.INVALID_ARGUMENT,
    errno.ENOTDIR: grpc.StatusCode.FAILED_PRECONDITION,
    errno.EISDIR: grpc.StatusCode.FAILED_PRECONDITION,
    errno.ENOTEMPTY: grpc.StatusCode.FAILED_PRECONDITION,
    errno.EROFS: grpc.StatusCode.FAILED_PRECONDITION,
    errno.EXDEV: grpc.StatusCode.FAILED_PRECONDITION,
    errno.EMLINK: grpc.StatusCode.FAILED_PRECONDITION,
    errno.ESTALE: grpc.StatusCode.FAILED_PRECONDITION,  # the writer's view of a file is old
    errno.ELOOP: grpc.StatusCode.FAILED_PRECONDITION,
    errno.EPERM: grpc.StatusCode.PERMISSION_DENIED,
    errno.EACCES: grpc.StatusCode.PERMISSION_DENIED,
    errno.ENOSPC: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errno.EFBIG: grpc.StatusCode.OUT_OF_RANGE,
    errno.ERANGE: grpc.StatusCode.OUT_OF_RANGE,
    errno.E2BIG: grpc.StatusCode.OUT_OF_RANGE,
    errno.EIO: grpc.StatusCode.DATA_LOSS,
    errno.EAGAIN: grpc.StatusCode.UNAVAILABLE,
    errno.ETIMEDOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# status -> errno, for answers that carry no errno name.
ERRNO_FOR_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.NOT_FOUND: errno.ENOENT,
    grpc.StatusCode.ALREADY_EXISTS: errno.EEXIST,
    grpc.StatusCode.INVALID_ARGUMENT: errno.EINVAL,
    grpc.StatusCode.PERMISSION_DENIED: errno.EACCES,
    grpc.StatusCode.UNAUTHENTICATED: errno.EACCES,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errno.ENOSPC,
    grpc.StatusCode.OUT_OF_RANGE: errno.EFBIG,
    grpc.StatusCode.UNAVAILABLE: errno.EAGAIN,
    grpc.StatusCode.DEADLINE_EXCEEDED: errno.ETIMEDOUT,
    grpc.StatusCode.UNIMPLEMENTED: errno.ENOSYS,
}


STATUS_MESSAGE_MAX = 2000  # characters of an error message sent as a gRPC status

class FsError(Exception):
    """A failure with a POSIX meaning, raised by server logic and by client code alike."""

    def __init__(self, err: int, message: str = ""):
        super().__init__(message or os.strerror(err))
        self.errno = err
        self.message = message or os.strerror(err)

    @property
    def name(self) -> str:
        return errno.errorcode.get(self.errno, "EIO")

    def status(self) -> grpc.StatusCode:
        return STATUS_FOR_ERRNO.get(self.errno, grpc.StatusCode.INTERNAL)

    def status_message(self) -> str:
        """"ENAME: message" for a gRPC status, cut to STATUS_MESSAGE_MAX characters: a
        message naming a path deeper than PATH_MAX passed gRPC's 8 KiB metadata limit, and
        the caller saw RESOURCE_EXHAUSTED (ENOSPC) instead of the errno."""
        text = f"{self.name}: {self.message}"
        if len(text) <= STATUS_MESSAGE_MAX:
            return text
        half = STATUS_MESSAGE_MAX // 2
        return f"{text[:half]}...{text[-half:]}"

    def to_oserror(self) -> OSError:
        return OSError(self.errno, self.message)


def errno_from_name(name: str, default: int = errno.EIO) -> int:
    value = getattr(errno, name, None)
    return value if isinstance(value, int) and name.startswith("E") else default


def errno_from_status(code: grpc.StatusCode | None, details: str | None) -> int:
    """The errno for a gRPC failure: the errno name its message starts with, else its code."""
    if details:
        head = details.split(":", 1)[0].strip()
        if head.startswith("E") and head.isupper():
            found = errno_from_name(head, 0)
            if found:
                return found
    if code == grpc.StatusCode.DATA_LOSS:
        return errno.EIO
    return ERRNO_FOR_STATUS.get(code, errno.EIO)


def fserror_from_rpc(exc: grpc.RpcError) -> FsError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    message = details or (code.name if code else "rpc failed")
    if ":" in message and message.split(":", 1)[0].isupper():
        message = message.split(":", 1)[1].strip()
    return FsError(errno_from_status(code, details), message)


def oserror_from_rpc(exc: grpc.RpcError) -> OSError:
    return fserror_from_rpc(exc).to_oserror()


def fserror_from_oserror(e: OSError, what: str) -> FsError:
    """An OSError from a file operation as FsError: its errno (EIO if it has none), with what
    was being done in the message ("volume 3: append failed: No space left on device")."""
    return FsError(e.errno or errno.EIO, f"{what}: {e.strerror or e}")
