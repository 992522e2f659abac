"""Several masters, one namespace: the --master list (cluster/common/masters.py), the rules for
moving between masters (MasterPool.call), and how MasterClient, the gateway's calls and the
volume server's heartbeats use them. Fake stubs, a fake clock and fake channels: no socket."""
from __future__ import annotations

import errno
import threading
import time

import grpc
import pytest

from cluster.common.errors import FsError
from cluster.common.masters import (
    MasterPool,
    masters_option,
    not_leader,
    parse_masters,
    unreachable,
)
from cluster.gateway.mastercall import MasterCalls, call_master
from cluster.volume.heartbeat import Heartbeater, load_server_id
from cluster.volume.options import VolumeOptions
from fusefs.master_client import MasterClient, MasterUnreachable
from fusefs.mutation_channel import NotSent
from protos import master_pb2

pytestmark = pytest.mark.timeout(20)

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


class Err(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = ""):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


DOWN = Err(UNAVAILABLE, "failed to connect to all addresses")
FOLLOWER = Err(UNAVAILABLE, "not the leader (the leader is m1)")
BUSY = Err(UNAVAILABLE, "EAGAIN: waiting for volume servers")
SLOW = Err(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


# ---------------------------------------------------------------- the list

def test_parse_masters_accepts_one_or_several_addresses():
    assert parse_masters("127.0.0.1:19333") == ["127.0.0.1:19333"]
    assert parse_masters(" a:1 , b:2,c.example:3 ") == ["a:1", "b:2", "c.example:3"]
    assert parse_masters("a:1,b:2,a:1") == ["a:1", "b:2"]          # each once, in order
    assert parse_masters("[::1]:19333,[fe80::1]:2") == ["[::1]:19333", "[fe80::1]:2"]
    assert parse_masters(["a:1", "b:2"]) == ["a:1", "b:2"]
    assert masters_option("a:1, b:2") == "a:1,b:2"


@pytest.mark.parametrize(("bad", "says"), [
    ("", "no master address"), (",", "no master address"), ("  ", "no master address"),
    ("a:1,,b:2", "empty entry"), ("a:1,", "empty entry"), ("host", "not host:port"),
    (":19333", "not host:port"), ("a:0", "1..65535"), ("a:65536", "1..65535"),
    ("a:x", "1..65535"), ("a:", "1..65535"), ("::1:19333", "brackets"),
    ("a b:1", "not host:port"),
])
def test_parse_masters_refuses_with_one_line(bad, says):
    with pytest.raises(ValueError, match=says) as info:
        parse_masters(bad)
    assert "\n" not in str(info.value)


def test_errors_are_told_apart():
    assert not_leader(FOLLOWER)
    assert not unreachable(FOLLOWER)
    assert unreachable(DOWN)
    assert not not_leader(DOWN)
    assert not unreachable(BUSY)
    assert not not_leader(BUSY)
    assert not unreachable(SLOW)
    assert unreachable(SLOW, deadline_counts=True)


# ---------------------------------------------------------------- the rotation

class Clock:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def scripted(answers: dict[str, list]):
    """attempt(address): the next of `answers[address]` (an exception is raised); the
    addresses asked, in order, in .asked."""
    asked: list[str] = []

    def attempt(address: str):
        asked.append(address)
        script = answers[address]
        a = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(a, Exception):
            raise a
        return a

    attempt.asked = asked  # type: ignore[attr-defined]
    return attempt


def test_an_unreachable_master_is_left_for_the_next_after_a_back_off():
    pool, clock = MasterPool("a:1,b:2,c:3"), Clock()
    moves = []
    pool.on_move.append(lambda old, new: moves.append((old, new)))
    attempt = scripted({"a:1": [DOWN], "b:2": ["from b"], "c:3": ["from c"]})
    assert pool.call(attempt, 30, sleep=clock.sleep, clock=clock) == "from b"
    assert attempt.asked == ["a:1", "b:2"]
    assert clock.slept == [0.05]
    assert moves == [("a:1", "b:2")]
    assert pool.current == "b:2"
    # The next call starts where the last one ended (sticky), without asking a:1 again.
    assert pool.call(attempt, 30, sleep=clock.sleep, clock=clock) == "from b"
    assert attempt.asked[-1] == "b:2"


def test_not_the_leader_moves_on_at_once_and_pauses_only_after_a_full_round():
    pool, clock = MasterPool("a:1,b:2,c:3"), Clock()
    attempt = scripted({"a:1": [FOLLOWER], "b:2": [FOLLOWER], "c:3": ["leader"]})
    assert pool.call(attempt, 30, sleep=clock.sleep, clock=clock) == "leader"
    assert attempt.asked == ["a:1", "b:2", "c:3"]
    assert clock.slept == []                      # no back-off between followers
    # No leader at all (an election going on): one pause per round, growing, bounded.
    pool, clock = MasterPool("a:1,b:2"), Clock()
    attempt = scripted({"a:1": [FOLLOWER], "b:2": [FOLLOWER]})
    with pytest.raises(Err) as info:
        pool.call(attempt, 1.0, sleep=clock.sleep, clock=clock)
    assert not_leader(info.value)
    assert clock.now <= 1.0 + 1e-9
    assert clock.slept[:3] == [0.05, 0.1, 0.2]
    assert len(attempt.asked) >= 2 * len(clock.slept)


def test_patience_bounds_the_call_across_every_master():
    pool, clock = MasterPool("a:1,b:2,c:3"), Clock()
    attempt = scripted({"a:1": [DOWN], "b:2": [DOWN], "c:3": [DOWN]})
    with pytest.raises(Err):
        pool.call(attempt, 5.0, sleep=clock.sleep, clock=clock)
    assert clock.now <= 5.0 + 1e-9
    assert set(attempt.asked) == {"a:1", "b:2", "c:3"}
    # Round robin: each master in turn.
    assert attempt.asked[:6] == ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3"]


def test_without_patience_every_master_is_still_asked_once():
    pool, clock = MasterPool("a:1,b:2,c:3"), Clock()
    attempt = scripted({"a:1": [DOWN], "b:2": [SLOW], "c:3": ["up"]})
    assert pool.call(attempt, 0, sleep=clock.sleep, clock=clock) == "up"
    assert attempt.asked == ["a:1", "b:2", "c:3"]
    assert clock.slept == []
    pool, clock = MasterPool("a:1,b:2"), Clock()
    attempt = scripted({"a:1": [DOWN], "b:2": [DOWN]})
    with pytest.raises(Err):
        pool.call(attempt, 0, sleep=clock.sleep, clock=clock)
    assert attempt.asked == ["a:1", "b:2"]


def test_a_masters_own_answer_is_retried_on_it_and_other_errors_are_final():
    pool, clock = MasterPool("a:1,b:2"), Clock()
    attempt = scripted({"a:1": [BUSY, BUSY, "ok"], "b:2": ["never"]})
    assert pool.call(attempt, 30, sleep=clock.sleep, clock=clock) == "ok"
    assert attempt.asked == ["a:1"] * 3
    assert pool.current == "a:1"
    attempt = scripted({"a:1": [Err(grpc.StatusCode.NOT_FOUND, "ENOENT: /x")],
                        "b:2": ["never"]})
    with pytest.raises(Err):
        pool.call(attempt, 30, sleep=clock.sleep, clock=clock)
    assert attempt.asked == ["a:1"]
    assert pool.current == "a:1"


def test_one_master_behaves_as_before():
    """A list of one: UNAVAILABLE retried on it with the back-off, a deadline is final."""
    pool, clock = MasterPool("a:1"), Clock()
    moves = []
    pool.on_move.append(lambda *m: moves.append(m))
    attempt = scripted({"a:1": [DOWN, DOWN, FOLLOWER, "ok"]})
    assert pool.call(attempt, 30, sleep=clock.sleep, clock=clock) == "ok"
    assert clock.slept == [0.05, 0.1, 0.2]
    assert moves == []
    attempt = scripted({"a:1": [SLOW, "never"]})
    with pytest.raises(Err) as info:
        pool.call(attempt, 30, sleep=clock.sleep, clock=clock)
    assert info.value is SLOW


def test_move_from_moves_once_for_threads_that_saw_the_same_master_fail():
    pool = MasterPool("a:1,b:2,c:3")
    moves = []
    pool.on_move.append(lambda old, new: moves.append((old, new)))
    assert pool.move_from("a:1", "down")
    assert not pool.move_from("a:1", "down")      # a second thread, late: no second move
    assert pool.current == "b:2"
    assert moves == [("a:1", "b:2")]
    assert pool.move_from("b:2")
    assert pool.move_from("c:3")
    assert pool.current == "a:1"                  # round robin
    assert not MasterPool("a:1").move_from("a:1")


# ---------------------------------------------------------------- MasterClient

class FakeStub:
    """A Master stub whose methods answer from a script: a value, or an exception raised."""

    def __init__(self, **methods):
        self.methods = methods
        self.calls: list[str] = []

    def __getattr__(self, name):
        if name not in self.methods:
            raise AttributeError(name)

        def method(request, timeout=None):
            self.calls.append(name)
            answer = self.methods[name]
            if isinstance(answer, Exception):
                raise answer
            return answer(request) if callable(answer) else answer
        return method


def client_with(stubs: dict[str, FakeStub], **kw) -> MasterClient:
    mc = MasterClient(",".join(stubs), **kw)
    mc.pool.set_stubs(stubs)   # no channel is made for an address with a stub
    return mc


def status(mutation_address: str, inline_max: int = 100):
    return master_pb2.ClusterStatusResponse(mutation_address=mutation_address,
                                            inline_max=inline_max)


class FakeChannel:
    def __init__(self, replies):
        self.replies = list(replies)
        self.closed_for_failover = None
        self.sent = []

    def call(self, op, request, durable=False, caller=None, deadline=None):
        self.sent.append(op)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self, failover=False):
        self.closed_for_failover = failover


