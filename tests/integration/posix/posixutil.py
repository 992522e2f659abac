"""Helpers of the POSIX conformance tests (tests/integration/posix): errno names, files made
with an exact mode, a forked child running as nobody, utimensat(2) through ctypes, and
timestamp checks."""
from __future__ import annotations

import ctypes
import errno
import os
import time
from pathlib import Path

import pytest

NOBODY = 65534
NAME_MAX = 255
LONG = "n" * (NAME_MAX + 1)
MAX = "m" * NAME_MAX
UMASK = 0o022

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, setuid)")

# Tests marked @both run on both mounts (see the mnt_name fixture in conftest.py).
both = pytest.mark.parametrize("mnt_name", ["ttl0", "cached"])


def E(fn, *args, **kw) -> str:
    """The errno name fn(*args) fails with, or 'OK'."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "OK"


def touch(path, mode: int = 0o644, data: bytes = b"") -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # exactly `mode`, whatever the umask
    return Path(path)


def as_nobody(cwd, fn) -> str:
    """Run fn() in a forked child that is nobody:nogroup with no supplementary groups, in
    `cwd` (entered while still root: the test's tmp dirs are 0700). Returns the errno name
    it failed with, or 'OK'."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 255
        try:
            os.chdir(cwd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fn()
            code = 0
        except OSError as e:
            code = e.errno if e.errno and 0 < e.errno < 250 else 254
        except BaseException:
            code = 255
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return "OK"
    return errno.errorcode.get(code, f"exit {code}")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


def utimensat(path, atime, mtime, flags: int = 0) -> None:
    """utimensat(2): each time is nanoseconds, 'now' or 'omit'."""
    def ts(t):
        if t == "now":
            return _Timespec(0, UTIME_NOW)
        if t == "omit":
            return _Timespec(0, UTIME_OMIT)
        return _Timespec(t // 10**9, t % 10**9)
    times = (_Timespec * 2)(ts(atime), ts(mtime))
    if libc.utimensat(AT_FDCWD, os.fsencode(str(path)), times, flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))


def changed(before: os.stat_result, after: os.stat_result, t0: int, *fields: str) -> None:
    """Each of `fields` ('mtime', 'ctime', 'atime') moved forward to at least t0."""
    for f in fields:
        old, new = getattr(before, f"st_{f}_ns"), getattr(after, f"st_{f}_ns")
        assert new > old, f"{f} not updated: {old} -> {new} (op at {t0})"
        assert new >= t0, f"{f} not updated: {old} -> {new} (op at {t0})"


def unchanged(before: os.stat_result, after: os.stat_result, *fields: str) -> None:
    for f in fields:
        old, new = getattr(before, f"st_{f}_ns"), getattr(after, f"st_{f}_ns")
        assert new == old, f"{f} changed: {old} -> {new}"


def now() -> int:
    """A timestamp strictly after the previous operation's (clock granularity aside)."""
    time.sleep(0.002)
    return time.time_ns()
