"""kelp fsck and kelp vacuum against real processes: damage a replicated cluster on purpose,
find it, repair it, and compact volumes while readers and writers keep going."""
from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import threading
import time

import grpc
import pytest

from cluster.common import rpc
from cluster.common.errors import FsError
from cluster.common.fid import Fid
from cluster.volume import needle as fmt
from protos import master_pb2, volume_pb2, volume_pb2_grpc
from tests.harness import client_for, kelp, wait_until
from tools import fsck, vacuum


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def volume_stub(cluster, name: str) -> volume_pb2_grpc.VolumeStub:
    return volume_pb2_grpc.VolumeStub(rpc.channel(cluster.nodes[name].grpc_address))


def file_fids(client, path: str) -> list[Fid]:
    return [Fid.parse(c.fid) for c in client.chunks(client.stat(path).ino).chunks]


def needle_offset(dat_dir: str, fid: Fid) -> int:
    """Where the needle's record starts in its .dat (the last index entry for its key)."""
    with open(os.path.join(dat_dir, f"{fid.volume_id}.idx"), "rb") as fh:
        entries = [e for e in fmt.decode_idx(fh.read()) if e.key == fid.key]
    assert entries
    assert not entries[-1].deleted
    return entries[-1].offset


def flip_byte(dat_dir: str, fid: Fid) -> None:
    pos = needle_offset(dat_dir, fid) + fmt.NEEDLE_HEADER_SIZE + 7
    with open(os.path.join(dat_dir, f"{fid.volume_id}.dat"), "r+b") as fh:
        fh.seek(pos)
        b = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([b[0] ^ 0x5A]))


def fsck_cli(cluster, *extra: str):
    r = kelp("fsck", "--master", cluster.master_addr, *extra, timeout=60)
    return r.returncode, r.stdout.decode() + r.stderr.decode()


def read_everything(cluster, files: dict[str, bytes]) -> None:
    client = client_for(cluster, cache_bytes=0)
    try:
        for path, data in files.items():
            assert sha(client.read_all(path)) == sha(data), path
    finally:
        client.close()


@pytest.mark.timeout(150)
def test_fsck_finds_damage_and_repair_restores_every_replica(cluster_factory):
    cluster = cluster_factory(volumes=2)
    v1_dir = cluster.nodes["v1"].data
    # past inline_max (64 KiB): each file has a needle on both servers to damage
    files = {f"/d/f{i}": random.randbytes(random.randint(70_000, 300_000)) for i in range(12)}
    client = client_for(cluster, cache_bytes=0)
    try:
        for path, data in files.items():
            client.upload(io.BytesIO(data), path, replication=2)
        fids = {path: file_fids(client, path) for path in files}
        code, out = fsck_cli(cluster)
        assert code == 0, out
        assert "clean" in out
        code, out = fsck_cli(cluster, "/no/such/dir")
        assert code == 1, out
        assert "/no/such/dir" in out, out
        code, out = fsck_cli(cluster, "relative")
        assert code == 2, out
        # Orphans: needles written straight to both replicas, never committed.
        assigned = client.master.call("Assign", master_pb2.AssignRequest(count=2, replication=2))
    finally:
        client.close()
    orphan_fids = []
    for a in assigned.assignments:
        fid = Fid.parse(a.fid)
        payload = b"orphan " + a.fid.encode()
        for loc in a.replicas:
            volume_pb2_grpc.VolumeStub(rpc.channel(loc.grpc_address)).WriteNeedle(
                volume_pb2.WriteRequest(volume_id=fid.volume_id, key=fid.key, cookie=fid.cookie,
                                        data=payload, crc32c=fmt.crc32c(payload)), timeout=10)
        orphan_fids.append(str(fid))

    # Damage: one needle deleted on v0, one byte flipped in another needle on v1.
    gone, flipped = fids["/d/f3"][0], fids["/d/f7"][0]
    volume_stub(cluster, "v0").DeleteNeedle(volume_pb2.DeleteRequest(
        volume_id=gone.volume_id, key=gone.key, cookie=gone.cookie), timeout=10)
    flip_byte(v1_dir, flipped)

    report = fsck.check(cluster.master_addr)
    assert not report.clean
    damage = {(d.path, d.server, d.status) for d in report.damaged}
    assert damage == {("/d/f3", "v0", "missing"), ("/d/f7", "v1", "crc_bad")}
    assert report.damaged_files == ["/d/f3", "/d/f7"]
    assert sorted(o.fid for o in report.orphans) == sorted(orphan_fids)
    assert report.files == len(files)
    assert not report.lost

    code, out = fsck_cli(cluster, "/d")
    assert code == 1, out
    for word in ("/d/f3", "/d/f7", "v0", "v1", "missing", "crc_bad", orphan_fids[0]):
        assert word in out, (word, out)

    code, out = fsck_cli(cluster, "--repair", "--orphan-min-age", "0")
    assert code == 0, out
    # The reaper deletes the queued orphans from both replicas.
    wait_until(lambda: not fsck.check(cluster.master_addr).orphans, timeout=15,
               what="orphans reaped")
    code, out = fsck_cli(cluster)
    assert code == 0, out

    # Every file reads intact from either replica alone.
    cluster.kill("v0")
    read_everything(cluster, files)
    cluster.start_node("v0")
    cluster.wait_ready(timeout=30)
    cluster.kill("v1")
    read_everything(cluster, files)
    cluster.start_node("v1")
    cluster.wait_ready(timeout=30)

    # A replica's whole volume lost: v1 restarts without the files.
    vids = {f.volume_id for fl in fids.values() for f in fl}
    cluster.stop_node("v1")
    for vid in vids:
        for ext in (".dat", ".idx"):
            os.unlink(os.path.join(v1_dir, f"{vid}{ext}"))
    cluster.start_node("v1")
    cluster.wait_ready(timeout=30)
    wait_until(lambda: fsck.check(cluster.master_addr, orphans=False).under_replicated,
               timeout=10, what="master sees the lost replica")
    code, out = fsck_cli(cluster)
    assert code == 1, out
    assert "under-replicated" in out
    code, out = fsck_cli(cluster, "--repair")
    assert code == 0, out
    assert all(os.path.exists(os.path.join(v1_dir, f"{vid}.dat")) for vid in vids)
    code, out = fsck_cli(cluster)
    assert code == 0, out
    cluster.kill("v0")
    read_everything(cluster, files)