def test_master_client_moves_and_forgets_what_the_old_master_told_it():
    a = FakeStub(ClusterStatus=status("a:9", 100), GetAttr=DOWN)
    b = FakeStub(ClusterStatus=status("b:9", 200),
                 GetAttr=master_pb2.Attr(ino=7))
    mc = client_with({"a:1": a, "b:2": b}, retry_for=5)
    failovers = []
    mc.on_failover.append(lambda old, new: failovers.append((old, new)))
    assert mc.inline_max == 100
    assert mc.mutation_address == "a:9"
    old_channel = FakeChannel([])
    mc._mutations = old_channel          # type: ignore[assignment]
    assert mc.call("GetAttr", master_pb2.PathRequest(path="/f")).ino == 7
    assert (mc.address, failovers) == ("b:2", [("a:1", "b:2")])
    assert old_channel.closed_for_failover is True   # sent-unanswered: EIO; unsent: resent
    assert mc._mutations is None
    assert mc.inline_max == 200
    assert mc.mutation_address == "b:9"


def test_master_client_gives_eio_when_no_master_answers_and_einval_for_a_bad_list():
    mc = client_with({"a:1": FakeStub(GetAttr=DOWN), "b:2": FakeStub(GetAttr=DOWN)},
                     retry_for=0.3)
    started = time.monotonic()
    with pytest.raises(MasterUnreachable) as info:
        mc.call("GetAttr", master_pb2.PathRequest(path="/"))
    assert info.value.errno == errno.EIO
    assert "a:1,b:2" in info.value.message
    assert time.monotonic() - started < 2
    followers = client_with({"a:1": FakeStub(Assign=FOLLOWER),
                             "b:2": FakeStub(Assign=FOLLOWER)}, retry_for=0.2)
    with pytest.raises(MasterUnreachable, match="no master is the leader"):
        followers.call("Assign", master_pb2.AssignRequest(count=1))
    with pytest.raises(FsError) as bad:
        MasterClient("a:1,,b:2")
    assert bad.value.errno == errno.EINVAL


