"""cluster/master/permissions.py against Linux's rules, table by table: each row is an inode,
a caller, the question and the kernel's answer (0: allowed, else its errno)."""
from __future__ import annotations

import errno
import stat
from dataclasses import dataclass

import pytest

from cluster.common.errors import FsError
from cluster.master import permissions as p
from cluster.master.permissions import MAY_EXEC as X
from cluster.master.permissions import MAY_READ as R
from cluster.master.permissions import MAY_WRITE as W
from cluster.master.permissions import Caller


@dataclass(frozen=True)
class Node:  # an inode: what the rules read
    mode: int
    uid: int = 0
    gid: int = 0


def F(perm: int, uid: int = 0, gid: int = 0) -> Node:
    return Node(stat.S_IFREG | perm, uid, gid)


def D(perm: int, uid: int = 0, gid: int = 0) -> Node:
    return Node(stat.S_IFDIR | perm, uid, gid)


ROOT = Caller(0, 0)
ALICE = Caller(1000, 1000)                      # groups: only her own
BOB = Caller(1001, 1001, frozenset({50}))       # in group 50 by a supplementary group
NOBODY = Caller(65534, 65534)

pytestmark = pytest.mark.timeout(10)


def outcome(fn, *args, **kw) -> int:
    try:
        fn(*args, **kw)
    except FsError as e:
        return e.errno
    return 0


# ---------------------------------------------------------------- generic_permission

ALLOWED = [
    # inode, caller, mask, allowed
    (F(0o400, 1000), ALICE, R, True),
    (F(0o400, 1000), ALICE, W, False),
    (F(0o400, 1000), ALICE, R | W, False),
    (F(0o200, 1000), ALICE, W, True),
    (F(0o100, 1000), ALICE, X, True),
    (F(0o000, 1000), ALICE, 0, True),                 # nothing asked, nothing refused
    (F(0o077, 1000, 1000), ALICE, R, False),          # the owner's bits alone count
    (F(0o047, 1000, 1000), ALICE, R, False),
    (F(0o040, 0, 50), BOB, R, True),                  # a supplementary group
    (F(0o040, 0, 1001), BOB, R, True),                # the primary group
    (F(0o020, 0, 50), BOB, W, True),
    (F(0o040, 0, 51), BOB, R, False),
    (F(0o704, 0, 50), BOB, R, False),                 # the group's bits, not the others'
    (F(0o004, 0, 0), NOBODY, R, True),
    (F(0o006, 0, 0), NOBODY, R | W, True),
    (F(0o004, 0, 0), NOBODY, W, False),
    (F(0o001, 0, 0), NOBODY, X, True),
    (F(0o770, 0, 0), NOBODY, R, False),
    (D(0o711, 0, 0), NOBODY, X, True),
    (D(0o711, 0, 0), NOBODY, R, False),
    # root: read and write anything, search any directory, execute what has an x bit
    (F(0o000), ROOT, R | W, True),
    (F(0o000, 1000), ROOT, R | W, True),
    (F(0o000), ROOT, X, False),
    (F(0o644), ROOT, X, False),
    (F(0o100, 1000), ROOT, X, True),
    (F(0o010), ROOT, X, True),
    (F(0o001), ROOT, X, True),
    (D(0o000), ROOT, R | W | X, True),
]


@pytest.mark.parametrize(("inode", "who", "mask", "want"), ALLOWED)
def test_generic_permission(inode, who, mask, want):
    assert p.allowed(inode, who, mask) is want
    assert outcome(p.permission, inode, who, mask) == (0 if want else errno.EACCES)


SEARCH = [
    ([D(0o755), D(0o755)], NOBODY, 0),
    ([D(0o755), D(0o700)], NOBODY, errno.EACCES),
    ([D(0o700), D(0o755)], NOBODY, errno.EACCES),
    ([D(0o755), D(0o744)], NOBODY, errno.EACCES),     # r without x: no way through
    ([D(0o711), D(0o701)], NOBODY, 0),                # x without r: through, not listed
    ([D(0o755), D(0o710, 0, 50)], BOB, 0),
    ([D(0o755), D(0o700, 1000)], ALICE, 0),
    ([D(0o000), D(0o000)], ROOT, 0),
    ([], NOBODY, 0),
]


@pytest.mark.parametrize(("dirs", "who", "want"), SEARCH)
def test_search_on_every_directory_of_a_path(dirs, who, want):
    assert outcome(p.may_search, dirs, who) == want


# ---------------------------------------------------------------- names

