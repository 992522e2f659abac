"""The master's ZMQ mutation channel on real sockets: a MutationServer over a real SQLite
store on a loopback port, the mount's MutationChannel, and raw ZMQ peers that misbehave.

What must hold: every mutation is answered by id with the same errno as over gRPC; requests
from many threads are pipelined on one socket and group-committed (fewer commits than
requests); bad input (bytes that are no Mutation, a Mutation with no operation, wrong frame
counts, oversized messages, a peer that sends and never reads) is dropped or answered EINVAL
and never stops the channel for a well-behaved peer; a master that comes back on the same
port gets the requests sent while it was away.
"""
from __future__ import annotations

import errno
import threading
import time

import pytest
import zmq

from cluster.common.errors import FsError
from cluster.master.mutation_server import MutationServer
from cluster.master.namespace import Namespace
from cluster.master.sqlite_store import SQLiteStore
from fusefs.mutation_channel import MutationChannel
from protos import master_pb2
from tools.local_cluster import free_port


class Counting(SQLiteStore):
    """The real store, counting the group commits."""

    batches = 0

    def batch(self, durable=False, size=0):
        type(self).batches += 1
        return super().batch(durable, size)


@pytest.fixture
def server(tmp_path):
    store = Counting(str(tmp_path / "meta.db"), synchronous="NORMAL")
    Counting.batches = 0
    srv = MutationServer(Namespace(store), store, "127.0.0.1", 0).start()
    yield srv
    srv.stop()
    store.close()


@pytest.fixture
def channel(server):
    ch = MutationChannel(server.address, retry_for=10)
    yield ch
    ch.close()


def mkdir(path: str) -> master_pb2.MkdirRequest:
    return master_pb2.MkdirRequest(path=path, mode=0o755)


@pytest.mark.timeout(30)
def test_answers_and_errnos(channel):
    attr = channel.call("mkdir", mkdir("/a")).attr
    assert attr.ino > 1
    assert attr.mode & 0o40000
    with pytest.raises(FsError) as e:
        channel.call("mkdir", mkdir("/a"))
    assert e.value.errno == errno.EEXIST
    with pytest.raises(FsError) as e:
        channel.call("create", master_pb2.CreateRequest(path="/no/such/f", mode=0o644))
    assert e.value.errno == errno.ENOENT
    with pytest.raises(FsError) as e:
        channel.call("mkdir", mkdir("/" + "n" * 256))
    assert e.value.errno == errno.ENAMETOOLONG
    reply = channel.call("rename", master_pb2.RenameRequest(old_path="/a", new_path="/b"))
    assert reply.WhichOneof("result") == "rename"
    assert channel.call("sync", master_pb2.Empty(), durable=True).WhichOneof("result") == "empty"


@pytest.mark.timeout(60)
def test_many_threads_are_pipelined_and_group_committed(server, channel):
    threads, per_thread = 8, 100
    errors = []

    def work(t):
        try:
            for i in range(per_thread):
                channel.call("create", master_pb2.CreateRequest(path=f"/t{t}-{i}", mode=0o644))
        except Exception as e:
            errors.append(e)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert len(server.store.readdir("/", limit=10000)) == threads * per_thread
    assert Counting.batches < threads * per_thread  # several answered per commit


def raw_peer(server, opts: dict | None = None) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for k, v in (opts or {}).items():
        sock.setsockopt(k, v)
    sock.connect(f"tcp://{server.address}")
    return sock


@pytest.mark.timeout(60)
def test_bad_input_is_dropped_or_einval_and_the_channel_serves_on(server, channel):
    bad = raw_peer(server)
    try:
        bad.send(b"\xff\xff\xff garbage that is no protobuf")
        bad.send_multipart([b"two", b"frames"])
        bad.send(master_pb2.Mutation(id=7).SerializeToString())          # no operation
        bad.send(master_pb2.Mutation(id=8, mkdir=mkdir("/x" * 2000)).SerializeToString()[:-5])
        poller = zmq.Poller()
        poller.register(bad, zmq.POLLIN)
        answers = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if poller.poll(100):
                answers.append(master_pb2.MutationReply.FromString(bad.recv()))
        assert [(a.id, a.errno) for a in answers] == [(7, errno.EINVAL)]
        # the well-behaved mount is served all along
        assert channel.call("mkdir", mkdir("/still-fine")).attr.ino
    finally:
        bad.close(0)


@pytest.mark.timeout(60)
def test_an_oversized_message_drops_only_that_peer(server, channel):
    big = raw_peer(server)
    try:
        huge = master_pb2.Mutation(id=1, set_xattr=master_pb2.XattrRequest(
            path="/", name="user.big", value=b"x" * (17 << 20)))
        big.send(huge.SerializeToString())
        time.sleep(0.5)
        assert channel.call("mkdir", mkdir("/after-huge")).attr.ino
        assert server.store.listxattr("/") == []
    finally:
        big.close(0)


@pytest.mark.timeout(60)
def test_a_peer_that_never_reads_does_not_stall_the_others(server, channel):
    deaf = raw_peer(server, {zmq.RCVHWM: 1, zmq.SNDHWM: 100000})
    try:
        for i in range(3000):
            deaf.send(master_pb2.Mutation(id=i + 1, set_attr=master_pb2.SetAttrRequest(
                path="/", mode=0o755)).SerializeToString())
        started = time.monotonic()
        assert channel.call("mkdir", mkdir("/not-stalled")).attr.ino
        assert time.monotonic() - started < 10
    finally:
        deaf.close(0)


@pytest.mark.timeout(60)
def test_requests_wait_for_a_master_that_comes_back(tmp_path):
    port = free_port("127.0.0.1")
    store = SQLiteStore(str(tmp_path / "meta.db"), synchronous="NORMAL")
    srv = MutationServer(Namespace(store), store, "127.0.0.1", port).start()
    channel = MutationChannel(f"127.0.0.1:{port}", retry_for=20)
    try:
        channel.call("mkdir", mkdir("/before"))
        srv.stop()
        result = {}
        t = threading.Thread(target=lambda: result.setdefault(
            "attr", channel.call("mkdir", mkdir("/while-away")).attr))
        t.start()
        time.sleep(1.0)
        assert t.is_alive()                       # waiting, not failed
        srv = MutationServer(Namespace(store), store, "127.0.0.1", port).start()
        t.join(15)
        assert result["attr"].ino
        assert {n for n, _ in store.readdir("/")} == {"before", "while-away"}
    finally:
        channel.close()
        srv.stop()
        store.close()


@pytest.mark.timeout(30)
def test_no_master_is_eio_after_retry_for(tmp_path):
    channel = MutationChannel(f"127.0.0.1:{free_port('127.0.0.1')}", retry_for=1)
    try:
        started = time.monotonic()
        with pytest.raises(FsError) as e:
            channel.call("mkdir", mkdir("/x"))
        assert e.value.errno == errno.EIO
        assert time.monotonic() - started < 5
    finally:
        channel.close()


@pytest.mark.timeout(30)
def test_close_fails_waiting_calls_at_once():
    channel = MutationChannel(f"127.0.0.1:{free_port('127.0.0.1')}", retry_for=20)
    errors = []

    def waiting():
        try:
            channel.call("mkdir", mkdir("/never"))
        except FsError as e:
            errors.append(e.errno)

    threads = [threading.Thread(target=waiting) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    started = time.monotonic()
    channel.close()
    for t in threads:
        t.join(5)
    assert errors == [errno.EIO] * 3
    assert time.monotonic() - started < 3
