"""The cluster core through real processes: upload/download round trips, placement,
replication and fail-over, restarts, torn tails, corruption, the reaper, bad input."""
from __future__ import annotations

import hashlib
import io
import os
import random
import threading
import time

import grpc
import pytest
import zmq

from cluster.common import rpc
from cluster.common.fid import Fid
from fusefs.master_client import MasterClient
from protos import gateway_pb2, master_pb2, master_pb2_grpc, volume_pb2, volume_pb2_grpc
from tests.harness import client_for, kelp, wait_until

CHUNK = 4 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_servers(cluster, path: str) -> list[set[str]]:
    """For each chunk of `path`, the names of the volume servers holding it."""
    client = client_for(cluster)
    try:
        info = client.chunks(client.stat(path).ino)
        vids = sorted({Fid.parse(c.fid).volume_id for c in info.chunks})
        locs = client.master.call("LookupVolume", master_pb2.LookupRequest(volume_ids=vids))
        by_vid = {loc.volume_id: {r.name for r in loc.replicas} for loc in locs.locations}
        return [by_vid.get(Fid.parse(c.fid).volume_id, set()) for c in info.chunks]
    finally:
        client.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("replication", [1, 2])
def test_round_trip_sizes(cluster, replication):
    client = client_for(cluster)
    try:
        for size in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17):
            data = random.randbytes(size)
            client.upload(io.BytesIO(data), f"/r{replication}/f{size}", replication=replication)
            assert sha(client.read_all(f"/r{replication}/f{size}")) == sha(data), size
            assert client.stat(f"/r{replication}/f{size}").size == size
            assert client.stat(f"/r{replication}/f{size}").replication in (0, replication)
        # Replacing a file is atomic: the new content wholly, never a mix.
        client.upload(io.BytesIO(b"short"), f"/r{replication}/f{3 * CHUNK + 17}")
        assert client.read_all(f"/r{replication}/f{3 * CHUNK + 17}") == b"short"
    finally:
        client.close()


@pytest.mark.timeout(300)
@pytest.mark.slow
@pytest.mark.parametrize("replication", [1, 2])
def test_100mib_through_the_cli(cluster, tmp_path, replication):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(100 << 20))
    kelp("upload", "-p", str(src), "--replication", str(replication), "--master",
         cluster.master_addr, check=True)
    out = tmp_path / "back.bin"
    kelp("download", "/big.bin", "-o", str(out), "--master", cluster.master_addr, check=True)
    assert sha(out.read_bytes()) == sha(src.read_bytes())
    servers = chunk_servers(cluster, "/big.bin")
    assert len(servers) == 25
    assert all(len(s) == replication for s in servers)


@pytest.mark.timeout(120)
def test_two_uploads_through_the_original_interface_land_on_two_servers(cluster_factory,
                                                                        tmp_path):
    cluster = cluster_factory(volumes=2)
    for name in ("test1.txt", "test2.txt"):
        # past the master's inline_max (64 KiB), so the bytes go to a volume server
        (tmp_path / name).write_text(f"hello from {name}\n" * 5000)
        # The original `upload -p <file> --master <ip:port> -n <name>` interface
        kelp("upload", "-p", str(tmp_path / name), "--master", cluster.master_addr, "-n", "m0",
             check=True)
    s1, s2 = chunk_servers(cluster, "/test1.txt")[0], chunk_servers(cluster, "/test2.txt")[0]
    assert len(s1) == len(s2) == 1
    assert s1 != s2
    listing = kelp("ls", "-p", "/", "--master", cluster.master_addr, "-n", "m0", check=True)
    assert b"test1.txt" in listing.stdout
    assert b"test2.txt" in listing.stdout
    wrong = kelp("ls", "-p", "/", "--master", cluster.master_addr, "-n", "other")
    assert wrong.returncode == 1
    assert b"named 'm0'" in wrong.stderr


