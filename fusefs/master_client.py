"""MasterClient: calls to the master with bounded retries and errno-carrying failures.

A master restart must not fail the mount or the CLI outright: UNAVAILABLE is retried with
exponential backoff for up to `retry_for` seconds (then EIO-style failure, never a hang past
it). Every other failure becomes an FsError whose errno comes from cluster.common.errors, so
callers never see a raw grpc.RpcError.

Several masters (one namespace in PostgreSQL): the client is given a list and uses one master
at a time (cluster/common/masters.py has the rules for moving on). When it moves, it forgets
what it learned from the old master (ClusterStatus: the mutation address, inline_max) and
closes the old mutation channel: a mutation sent there and not answered fails with EIO (it
may have been applied; it is not sent again), one not yet sent goes to the new master, and
the next mutation opens a channel to the new master's mutation address. `on_failover`
callbacks (the mount's: reopen its session there, drop its caches) run after each move.
A master that goes quiet on the ZMQ side (the mutation channel cannot reach it, the session
gets no answers) is `suspect`ed: one background probe over gRPC, and a move if it fails.
"""
from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import grpc

from cluster.common.errors import FsError, fserror_from_rpc
from cluster.common.masters import MasterPool, is_answer, not_leader
from cluster.common.retry import unavailable
from cluster.common.security import Transport
from fusefs.mutation_channel import MutationChannel, NotSent
from fusefs.paths import Subdir
from protos import master_pb2, master_pb2_grpc

log = logging.getLogger(__name__)


PROBE_TIMEOUT_S = 2.0    # how long a suspected master has to answer ClusterStatus
STALL_S = 1.0            # a mutation channel without a connection this long: suspect it


class MasterUnreachable(FsError):
    """The master did not answer within the retry window: EIO at the mount (the operation
    could not be done), a clear one-line message at the CLI."""

    def __init__(self, address: str, detail: str):
        super().__init__(errno.EIO, f"master {address} unreachable: {detail}")
        self.address = address


