"""The one retry/back-off policy (cluster/common/retry.py)."""
from __future__ import annotations

import grpc
import pytest

from cluster.common.retry import Backoff, delay_for, retry_rpc

pytestmark = pytest.mark.timeout(10)


class _Err(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code


def test_backoff_doubles_to_its_cap_and_resets():
    b = Backoff(0.1, 0.5)
    assert [b.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    b.reset()
    assert b.next() == 0.1
    assert [delay_for(n, 1.0, 300.0) for n in (0, 1, 8, 9, 50)] == [1, 2, 256, 300, 300]


def test_retry_rpc_waits_out_unavailable_and_raises_anything_else():
    slept, answers = [], [_Err(grpc.StatusCode.UNAVAILABLE)] * 3 + ["ok"]

    def attempt():
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a
    assert retry_rpc(attempt, patience=5, sleep=slept.append) == "ok"
    assert slept == [0.05, 0.1, 0.2]

    def denied():
        raise _Err(grpc.StatusCode.NOT_FOUND)
    with pytest.raises(_Err):
        retry_rpc(denied, patience=5, sleep=slept.append)
    assert len(slept) == 3

    def down():
        raise _Err(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(_Err):
        retry_rpc(down, patience=0)