@pytest.mark.timeout(180)
def test_replication_two_survives_a_killed_server(cluster, tmp_path):
    client = client_for(cluster)
    files = {f"/rep/{i}": random.randbytes(random.choice([10, 70_000, CHUNK + 5]))
             for i in range(8)}
    try:
        for path, data in files.items():
            client.upload(io.BytesIO(data), path, replication=2)
    finally:
        client.close()
    holders = [s for p in files for s in chunk_servers(cluster, p)]
    assert all(len(s) == 2 for s in holders)
    victim = max(cluster.volume_names(), key=lambda n: sum(n in s for s in holders))
    cluster.kill(victim)
    client = client_for(cluster)
    try:
        for path, data in files.items():
            assert sha(client.read_all(path)) == sha(data), path
    finally:
        client.close()
    # Two of three servers gone: replication 2 cannot be met, and upload says so.
    others = [n for n in cluster.volume_names() if n != victim]
    cluster.kill(others[0])
    mc = MasterClient(cluster.master_addr)
    wait_until(lambda: sum(s.alive for s in mc.status().servers) == 1, timeout=20,
               what="the master to notice the dead servers")
    mc.close()
    f = tmp_path / "x.bin"
    f.write_bytes(b"x" * 100_000)   # past inline_max: it needs volume servers
    res = kelp("upload", "-p", str(f), "--replication", "2", "--master", cluster.master_addr)
    assert res.returncode == 1
    assert b"Traceback" not in res.stderr
    assert b"replication" in res.stderr.lower() or b"live" in res.stderr.lower(), res.stderr


@pytest.mark.timeout(180)
def test_master_sigkill_and_restart_keeps_everything(cluster):
    client = client_for(cluster)
    files = {f"/m/{i}": random.randbytes(i * 1000 + 1) for i in range(20)}
    try:
        for path, data in files.items():
            client.upload(io.BytesIO(data), path)
    finally:
        client.close()
    mc = MasterClient(cluster.master_addr)
    ids_before = {s.name: s.server_id for s in mc.status().servers}
    mc.close()
    cluster.kill("m0")
    cluster.start_node("m0")
    mc = MasterClient(cluster.master_addr, retry_for=20)
    try:
        wait_until(lambda: len([s for s in mc.status().servers if s.alive]) == 3, timeout=15,
                   what="volume servers to re-register")
        assert {s.name: s.server_id for s in mc.status().servers} == ids_before
        names = sorted(e.name for e in mc.readdir("/m"))
        assert names == sorted(str(i) for i in range(20))
    finally:
        mc.close()
    client = client_for(cluster)
    try:
        for path, data in files.items():
            assert client.read_all(path) == data
        client.upload(io.BytesIO(b"after restart"), "/m/new")  # fresh keys, no collisions
        assert client.read_all("/m/new") == b"after restart"
        for path, data in files.items():
            assert client.read_all(path) == data
    finally:
        client.close()


@pytest.mark.timeout(240)
def test_volume_sigkill_mid_upload_then_restart(cluster_factory):
    cluster = cluster_factory(volumes=1)
    client = client_for(cluster)
    committed = {}
    try:
        for i in range(10):
            data = random.randbytes(50_000 + i)
            client.upload(io.BytesIO(data), f"/v/{i}")
            committed[f"/v/{i}"] = data
        big = random.randbytes(40 * CHUNK)
        errors = []

        def writer():
            try:
                client.upload(io.BytesIO(big), "/v/big")
            except Exception as e:
                errors.append(e)

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.8)
        cluster.kill("v0")
        t.join(timeout=120)
        assert not t.is_alive()
    finally:
        client.close()
    # A torn needle at the tail, as a crash in the middle of an append leaves it.
    vdir = cluster.nodes["v0"].data
    dats = [os.path.join(vdir, f) for f in os.listdir(vdir) if f.endswith(".dat")]
    with open(max(dats, key=os.path.getsize), "ab") as fh:
        fh.write(b"\x01\x02\x03\x04" + b"\xff" * 1000)
    cluster.start_node("v0")
    cluster.wait_ready(timeout=30)
    client = client_for(cluster)
    try:
        for path, data in committed.items():
            assert client.read_all(path) == data
        if not errors:  # the upload won the race: then it must be whole
            assert sha(client.read_all("/v/big")) == sha(big)
        client.upload(io.BytesIO(b"still writable"), "/v/after")
        assert client.read_all("/v/after") == b"still writable"
    finally:
        client.close()


def _flip_in_dat(vdir: str, needle: bytes) -> bool:
    for f in os.listdir(vdir):
        if not f.endswith(".dat"):
            continue
        path = os.path.join(vdir, f)
        with open(path, "rb") as fh:
            blob = fh.read()
        at = blob.find(needle)
        if at >= 0:
            with open(path, "r+b") as fh:
                fh.seek(at + 10)
                fh.write(bytes([blob[at + 10] ^ 0xFF]))
            return True
    return False