class MasterClient:
    """Lookups and admin calls over gRPC; namespace changes (`mutate`) over the master's ZMQ
    mutation channel, opened at the first one (its address comes from ClusterStatus).
    `address`: one master's gRPC address, a comma-separated list of them, or a sequence."""

    def __init__(self, address: str | Sequence[str], timeout: float = 10.0,
                 retry_for: float = 30.0, transport: Transport | None = None):
        self.timeout = timeout
        self.retry_for = retry_for
        # How this client talks to the cluster (plain, or TLS and CURVE with the client's
        # or admin's credentials); the mutation channel, session, reader and gateway
        # client made for it use the same.
        self.transport = transport or Transport("client")
        try:
            self.pool = MasterPool(address, lambda a: self.transport.channel(a, "master"),
                                   master_pb2_grpc.MasterStub)
        except ValueError as e:
            raise FsError(errno.EINVAL, str(e)) from None
        self.masters = self.pool.addresses
        self.pool.on_move.append(self._moved)
        # (old address, new address) -> None: run after the client moved to another master
        # and forgot what it knew of the old one (the mount reopens its session there).
        self.on_failover: list[Callable[[str, str], None]] = []
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
        self._probing: set[str] = set()     # masters a background probe is asking now
        self._closed = False

    @property
    def address(self) -> str:
        """The gRPC address of the master in use."""
        return self.pool.current

    @property
    def stub(self) -> master_pb2_grpc.MasterStub:
        """The stub of the master in use."""
        return self.pool.stub()

    def mutate(self, op: str, request, durable: bool = False,
               caller: master_pb2.Caller | None = None):
        """One namespace change (op: a Mutation.op field such as "create") on the ZMQ
        channel, made for `caller` (None: self.caller()); its answer (Attr, RenameResponse or
        Empty), or FsError with its errno."""
        request = self.subdir.request(request)
        caller = caller if caller is not None else self.caller()
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                reply = self._mutation_channel().call(op, request, durable, caller,
                                                      deadline=deadline)
            except NotSent:
                # The client moved to another master before this went out: send it there.
                if self._closed or time.monotonic() >= deadline:
                    raise FsError(errno.EIO, f"{op}: no master answered within "
                                             f"{self.retry_for:g} s") from None
                continue
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
        """The master's ClusterStatus, asked once per master: the mutation channel's address
        and inline_max do not change while it runs (a CLI upload needs the second, not the
        first, so neither opens the ZMQ channel for the other)."""
        while True:
            with self._mutations_lock:
                status = self._status
            if status is not None:
                return status
            address = self.address
            status = self.status(timeout=self.timeout)
            with self._mutations_lock:
                # Kept only if it came from the master still in use (a move meanwhile
                # forgot it: ask the new one).
                if self.address == address or status.grpc_address == self.address:
                    if self._status is None:
                        self._status = status
                    return self._status

    def _mutation_channel(self) -> MutationChannel:
        status = self._facts()
        with self._mutations_lock:
            if self._mutations is None:
                if self._closed:
                    raise FsError(errno.EIO, "the master client is closed")
                address = status.mutation_address
                if not address:
                    raise FsError(errno.EIO, f"the master at {self.address} has no mutation "
                                             "channel (a KelpFS older than this mount?)")
                master = self.address
                self._mutations = MutationChannel(
                    address, self.retry_for, MasterUnreachable,
                    session=lambda: self.session_id(), transport=self.transport,
                    on_stall=(lambda: self.suspect(master)) if self.pool.several else None,
                    stall_after=STALL_S)
            return self._mutations

    def _moved(self, old: str, new: str) -> None:
        """The pool moved from `old` to `new`: forget the old master's facts and channel."""
        with self._mutations_lock:
            self._status = None
            channel, self._mutations = self._mutations, None
        if channel is not None:
            # Calls it sent and got no answer for fail with EIO; unsent ones with NotSent,
            # which mutate() sends to the new master.
            channel.close(failover=True)
        for callback in list(self.on_failover):
            try:
                callback(old, new)
            except Exception:
                log.exception("failover callback failed")

    def suspect(self, address: str) -> None:
        """Something other than a gRPC call (the mutation channel, the session) found the
        master at `address` silent: probe it in the background, and move on if it does not
        answer. At most one probe per master at a time; nothing if it is no longer in use."""
        if not self.pool.several or self._closed or address != self.address:
            return
        with self._mutations_lock:
            if address in self._probing:
                return
            self._probing.add(address)

        def probe() -> None:
            try:
                self.pool.stub(address).ClusterStatus(master_pb2.Empty(),
                                                      timeout=PROBE_TIMEOUT_S)
            except grpc.RpcError as e:
                if not is_answer(e):
                    self.pool.move_from(address, "does not answer")
            finally:
                with self._mutations_lock:
                    self._probing.discard(address)

        threading.Thread(target=probe, name="master-probe", daemon=True).start()

    def call(self, method: str, request, timeout: float | None = None, retry: bool = True):
        """Call `method` (a Master rpc name); retry UNAVAILABLE for up to retry_for seconds,
        moving to another master when this one is unreachable or not the leader."""
        request = self.subdir.request(request)
        self._add_session(request)
        self._add_caller(request)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("rpc %s %s", method, str(request).replace("\n", " ")[:120])
        return self._retrying(
            lambda address: getattr(self.pool.stub(address), method)(
                request, timeout=timeout or self.timeout),
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
        # Materialised, so a failure surfaces inside the retry loop.
        return iter(self._retrying(
            lambda address: list(getattr(self.pool.stub(address), method)(
                request, timeout=timeout or self.timeout)),
            self.retry_for))

    def _retrying(self, attempt: Callable[[str], object], retry_for: float):
        """attempt(address) until it succeeds, retrying UNAVAILABLE with exponential backoff
        for up to retry_for seconds over the masters; failures become FsError (no master
        answering: MasterUnreachable)."""
        try:
            return self.pool.call(attempt, retry_for)
        except grpc.RpcError as e:
            where = ",".join(self.masters)
            if not_leader(e):
                raise MasterUnreachable(where, f"no master is the leader ({e.details()})") \
                    from None
            if unavailable(e) and not is_answer(e):
                raise MasterUnreachable(where, e.details() or "unavailable") from None
            if self.pool.several and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise MasterUnreachable(where, e.details() or "deadline exceeded") from None
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

        def first_page(address: str):
            call = self.pool.stub(address).ReadDir(request, timeout=timeout)
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
        with self._mutations_lock:
            self._closed = True
            channel, self._mutations = self._mutations, None
        if channel is not None:
            channel.close()
        self.pool.close()


def check_reachable(address: str | Sequence[str], timeout: float = 3.0,
                    transport: Transport | None = None) -> master_pb2.ClusterStatusResponse:
    """ClusterStatus with no retry (each master of a list asked once, in order, until one
    answers): the quick 'is there a master?' check the CLI and mount use. FsError(EINVAL)
    for a malformed list."""
    client = MasterClient(address, timeout=timeout, retry_for=0, transport=transport)
    address = ",".join(client.masters)
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
