"""Who may do what in the namespace: Linux's permission rules, as pure functions.

The master used to trust every path a caller sent, leaving the checks to the kernel at the
mount (`default_permissions`); a mount without that option, or any program that reaches the
master's ports, could then read and remove any file. Now each namespace call that says whom
it is made for (a `Caller`: uid, gid, supplementary groups) is checked here first, the way
Linux checks a local file system's calls, so a mount behaves as ext4 does whichever side
checks. What each function mirrors (fs/namei.c, fs/attr.c, fs/xattr.c):

    permission       generic_permission: the owner's, the group's or the others' mode bits
                     (the owner's alone when the caller owns the inode, even if the group's
                     would give more); root may read and write anything, search any
                     directory, and execute a file with at least one x bit
    may_search       may_lookup on each directory a path goes through
    may_create       may_create: write and search on the parent
    may_delete       may_delete: write and search on the parent; in a sticky directory only
                     the entry's owner, the directory's owner or root (else EPERM)
    may_rename       vfs_rename: may_delete on the source, may_create or may_delete on the
                     target; a directory moving to another parent needs write on itself (its
                     ".." changes)
    may_link         may_linkat (fs.protected_hardlinks = 1, Debian's default) and may_create
    may_setattr      setattr_prepare and may_setattr: chown only by root, except the owner
                     giving the file one of their own groups; chmod only by the owner or root
                     (clearing setgid when the file's group is not the caller's); explicit
                     times only by the owner or root, "now" also by a writer; truncate needs
                     write
    may_getxattr,    xattr_permission: user.* needs read (write) permission and a regular
    may_setxattr     file or directory, and not a sticky directory of someone else for
                     writing; trusted.* is root's alone (invisible to others); security.* and
                     system.* may be read by anyone who can reach the file, and written by
                     root (security.*: the capability LSM's rule) or the owner (system.*: the
                     POSIX ACLs' rule)
    may_write_open   what a commit to an open file needs (see there)

Errors are the kernel's: EACCES for a mode bit that is missing, EPERM for an ownership rule.
Nothing here knows a store or a transport: the inodes are anything with mode, uid and gid
(store.Attr), and the caller is a `Caller` (None, for the callers that carry none, is never
passed here: cluster/master/namespace.py skips the checks for it, as for root).
"""
from __future__ import annotations

import errno
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from cluster.common.errors import FsError

MAY_EXEC = 1
MAY_WRITE = 2
MAY_READ = 4


class Inode(Protocol):
    """What the rules read of an inode (store.Attr has it)."""

    @property
    def mode(self) -> int: ...

    @property
    def uid(self) -> int: ...

    @property
    def gid(self) -> int: ...


@dataclass(frozen=True)
class Caller:
    """The credentials a call is made with: the FUSE caller's fsuid, fsgid and supplementary
    groups."""
    uid: int
    gid: int
    groups: frozenset[int] = field(default_factory=frozenset)

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def in_group(self, gid: int) -> bool:
        """in_group_p: the primary group or a supplementary one."""
        return gid == self.gid or gid in self.groups

    def owns(self, inode: Inode) -> bool:
        """inode_owner_or_capable: the owner, or root (CAP_FOWNER)."""
        return self.is_root or self.uid == inode.uid


def _denied(what: str, why: str) -> FsError:
    return FsError(errno.EACCES, f"{what}: {why}")


def _not_permitted(what: str, why: str) -> FsError:
    return FsError(errno.EPERM, f"{what}: {why}")


def _mask_text(mask: int) -> str:
    return "".join(c for bit, c in ((MAY_READ, "r"), (MAY_WRITE, "w"), (MAY_EXEC, "x"))
                   if mask & bit)


def allowed(inode: Inode, who: Caller, mask: int) -> bool:
    """generic_permission: whether `who` has every access in `mask` (MAY_*) to `inode`."""
    mask &= MAY_READ | MAY_WRITE | MAY_EXEC
    mode = inode.mode
    if who.is_root:
        # CAP_DAC_OVERRIDE: all but executing a file that nobody may execute.
        return not (mask & MAY_EXEC and not stat.S_ISDIR(mode) and not mode & 0o111)
    if who.uid == inode.uid:
        bits = (mode >> 6) & 7
    elif who.in_group(inode.gid):
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return not mask & ~bits