@pytest.mark.timeout(120)
def test_flipped_byte_is_detected_and_the_other_replica_serves(cluster, tmp_path):
    data = random.randbytes(300_000)
    client = client_for(cluster)
    try:
        client.upload(io.BytesIO(data), "/c/file", replication=2)
    finally:
        client.close()
    holders = chunk_servers(cluster, "/c/file")[0]
    first, second = sorted(holders)
    assert _flip_in_dat(cluster.nodes[first].data, data[5000:5064])
    client = client_for(cluster)
    try:
        assert client.read_all("/c/file") == data
        # The damaged replica itself answers DATA_LOSS, never the bad bytes.
        fid = Fid.parse(client.chunks(client.stat("/c/file").ino).chunks[0].fid)
        with rpc.channel(cluster.nodes[first].grpc_address) as ch:
            with pytest.raises(grpc.RpcError) as exc:
                volume_pb2_grpc.VolumeStub(ch).ReadNeedle(volume_pb2.ReadRequest(
                    volume_id=fid.volume_id, key=fid.key, cookie=fid.cookie), timeout=10)
            assert exc.value.code() == grpc.StatusCode.DATA_LOSS
    finally:
        client.close()
    assert _flip_in_dat(cluster.nodes[second].data, data[5000:5064])
    out = tmp_path / "out"
    res = kelp("download", "/c/file", "-o", str(out), "--master", cluster.master_addr)
    assert res.returncode == 1
    assert b"/c/file" in res.stderr
    assert b"damaged" in res.stderr
    assert b"Traceback" not in res.stderr
    assert not out.exists()


@pytest.mark.timeout(120)
def test_reaper_releases_deleted_needles(cluster):
    client = client_for(cluster)
    try:
        client.upload(io.BytesIO(random.randbytes(CHUNK * 2 + 3)), "/d/a")
        fids = [Fid.parse(c.fid) for c in client.chunks(client.stat("/d/a").ino).chunks]
        locs = client.master.call("LookupVolume", master_pb2.LookupRequest(
            volume_ids=sorted({f.volume_id for f in fids})))
        where = {loc.volume_id: [r.grpc_address for r in loc.replicas] for loc in locs.locations}
        client.remove("/d/a")
    finally:
        client.close()

    def live_keys(fid):
        keys = set()
        for address in where[fid.volume_id]:
            with rpc.channel(address) as ch:
                reply = volume_pb2_grpc.VolumeStub(ch).ListNeedles(
                    volume_pb2.VolumeRef(volume_id=fid.volume_id), timeout=10)
                keys |= {n.key for n in reply.needles}
        return keys

    wait_until(lambda: all(f.key not in live_keys(f) for f in fids), timeout=30,
               what="the reaper to delete the needles")
    res = kelp("rm", "/d/a", "--master", cluster.master_addr)
    assert res.returncode == 1
    assert b"Traceback" not in res.stderr


