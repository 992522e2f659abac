"""Exports: which client identity may mount which subtree, and how (docs/security.md).

Why the master and not the mount: a mount is a program its user controls, and with the
cluster's credentials any program can send the master any path. So the rules live here, and
every call of a session is held to the export its session was opened under (`Scope`), by
cluster/master/scoped.py, whichever transport it came by.

The file (`kelp master --exports FILE`, TOML, re-read on SIGHUP):

    [[export]]
    path = "/team-a"          # the subtree (absolute)
    clients = ["team-a"]      # identities (the name in a client's certificate); "*" = any
    access = "rw"             # or "ro"
    root_squash = true        # uid/gid 0 -> anon (the default)
    all_squash = false        # every uid/gid -> anon
    anon_uid = 65534
    anon_gid = 65534

Without a file there is one implicit export: "/" to any identity, read-write, nothing squashed
(`IMPLICIT`): what a cluster without exports always did, and what `kelp up` and the tests rely
on. An identity's mount of a subdir takes the longest export that contains the subdir and
names the identity (or "*"); the session's root is the subdir itself, not the export's path.

Pure: parsing and matching only; no store, no transport.
"""
from __future__ import annotations

import errno
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cluster.common.config import ConfigError
from cluster.common.errors import FsError
from cluster.master import paths
from cluster.master.permissions import Caller

ANY = "*"
NOBODY = 65534
_KEYS = {"path", "clients", "access", "root_squash", "all_squash", "anon_uid", "anon_gid"}


@dataclass(frozen=True)
class Export:
    path: str = "/"
    clients: tuple[str, ...] = (ANY,)
    read_only: bool = False
    root_squash: bool = True
    all_squash: bool = False
    anon_uid: int = NOBODY
    anon_gid: int = NOBODY

    def admits(self, identity: str) -> bool:
        return ANY in self.clients or identity in self.clients

    def covers(self, path: str) -> bool:
        return contains(self.path, path)

    @property
    def squashes(self) -> bool:
        return self.root_squash or self.all_squash


def contains(root: str, path: str) -> bool:
    """Whether canonical `path` is `root` or below it (both canonical)."""
    return root == "/" or path == root or path.startswith(root + "/")


IMPLICIT_EXPORT = Export("/", (ANY,), read_only=False, root_squash=False)


@dataclass(frozen=True)
class Scope:
    """What one session (or one sessionless caller) may reach: everything at or below `root`,
    read-only or not, with its export's squash. `Scope.everything()` is no restriction (the
    admin role, the implicit export at "/")."""
    root: str = "/"
    export: Export = IMPLICIT_EXPORT

    @classmethod
    def everything(cls) -> Scope:
        return cls("/", IMPLICIT_EXPORT)

    @property
    def read_only(self) -> bool:
        return self.export.read_only

    @property
    def unrestricted(self) -> bool:
        """Nothing to check: the whole tree, read-write, no squash."""
        return self.root == "/" and not self.read_only and not self.export.squashes

    def reaches(self, path: str) -> bool:
        """Whether `path` (any spelling; a malformed one is left to the namespace) is inside."""
        try:
            path = paths.canonical(path)
        except FsError:
            return True   # the namespace refuses it with its own errno (EINVAL, ...)
        return contains(self.root, path)

    def lookup(self, path: str) -> None:
        """A path outside does not exist for this session: ENOENT."""
        if not self.reaches(path):
            raise FsError(errno.ENOENT, f"{path}: outside the export {self.root}")

    def change(self, *targets: str) -> None:
        """A change: EROFS on a read-only export, EACCES for a path outside it."""
        if self.read_only:
            raise FsError(errno.EROFS, f"the export {self.export.path} is read-only")
        for p in targets:
            if not self.reaches(p):
                raise FsError(errno.EACCES, f"{p}: outside the export {self.root}")

    def squash(self, who: Caller | None) -> Caller | None:
        """The caller the checks and new inodes' owners see: root (or, for a session, no
        caller at all, which is the superuser) becomes anon under root_squash, everyone
        under all_squash."""
        e = self.export
        if not e.squashes:
            return who
        anon = Caller(e.anon_uid, e.anon_gid)
        if e.all_squash or who is None or who.is_root:
            return anon
        if e.root_squash and (who.gid == 0 or 0 in who.groups):
            return Caller(who.uid, e.anon_gid if who.gid == 0 else who.gid,
                          frozenset(g for g in who.groups if g != 0))
        return who