def permission(inode: Inode, who: Caller, mask: int, what: str = "") -> None:
    """EACCES unless `who` has every access in `mask` to `inode`."""
    if not allowed(inode, who, mask):
        raise _denied(what, f"no {_mask_text(mask)} permission")


def may_search(dirs: Iterable[Inode], who: Caller, what: str = "") -> None:
    """Search (x) permission on each directory a path walks through, root first."""
    for d in dirs:
        if not allowed(d, who, MAY_EXEC):
            raise _denied(what, "no search permission on a directory of the path")


def may_create(parent: Inode, who: Caller, what: str = "") -> None:
    """A new name in `parent` (create, mkdir, mknod, symlink, link, a rename's target)."""
    if not allowed(parent, who, MAY_WRITE | MAY_EXEC):
        raise _denied(what, "no write permission on the directory")


def _sticky_blocks(parent: Inode, victim: Inode, who: Caller) -> bool:
    """check_sticky: in a sticky directory, only the entry's owner, the directory's owner or
    root may remove or rename an entry."""
    return bool(parent.mode & stat.S_ISVTX) and not who.is_root \
        and who.uid != victim.uid and who.uid != parent.uid


def may_delete(parent: Inode, victim: Inode, who: Caller, what: str = "") -> None:
    """Removing the name of `victim` from `parent` (unlink, rmdir, a rename's source, or its
    target when that is replaced)."""
    if not allowed(parent, who, MAY_WRITE | MAY_EXEC):
        raise _denied(what, "no write permission on the directory")
    if _sticky_blocks(parent, victim, who):
        raise _not_permitted(what, "the directory is sticky and neither the entry nor the "
                                   "directory is the caller's")


def may_rename(old_parent: Inode, source: Inode, new_parent: Inode, target: Inode | None,
               who: Caller, *, same_parent: bool, exchange: bool = False,
               what: str = "") -> None:
    """vfs_rename's checks. `target` is what the new name holds (None: nothing);
    `same_parent` says whether both names are in one directory. With `exchange`
    (RENAME_EXCHANGE) the target moves too, so it is checked as the source is."""
    may_delete(old_parent, source, who, what)
    if target is None:
        may_create(new_parent, who, what)
    else:
        may_delete(new_parent, target, who, what)
    if not same_parent:
        # A directory that changes parents rewrites its "..": it must be writable itself.
        if stat.S_ISDIR(source.mode):
            permission(source, who, MAY_WRITE, what)
        if exchange and target is not None and stat.S_ISDIR(target.mode):
            permission(target, who, MAY_WRITE, what)


def may_link(source: Inode, new_parent: Inode, who: Caller, what: str = "") -> None:
    """A hard link to `source` in `new_parent`. fs.protected_hardlinks (on in Debian and most
    distributions): someone who does not own the file may link to it only if it is a
    regular file they may read and write, neither setuid nor setgid-executable, so that
    nobody can pin another user's file (or a set-id program) where its owner cannot remove
    it."""
    if not who.owns(source):
        mode = source.mode
        safe = (stat.S_ISREG(mode) and not mode & stat.S_ISUID
                and (mode & (stat.S_ISGID | stat.S_IXGRP)) != (stat.S_ISGID | stat.S_IXGRP)
                and allowed(source, who, MAY_READ | MAY_WRITE))
        if not safe:
            raise _not_permitted(what, "a hard link to a file the caller does not own "
                                       "(protected_hardlinks)")
    may_create(new_parent, who, what)


def may_open(inode: Inode, who: Caller, access: int, what: str = "") -> None:
    """An open (or access(2)) asking for `access` (MAY_* bits)."""
    if access:
        permission(inode, who, access, what)


def may_readdir(directory: Inode, who: Caller, what: str = "") -> None:
    """Listing a directory needs read permission on it."""
    permission(directory, who, MAY_READ, what)