@pytest.mark.timeout(120)
def test_malformed_frames_and_requests_get_errors_and_servers_keep_serving(cluster):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(f"tcp://{cluster.gateway_addr}")
    good_write = gateway_pb2.Request(request_id=9, write=gateway_pb2.Write(
        ino=12345, file_offset=0, length=1000, crc32c=0)).SerializeToString()
    cases = [
        [b""],                                                       # empty frame
        [gateway_pb2.Request(request_id=3).SerializeToString()[:1] + b"\xff\xff"],  # truncated
        [b"\x08\x05\xba\x01\x02\x03\x04"],                           # unknown field/type
        [gateway_pb2.Request(request_id=4).SerializeToString()],     # no body
        [good_write, b"x" * 10],                                     # declared length != payload
        [gateway_pb2.Request(request_id=5, write=gateway_pb2.Write(
            ino=1, length=2**31)).SerializeToString(), b""],         # oversized declared length
        [b"garbage", b"more", b"frames"],
    ]
    try:
        for frames in cases:
            sock.send_multipart(frames)
            reply = gateway_pb2.Reply()
            reply.ParseFromString(sock.recv_multipart()[-1])
            assert reply.WhichOneof("body") == "error", frames
            assert reply.error.errno_name == "EINVAL", reply
    finally:
        sock.close()

    ch = rpc.channel(cluster.master_addr)
    stub = master_pb2_grpc.MasterStub(ch)
    bad = [
        ("Create", master_pb2.CreateRequest(path="/" + "a" * 256), "ENAMETOOLONG"),
        ("Create", master_pb2.CreateRequest(path="/a\0b"), "EINVAL"),
        ("Mkdir", master_pb2.MkdirRequest(path="relative/dir"), "EINVAL"),
        ("Rename", master_pb2.RenameRequest(old_path="/", new_path="/x"), None),
        ("Assign", master_pb2.AssignRequest(count=0), None),
        ("Assign", master_pb2.AssignRequest(count=1, replication=99), None),
    ]
    try:
        for method, request, prefix in bad:
            with pytest.raises(grpc.RpcError) as exc:
                getattr(stub, method)(request, timeout=10)
            assert exc.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                        grpc.StatusCode.FAILED_PRECONDITION), (method, exc.value)
            if prefix:
                assert exc.value.details().startswith(prefix), exc.value.details()
        with pytest.raises(grpc.RpcError) as exc:
            stub.GetAttr(master_pb2.PathRequest(path="/nope"), timeout=10)
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        ch.close()

    client = client_for(cluster)
    try:
        # past inline_max, so it has a needle on a volume server to abuse
        client.upload(io.BytesIO(b"ok after abuse" * 5000), "/ok")
        fid = Fid.parse(client.chunks(client.stat("/ok").ino).chunks[0].fid)
        vaddr = chunk_servers(cluster, "/ok")[0]
        address = cluster.nodes[sorted(vaddr)[0]].grpc_address
        with rpc.channel(address) as vch:
            vstub = volume_pb2_grpc.VolumeStub(vch)
            for req, code in [
                (volume_pb2.ReadRequest(volume_id=fid.volume_id, key=fid.key,
                                        cookie=fid.cookie ^ 1), grpc.StatusCode.PERMISSION_DENIED),
                (volume_pb2.ReadRequest(volume_id=999999, key=1, cookie=1),
                 grpc.StatusCode.NOT_FOUND),
                (volume_pb2.ReadRequest(volume_id=fid.volume_id, key=fid.key + 999_999,
                                        cookie=fid.cookie), grpc.StatusCode.NOT_FOUND),
            ]:
                with pytest.raises(grpc.RpcError) as exc:
                    vstub.ReadNeedle(req, timeout=10)
                assert exc.value.code() == code
            with pytest.raises(grpc.RpcError) as exc:
                vstub.DeleteNeedle(volume_pb2.DeleteRequest(
                    volume_id=fid.volume_id, key=fid.key, cookie=fid.cookie ^ 1), timeout=10)
            assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.RpcError) as exc:
                vstub.WriteNeedle(volume_pb2.WriteRequest(volume_id=fid.volume_id, key=77,
                                                          cookie=1, data=b"abc", crc32c=1),
                                  timeout=10)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client.read_all("/ok") == b"ok after abuse" * 5000
    finally:
        client.close()


@pytest.mark.timeout(60)
def test_cli_user_mistakes_are_one_line_and_an_exit_code(cluster, tmp_path):
    from tools.local_cluster import free_port
    nowhere = f"127.0.0.1:{free_port()}"
    for args, code in [
        (["ls", "/", "--master", nowhere], 1),
        (["upload", "-p", str(tmp_path / "missing"), "--master", cluster.master_addr], 1),
        (["download", "/missing", "-o", str(tmp_path / "o"), "--master", cluster.master_addr], 1),
        (["ls", "-l", "/missing", "--master", cluster.master_addr], 1),
        (["upload", "--bogus-flag"], 2),
        (["status", "--master", nowhere], 1),
    ]:
        res = kelp(*args)
        assert res.returncode == code, (args, res.stderr)
        assert b"Traceback" not in res.stderr
        assert res.stderr.strip(), args
        if code == 1:
            assert len(res.stderr.decode().strip().splitlines()) == 1, res.stderr
    st = kelp("status", "--master", cluster.master_addr, check=True)
    for name in (b"m0", b"v0", b"v1", b"v2", b"g0"):
        assert name in st.stdout
