"""Calls from the gateway to the master that ride out a master restart, or move to another
master when several serve the namespace.

A master restart is routine (the design keeps topology as soft state rebuilt within one
heartbeat), so an UNAVAILABLE answer is retried with a growing backoff for up to
`patience` seconds before the caller gets EIO. Every other failure is final and is mapped to
an FsError by the one errno table in cluster/common/errors.py.

With several masters (`--master a:1,b:2`), `MasterCalls` stands in for the Master stub: its
methods call the master in use, and `call_master` moves between the masters by the rules of
cluster/common/masters.py (unreachable: the next one, after the back-off; "not the leader",
which a follower answers to Assign: the next one at once).
"""
from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from cluster.common.errors import FsError, fserror_from_rpc
from cluster.common.masters import MasterPool, not_leader
from cluster.common.retry import retry_rpc, unavailable
from protos import master_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

MASTER_PATIENCE_S = 10.0   # how long a master may be away before writers see EIO
RPC_TIMEOUT_S = 30.0       # one master RPC (Assign, CommitChunks)


class MasterMethod:
    """One Master rpc, called on whichever master the pool uses now."""

    def __init__(self, pool: MasterPool, name: str):
        self.pool = pool
        self.name = name

    def on(self, address: str) -> Callable[..., Any]:
        return getattr(self.pool.stub(address), self.name)

    def __call__(self, request, timeout: float | None = None):
        return self.on(self.pool.current)(request, timeout=timeout)


class MasterCalls:
    """The Master stub of a list of masters: `calls.Assign` is a MasterMethod."""

    def __init__(self, addresses: str | Sequence[str],
                 channel_factory: Callable[[str], grpc.Channel]):
        self.pool = MasterPool(addresses, channel_factory, master_pb2_grpc.MasterStub)

    def __getattr__(self, name: str) -> MasterMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return MasterMethod(self.pool, name)

    def close(self) -> None:
        self.pool.close()


def call_master(method: Callable[..., T], request, *, what: str,
                patience: float = MASTER_PATIENCE_S, timeout: float = RPC_TIMEOUT_S) -> T:
    """`method(request)`, retried on UNAVAILABLE for up to `patience` s (over the masters, for
    a MasterMethod); FsError otherwise."""
    try:
        if isinstance(method, MasterMethod):
            m = method
            return m.pool.call(lambda address: m.on(address)(request, timeout=timeout),
                               patience)
        return retry_rpc(lambda: method(request, timeout=timeout), patience)
    except grpc.RpcError as e:
        several = isinstance(method, MasterMethod) and method.pool.several
        if not unavailable(e) and not (several and e.code() ==
                                       grpc.StatusCode.DEADLINE_EXCEEDED):
            raise fserror_from_rpc(e) from None
        details = e.details() if hasattr(e, "details") else str(e)
        if not_leader(e):
            details = f"no master is the leader: {details}"
        raise FsError(errno.EIO, f"{what}: master unavailable for {patience:g} s "
                                 f"({details})") from None
