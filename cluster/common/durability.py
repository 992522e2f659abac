"""The syncs a client's fsync waits for, in one place, with an optional record of each.

Volume servers call `fdatasync` on a volume file when a client's fsync (or the stricter
durability modes) asks for it; the master calls `fsync` on its write-ahead log when it commits
a batch holding a durable mutation. With KELP_SYNC_LOG set (the fault tests set it), each
completed sync appends one line "<pid> <what>" to that file, so a test can check that every
fsync a client was answered came after a sync on every replica and on the master, without
pulling any power cord. One short O_APPEND write per line keeps the lines whole.
"""
from __future__ import annotations

import os

_LOG = os.environ.get("KELP_SYNC_LOG")


def _record(what: str) -> None:
    if _LOG:
        fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {what}\n".encode())
        finally:
            os.close(fd)


def fdatasync(fd: int, what: str) -> None:
    os.fdatasync(fd)
    _record(what)


def fsync(fd: int, what: str) -> None:
    os.fsync(fd)
    _record(what)
