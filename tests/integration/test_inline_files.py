"""Small files kept inline by the master, through real mounts and the CLI.

A file that stays within the master's inline_max keeps its bytes in the metadata store: its
create + write + close is answered by the master alone (no gateway, no volume server: the test
stops them all and small files still work), and it reads back from any mount. A file that
grows past the limit moves its bytes into chunks in the commit that records them; truncate,
hard links, rename, xattrs, `kelp ls/download/upload/fsck` all see the same bytes.
"""
from __future__ import annotations

import os

import pytest

from tests.harness import Mount, kelp
from tests.integration.mountutil import (
    assert_clean_log,
    needs_fuse,
    sh,
    start_cluster_and_mount,
    stop_all,
)

pytestmark = [pytest.mark.mount, needs_fuse]
LIMIT = 65536


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cluster, a = start_cluster_and_mount(tmp_path_factory, "inline")
    try:
        b = Mount(cluster, a.mountpoint.parent / "b").start()
    except BaseException:
        stop_all(cluster, a)
        raise
    try:
        yield {"cluster": cluster, "a": a.mountpoint, "b": b.mountpoint}
    finally:
        stop_all(cluster, a, b)
    assert_clean_log(a, b)


def listing(env, path: str) -> dict[str, list[str]]:
    out = kelp("ls", "-l", path, "--master", env["cluster"].master_addr, check=True)
    rows = {}
    for line in out.stdout.decode().splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


@pytest.mark.timeout(120)
def test_small_files_are_inline_and_read_back_everywhere(env):
    a, b = env["a"], env["b"]
    (a / "d").mkdir()
    files = {"empty": b"", "one": b"1", "4k": os.urandom(4096), "limit": os.urandom(LIMIT),
             "over": os.urandom(LIMIT + 1)}
    for name, data in files.items():
        (a / "d" / name).write_bytes(data)
    for name, data in files.items():
        assert (b / "d" / name).read_bytes() == data, name
    rows = listing(env, "/d")
    assert rows["4k"][3] == "inline", rows
    assert rows["limit"][3] == "inline", rows
    assert rows["over"][3] == "1", rows   # one chunk


@pytest.mark.timeout(180)
def test_small_files_need_no_volume_server_and_no_gateway(env):
    cluster, a, b = env["cluster"], env["a"], env["b"]
    stopped = [n for n in cluster.nodes if cluster.nodes[n].kind in ("volume", "gateway")]
    for name in stopped:
        cluster.stop_node(name)
    try:
        (a / "alone.txt").write_bytes(b"written with only the master up\n")
        with open(a / "alone.txt", "ab") as fh:
            fh.write(b"and appended\n")
        assert (b / "alone.txt").read_bytes() == \
            b"written with only the master up\nand appended\n"
        os.truncate(a / "alone.txt", 7)
        assert (b / "alone.txt").read_bytes() == b"written"
    finally:
        for name in stopped:
            cluster.start_node(name)
        cluster.wait_ready(timeout=40)


@pytest.mark.timeout(120)
def test_growing_past_the_limit_moves_the_bytes_into_chunks(env):
    a, b = env["a"], env["b"]
    head = os.urandom(1000)
    (a / "grows").write_bytes(head)
    tail = os.urandom(3 * LIMIT)
    with open(a / "grows", "ab") as fh:
        fh.write(tail)
    assert (b / "grows").read_bytes() == head + tail
    assert listing(env, "/")["grows"][3] != "inline"
    # written in the middle, past the end, truncated down and up: as a local file would
    with open(a / "grows", "r+b") as fh:
        fh.seek(500)
        fh.write(b"MIDDLE")
    os.truncate(a / "grows", 800)
    os.truncate(a / "grows", 900)
    assert (b / "grows").read_bytes() == head[:500] + b"MIDDLE" + head[506:800] + bytes(100)


