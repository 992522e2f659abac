"""A Namespace seen through an export: what one session (or one sessionless client) may do.

The master builds one for every call it gets from a client (cluster/master/exports.py says
what a session's Scope is; namespace_rpc.py and mutation_server.py pick the scope of the call,
by its session and the identity its connection proved) and hands it to the same code the
unrestricted Namespace serves: the mutation table (mutations.py) and the lookups call the
same methods with the same arguments. So the checks sit in one layer, below both transports:

* a path outside the session's root does not exist for it (ENOENT) when looked up, and may
  not be changed (EACCES); a rename's and a link's two names are both checked;
* on a read-only export every change is EROFS, and so is a lookup asking for write access
  (an open for writing, access(2) W_OK); a durable `sync` is no change and passes;
* the caller is squashed (root, or everyone, to the export's anon uid and gid) before the
  Namespace checks permissions and picks the owner of a new inode; a call without a caller
  (the superuser, to the Namespace) is squashed as root, except a gateway's commit, whose
  open the mount's session had checked (`callerless_is_root` False);
* calls by inode number (GetChunks, GetAttrByIno, SetAttr by ino, CommitChunks, WriteInline,
  ReleaseInode) must name an inode with a link at or below the root (or one this session
  keeps open after its last unlink): MetadataStore.linked_under, a walk up the entries.
  Elsewhere the inode does not exist (lookups, ENOENT) or may not be changed (EACCES).

Why a wrapper and not arguments threaded through every Namespace method: the Namespace
stays the single-tree file system its tests describe, and a new operation that forgets the
scope fails loudly here (AttributeError) instead of quietly serving everything.
"""
from __future__ import annotations

import errno

from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from cluster.master.exports import ExportTable, Scope, SessionlessScope
from cluster.master.namespace import Namespace
from cluster.master.permissions import MAY_WRITE, Caller
from cluster.master.sessions import SessionTable
from cluster.master.store import Attr, Content

INSECURE_PEER = ("client", "client")   # (role, identity) of every peer without credentials


def view_for(namespace: Namespace, sessions: SessionTable, exports: ExportTable,
             peer: tuple[str, str] | None, session: int,
             forwarded: str = "") -> Namespace | ScopedNamespace:
    """What a call may see and change: the Namespace itself, or a ScopedNamespace.

    `peer` is the (role, identity) the call's connection proved (its certificate, or its
    CURVE key's User-Id); None on an insecure cluster, where every peer is a "client".
    * admin (the CLI) is the administrator's tool: the whole tree, as before exports;
    * a gateway commits for the mount whose session the commit names, and says which client
      sent it (`forwarded`, the client's ZMQ User-Id "role:identity"): an admin's commit (a
      CLI upload) is not confined; a client's must name a session of its own identity (else
      EACCES) and gets that session's export, its caller-less commit not squashed (the
      mount's open was checked); a client's commit naming no session is held to what a
      client without one may reach. Without `forwarded` (an insecure cluster) the session
      named decides;
    * a client naming a session must be the identity that opened it (EACCES otherwise), and
      gets the session's export; naming a session the master does not know (a restart, before
      the mount has opened it again) is EAGAIN, which the mount retries, unless what a client
      with no session may reach is everything anyway;
    * a client naming no session reaches, path by path, what the exports open to every
      client ("*") give: its own exports are for its sessions.
    """
    role, identity = peer or INSECURE_PEER
    if role == "admin":
        return namespace
    s = sessions.get(session) if session else None
    if role == "gateway":
        sender_role, _, sender = forwarded.partition(":")
        if sender_role == "admin":
            return namespace
        if s is not None and sender and s.identity != sender:
            raise FsError(errno.EACCES, f"session {session:x} was opened by another client "
                                        f"than {sender!r}")
        if s is None and sender:
            return _sessionless(namespace, exports, session)
        if s is None or s.scope.unrestricted:
            return namespace
        return ScopedNamespace(namespace, s.scope, session, callerless_is_root=False)
    if s is not None:
        if s.identity != identity:
            raise FsError(errno.EACCES, f"session {session:x} was opened by another client "
                                        f"than {identity!r}")
        return namespace if s.scope.unrestricted else ScopedNamespace(namespace, s.scope,
                                                                      session)
    return _sessionless(namespace, exports, session)


