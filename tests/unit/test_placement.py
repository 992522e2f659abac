"""Placement policy, topology writability and the assigner, driven without a network."""
from __future__ import annotations

import errno

import pytest

from cluster.common.errors import FsError
from cluster.master import sequencer
from cluster.master.assign import Assigner
from cluster.master.placement import Candidate, RoundRobin, growth_count, pick_servers, plan_growth
from cluster.master.sqlite_store import SQLiteStore
from cluster.master.topology import Topology, VolumeState

T = pytest.mark.timeout(20)


def cand(sid, free=100, vols=0, maxv=8):
    return Candidate(sid, free, vols, maxv)


@T
def test_pick_distinct_prefers_free_space():
    got = pick_servers([cand(1, 10), cand(2, 300), cand(3, 200)], 2)
    assert got == [2, 3]
    assert len(set(pick_servers([cand(i, 50) for i in range(1, 6)], 5))) == 5


@T
def test_pick_skips_full_and_slotless():
    cs = [cand(1, 0), cand(2, 100, vols=8, maxv=8), cand(3, 5), cand(4, 5, vols=100, maxv=0)]
    assert sorted(pick_servers(cs, 2)) == [3, 4]


@T
def test_not_enough_servers_is_clear_enospc():
    with pytest.raises(FsError) as e:
        pick_servers([cand(1), cand(2, free=0)], 2)
    assert e.value.errno == errno.ENOSPC
    assert e.value.message == (
        "replication 2 needs 2 live volume servers with free space, 1 available")


@T
def test_growth_count_and_plan_spreads():
    assert growth_count(2, 1) == 2
    assert growth_count(1, 1) == 1
    assert growth_count(3, 2) == 1
    assert growth_count(0, 3) == 1
    # the most-free server does not get both volumes of a round
    plan = plan_growth([cand(1, 1000), cand(2, 10)], 1)
    assert sorted(s for [s] in plan) == [1, 2]
    plan = plan_growth([cand(i) for i in range(1, 7)], 3)
    assert len(plan) == 2
    assert len({s for p in plan for s in p}) == 6
    # slots run out part way: grow what fits
    plan = plan_growth([cand(1, maxv=1, vols=0), cand(2, maxv=1, vols=1), cand(3, maxv=1)], 1)
    assert sorted(s for [s] in plan) == [1, 3]


@T
def test_round_robin_continues_across_calls():
    rr = RoundRobin()
    assert rr.spread(1, [5, 3], 1) == [3]
    assert rr.spread(1, [5, 3], 1) == [5]
    assert rr.spread(1, [5, 3], 3) == [3, 5, 3]
    assert rr.spread(2, [9], 2) == [9, 9]


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def cluster(tmp_path):
    store = SQLiteStore(str(tmp_path / "m.db"), "NORMAL")
    clock = Clock()
    topo = Topology(store, dead_after=4.0, volume_size_limit=1000, clock=clock)
    allocated = []

    def allocate(server, vid, rep):
        if server.name == "broken":
            raise RuntimeError("disk on fire")
        allocated.append((server.server_id, vid, rep))

    assigner = Assigner(topo, sequencer.needle_keys(store), sequencer.volume_ids(store),
                        allocate, default_replication=1)
    yield store, topo, assigner, clock, allocated
    store.close()


def _server(topo, name, free=10_000, vols=()):
    sid = topo.register(0, name, f"127.0.0.1:{hash(name) % 50000 + 1000}", "")
    topo.heartbeat(sid, name, "", "", list(vols), free, 20_000, 8)
    return sid


@T
def test_assign_spreads_over_two_servers(cluster):
    _store, topo, assigner, _clock, allocated = cluster
    a, b = _server(topo, "a"), _server(topo, "b")
    first = assigner.assign(1)
    second = assigner.assign(1)
    assert len(allocated) == 2
    assert {sid for sid, _, _ in allocated} == {a, b}
    (f1, r1), (f2, r2) = first[0], second[0]
    assert f1.volume_id != f2.volume_id
    assert r1[0].server_id != r2[0].server_id
    assert f1.key != f2.key
    batch = assigner.assign(10)
    assert len({f.key for f, _ in batch}) == 10
    assert len({f.volume_id for f, _ in batch}) == 2
    assert len(allocated) == 2  # no growth while volumes are writable


