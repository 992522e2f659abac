"""What each mutation changes, as callback keys (callbacks.Keys): the names whose answers
change, the directories under which every answer may change, the inodes whose attributes or
contents change.

A name's parent directory is in `paths` whenever an entry comes or goes (its listing, mtime
and link count change). `before` is the inode a name held before the change (unlink, rename,
xattrs): the answer does not carry it, so the mutation server looks it up first, and only when
another session holds callbacks at all.

A directory whose mode or owner changes takes back the answers about everything below it: a
mount without `default_permissions` keeps what the master told one caller for that caller only
(fusefs/attrcache.py), and the master's search check that allowed it is no longer what it
would say.
"""
from __future__ import annotations

import stat

from cluster.master.callbacks import Keys
from cluster.master.paths import canonical, parent


def _entry(path: str) -> set[str]:
    return {path, parent(path)}


def touched(op: str, r, answer, before: int = 0) -> Keys:
    """The keys `op` (a Mutation.op field, request `r`, its answer) changed. Paths are
    canonical: a CLI's "/a//b" breaks what a mount cached as "/a/b"."""
    k = Keys()
    if op in ("create", "mkdir", "mknod", "symlink"):
        k.paths = _entry(canonical(r.path))
        k.inos = {answer.ino}
    elif op == "link":
        k.paths = _entry(canonical(r.new_path))
        k.inos = {answer.ino}
    elif op == "unlink":
        k.paths = _entry(canonical(r.path))
        k.inos = {before}
    elif op == "rmdir":
        k.paths = _entry(canonical(r.path))
        k.trees = {canonical(r.path)}
    elif op == "rename":
        old, new = canonical(r.old_path), canonical(r.new_path)
        k.paths = _entry(old) | _entry(new)
        k.trees = {old, new}
        k.inos = {before, answer.replaced_ino}
    elif op == "set_attr":
        k.paths = {canonical(r.path)} if r.path else set()
        k.inos = {answer.ino}
        if r.path and stat.S_ISDIR(answer.mode) and any(
                r.HasField(f) for f in ("mode", "uid", "gid")):
            k.trees = {canonical(r.path)}
    elif op in ("set_xattr", "remove_xattr"):
        k.paths = {canonical(r.path)}
        k.inos = {before}
    elif op in ("commit_chunks", "write_inline"):
        k.inos = {r.ino}
    k.inos.discard(0)
    return k


def path_before(op: str, r) -> str:
    """The name whose inode `touched` needs as `before` ("" for none)."""
    if op in ("unlink", "set_xattr", "remove_xattr"):
        return r.path
    if op == "rename":
        return r.old_path
    return ""