def test_one_master_client_keeps_its_errnos():
    mc = client_with({"a:1": FakeStub(GetAttr=SLOW)}, retry_for=5)
    with pytest.raises(FsError) as info:
        mc.call("GetAttr", master_pb2.PathRequest(path="/"))
    assert info.value.errno == errno.ETIMEDOUT     # a deadline: no failover with one master


def test_a_mutation_not_yet_sent_goes_to_the_new_master():
    mc = client_with({"a:1": FakeStub(), "b:2": FakeStub()}, retry_for=5)
    reply = master_pb2.MutationReply(attr=master_pb2.Attr(ino=3))
    channels = [FakeChannel([NotSent("a:9")]), FakeChannel([reply])]
    mc._mutation_channel = lambda: channels[0] if channels[0].replies else channels[1]
    assert mc.mutate("create", master_pb2.CreateRequest(path="/x")).ino == 3
    assert [c.sent for c in channels] == [["create"], ["create"]]
    # One that was sent and lost with its master: EIO, not sent again.
    lost = FakeChannel([FsError(errno.EIO, "master lost before it answered")])
    mc._mutation_channel = lambda: lost
    with pytest.raises(FsError) as info:
        mc.mutate("mkdir", master_pb2.MkdirRequest(path="/d"))
    assert info.value.errno == errno.EIO
    assert lost.sent == ["mkdir"]


def test_suspect_probes_in_the_background_and_moves_only_from_a_silent_master():
    a = FakeStub(ClusterStatus=DOWN)
    b = FakeStub(ClusterStatus=status("b:9"))
    mc = client_with({"a:1": a, "b:2": b})
    moved = threading.Event()
    mc.on_failover.append(lambda old, new: moved.set())
    mc.suspect("b:2")                      # not the master in use: nothing
    mc.suspect("a:1")
    assert moved.wait(5)
    assert mc.address == "b:2"
    assert a.calls == ["ClusterStatus"]
    mc.suspect("b:2")                      # b answers: it stays
    deadline = time.monotonic() + 5
    while "ClusterStatus" not in b.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert mc.address == "b:2"
    alone = FakeStub(ClusterStatus=DOWN)
    single = client_with({"a:1": alone})
    single.suspect("a:1")                  # one master: never probed, never moved
    assert alone.calls == []