CREATE = [
    (D(0o755), NOBODY, errno.EACCES),
    (D(0o777), NOBODY, 0),
    (D(0o733), NOBODY, 0),                            # write and search suffice
    (D(0o776), NOBODY, errno.EACCES),                 # write without search is nothing
    (D(0o755, 1000), ALICE, 0),
    (D(0o555, 1000), ALICE, errno.EACCES),
    (D(0o575, 0, 50), BOB, 0),
    (D(0o000), ROOT, 0),
]


@pytest.mark.parametrize(("parent", "who", "want"), CREATE)
def test_create_needs_write_and_search_on_the_parent(parent, who, want):
    assert outcome(p.may_create, parent, who) == want


DELETE = [
    # parent, victim, caller, errno
    (D(0o755), F(0o666), NOBODY, errno.EACCES),
    (D(0o777), F(0o000), NOBODY, 0),                  # the file's own mode does not matter
    (D(0o1777), F(0o666), NOBODY, errno.EPERM),       # sticky: not the caller's
    (D(0o1777), F(0o600, 65534), NOBODY, 0),          # sticky: the caller's entry
    (D(0o1777, 65534), F(0o600), NOBODY, 0),          # sticky: the caller's directory
    (D(0o1777), F(0o600, 1000), ROOT, 0),             # root
    (D(0o1755), F(0o600, 65534), NOBODY, errno.EACCES),  # write is checked first
    (D(0o1770, 0, 50), F(0o644), BOB, errno.EPERM),
    (D(0o1770, 0, 50), F(0o644, 1001), BOB, 0),
    (D(0o1777), D(0o777), NOBODY, errno.EPERM),       # a directory (rmdir) alike
]


@pytest.mark.parametrize(("parent", "victim", "who", "want"), DELETE)
def test_delete_needs_write_on_the_parent_and_respects_the_sticky_bit(parent, victim, who,
                                                                      want):
    assert outcome(p.may_delete, parent, victim, who) == want


OPEN = D(0o777)
SHUT = D(0o755)
STICKY = D(0o1777)
MINE = F(0o644, 65534)
ROOTS = F(0o644)
RENAME = [
    # old parent, source, new parent, target, same parent, exchange, caller, errno
    (OPEN, ROOTS, OPEN, None, True, False, NOBODY, 0),
    (SHUT, ROOTS, OPEN, None, False, False, NOBODY, errno.EACCES),   # source's parent
    (OPEN, ROOTS, SHUT, None, False, False, NOBODY, errno.EACCES),   # target's parent
    (OPEN, MINE, SHUT, ROOTS, False, False, NOBODY, errno.EACCES),
    (STICKY, ROOTS, OPEN, None, False, False, NOBODY, errno.EPERM),  # sticky source
    (OPEN, MINE, STICKY, ROOTS, False, False, NOBODY, errno.EPERM),  # sticky target
    (STICKY, MINE, STICKY, None, True, False, NOBODY, 0),
    (STICKY, MINE, STICKY, F(0o644, 65534), True, False, NOBODY, 0),
    # a directory that changes parents needs write on itself (its "..")
    (OPEN, D(0o755), D(0o777), None, False, False, NOBODY, errno.EACCES),
    (OPEN, D(0o755), OPEN, None, True, False, NOBODY, 0),             # same parent: no
    (OPEN, D(0o755, 65534), D(0o777), None, False, False, NOBODY, 0),
    (OPEN, D(0o555), D(0o777), None, False, False, ROOT, 0),
    # RENAME_EXCHANGE: the target moves too
    (OPEN, MINE, D(0o777), D(0o755), False, True, NOBODY, errno.EACCES),
    (OPEN, MINE, D(0o777), D(0o755), False, False, NOBODY, 0),
    (OPEN, MINE, D(0o777), D(0o755, 65534), False, True, NOBODY, 0),
    (OPEN, MINE, STICKY, ROOTS, True, True, NOBODY, errno.EPERM),
]


@pytest.mark.parametrize(("old", "source", "new", "target", "same", "exchange", "who", "want"),
                         RENAME)
def test_rename(old, source, new, target, same, exchange, who, want):
    assert outcome(p.may_rename, old, source, new, target, who, same_parent=same,
                   exchange=exchange) == want