def may_write_open(inode: Inode, who: Caller, what: str = "") -> None:
    """A write to a file that is open (a commit of its chunks, inline bytes, a truncate of
    the open file). POSIX checks write permission once, at open, and an open file stays
    writable; the master sees only the later commit and cannot tell it from any other, so it
    asks for write permission now, but accepts the owner without it: a program may create a
    file read-only and then write it (git's objects, `cp -p`, tar), and an owner could give
    themselves write permission anyway, so this grants nothing. Someone else whose write
    permission was taken away after their open is refused (stricter than Linux)."""
    if who.uid != inode.uid:
        permission(inode, who, MAY_WRITE, what)


def may_setattr(inode: Inode, who: Caller, *, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, size: int | None = None, times: bool = False,
                times_now: bool = False, open_file: bool = False,
                what: str = "") -> int | None:
    """setattr_prepare's checks for the changes asked for; returns the mode to store (the
    setgid bit cleared when a caller outside the file's group sets it, as Linux does
    silently), or None when no mode was asked for.

    `times`: atime or mtime is set; `times_now`: to "now" (UTIME_NOW), which a writer may do
    too. `open_file`: the change comes through an open file (ftruncate), whose write
    permission was checked at open (see may_write_open)."""
    if uid is not None and not who.is_root and not (who.uid == inode.uid == uid):
        raise _not_permitted(what, "only root may change a file's owner")
    if gid is not None and not who.is_root and not (
            who.uid == inode.uid and (gid == inode.gid or who.in_group(gid))):
        raise _not_permitted(what, "only the owner may change the group, to one of theirs")
    if mode is not None:
        if not who.owns(inode):
            raise _not_permitted(what, "only the owner may change the mode")
        group = gid if gid is not None else inode.gid
        if not who.is_root and not who.in_group(group):
            mode &= ~stat.S_ISGID
    if times and not who.owns(inode):
        if not times_now:
            raise _not_permitted(what, "only the owner may set explicit times")
        permission(inode, who, MAY_WRITE, what)
    if size is not None and stat.S_ISREG(inode.mode):
        if open_file:
            may_write_open(inode, who, what)
        else:
            permission(inode, who, MAY_WRITE, what)
    return mode


# ---------------------------------------------------------------- extended attributes

def _xattr_class(name: str) -> str:
    return name.split(".", 1)[0] if "." in name else ""


def may_getxattr(inode: Inode, who: Caller, name: str, what: str = "") -> None:
    """Reading the xattr `name`. A name the caller may not see (trusted.*, user.* of a
    special file) reads as absent (ENODATA), as Linux answers."""
    cls = _xattr_class(name)
    if cls in ("security", "system"):
        return
    if cls == "trusted":
        if not who.is_root:
            raise FsError(errno.ENODATA, f"{what}: no xattr {name!r}")
        return
    if cls == "user" and not (stat.S_ISREG(inode.mode) or stat.S_ISDIR(inode.mode)):
        raise FsError(errno.ENODATA, f"{what}: no xattr {name!r}")
    permission(inode, who, MAY_READ, what)


def may_setxattr(inode: Inode, who: Caller, name: str, what: str = "") -> None:
    """Setting or removing the xattr `name`."""
    cls = _xattr_class(name)
    if cls == "trusted" or cls == "security":
        if not who.is_root:
            raise _not_permitted(what, f"only root may change {cls}.* attributes")
        return
    if cls == "system":
        if not who.owns(inode):
            raise _not_permitted(what, "only the owner may change system.* attributes")
        return
    if cls == "user":
        if not (stat.S_ISREG(inode.mode) or stat.S_ISDIR(inode.mode)):
            raise _not_permitted(what, "user.* attributes are for files and directories")
        if stat.S_ISDIR(inode.mode) and inode.mode & stat.S_ISVTX and not who.owns(inode):
            raise _not_permitted(what, "user.* attributes of a sticky directory are its "
                                       "owner's")
    permission(inode, who, MAY_WRITE, what)


def visible_xattrs(names: Iterable[str], who: Caller) -> list[str]:
    """The names listxattr shows: trusted.* only to root (listing needs no permission)."""
    if who.is_root:
        return list(names)
    return [n for n in names if _xattr_class(n) != "trusted"]