def _sessionless(namespace: Namespace, exports: ExportTable, session: int
                 ) -> Namespace | ScopedNamespace:
    """The view of a call that names no open session: what the exports open to every client
    give; a session id the master does not know (yet) is EAGAIN, for the mount to retry."""
    anywhere = exports.sessionless()
    if anywhere.unrestricted:
        return namespace
    if session:
        raise FsError(errno.EAGAIN, f"session {session:x} is not open (yet)")
    return ScopedNamespace(namespace, anywhere)


class ScopedNamespace:
    def __init__(self, namespace: Namespace, scope: Scope | SessionlessScope,
                 session: int = 0, callerless_is_root: bool = True):
        self.namespace = namespace
        self.store = namespace.store
        self.scope = scope
        self.session = session
        self._callerless_is_root = callerless_is_root

    # ------------------------------------------------------------ helpers

    def _who(self, who: Caller | None, path: str | None = None) -> Caller | None:
        if who is None and not self._callerless_is_root:
            return None
        scope = self.scope
        if isinstance(scope, SessionlessScope):
            found = scope.scope_of(path or "/")
            if found is None:
                return who
            scope = found
        return scope.squash(who)

    def _ino_scope(self, ino: int, write: bool) -> Scope | None:
        """The scope through which this caller reaches inode `ino` (None: it does not): the
        session's, if the inode is linked under its root; for a sessionless caller, the first
        export open to every client (a writable one, for a change) the inode is linked
        under."""
        scope = self.scope
        if isinstance(scope, SessionlessScope):
            if scope.unrestricted:
                return Scope.everything()
            candidates = [Scope(e.path, e) for e in scope.table.exports
                          if e.admits(scope.identity) and not (write and e.read_only)]
        else:
            if scope.root == "/":
                return scope
            candidates = [scope]
        for found in candidates:
            try:
                directory = self.store.getattr(found.root).ino
            except FsError:
                continue
            if self.store.linked_under(ino, directory, self.session):
                return found
        return None

    def _see_ino(self, ino: int) -> None:
        if self._ino_scope(ino, write=False) is None:
            raise FsError(errno.ENOENT, f"inode {ino}: outside the export")

    def _change_ino(self, ino: int, who: Caller | None) -> Caller | None:
        """Check a change by inode number; the caller it is made for, squashed."""
        if isinstance(self.scope, Scope):
            self.scope.change()   # EROFS on a read-only export
        found = self._ino_scope(ino, write=True)
        if found is None:
            raise FsError(errno.EACCES, f"inode {ino}: outside the export")
        if who is None and not self._callerless_is_root:
            return None
        return found.squash(who)

    # ------------------------------------------------------------ lookups

    def _asks(self, path: str, access: int) -> None:
        """A lookup that asks for write access (an open for writing, access(2) W_OK) is
        refused on a read-only export as the change would be: EROFS."""
        self.scope.lookup(path)
        if access & MAY_WRITE:
            self.scope.change(path)

    def getattr(self, path: str, who: Caller | None = None, access: int = 0) -> Attr:
        self._asks(path, access)
        return self.namespace.getattr(path, self._who(who, path), access)

    def content_at(self, path: str, who: Caller | None = None, access: int = 0) -> Content:
        self._asks(path, access)
        return self.namespace.content_at(path, self._who(who, path), access)

    def readdir(self, path: str, after: str = "", limit: int = 1000,
                who: Caller | None = None) -> list[tuple[str, Attr]]:
        self.scope.lookup(path)
        return self.namespace.readdir(path, after, limit, self._who(who, path))

    def readlink(self, path: str, who: Caller | None = None) -> str:
        self.scope.lookup(path)
        return self.namespace.readlink(path, self._who(who, path))

    def getxattr(self, path: str, name: str, who: Caller | None = None) -> bytes:
        self.scope.lookup(path)
        return self.namespace.getxattr(path, name, self._who(who, path))

    def listxattr(self, path: str, who: Caller | None = None) -> list[str]:
        self.scope.lookup(path)
        return self.namespace.listxattr(path, self._who(who, path))

    def getattr_ino(self, ino: int) -> Attr:
        self._see_ino(ino)
        return self.namespace.getattr_ino(ino)

    def content_ino(self, ino: int) -> Content:
        self._see_ino(ino)
        return self.namespace.content_ino(ino)

    # ------------------------------------------------------------ mutations by path

    def mkdir(self, path: str, mode: int, uid: int, gid: int, parents: bool = False,
              who: Caller | None = None) -> Attr:
        self.scope.change(path)
        return self.namespace.mkdir(path, mode, uid, gid, parents, who=self._who(who, path))

    def create(self, path: str, mode: int, uid: int, gid: int, exclusive: bool = False,
               truncate: bool = False, replication: int = 0, who: Caller | None = None,
               access: int = 0) -> Attr:
        self.scope.change(path)
        return self.namespace.create(path, mode, uid, gid, exclusive, truncate, replication,
                                     who=self._who(who, path), access=access)

    def mknod(self, path: str, mode: int, rdev: int, uid: int, gid: int,
              who: Caller | None = None) -> Attr:
        self.scope.change(path)
        return self.namespace.mknod(path, mode, rdev, uid, gid, who=self._who(who, path))

    def symlink(self, path: str, target: str, uid: int, gid: int,
                who: Caller | None = None) -> Attr:
        self.scope.change(path)
        return self.namespace.symlink(path, target, uid, gid, who=self._who(who, path))

    def link(self, existing: str, new: str, who: Caller | None = None) -> Attr:
        self.scope.change(existing, new)
        return self.namespace.link(existing, new, who=self._who(who, new))

    def unlink(self, path: str, keep_open: bool = False, session: int = 0,
               who: Caller | None = None) -> int:
        self.scope.change(path)
        return self.namespace.unlink(path, keep_open, session, who=self._who(who, path))

    def rmdir(self, path: str, who: Caller | None = None) -> None:
        self.scope.change(path)
        self.namespace.rmdir(path, who=self._who(who, path))

    def rename(self, old: str, new: str, no_replace: bool = False,
               keep_open: bool = False, session: int = 0, who: Caller | None = None) -> int:
        self.scope.change(old, new)
        return self.namespace.rename(old, new, no_replace, keep_open, session,
                                     who=self._who(who, old))

    def exchange(self, a: str, b: str, who: Caller | None = None) -> int:
        self.scope.change(a, b)
        return self.namespace.exchange(a, b, who=self._who(who, a))

    def setattr(self, path: str | None, ino: int, who: Caller | None = None,
                times_now: bool = False, **changes: int | None) -> Attr:
        if path:
            self.scope.change(path)
            who = self._who(who, path)
        else:
            who = self._change_ino(ino, who)
        return self.namespace.setattr(path, ino, who=who, times_now=times_now, **changes)

    def setxattr(self, path: str, name: str, value: bytes, flags: int = 0,
                 who: Caller | None = None) -> None:
        self.scope.change(path)
        self.namespace.setxattr(path, name, value, flags, who=self._who(who, path))

    def removexattr(self, path: str, name: str, who: Caller | None = None) -> None:
        self.scope.change(path)
        self.namespace.removexattr(path, name, who=self._who(who, path))

    # ------------------------------------------------------------ mutations by inode

    def commit(self, ino: int, pieces: list[Piece], size: int, mtime_ns: int = 0,
               exact: bool = False, who: Caller | None = None) -> Attr:
        who = self._change_ino(ino, who)
        return self.namespace.commit(ino, pieces, size, mtime_ns, exact, who=who)

    def write_inline(self, ino: int, offset: int, data: bytes, crc: int, size: int = 0,
                     mtime_ns: int = 0, exact: bool = False, who: Caller | None = None) -> Attr:
        who = self._change_ino(ino, who)
        return self.namespace.write_inline(ino, offset, data, crc, size, mtime_ns, exact,
                                           who=who)

    def release_inode(self, ino: int) -> None:
        self._change_ino(ino, None)
        self.namespace.release_inode(ino)
