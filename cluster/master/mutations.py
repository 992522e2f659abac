"""The one table from a mutation's request message to a Namespace call and back.

Both transports use it: the ZMQ mutation channel names the operation by the field set in
Mutation.op, the gRPC servicer by its method, and each gets the same answer message and the
same FsError. Adding a mutation means one row here, one field in Mutation, one gRPC method.

Each row is called with the sender's session and the Caller the change is made for (None: the
superuser): the Mutation envelope's, else the one the request itself carries (PathRequest and
XattrRequest have one, for the gRPC calls), else none.
"""
from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message

from cluster.common.chunkmap import Piece
from cluster.master.namespace import Namespace
from cluster.master.permissions import Caller
from cluster.master.store import Attr
from protos import master_pb2


def attr_pb(a: Attr) -> master_pb2.Attr:
    return master_pb2.Attr(
        ino=a.ino, mode=a.mode, uid=a.uid, gid=a.gid, size=a.size, nlink=a.nlink,
        atime_ns=a.atime_ns, mtime_ns=a.mtime_ns, ctime_ns=a.ctime_ns,
        replication=a.replication, has_xattrs=bool(a.has_xattrs), rdev=a.rdev,
        inline=a.inline,
    )


def piece_from_pb(c: master_pb2.Chunk) -> Piece:
    return Piece(c.file_offset, c.length, c.fid, c.needle_offset, c.needle_size, c.crc32c)


def caller_from_pb(c: master_pb2.Caller) -> Caller:
    return Caller(c.uid, c.gid, frozenset(c.groups))


def caller_of(message: Message) -> Caller | None:
    """The Caller `message` carries in a `caller` field (a request, or the Mutation
    envelope); None when it has none: the superuser."""
    if "caller" in message.DESCRIPTOR.fields_by_name and message.HasField("caller"):
        return caller_from_pb(message.caller)
    return None


def _setattr(ns: Namespace, r: master_pb2.SetAttrRequest, who: Caller | None) -> Attr:
    def opt(name):
        return getattr(r, name) if r.HasField(name) else None

    return ns.setattr(r.path or None, r.ino, who=who, times_now=r.times_now, mode=opt("mode"),
                      uid=opt("uid"), gid=opt("gid"), size=opt("size"),
                      atime_ns=opt("atime_ns"), mtime_ns=opt("mtime_ns"))


_EMPTY = master_pb2.Empty()


def _empty(_result: object) -> master_pb2.Empty:
    """The answer of an operation whose result the caller does not get."""
    return _EMPTY


# op (the Mutation.op field) -> (gRPC method name, fn(namespace, request, session, caller) ->
# answer message); the session (0: none) is the sender's, which keeps a file it unlinks while
# open, the caller (None: the superuser) whom the change is checked for.
TABLE: dict[str, tuple[str, Callable[[Namespace, Message, int, Caller | None], Message]]] = {
    "mkdir": ("Mkdir", lambda ns, r, s, w: attr_pb(ns.mkdir(r.path, r.mode, r.uid, r.gid,
                                                         r.parents, who=w))),
    "create": ("Create", lambda ns, r, s, w: attr_pb(ns.create(
        r.path, r.mode, r.uid, r.gid, r.exclusive, r.truncate, r.replication, who=w,
        access=r.access))),
    "mknod": ("Mknod", lambda ns, r, s, w: attr_pb(ns.mknod(r.path, r.mode, r.rdev, r.uid,
                                                         r.gid, who=w))),
    "symlink": ("Symlink", lambda ns, r, s, w: attr_pb(ns.symlink(r.path, r.target, r.uid,
                                                               r.gid, who=w))),
    "link": ("Link", lambda ns, r, s, w: attr_pb(ns.link(r.existing_path, r.new_path, who=w))),
    "unlink": ("Unlink", lambda ns, r, s, w: _empty(ns.unlink(r.path, r.keep_open, s, who=w))),
    "rmdir": ("Rmdir", lambda ns, r, s, w: _empty(ns.rmdir(r.path, who=w))),
    "rename": ("Rename", lambda ns, r, s, w: master_pb2.RenameResponse(
        replaced_ino=ns.exchange(r.old_path, r.new_path, who=w) if r.exchange else ns.rename(
            r.old_path, r.new_path, r.no_replace, r.keep_open, s, who=w))),
    "set_attr": ("SetAttr", lambda ns, r, s, w: attr_pb(_setattr(ns, r, w))),
    "set_xattr": ("SetXattr", lambda ns, r, s, w: _empty(ns.setxattr(r.path, r.name, r.value,
                                                                   r.flags, who=w))),
    "remove_xattr": ("RemoveXattr", lambda ns, r, s, w: _empty(ns.removexattr(r.path, r.name,
                                                                            who=w))),
    "commit_chunks": ("CommitChunks", lambda ns, r, s, w: attr_pb(ns.commit(
        r.ino, [piece_from_pb(c) for c in r.chunks], r.size, r.mtime_ns, r.exact_size,
        who=w))),
    "write_inline": ("WriteInline", lambda ns, r, s, w: attr_pb(ns.write_inline(
        r.ino, r.offset, r.data, r.crc32c, r.size, r.mtime_ns, r.exact_size, who=w))),
    "release_inode": ("ReleaseInode", lambda ns, r, s, w: _empty(ns.release_inode(r.ino))),
    "sync": ("", lambda ns, r, s, w: _EMPTY),
}

# The MutationReply.result field each answer type goes in.
RESULT_FIELD = {master_pb2.Attr: "attr", master_pb2.RenameResponse: "rename",
                master_pb2.Empty: "empty"}


def apply(ns: Namespace, op: str, request: Message, session: int = 0,
          who: Caller | None = None) -> Message:
    """Run one mutation for `who` (None: the caller the request carries, if any); its
    answer message, or the FsError it failed with."""
    return TABLE[op][1](ns, request, session, who if who is not None else caller_of(request))