# ---------------------------------------------------------------- the gateway's calls

def test_gateway_assign_moves_from_a_follower_at_once():
    calls = MasterCalls("a:1,b:2", channel_factory=None)  # type: ignore[arg-type]
    follower = FakeStub(Assign=FOLLOWER)
    leader = FakeStub(Assign=master_pb2.AssignResponse())
    calls.pool.set_stubs({"a:1": follower, "b:2": leader})
    started = time.monotonic()
    call_master(calls.Assign, master_pb2.AssignRequest(count=1), what="assign", patience=5)
    assert time.monotonic() - started < 0.04      # no back-off before the leader
    assert follower.calls == ["Assign"]
    assert leader.calls == ["Assign"]
    assert calls.pool.current == "b:2"
    # Every master down: EIO after the patience, naming the cause.
    calls.pool.set_stubs({"a:1": FakeStub(CommitChunks=DOWN),
                          "b:2": FakeStub(CommitChunks=DOWN)})
    with pytest.raises(FsError) as info:
        call_master(calls.CommitChunks, master_pb2.CommitRequest(), what="commit",
                    patience=0.2)
    assert info.value.errno == errno.EIO
    assert "commit: master unavailable" in info.value.message


# ---------------------------------------------------------------- volume heartbeats

class FakeStore:
    size_limit = 0

    def disk(self):
        return 100, 200

    def volumes(self):
        return []

    def set_size_limit(self, limit):
        self.size_limit = limit


class FakeMaster:
    """What one master answers to a volume server (one database: ids come from `ids`)."""

    def __init__(self, name: str, ids: list[int], up: bool = True):
        self.name = name
        self.ids = ids
        self.up = up
        self.registrations: list[int] = []
        self.beats = 0

    def RegisterVolumeServer(self, request, timeout=None):
        if not self.up:
            raise DOWN
        time.sleep(0.02)   # both links in flight at once, if they were not serialised
        self.registrations.append(request.server_id)
        sid = request.server_id or self.ids.pop(0)
        return master_pb2.RegisterResponse(server_id=sid, heartbeat_interval_ms=20,
                                           master_name=self.name)

    def SendHeartbeat(self, request, timeout=None):
        if not self.up:
            raise DOWN
        self.beats += 1
        return master_pb2.HeartbeatResponse()


class FakeTransport:
    """Transport.channel -> a channel whose MasterStub calls reach a FakeMaster."""

    def __init__(self, masters: dict[str, FakeMaster]):
        self.masters = masters

    def channel(self, address: str, role: str):
        master = self.masters[address]

        class Channel:
            def unary_unary(self, path, *args, **kw):
                return getattr(master, path.rsplit("/", 1)[1], None)

            unary_stream = unary_unary

            def close(self):
                pass
        return Channel()


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_volume_server_heartbeats_every_master_with_one_id(tmp_path):
    ids = [42, 43]
    masters = {"a:1": FakeMaster("m1", ids), "b:2": FakeMaster("m2", ids)}
    opts = VolumeOptions(dir=str(tmp_path), master="a:1,b:2")
    beater = Heartbeater(opts, FakeStore(), "v:1", "v:2",
                         transport=FakeTransport(masters))  # type: ignore[arg-type]
    beater.start()
    try:
        wait_for(lambda: all(m.beats >= 3 for m in masters.values()))
        assert beater.registered.is_set()
        # The first registration took the id; the other master was offered it.
        firsts = sorted(m.registrations[0] for m in masters.values())
        assert firsts == [0, 42]
        assert ids == [43]
        assert beater.server_id == 42
        assert load_server_id(str(tmp_path)) == 42
        # One master goes: the other keeps hearing heartbeats, and we stay registered.
        masters["a:1"].up = False
        time.sleep(0.1)
        before = masters["b:2"].beats
        wait_for(lambda: masters["b:2"].beats >= before + 3)
        assert beater.registered.is_set()
        assert not beater.links[0].registered
        assert beater.links[1].registered
        masters["a:1"].up = True                    # it comes back and is registered again
        wait_for(lambda: len(masters["a:1"].registrations) >= 2)
        assert masters["a:1"].registrations[-1] == 42
    finally:
        beater.stop()
    assert not beater.is_alive()


def test_volume_server_refuses_a_malformed_master_list(tmp_path):
    opts = VolumeOptions(dir=str(tmp_path), master="a:1,,b:2")
    with pytest.raises(FsError, match="empty entry") as info:
        Heartbeater(opts, FakeStore(), "v:1", "v:2",
                    transport=FakeTransport({}))  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL
