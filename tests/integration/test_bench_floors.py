"""bench/floors.py: the per-call floors between two processes, measured at the start of a run."""
from __future__ import annotations

import os

import pytest

from bench import floors
from tools import local_cluster


def children_of(pid: int) -> set[int]:
    return set(local_cluster.children_of(pid))


@pytest.mark.timeout(60)
def test_measure_floors_returns_positive_numbers_and_stops_its_servers(tmp_path):
    before = children_of(os.getpid())
    result = floors.measure_floors(n=50, workdir=str(tmp_path))
    assert set(result) == {"grpc_unary_us", "zmq_roundtrip_us", "socketpair_us",
                           "fdatasync_us", "sqlite_commit_us", "grpc_4mib_mbps",
                           "grpc_4mib_x4_mbps"}
    for name, value in result.items():
        assert isinstance(value, float), (name, value)
        assert 0 < value < 1_000_000, (name, value)
    assert list(tmp_path.iterdir()) == []  # the disk floors clean up after themselves
    # One server per floor, each stopped and reaped by its pid.
    assert len(floors.last_server_pids) == 3
    assert not children_of(os.getpid()) - before
    for pid in floors.last_server_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    text = floors.describe(result)
    assert "gRPC unary" in text
    assert "fdatasync" in text
    assert "MB/s" in text


@pytest.mark.timeout(30)
def test_a_server_that_cannot_start_is_reported_and_leaves_nothing_behind():
    before = children_of(os.getpid())
    floors.last_server_pids.clear()
    with pytest.raises(RuntimeError, match="did not start"), floors._Server("no-such-kind"):
        pass
    assert len(floors.last_server_pids) == 1
    assert not children_of(os.getpid()) - before