@T
def test_assign_validation_and_avoid(cluster):
    _store, topo, assigner, _clock, _allocated = cluster
    _server(topo, "a")
    for count, rep in ((0, 1), (1001, 1), (1, 9)):
        with pytest.raises(FsError) as e:
            assigner.assign(count, rep)
        assert e.value.errno == errno.EINVAL
    [(fid, _)] = assigner.assign(1)
    [(fid2, _)] = assigner.assign(1, avoid=[fid.volume_id])
    assert fid2.volume_id != fid.volume_id


@T
def test_replication_needs_enough_live_servers(cluster):
    _store, topo, assigner, clock, _allocated = cluster
    _server(topo, "a")
    with pytest.raises(FsError) as e:
        assigner.assign(1, 2)
    assert e.value.errno == errno.ENOSPC
    assert "1 available" in e.value.message
    _server(topo, "b")
    [(fid, replicas)] = assigner.assign(1, 2)
    assert len({r.server_id for r in replicas}) == 2
    # one replica dies: the volume is no longer writable, and growth cannot place a new one
    clock.t += 3
    sid_a = next(s for s in topo.alive_servers() if s.name == "a").server_id
    topo.heartbeat(sid_a, "a", "", "", [VolumeState(fid.volume_id, 2)], 10_000, 20_000, 8)
    clock.t += 2
    assert topo.writable_volumes(2) == []
    with pytest.raises(FsError) as e:
        assigner.assign(1, 2)
    assert e.value.errno == errno.ENOSPC


@T
def test_full_or_readonly_volume_not_writable(cluster):
    _store, topo, _assigner, _clock, _allocated = cluster
    sid = _server(topo, "a", vols=[VolumeState(5, 1, size=999), VolumeState(6, 1, size=1000),
                                   VolumeState(7, 1, read_only=True), VolumeState(8, 2)])
    assert topo.writable_volumes(1) == [5]
    assert topo.writable_volumes(2) == []  # volume 8 wants 2 copies, 1 known
    # the volume id sequencer skips past ids seen in heartbeats only when wired (server does)
    assert topo.is_known(sid)


@T
def test_failed_allocation_is_reported(cluster):
    _store, topo, assigner, _clock, _allocated = cluster
    _server(topo, "broken")
    with pytest.raises(FsError) as e:
        assigner.assign(1)
    # A failure that is not a full disk is EIO, with the cause in the message.
    assert e.value.errno == errno.EIO
    assert "disk on fire" in e.value.message


@T
def test_heartbeat_unknown_id_and_reuse(cluster):
    store, topo, _assigner, clock, _allocated = cluster
    assert topo.heartbeat(4242, "x", "h:1", "", [], 1, 1, 1) is False
    sid = topo.register(0, "v", "h:2", "")
    # a fresh topology (master restart) accepts a heartbeat from an id the store knows
    topo2 = Topology(store, 4.0, 1000, clock=clock)
    assert topo2.heartbeat(sid, "v", "h:2", "", [], 1, 1, 1) is True
    assert [s.server_id for s in topo2.alive_servers()] == [sid]


@T
def test_growth_leaves_out_a_server_whose_allocation_fails(cluster):
    """A server that died since its last heartbeat (still counted alive) must not stop
    growth: the round is planned again over the others."""
    _store, topo, assigner, _clock, allocated = cluster
    broken = _server(topo, "broken", free=10**9)   # most free space: planned first
    a, b = _server(topo, "a"), _server(topo, "b")
    _fid, replicas = assigner.assign(1, replication=2)[0]
    assert {r.server_id for r in replicas} == {a, b}
    assert broken not in {sid for sid, _, _ in allocated}
