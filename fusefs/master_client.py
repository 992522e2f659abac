"""MasterClient: calls to the master with bounded retries and errno-carrying failures.

A master restart must not fail the mount or the CLI outright: UNAVAILABLE is retried with
exponential backoff for up to `retry_for` seconds (then EIO-style failure, never a hang past
it). Every other failure becomes an FsError whose errno comes from cluster.common.errors, so
callers never see a raw grpc.RpcError.
"""
from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterator

import grpc

from cluster.common.errors import FsError, fserror_from_rpc
from cluster.common.retry import retry_rpc, unavailable
from cluster.common.security import Transport
from fusefs.mutation_channel import MutationChannel
from fusefs.paths import Subdir
from protos import master_pb2, master_pb2_grpc

log = logging.getLogger(__name__)


def _is_answer(e: grpc.RpcError) -> bool:
    """UNAVAILABLE sent by the master itself (its message carries an errno name, e.g. EAGAIN
    while it waits for volume servers) rather than by the channel (no connection)."""
    details = e.details() or ""
    return details[:1] == "E" and details.split(":", 1)[0].isupper()


class MasterUnreachable(FsError):
    """The master did not answer within the retry window: EIO at the mount (the operation
    could not be done), a clear one-line message at the CLI."""

    def __init__(self, address: str, detail: str):
        super().__init__(errno.EIO, f"master {address} unreachable: {detail}")
        self.address = address