@pytest.mark.timeout(120)
def test_inline_files_under_links_renames_xattrs_truncate_and_tools(env, tmp_path):
    a, b = env["a"], env["b"]
    master = env["cluster"].master_addr
    (a / "t").mkdir()
    (a / "t" / "f").write_bytes(b"0123456789")
    os.link(a / "t" / "f", a / "t" / "hard")
    os.rename(a / "t" / "f", a / "t" / "renamed")
    os.setxattr(a / "t" / "renamed", "user.k", b"v")
    with open(a / "t" / "hard", "r+b") as fh:
        fh.seek(2)
        fh.write(b"ab")
    assert (b / "t" / "renamed").read_bytes() == b"01ab456789"
    assert os.getxattr(b / "t" / "renamed", "user.k") == b"v"
    os.truncate(a / "t" / "renamed", 100_000)             # a grow past the limit: zeros
    assert (b / "t" / "hard").read_bytes() == b"01ab456789" + bytes(100_000 - 10)
    out = tmp_path / "out.bin"
    kelp("download", "/t/hard", "-o", str(out), "--master", master, check=True)
    assert out.read_bytes() == b"01ab456789" + bytes(100_000 - 10)
    small = tmp_path / "small.txt"
    small.write_bytes(b"uploaded small\n")
    kelp("upload", "-p", str(small), "--to", "/t", "--master", master, check=True)
    assert (b / "t" / "small.txt").read_bytes() == b"uploaded small\n"
    assert listing(env, "/t")["small.txt"][3] == "inline"
    sh(f"cp -r {a}/t {a}/t2 && diff -r {a}/t {b}/t2")
    fsck = kelp("fsck", "--master", master, timeout=120)
    assert fsck.returncode == 0, fsck.stdout.decode() + fsck.stderr.decode()
    kelp("rm", "-r", "/t2", "--master", master, check=True)
    assert "t2" not in listing(env, "/")
    # The CLI's removal went to the master over gRPC, not through a mount: it breaks mount b's
    # callbacks (b just listed t2 for diff) before it is acknowledged, so b sees it at once.
    assert not (b / "t2").exists()


@pytest.mark.timeout(120)
def test_fsck_checks_inline_bytes_and_reports_a_damaged_one(env):
    import sqlite3
    a = env["a"]
    master = env["cluster"].master_addr
    (a / "fsck").mkdir()
    (a / "fsck" / "good").write_bytes(b"intact")
    (a / "fsck" / "bad").write_bytes(b"will rot")
    ok = kelp("fsck", "/fsck", "--master", master, timeout=120)
    assert ok.returncode == 0, ok.stdout.decode()
    assert "inline" in ok.stdout.decode(), ok.stdout.decode()
    # flip a byte of the stored copy behind the master's back (as a bad disk would)
    db = sqlite3.connect(os.path.join(env["cluster"].nodes["m0"].data, "meta.db"), timeout=30)
    try:
        db.execute("UPDATE inodes SET inline_data = CAST('will rop' AS BLOB)"
                   " WHERE CAST(inline_data AS TEXT) = 'will rot'")
        db.commit()
    finally:
        db.close()
    bad = kelp("fsck", "/fsck", "--master", master, timeout=120)
    assert bad.returncode != 0, bad.stdout.decode()
    assert "/fsck/bad" in bad.stdout.decode() + bad.stderr.decode()
    # never the wrong bytes: a read fails (the CLI's, so the mounts' logs stay clean)
    out = kelp("download", "/fsck/bad", "-o", "-", "--master", master)
    assert out.returncode == 1, out
    assert out.stdout == b"", out
    assert "damaged" in out.stderr.decode()
    assert "CRC32C" in out.stderr.decode()
    assert (env["b"] / "fsck" / "good").read_bytes() == b"intact"


@pytest.mark.timeout(120)
def test_a_handle_that_did_not_see_the_file_go_inline_keeps_its_bytes(env):
    """Two descriptors of one file (fsx found this): one makes the file inline, then the
    other, opened before, writes past inline_max; the inline bytes must survive."""
    a, b = env["a"], env["b"]
    fd_old = os.open(a / "two-handles", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with open(a / "two-handles", "r+b") as fh:
            fh.write(b"first")                       # committed inline at close
        big = os.urandom(LIMIT + 100)
        os.pwrite(fd_old, big, 10)                   # past the limit, on the older descriptor
        os.fsync(fd_old)
    finally:
        os.close(fd_old)
    assert (b / "two-handles").read_bytes() == b"first" + bytes(5) + big
    # and across mounts: b made it inline, a's descriptor did not hear of it
    fd_a = os.open(a / "across", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        (b / "across").write_bytes(b"from b")
        os.pwrite(fd_a, big, 6)
        os.close(fd_a)
        fd_a = -1
    finally:
        if fd_a >= 0:
            os.close(fd_a)
    assert (b / "across").read_bytes() == b"from b" + big

