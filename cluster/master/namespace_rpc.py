"""The namespace half of the Master gRPC service: lookups, listings and chunk lists, plus one
method per mutation (made from cluster/master/mutations.py's table, the same one the mounts'
ZMQ channel uses). Transport only: each method decodes, calls the store or the Namespace,
encodes; FsError becomes a status code through rpc.servicer_method.

Whom a lookup is made for travels in the request (PathRequest.caller, ReadDirRequest.caller,
XattrRequest.caller), not in gRPC metadata: it is the same Caller message the ZMQ channel's
Mutation envelope carries, so both transports hand the Namespace the same thing, and it is
part of the schema (documented, fuzzed, visible to the unit tests that build requests), where
metadata would be an untyped side channel that the mutation thread (`submit` takes messages)
and the streaming ReadDir would each need to be taught. The Namespace checks it.

Exports: each call is served by the view `scoped.view_for` picks from the identity the peer's
certificate proves and the session the request names (a session's export, what a client
without one may reach, or the whole tree); the checks are the view's, not this module's.
"""
from __future__ import annotations

import errno

from cluster.common import rpc, tls
from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from cluster.master import mutations
from cluster.master.exports import ExportTable
from cluster.master.mutations import attr_pb, caller_of
from cluster.master.paths import canonical
from cluster.master.scoped import view_for
from cluster.master.store import Content
from protos import master_pb2

DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
BLOCK_SIZE = 4096


def chunk_pb(p: Piece) -> master_pb2.Chunk:
    return master_pb2.Chunk(
        file_offset=p.file_offset, length=p.length, fid=p.fid,
        needle_offset=p.needle_offset, needle_size=p.needle_size, crc32c=p.crc32c,
    )


def content_pb(content: Content) -> master_pb2.FileChunks:
    out = master_pb2.FileChunks(attr=attr_pb(content.attr),
                                chunks=[chunk_pb(p) for p in content.pieces],
                                version=content.version)
    if content.inline is not None:
        out.inline_data, out.inline_crc32c = content.inline, content.inline_crc
    return out


def _invalid(message: str) -> FsError:
    return FsError(errno.EINVAL, message)


class NamespaceRpc:
    """Mixed into MasterServicer: needs self.store, self.namespace, self.topology,
    self.sessions, self.callbacks and self.exports."""

    exports = ExportTable()   # the implicit export, until the node sets its own

    def _live(self, session: int) -> bool:
        """Whether callbacks may be granted to `session` (0: none asked for)."""
        return bool(session) and self.sessions.granting(session)

    def _view(self, request, context):
        """The Namespace (or its export's view) this call is served by."""
        try:
            peer = tls.peer_identity(context)
        except (AttributeError, ValueError):   # a test's stand-in context
            peer = None
        return view_for(self.namespace, self.sessions, self.exports, peer,
                        getattr(request, "session", 0), getattr(request, "client", ""))

    def _with_callback(self, session: int, path: str, read, ino_of=lambda attr: attr.ino):
        """read(), and for a live session a callback on its answer: on the name (also when
        the answer is "no such name") and on the inode it names. Granted between the same two
        commits as the read (MetadataStore.between_commits), so no change slips between."""
        if not self._live(session):
            return read()
        try:
            key = canonical(path)
        except FsError:
            return read()   # the read fails with the right error
        with self.store.between_commits():
            try:
                result = read()
            except FsError as e:
                if e.errno == errno.ENOENT:
                    self.callbacks.grant(session, paths=[key])
                raise
            self.callbacks.grant(session, paths=[key], inos=[ino_of(result)])
            return result

    # ------------------------------------------------------------ namespace

    @rpc.servicer_method
    def GetAttr(self, request, context):
        view = self._view(request, context)
        return attr_pb(self._with_callback(
            request.session, request.path,
            lambda: view.getattr(request.path, caller_of(request), request.access)))

    @rpc.servicer_method
    def GetAttrByIno(self, request, context):
        return attr_pb(self._view(request, context).getattr_ino(request.ino))

    @rpc.streaming_servicer_method
    def ReadDir(self, request, context):
        page = request.page_size or DEFAULT_PAGE
        if page > MAX_PAGE:
            raise _invalid(f"page_size {page} is not 1..{MAX_PAGE}")
        after = request.after
        first = True
        view = self._view(request, context)
        while True:
            entries = self._listing(view, request, after, page)
            if entries or first:
                # An empty directory still answers one (empty) page.
                yield master_pb2.ReadDirPage(
                    entries=[master_pb2.DirEntry(name=n, attr=attr_pb(a)) for n, a in entries])
            first = False
            if len(entries) < page or not context.is_active():
                return
            after = entries[-1][0]

    def _listing(self, view, request, after: str, page: int) -> list:
        """One page of a directory, with callbacks on its entries for a live session."""
        session = request.session
        who = caller_of(request)
        if not self._live(session):
            return view.readdir(request.path, after, page, who)
        with self.store.between_commits():
            entries = view.readdir(request.path, after, page, who)
            base = canonical(request.path).rstrip("/")
            self.callbacks.grant(session, paths=[base or "/"] + [f"{base}/{n}" for n, _ in entries],
                                 inos=[a.ino for _, a in entries])
            return entries

    @rpc.servicer_method
    def Readlink(self, request, context):
        return master_pb2.ReadlinkResponse(
            target=self._view(request, context).readlink(request.path, caller_of(request)))

    @rpc.servicer_method
    def GetXattr(self, request, context):
        return master_pb2.XattrValue(value=self._view(request, context).getxattr(
            request.path, request.name, caller_of(request)))

    @rpc.servicer_method
    def ListXattr(self, request, context):
        return master_pb2.XattrList(names=self._view(request, context).listxattr(
            request.path, caller_of(request)))

    @rpc.servicer_method
    def StatFs(self, request, context):
        total, free = self.topology.capacity()
        return master_pb2.StatFsResponse(total_bytes=total, free_bytes=free,
                                         files=self.store.count_inodes(), block_size=BLOCK_SIZE)

    @rpc.servicer_method
    def GetChunks(self, request, context):
        return content_pb(self._view(request, context).content_ino(request.ino))

    @rpc.servicer_method
    def GetChunksAt(self, request, context):
        view = self._view(request, context)
        return content_pb(self._with_callback(
            request.session, request.path,
            lambda: view.content_at(request.path, caller_of(request), request.access),
            lambda content: content.attr.ino))


def _mutation_method(op: str):
    @rpc.servicer_method
    def method(self, request, context):
        view = self._view(request, context)
        if self.mutation_server is None:   # a servicer without the ZMQ channel (unit tests)
            return mutations.apply(view, op, request)
        # Through the mutation thread, so the change breaks the callbacks mounts hold on it
        # (but the writing mount's, when a gateway commits for it).
        reply = self.mutation_server.submit(op, request, getattr(request, "session", 0),
                                            view=view)
        if reply.errno:
            raise FsError(reply.errno, reply.message)
        return getattr(reply, reply.WhichOneof("result"))
    method.__name__ = mutations.TABLE[op][0]
    method.__doc__ = f"The {op} mutation over gRPC (the mount sends it on the ZMQ channel)."
    return method


for _op, (_name, _) in mutations.TABLE.items():
    if _name:
        setattr(NamespaceRpc, _name, _mutation_method(_op))
