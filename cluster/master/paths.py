"""Path and name validation for the namespace: one place that decides what a legal name is.

Paths are absolute and '/'-separated; empty components (repeated or trailing slashes) are
ignored, as the kernel does. Each name is 1..255 bytes of UTF-8 without NUL or '/', and is not
'.' or '..' (the FUSE layer resolves those before they reach the master). A name over 255
bytes is ENAMETOOLONG; anything else malformed is EINVAL.

A whole path has no length limit: PATH_MAX bounds one system call's argument, which the
kernel checks, not the depth of a tree (a program that `cd`s down can build a tree whose paths
from the root are far longer, as on ext4). The RPC layer's message size is the only bound.
"""
from __future__ import annotations

import errno

from cluster.common.errors import FsError

NAME_MAX = 255
SYMLINK_MAX = 4095
XATTR_NAME_MAX = 255
XATTR_VALUE_MAX = 65536


def _check_length(text: str, what: str, limit: int) -> None:
    """EINVAL unless `text` is UTF-8, ENAMETOOLONG when its encoding is over `limit` bytes."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise FsError(errno.EINVAL, f"{what} {text!r} is not valid UTF-8") from None
    if size > limit:
        raise FsError(errno.ENAMETOOLONG, f"{what} is {size} bytes, the limit is {limit}")


def validate_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not name:
        raise FsError(errno.EINVAL, f"empty {what}")
    _check_length(name, what, NAME_MAX)
    if "\0" in name or "/" in name:
        raise FsError(errno.EINVAL, f"{what} {name!r} contains NUL or '/'")
    if name in (".", ".."):
        raise FsError(errno.EINVAL, f"{what} {name!r} is not allowed")
    return name


def split(path: str) -> list[str]:
    """The validated components of an absolute path; [] is the root."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise FsError(errno.EINVAL, f"path {path!r} is not absolute")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise FsError(errno.EINVAL, f"path {path[:80]!r}... is not valid UTF-8") from None
    if "\0" in path:
        raise FsError(errno.EINVAL, f"path {path!r} contains NUL")
    return [validate_name(part) for part in path.split("/") if part]


def split_parent(path: str) -> tuple[list[str], str]:
    """(parent components, last name) of a path that is not the root."""
    parts = split(path)
    if not parts:
        raise FsError(errno.EINVAL, "the root has no parent")
    return parts[:-1], parts[-1]


def validate_symlink_target(target: str) -> str:
    if not isinstance(target, str) or not target:
        raise FsError(errno.EINVAL, "empty symlink target")
    size = len(target.encode("utf-8", "surrogatepass"))
    if size > SYMLINK_MAX:
        raise FsError(errno.ENAMETOOLONG, f"symlink target is {size} bytes, limit {SYMLINK_MAX}")
    if "\0" in target:
        raise FsError(errno.EINVAL, "symlink target contains NUL")
    return target


def validate_xattr_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise FsError(errno.EINVAL, "empty xattr name")
    if len(name.encode("utf-8", "surrogatepass")) > XATTR_NAME_MAX or "\0" in name:
        # Linux answers ERANGE for an over-long attribute name.
        raise FsError(errno.ERANGE, f"xattr name {name[:40]!r}... is invalid or too long")
    return name


def canonical(path: str) -> str:
    """The one spelling of an absolute path ("/a//b/" -> "/a/b"), the one a mount caches
    under: callback keys are compared as strings."""
    return "/" + "/".join(split(path))


def parent(path: str) -> str:
    """The canonical parent of a canonical path ("/" for the root and its children)."""
    return path.rsplit("/", 1)[0] or "/"