def dat_sizes(cluster, vid: int) -> dict[str, int]:
    return {n: os.path.getsize(os.path.join(cluster.nodes[n].data, f"{vid}.dat"))
            for n in cluster.volume_names()
            if os.path.exists(os.path.join(cluster.nodes[n].data, f"{vid}.dat"))}


@pytest.mark.timeout(150)
def test_vacuum_reclaims_space_while_reading_and_writing(cluster_factory):
    # Small files stay out of the volumes by default (inline): this test is about volumes.
    cluster = cluster_factory(volumes=2, extra_master_args=["--inline-max", "0"])
    client = client_for(cluster, cache_bytes=0)
    files = {f"/v/f{i:03d}": random.randbytes(random.randint(20_000, 200_000))
             for i in range(150)}
    for path, data in files.items():
        client.upload(io.BytesIO(data), path, replication=2)
    vids = {f.volume_id for p in files for f in file_fids(client, p)}
    assert len(vids) == 1
    vid = vids.pop()
    names = sorted(files)
    random.shuffle(names)
    doomed, kept = names[:105], {p: sha(files[p]) for p in names[105:]}

    stop = threading.Event()
    errors: list[str] = []
    written: dict[str, str] = {}
    reads = [0]

    def reader():
        c = client_for(cluster, cache_bytes=0)
        try:
            while not stop.is_set():
                path = random.choice(list(kept))
                try:
                    if sha(c.read_all(path)) != kept[path]:
                        errors.append(f"wrong bytes in {path}")
                except Exception as e:
                    errors.append(f"read {path}: {e!r}")
                reads[0] += 1
        finally:
            c.close()

    def writer():
        c = client_for(cluster, cache_bytes=0)
        i = 0
        try:
            while not stop.is_set():
                data = random.randbytes(random.randint(1000, 50_000))
                path = f"/v/new{i:04d}"
                try:
                    c.upload(io.BytesIO(data), path, replication=2)
                    written[path] = sha(data)
                except Exception as e:
                    errors.append(f"write {path}: {e!r}")
                i += 1
        finally:
            c.close()

    threads = [threading.Thread(target=reader), threading.Thread(target=reader),
               threading.Thread(target=writer)]
    for t in threads:
        t.start()
    try:
        for path in doomed:
            client.remove(path)
        wait_until(lambda: client.master.status().pending_deletions == 0, timeout=20,
                   what="reaper done")
        before = dat_sizes(cluster, vid)
        started = time.monotonic()
        rows = vacuum.vacuum(cluster.master_addr, threshold=0.3)
        took = time.monotonic() - started
        after = dat_sizes(cluster, vid)
        time.sleep(0.5)   # keep reading and writing on the compacted files for a moment
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    mine = [r for r in rows if r.volume_id == vid]
    assert sorted(r.server for r in mine) == ["v0", "v1"], rows
    assert all(not r.error and r.garbage_ratio >= 0.3 for r in mine), rows
    for r in mine:
        # What was garbage when the vacuum looked is gone (new writes may have added some).
        assert r.freed >= 0.8 * r.garbage_ratio * r.size_before, r
        assert after[r.server] < 0.7 * before[r.server], (before, after)
    print(f"vacuum: {before} -> {after} in {took:.2f}s; rows {rows}; reads {reads[0]}, "
          f"writes {len(written)}")
    assert not errors, errors[:5]
    assert reads[0] > 0
    assert written
    for path, digest in list(kept.items()) + list(written.items()):
        assert sha(client.read_all(path)) == digest, path
    for path in doomed:
        with pytest.raises(FsError) as info:
            client.stat(path)
        assert info.value.errno == errno.ENOENT, path

    # Nothing past the threshold any more: the CLI says so and exits 0.
    r = kelp("vacuum", "--threshold", "0.9", "--master", cluster.master_addr)
    assert r.returncode == 0, r.stderr
    assert b"no volume" in r.stdout
    r = kelp("vacuum", "--threshold", "1.5", "--master", cluster.master_addr)
    assert r.returncode == 2
    client.close()
    code, out = fsck_cli(cluster)
    assert code == 0, out

    # Bad input gets a status code, not a crash.
    v0 = volume_stub(cluster, "v0")
    bad = [
        (v0.CheckNeedles, volume_pb2.CheckNeedlesRequest(volume_id=vid),
         grpc.StatusCode.INVALID_ARGUMENT),
        (v0.CheckNeedles, volume_pb2.CheckNeedlesRequest(
            volume_id=999, needles=[volume_pb2.NeedleRef(key=1)]), grpc.StatusCode.NOT_FOUND),
        (v0.CopyNeedles, volume_pb2.CopyNeedlesRequest(
            volume_id=vid, source="nonsense", needles=[volume_pb2.NeedleRef(key=1)]),
         grpc.StatusCode.INVALID_ARGUMENT),
        (v0.CopyVolume, volume_pb2.CopyVolumeRequest(
            volume_id=vid, replication=2, source=cluster.nodes["v0"].grpc_address),
         grpc.StatusCode.INVALID_ARGUMENT),
        (v0.Compact, volume_pb2.VolumeRef(volume_id=999), grpc.StatusCode.NOT_FOUND),
    ]
    from protos import master_pb2_grpc
    m = master_pb2_grpc.MasterStub(rpc.channel(cluster.master_addr))
    bad += [
        (m.QueueOrphans, master_pb2.QueueOrphansRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (m.QueueOrphans, master_pb2.QueueOrphansRequest(fids=["x"]),
         grpc.StatusCode.INVALID_ARGUMENT),
        (m.Vacuum, master_pb2.VacuumRequest(threshold=7), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for method, request, code in bad:
        with pytest.raises(grpc.RpcError) as e:
            method(request, timeout=10)
        assert e.value.code() == code, (request, e.value.details())


@pytest.mark.timeout(90)
def test_master_vacuums_on_its_own(cluster_factory):
    cluster = cluster_factory(volumes=1, extra_master_args=["--vacuum-interval", "1",
                                                            "--inline-max", "0"])
    client = client_for(cluster, cache_bytes=0)
    try:
        files = {f"/a/f{i}": random.randbytes(30_000) for i in range(30)}
        for path, data in files.items():
            client.upload(io.BytesIO(data), path, replication=1)
        vid = file_fids(client, "/a/f0")[0].volume_id
        for i in range(25):
            client.remove(f"/a/f{i}")
        full = dat_sizes(cluster, vid)["v0"]
        wait_until(lambda: dat_sizes(cluster, vid)["v0"] < 0.4 * full, timeout=20,
                   what="automatic vacuum")

        def revision():
            st = client.master.status()
            return [v.compact_revision for s in st.servers for v in s.volumes
                    if v.volume_id == vid]
        wait_until(lambda: revision() and revision()[0] >= 1, timeout=5, what="heartbeat")
        for i in range(25, 30):
            assert client.read_all(f"/a/f{i}") == files[f"/a/f{i}"]
    finally:
        client.close()
