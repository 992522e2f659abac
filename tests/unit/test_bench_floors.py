"""bench/floors.py: the per-call floors between two processes, measured at the start of a run."""
from __future__ import annotations

import os

import pytest

from bench import floors


def children_of(pid: int) -> set[int]:
    """Pids whose parent is `pid` (zombies included: a child that was not reaped counts)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry))
    return found


@pytest.mark.timeout(60)
def test_measure_floors_returns_three_positive_numbers_and_stops_its_servers():
    before = children_of(os.getpid())
    result = floors.measure_floors(n=50)
    assert set(result) == {"grpc_unary_us", "zmq_roundtrip_us", "socketpair_us"}
    for name, us in result.items():
        assert isinstance(us, float) and 0 < us < 1_000_000, (name, us)
    # One server per floor, each stopped and reaped by its pid.
    assert len(floors.last_server_pids) == 3
    assert not children_of(os.getpid()) - before
    for pid in floors.last_server_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "gRPC unary" in floors.describe(result)


@pytest.mark.timeout(30)
def test_a_server_that_cannot_start_is_reported_and_leaves_nothing_behind():
    before = children_of(os.getpid())
    floors.last_server_pids.clear()
    with pytest.raises(RuntimeError, match="did not start"):
        with floors._Server("no-such-kind"):
            pass
    assert len(floors.last_server_pids) == 1
    assert not children_of(os.getpid()) - before
