"""Calls from the gateway to the master that ride out a master restart.

A master restart is routine (the design keeps topology as soft state rebuilt within one
heartbeat), so an UNAVAILABLE answer is retried with a growing backoff for up to
`patience` seconds before the caller gets EIO. Every other failure is final and is mapped to
an FsError by the one errno table in cluster/common/errors.py.
"""
from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from cluster.common.errors import FsError, fserror_from_rpc

log = logging.getLogger(__name__)

T = TypeVar("T")

MASTER_PATIENCE_S = 10.0   # how long a master may be away before writers see EIO
RPC_TIMEOUT_S = 30.0       # one master RPC (Assign, CommitChunks)


def call_master(method: Callable[..., T], request, *, what: str,
                patience: float = MASTER_PATIENCE_S, timeout: float = RPC_TIMEOUT_S) -> T:
    """`method(request)`, retried on UNAVAILABLE for up to `patience` s; FsError otherwise."""
    deadline = time.monotonic() + patience
    delay = 0.05
    while True:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            if code != grpc.StatusCode.UNAVAILABLE:
                raise fserror_from_rpc(e) from None
            left = deadline - time.monotonic()
            if left <= 0:
                details = e.details() if hasattr(e, "details") else str(e)
                raise FsError(errno.EIO, f"{what}: master unavailable for {patience:g} s "
                                         f"({details})") from None
            log.debug("%s: master unavailable, retrying in %.2f s", what, delay)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)