LINK = [
    # source, new parent, caller, errno
    (F(0o600), OPEN, NOBODY, errno.EPERM),            # protected_hardlinks: not readable
    (F(0o644), OPEN, NOBODY, errno.EPERM),            # ... nor writable
    (F(0o666), OPEN, NOBODY, 0),
    (F(0o666), SHUT, NOBODY, errno.EACCES),
    (F(0o600, 65534), OPEN, NOBODY, 0),               # the owner may
    (F(0o4666), OPEN, NOBODY, errno.EPERM),           # setuid
    (F(0o2676), OPEN, NOBODY, errno.EPERM),           # setgid and group-executable
    (F(0o2666), OPEN, NOBODY, 0),                     # setgid alone: a mandatory-lock mark
    (Node(stat.S_IFIFO | 0o666), OPEN, NOBODY, errno.EPERM),   # only regular files
    (Node(stat.S_IFLNK | 0o777), OPEN, NOBODY, errno.EPERM),
    (Node(stat.S_IFLNK | 0o777, 65534), OPEN, NOBODY, 0),
    (F(0o000, 1000), SHUT, ROOT, 0),
]


@pytest.mark.parametrize(("source", "parent", "who", "want"), LINK)
def test_link(source, parent, who, want):
    assert outcome(p.may_link, source, parent, who) == want


OPENS = [
    (F(0o600), NOBODY, R, errno.EACCES),
    (F(0o644), NOBODY, R, 0),
    (F(0o644), NOBODY, W, errno.EACCES),
    (F(0o644), NOBODY, R | W, errno.EACCES),
    (F(0o646), NOBODY, R | W, 0),
    (F(0o644), NOBODY, 0, 0),                          # a lookup only
    (F(0o000), ROOT, R | W, 0),
    (F(0o644), ROOT, X, errno.EACCES),                 # access(X_OK) of a plain file
]


@pytest.mark.parametrize(("inode", "who", "access", "want"), OPENS)
def test_open(inode, who, access, want):
    assert outcome(p.may_open, inode, who, access) == want


@pytest.mark.parametrize(("directory", "who", "want"), [
    (D(0o755), NOBODY, 0), (D(0o711), NOBODY, errno.EACCES), (D(0o700), NOBODY, errno.EACCES),
    (D(0o700, 65534), NOBODY, 0), (D(0o000), ROOT, 0)])
def test_readdir_needs_read(directory, who, want):
    assert outcome(p.may_readdir, directory, who) == want


@pytest.mark.parametrize(("inode", "who", "want"), [
    (F(0o644), NOBODY, errno.EACCES),
    (F(0o646), NOBODY, 0),
    (F(0o444, 65534), NOBODY, 0),      # created read-only by its owner, written through the open
    (F(0o000, 1000), ROOT, 0)])
def test_a_commit_to_an_open_file(inode, who, want):
    assert outcome(p.may_write_open, inode, who) == want


# ---------------------------------------------------------------- setattr

SETATTR = [
    # inode, caller, changes, errno
    # chown: only root, but the owner may "change" to themselves
    (F(0o644), NOBODY, {"uid": 65534}, errno.EPERM),
    (F(0o644, 65534), NOBODY, {"uid": 0}, errno.EPERM),
    (F(0o644, 65534), NOBODY, {"uid": 65534}, 0),
    (F(0o644, 1000), ROOT, {"uid": 0}, 0),
    # chgrp: the owner to one of their groups (or the file's own group)
    (F(0o644, 1001, 1001), BOB, {"gid": 50}, 0),
    (F(0o644, 1001, 1001), BOB, {"gid": 1001}, 0),
    (F(0o644, 1001, 1001), BOB, {"gid": 0}, errno.EPERM),
    (F(0o644, 1001, 7), BOB, {"gid": 7}, 0),          # unchanged: fine for the owner
    (F(0o644, 0, 50), BOB, {"gid": 50}, errno.EPERM),  # not the owner
    (F(0o644), ROOT, {"gid": 12345}, 0),
    (F(0o644, 65534), NOBODY, {"uid": 0, "gid": 0}, errno.EPERM),
    # chmod: the owner or root
    (F(0o644), NOBODY, {"mode": 0o777}, errno.EPERM),
    (F(0o644, 65534), NOBODY, {"mode": 0o600}, 0),
    (F(0o644, 1000), ROOT, {"mode": 0o600}, 0),
    # explicit times: the owner or root; "now": a writer too
    (F(0o666), NOBODY, {"times": True}, errno.EPERM),
    (F(0o666), NOBODY, {"times": True, "times_now": True}, 0),
    (F(0o644), NOBODY, {"times": True, "times_now": True}, errno.EACCES),
    (F(0o444, 65534), NOBODY, {"times": True}, 0),
    (F(0o444, 65534), NOBODY, {"times": True, "times_now": True}, 0),
    (F(0o000, 1000), ROOT, {"times": True}, 0),
    # truncate: write permission (even the owner's), or through an open file: owner or writer
    (F(0o644), NOBODY, {"size": 0}, errno.EACCES),
    (F(0o646), NOBODY, {"size": 0}, 0),
    (F(0o444, 65534), NOBODY, {"size": 0}, errno.EACCES),
    (F(0o444, 65534), NOBODY, {"size": 0, "open_file": True}, 0),
    (F(0o644), NOBODY, {"size": 0, "open_file": True}, errno.EACCES),
    (F(0o000), ROOT, {"size": 0}, 0),
    (D(0o755), NOBODY, {"size": 0}, 0),               # not a file: the store says EISDIR
    # nothing asked
    (F(0o000), NOBODY, {}, 0),
]