class MasterClient:
    """Lookups and admin calls over gRPC; namespace changes (`mutate`) over the master's ZMQ
    mutation channel, opened at the first one (its address comes from ClusterStatus)."""

    def __init__(self, address: str, timeout: float = 10.0, retry_for: float = 30.0,
                 transport: Transport | None = None):
        self.address = address
        self.timeout = timeout
        self.retry_for = retry_for
        # How this client talks to the cluster (plain, or TLS and CURVE with the client's
        # or admin's credentials); the mutation channel, session, reader and gateway
        # client made for it use the same.
        self.transport = transport or Transport("client")
        self._channel = self.transport.channel(address, "master")
        self.stub = master_pb2_grpc.MasterStub(self._channel)
        self._mutations: MutationChannel | None = None
        # The mount's session id, sent with mutations (locks, files kept open after unlink
        # belong to it) and with every lookup whose request has a session field: the master
        # holds the call to the session's export, and grants callbacks on the answer unless
        # the session was opened without them; 0 = none (the CLI, or a mount before its
        # session opened).
        self.session_id: Callable[[], int] = lambda: 0
        # The subtree this client serves as "/" (a mount's --subdir): every path it sends is
        # prefixed here, and nowhere else (fusefs/paths.py).
        self.subdir = Subdir("/")
        # Whom the calls are made for (master.proto's Caller), sent with every lookup whose
        # request has a caller field and with every mutation; None: no one, which the master
        # takes as the superuser (the CLI). A mount gives the FUSE caller (fusefs/callers.py).
        self.caller: Callable[[], master_pb2.Caller | None] = lambda: None
        self._mutations_lock = threading.Lock()
        self._status: master_pb2.ClusterStatusResponse | None = None

    def mutate(self, op: str, request, durable: bool = False,
               caller: master_pb2.Caller | None = None):
        """One namespace change (op: a Mutation.op field such as "create") on the ZMQ
        channel, made for `caller` (None: self.caller()); its answer (Attr, RenameResponse or
        Empty), or FsError with its errno."""
        reply = self._mutation_channel().call(op, self.subdir.request(request), durable,
                                              caller if caller is not None else self.caller())
        return getattr(reply, reply.WhichOneof("result") or "empty")

    @property
    def mutation_address(self) -> str:
        """The master's ZMQ port for mutations and sessions ("" from a master without one)."""
        return self._facts().mutation_address

    @property
    def inline_max(self) -> int:
        """Bytes up to which the master keeps a file inline (0: never)."""
        return self._facts().inline_max

    def _facts(self) -> master_pb2.ClusterStatusResponse:
        """The master's ClusterStatus, asked once: the mutation channel's address and
        inline_max do not change while it runs (a CLI upload needs the second, not the
        first, so neither opens the ZMQ channel for the other)."""
        with self._mutations_lock:
            if self._status is None:
                self._status = self.status(timeout=self.timeout)
            return self._status

    def _mutation_channel(self) -> MutationChannel:
        address = self._facts().mutation_address
        with self._mutations_lock:
            if self._mutations is None:
                if not address:
                    raise FsError(errno.EIO, f"the master at {self.address} has no mutation "
                                             "channel (a KelpFS older than this mount?)")
                self._mutations = MutationChannel(address, self.retry_for, MasterUnreachable,
                                                  session=lambda: self.session_id(),
                                                  transport=self.transport)
            return self._mutations

    def call(self, method: str, request, timeout: float | None = None, retry: bool = True):
        """Call `method` (a Master rpc name); retry UNAVAILABLE for up to retry_for seconds."""
        fn = getattr(self.stub, method)
        request = self.subdir.request(request)
        self._add_session(request)
        self._add_caller(request)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("rpc %s %s", method, str(request).replace("\n", " ")[:120])
        return self._retrying(lambda: fn(request, timeout=timeout or self.timeout),
                              self.retry_for if retry else 0)

    def _add_session(self, request) -> None:
        """Name the session in a request that has a session field (and none set)."""
        if "session" in request.DESCRIPTOR.fields_by_name and not request.session:
            request.session = self.session_id()

    def _add_caller(self, request) -> None:
        """Fill in the request's caller field (if it has one and it is unset)."""
        if "caller" in request.DESCRIPTOR.fields_by_name and not request.HasField("caller"):
            caller = self.caller()
            if caller is not None:
                request.caller.CopyFrom(caller)

    def stream(self, method: str, request, timeout: float | None = None) -> Iterator:
        """A server-streaming call (ReadDir) as an iterator; failures become FsError."""
        fn = getattr(self.stub, method)
        # Materialised, so a failure surfaces inside the retry loop.
        return iter(self._retrying(lambda: list(fn(request, timeout=timeout or self.timeout)),
                                   self.retry_for))

    def _retrying(self, attempt, retry_for: float):
        """attempt() until it succeeds, retrying UNAVAILABLE with exponential backoff for up to
        retry_for seconds; failures become FsError (an unreachable master: MasterUnreachable)."""
        try:
            return retry_rpc(attempt, retry_for)
        except grpc.RpcError as e:
            if unavailable(e) and not _is_answer(e):
                raise MasterUnreachable(self.address, e.details() or "unavailable") from None
            raise fserror_from_rpc(e) from None

    def readdir(self, path: str, page_size: int = 1000) -> Iterator[master_pb2.DirEntry]:
        request = master_pb2.ReadDirRequest(path=self.subdir.to_cluster(path),
                                            page_size=page_size, session=self.session_id())
        self._add_caller(request)
        for page in self.stream("ReadDir", request):
            yield from page.entries

    def readdir_head(self, path: str, limit: int,
                     timeout: float = 5.0) -> tuple[list[master_pb2.DirEntry], bool]:
        """The first `limit` entries of a directory (one ReadDir page; the rest of the stream
        is cancelled) and whether the directory may have more. No retries: callers use it
        to prefetch, and a lookup that already succeeded must not wait out an outage."""
        request = master_pb2.ReadDirRequest(path=self.subdir.to_cluster(path), page_size=limit,
                                            session=self.session_id())
        self._add_caller(request)

        def first_page():
            call = self.stub.ReadDir(request, timeout=timeout)
            try:
                page = next(call, None)
            finally:
                call.cancel()
            entries = list(page.entries) if page is not None else []
            return entries, len(entries) >= limit

        return self._retrying(first_page, 0)

    def status(self, timeout: float = 5.0) -> master_pb2.ClusterStatusResponse:
        return self.call("ClusterStatus", master_pb2.Empty(), timeout=timeout)

    def close(self) -> None:
        if self._mutations is not None:
            self._mutations.close()
        self._channel.close()


def check_reachable(address: str, timeout: float = 3.0, transport: Transport | None = None
                    ) -> master_pb2.ClusterStatusResponse:
    """ClusterStatus with no retry: the quick 'is there a master?' check the CLI and mount use."""
    client = MasterClient(address, timeout=timeout, retry_for=0, transport=transport)
    try:
        return client.call("ClusterStatus", master_pb2.Empty(), retry=False)
    except MasterUnreachable:
        hint = "" if client.transport.secure else \
            "; for a secure cluster give --tls-dir with its credentials"
        raise FsError(errno.EIO, f"no master reachable at {address} "
                                 f"(is `kelp master` running there?{hint})") from None
    except FsError as e:
        if e.errno == errno.ETIMEDOUT:
            raise FsError(e.errno, f"no answer from a master at {address} in {timeout:.0f}s") \
                from None
        raise
    finally:
        client.close()
