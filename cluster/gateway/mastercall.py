"""Calls from the gateway to the master that ride out a master restart.

A master restart is routine (the design keeps topology as soft state rebuilt within one
heartbeat), so an UNAVAILABLE answer is retried with a growing backoff for up to
`patience` seconds before the caller gets EIO. Every other failure is final and is mapped to
an FsError by the one errno table in cluster/common/errors.py.
"""
from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import TypeVar

import grpc

from cluster.common.errors import FsError, fserror_from_rpc
from cluster.common.retry import retry_rpc, unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

MASTER_PATIENCE_S = 10.0   # how long a master may be away before writers see EIO
RPC_TIMEOUT_S = 30.0       # one master RPC (Assign, CommitChunks)


def call_master(method: Callable[..., T], request, *, what: str,
                patience: float = MASTER_PATIENCE_S, timeout: float = RPC_TIMEOUT_S) -> T:
    """`method(request)`, retried on UNAVAILABLE for up to `patience` s; FsError otherwise."""
    try:
        return retry_rpc(lambda: method(request, timeout=timeout), patience)
    except grpc.RpcError as e:
        if not unavailable(e):
            raise fserror_from_rpc(e) from None
        details = e.details() if hasattr(e, "details") else str(e)
        raise FsError(errno.EIO, f"{what}: master unavailable for {patience:g} s "
                                 f"({details})") from None