@pytest.mark.parametrize(("inode", "who", "changes", "want"), SETATTR)
def test_setattr(inode, who, changes, want):
    assert outcome(p.may_setattr, inode, who, **changes) == want


@pytest.mark.parametrize(("inode", "who", "changes", "mode"), [
    # setgid stays only for a caller in the file's (new) group, or root
    (F(0o644, 1001, 1001), BOB, {"mode": 0o2755}, 0o2755),
    (F(0o644, 1001, 7), BOB, {"mode": 0o2755}, 0o755),
    (F(0o644, 1001, 7), BOB, {"mode": 0o2755, "gid": 50}, 0o2755),
    (F(0o644, 1000, 7), ROOT, {"mode": 0o2755}, 0o2755),
    (F(0o644, 1001, 7), BOB, {"mode": 0o4755}, 0o4755),      # setuid is not touched
    (F(0o644, 1001, 7), BOB, {"uid": 1001}, None),
])
def test_chmod_clears_setgid_outside_the_files_group(inode, who, changes, mode):
    assert p.may_setattr(inode, who, **changes) == mode


# ---------------------------------------------------------------- xattrs

GETXATTR = [
    (F(0o600), NOBODY, "user.a", errno.EACCES),
    (F(0o644), NOBODY, "user.a", 0),
    (D(0o711), NOBODY, "user.a", errno.EACCES),
    (Node(stat.S_IFLNK | 0o777), NOBODY, "user.a", errno.ENODATA),   # user.* only on files, dirs
    (F(0o644), NOBODY, "trusted.a", errno.ENODATA),              # invisible but to root
    (F(0o000), ROOT, "trusted.a", 0),
    (F(0o600), NOBODY, "security.capability", 0),                # the kernel asks on writes
    (F(0o600), NOBODY, "system.posix_acl_access", 0),
    (F(0o000), ROOT, "user.a", 0),
]


@pytest.mark.parametrize(("inode", "who", "name", "want"), GETXATTR)
def test_getxattr(inode, who, name, want):
    assert outcome(p.may_getxattr, inode, who, name) == want


SETXATTR = [
    (F(0o644), NOBODY, "user.a", errno.EACCES),
    (F(0o646), NOBODY, "user.a", 0),
    (F(0o444, 65534), NOBODY, "user.a", errno.EACCES),        # the owner needs write too
    (Node(stat.S_IFIFO | 0o666), NOBODY, "user.a", errno.EPERM),
    (D(0o1777), NOBODY, "user.a", errno.EPERM),               # a sticky directory: its owner
    (D(0o1777, 65534), NOBODY, "user.a", 0),
    (D(0o777), NOBODY, "user.a", 0),
    (F(0o666), NOBODY, "trusted.a", errno.EPERM),
    (F(0o666, 65534), NOBODY, "security.selinux", errno.EPERM),
    (F(0o000), ROOT, "security.capability", 0),
    (F(0o666), NOBODY, "system.posix_acl_access", errno.EPERM),
    (F(0o400, 65534), NOBODY, "system.posix_acl_access", 0),
    (F(0o000), ROOT, "trusted.a", 0),
    (F(0o000), ROOT, "user.a", 0),
]


@pytest.mark.parametrize(("inode", "who", "name", "want"), SETXATTR)
def test_setxattr(inode, who, name, want):
    assert outcome(p.may_setxattr, inode, who, name) == want


def test_listxattr_hides_trusted_names_but_from_root():
    names = ["security.selinux", "trusted.a", "user.b"]
    assert p.visible_xattrs(names, NOBODY) == ["security.selinux", "user.b"]
    assert p.visible_xattrs(names, ROOT) == names


def test_errors_name_what_was_refused():
    with pytest.raises(FsError) as e:
        p.permission(F(0o600), NOBODY, R, "/secret")
    assert e.value.errno == errno.EACCES
    assert e.value.message.startswith("/secret: no r permission")
