"""Retrying with exponential back-off: one policy for every caller that waits out a peer.

A master restart, a volume server's reboot, a network blip: callers across the cluster wait
them out the same way, a short first pause doubling up to a cap, so a peer that comes back is
found within about one cap, and a peer that stays away is not hammered. `Backoff` is the
schedule (for loops that own their sleeping, such as heartbeats); `retry_rpc` is the loop
for one gRPC call (the gateway's and the mount's calls to the master); `delay_for` is the
schedule by attempt count, for work queued and retried later (the deletion reaper).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc

T = TypeVar("T")


class Backoff:
    """Delays first, first*2, first*4 ... up to cap; reset() after a success."""

    def __init__(self, first: float = 0.05, cap: float = 1.0):
        self.first, self.cap = first, cap
        self._delay = first

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._delay = self.first


def delay_for(attempts: int, first: float = 1.0, cap: float = 300.0) -> float:
    """The pause before retry number `attempts` + 1 (attempts already failed)."""
    return min(cap, first * 2 ** min(attempts, 30))


def unavailable(error: grpc.RpcError) -> bool:
    return getattr(error, "code", lambda: None)() == grpc.StatusCode.UNAVAILABLE


def retry_rpc(attempt: Callable[[], T], patience: float,
              retryable: Callable[[grpc.RpcError], bool] = unavailable,
              backoff: Backoff | None = None, sleep: Callable[[float], None] = time.sleep) -> T:
    """attempt() until it succeeds; a retryable RpcError is retried for up to `patience`
    seconds (the last try at the deadline), any other or the last one is raised as it is,
    for the caller to map (cluster/common/errors.py holds the one table)."""
    deadline = time.monotonic() + patience
    backoff = backoff or Backoff()
    while True:
        try:
            return attempt()
        except grpc.RpcError as e:
            left = deadline - time.monotonic()
            if not retryable(e) or left <= 0:
                raise
            sleep(min(backoff.next(), left))