class ExportTable:
    """The exports in force; `resolve` is what a session's open asks."""

    def __init__(self, exports: Sequence[Export] = (IMPLICIT_EXPORT,), source: str = ""):
        self.exports = tuple(exports)
        self.source = source   # the file, for messages ("" = the implicit export)

    def resolve(self, identity: str, subdir: str = "/") -> Scope:
        """The scope of a session of `identity` mounting `subdir`: the longest export that
        contains it and admits the identity. EACCES when none does; EINVAL for a bad path."""
        root = paths.canonical(subdir or "/")
        best = self._longest(root, identity)
        if best is None:
            raise FsError(errno.EACCES, f"no export of {root} for client {identity!r}")
        return Scope(root, best)

    def sessionless(self) -> SessionlessScope:
        """What a client call naming no session may reach, whatever its identity: each path
        by the longest export open to every client ("*") that covers it (docs/security.md).
        A client's own exports are reached through a session, which proves who opened it."""
        return SessionlessScope(self, ANY)

    def _longest(self, path: str, identity: str) -> Export | None:
        best = None
        for e in self.exports:
            if e.covers(path) and e.admits(identity) and \
                    (best is None or len(e.path) > len(best.path)):
                best = e
        return best


@dataclass(frozen=True)
class SessionlessScope:
    """A Scope decided per path: the longest export covering it that admits `identity` (ANY:
    the exports open to every client). A two-path change (rename, link) must stay within one
    export."""
    table: ExportTable
    identity: str
    root: str = field(default="", init=False)   # no single root

    @property
    def unrestricted(self) -> bool:
        return any(e.path == "/" and e.admits(self.identity) and not e.read_only and
                   not e.squashes for e in self.table.exports)

    def _scope(self, path: str) -> Scope | None:
        try:
            canon = paths.canonical(path)
        except FsError:
            return Scope.everything()   # malformed: the namespace refuses it
        e = self.table._longest(canon, self.identity)
        return Scope(e.path, e) if e is not None else None

    def reaches(self, path: str) -> bool:
        return self._scope(path) is not None

    def lookup(self, path: str) -> None:
        if self._scope(path) is None:
            raise FsError(errno.ENOENT, f"{path}: in no export open to a client without a "
                                        "session")

    def change(self, *targets: str) -> None:
        scopes = [self._scope(p) for p in targets]
        for p, s in zip(targets, scopes, strict=True):
            if s is None:
                raise FsError(errno.EACCES, f"{p}: in no export open to a client without a "
                                            "session")
            s.change(p)
        if len({s.export for s in scopes if s is not None}) > 1:
            raise FsError(errno.EXDEV, f"{' and '.join(targets)} are in different exports")

    def scope_of(self, path: str) -> Scope | None:
        return self._scope(path)


def _export(item: object, where: str) -> Export:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: each [[export]] is a table")
    unknown = set(item) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} "
                          f"(known: {', '.join(sorted(_KEYS))})")
    path = item.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"{where}: path must be an absolute path, got {path!r}")
    try:
        path = paths.canonical(path)
    except FsError as e:
        raise ConfigError(f"{where}: path {path!r}: {e.message}") from None
    clients = item.get("clients")
    if isinstance(clients, str):
        clients = [clients]
    if not isinstance(clients, list) or not clients or \
            not all(isinstance(c, str) and c for c in clients):
        raise ConfigError(f"{where}: clients must be a non-empty list of identities or \"*\"")
    access = item.get("access", "rw")
    if access not in ("rw", "ro"):
        raise ConfigError(f"{where}: access is \"rw\" or \"ro\", not {access!r}")
    flags = {}
    for key, default in (("root_squash", True), ("all_squash", False)):
        value = item.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} is true or false, not {value!r}")
        flags[key] = value
    ids = {}
    for key in ("anon_uid", "anon_gid"):
        value = item.get(key, NOBODY)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 32:
            raise ConfigError(f"{where}: {key} is a number 0..4294967295, not {value!r}")
        ids[key] = value
    return Export(path, tuple(clients), read_only=access == "ro", **flags, **ids)


def parse(text: str, source: str = "exports") -> ExportTable:
    """An ExportTable from the TOML text of an exports file; ConfigError (one line) when it
    is not one."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: {e}") from None
    unknown = set(data) - {"export"}
    if unknown:
        raise ConfigError(f"{source}: unknown table or key {sorted(unknown)[0]!r} "
                          "(an exports file holds [[export]] tables)")
    items = data.get("export", [])
    if not isinstance(items, list):
        raise ConfigError(f"{source}: export must be an array of tables ([[export]])")
    exports = [_export(item, f"{source}: export {i + 1}") for i, item in enumerate(items)]
    seen: set[tuple[str, str]] = set()
    for e in exports:
        for c in e.clients:
            if (e.path, c) in seen:
                raise ConfigError(f"{source}: {e.path} is exported to {c!r} twice")
            seen.add((e.path, c))
    return ExportTable(exports, source)


def load(path: str | None) -> ExportTable:
    """The exports file at `path`, or the implicit export when `path` is empty."""
    if not path:
        return ExportTable()
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError(f"cannot read exports file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"exports file {path} is not UTF-8 text") from None
    return parse(text, path)


def describe(exports: Iterable[Export]) -> list[str]:
    """One line per export, for the master's log."""
    return [f"{e.path} -> {', '.join(e.clients)} ({'ro' if e.read_only else 'rw'}"
            f"{', root_squash' if e.root_squash else ''}"
            f"{', all_squash' if e.all_squash else ''})" for e in exports]

