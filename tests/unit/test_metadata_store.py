"""Contract suite for MetadataStore: every implementation must pass it. Here it runs against
the SQLite store; tests/integration/test_pg_store.py runs the same tests against a real
PostgreSQL server (a unit test starts no process), by giving `open_store` another meaning.

`open_store()` opens the database a test works on, again and again (a restart is a second
open); the `store` fixture is its first open. Tests of one backend's own files (SQLite's
schema upgrades) take SQLiteStore directly and are not part of the contract: their names say
`sqlite`."""
from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
from pathlib import Path

import pytest

from cluster.common.chunkmap import Piece
from cluster.common.errors import FsError
from cluster.master import schema
from cluster.master.sequencer import Sequencer, needle_keys
from cluster.master.sqlite_store import SQLiteStore
from cluster.master.store import XATTR_CREATE, XATTR_REPLACE, MetadataStore


@pytest.fixture
def open_store(tmp_path):
    """Opens the test's SQLite database (the same file each time)."""
    return lambda: SQLiteStore(str(tmp_path / "meta.db"), synchronous="NORMAL")


@pytest.fixture
def store(open_store):
    s = open_store()
    yield s
    s.close()


def fid(vid: int, key: int) -> str:
    return f"{vid},{key:x}{0x1234abcd:08x}"


def piece(off: int, length: int, key: int, noff: int = 0, nsize: int | None = None) -> Piece:
    return Piece(off, length, fid(1, key), noff, nsize if nsize is not None else noff + length, 7)


def errno_of(fn, *args, **kwargs) -> int:
    """The errno of the FsError that fn(*args, **kwargs) must raise."""
    with pytest.raises(FsError) as info:
        fn(*args, **kwargs)
    return info.value.errno


def queued(store) -> set[str]:
    return {f for f, _ in store.due_deletions(10_000)}


T = pytest.mark.timeout(20)


# ---------------------------------------------------------------- basic namespace

@T
def test_root(store):
    a = store.getattr("/")
    assert a.ino == 1
    assert a.mode == 0o40755
    assert a.nlink == 2
    assert store.readdir("/") == []


@T
def test_create_getattr_readdir(store):
    a = store.create("/f", 0o644, 5, 6)
    assert stat.S_ISREG(a.mode)
    assert a.mode & 0o7777 == 0o644
    assert (a.uid, a.gid, a.size, a.nlink) == (5, 6, 0, 1)
    assert store.getattr("/f") == a
    assert store.getattr_ino(a.ino) == a
    [(name, attr)] = store.readdir("/")
    assert name == "f"
    assert attr == a


@T
def test_create_existing(store):
    a = store.create("/f", 0o644)
    store.commit(a.ino, [piece(0, 10, 1)], 10)
    again = store.create("/f", 0o600)
    assert again.ino == a.ino
    assert again.size == 10
    assert errno_of(store.create, "/f", 0o644, exclusive=True) == errno.EEXIST
    t = store.create("/f", 0o644, truncate=True)
    assert t.size == 0
    assert store.get_chunks(a.ino)[1] == []
    assert fid(1, 1) in queued(store)
    store.mkdir("/d", 0o755)
    assert errno_of(store.create, "/d", 0o644) == errno.EISDIR


@T
def test_missing_and_not_dir(store):
    assert errno_of(store.getattr, "/nope") == errno.ENOENT
    store.create("/f", 0o644)
    assert errno_of(store.getattr, "/f/x") == errno.ENOTDIR
    assert errno_of(store.create, "/f/x", 0o644) == errno.ENOTDIR
    assert errno_of(store.create, "/nodir/x", 0o644) == errno.ENOENT
    assert errno_of(store.readdir, "/f") == errno.ENOTDIR
    assert errno_of(store.getattr_ino, 999) == errno.ENOENT


@T
def test_walk_gives_the_attributes_along_a_path(store):
    store.mkdir("/d", 0o700, 5, 6)
    store.mkdir("/d/e", 0o755)
    f = store.create("/d/e/f", 0o600, 7, 8)
    root, d, e = store.getattr("/"), store.getattr("/d"), store.getattr("/d/e")
    assert store.walk("/") == [root]
    assert store.walk("/d/e/f") == [root, d, e, f]
    assert store.walk("//d//e/") == [root, d, e]
    assert store.walk("/d/nope/f") == [root, d]          # stops at the missing name
    assert store.walk("/d/e/f/g/h") == [root, d, e, f]    # and after a non-directory
    assert errno_of(store.walk, "relative") == errno.EINVAL
    # The interface's own (slow) default answers the same.
    for path in ("/", "/d/e/f", "/d/nope/f", "/d/e/f/g/h"):
        assert MetadataStore.walk(store, path) == store.walk(path)


@pytest.mark.parametrize(("path", "code"), [
    ("relative", errno.EINVAL),
    ("/a\0b", errno.EINVAL),
    ("/a/./b", errno.EINVAL),
    ("/a/../b", errno.EINVAL),
    ("/" + "x" * 256, errno.ENAMETOOLONG),
    ("/" + "é" * 128, errno.ENAMETOOLONG),  # 256 bytes in UTF-8
])
@T
def test_bad_paths(store, path, code):
    assert errno_of(store.create, path, 0o644) == code
    assert store.readdir("/") == []


@T
def test_name_of_255_bytes_ok(store):
    store.create("/" + "x" * 255, 0o644)
    store.create("//a//", 0o644)  # empty components are ignored
    assert [n for n, _ in store.readdir("/")] == ["a", "x" * 255]


@T
def test_mkdir_nlink_and_parents(store):
    d = store.mkdir("/d", 0o750)
    assert stat.S_ISDIR(d.mode)
    assert d.mode & 0o7777 == 0o750
    assert d.nlink == 2
    assert store.getattr("/").nlink == 3
    store.mkdir("/d/e", 0o755)
    assert store.getattr("/d").nlink == 3
    assert errno_of(store.mkdir, "/d", 0o755) == errno.EEXIST
    assert errno_of(store.mkdir, "/x/y", 0o755) == errno.ENOENT
    p = store.mkdir("/x/y/z", 0o755, parents=True)
    assert store.getattr("/x/y/z") == p
    assert store.mkdir("/x/y", 0o755, parents=True).ino == store.getattr("/x/y").ino
    store.create("/x/f", 0o644)
    assert errno_of(store.mkdir, "/x/f/g", 0o755, parents=True) == errno.ENOTDIR


@T
def test_parent_times_change(store):
    root = store.getattr("/")
    store.create("/f", 0o644)
    after = store.getattr("/")
    assert after.mtime_ns >= root.mtime_ns
    assert after.ctime_ns >= root.ctime_ns
    assert after.mtime_ns > root.mtime_ns or after.mtime_ns == root.mtime_ns  # clock may tie
    before = store.getattr("/")
    store.unlink("/f")
    assert store.getattr("/").mtime_ns >= before.mtime_ns


@T
def test_readdir_paging_sorted_bytewise(store):
    names = [f"n{i:04d}" for i in range(2000)] + ["Z", "a", "é", "b"]
    store.mkdir("/big", 0o755)
    for n in names:
        store.create(f"/big/{n}", 0o644)
    got, after = [], ""
    while True:
        page = store.readdir("/big", after, 333)
        got += [n for n, _ in page]
        if len(page) < 333:
            break
        after = page[-1][0]
    assert got == sorted(names, key=lambda s: s.encode())
    assert all(a.is_file for _, a in store.readdir("/big", "", 5))


# ---------------------------------------------------------------- unlink / rmdir

@T
def test_unlink_queues_fids(store):
    a = store.create("/f", 0o644)
    store.commit(a.ino, [piece(0, 10, 1), piece(10, 10, 2)], 20)
    assert store.unlink("/f") == a.ino
    with pytest.raises(FsError):
        store.getattr_ino(a.ino)
    assert queued(store) == {fid(1, 1), fid(1, 2)}
    assert errno_of(store.unlink, "/f") == errno.ENOENT
    store.mkdir("/d", 0o755)
    assert errno_of(store.unlink, "/d") == errno.EISDIR


@T
def test_get_chunks_at_resolves_the_name_now(store):
    store.mkdir("/d", 0o755)
    old = store.create("/d/f", 0o644)
    store.commit(old.ino, [piece(0, 3, 1)], 3)
    new = store.create("/d/f.tmp", 0o644)
    store.commit(new.ino, [piece(0, 5, 2)], 5)
    store.unlink("/d/f", keep_open=True)      # someone still has the old file open
    store.rename("/d/f.tmp", "/d/f")
    attr, pieces, _ = store.get_chunks_at("/d/f")
    assert attr.ino == new.ino
    assert attr.size == 5
    assert [p.fid for p in pieces] == [fid(1, 2)]
    assert store.get_chunks(old.ino)[0].size == 3   # the old inode, by number, is unchanged
    assert errno_of(store.get_chunks_at, "/d/missing") == errno.ENOENT
    assert errno_of(store.get_chunks_at, "/d") == errno.EISDIR


@T
def test_unlink_keep_open_then_release(store):
    a = store.create("/f", 0o644)
    store.commit(a.ino, [piece(0, 10, 1)], 10)
    store.unlink("/f", keep_open=True)
    with pytest.raises(FsError):
        store.getattr("/f")
    attr, pieces, _ = store.get_chunks(a.ino)
    assert attr.nlink == 0
    assert len(pieces) == 1
    store.commit(a.ino, [piece(10, 5, 2)], 15)  # still writable while open
    assert queued(store) == set()
    store.release_inode(a.ino)
    with pytest.raises(FsError):
        store.getattr_ino(a.ino)
    assert queued(store) == {fid(1, 1), fid(1, 2)}
    store.release_inode(a.ino)  # idempotent


@T
def test_release_of_linked_inode_is_noop(store):
    a = store.create("/f", 0o644)
    store.release_inode(a.ino)
    assert store.getattr("/f").ino == a.ino


@T
def test_rmdir(store):
    store.mkdir("/d", 0o755)
    store.create("/d/f", 0o644)
    assert errno_of(store.rmdir, "/d") == errno.ENOTEMPTY
    assert errno_of(store.rmdir, "/d/f") == errno.ENOTDIR
    assert errno_of(store.rmdir, "/nope") == errno.ENOENT
    store.unlink("/d/f")
    store.rmdir("/d")
    assert store.getattr("/").nlink == 2
    assert store.readdir("/") == []


# ---------------------------------------------------------------- rename

@T
def test_rename_file_and_replace(store):
    a = store.create("/a", 0o644)
    b = store.create("/b", 0o644)
    store.commit(b.ino, [piece(0, 4, 9)], 4)
    assert store.rename("/a", "/b") == b.ino
    assert store.getattr("/b").ino == a.ino
    with pytest.raises(FsError):
        store.getattr("/a")
    assert fid(1, 9) in queued(store)
    with pytest.raises(FsError):
        store.getattr_ino(b.ino)


@T
def test_rename_keep_open_target(store):
    a = store.create("/a", 0o644)
    b = store.create("/b", 0o644)
    store.commit(b.ino, [piece(0, 4, 9)], 4)
    assert store.rename("/a", "/b", keep_open=True) == b.ino
    assert store.get_chunks(b.ino)[0].nlink == 0
    assert queued(store) == set()
    store.release_inode(b.ino)
    assert queued(store) == {fid(1, 9)}
    assert store.getattr("/b").ino == a.ino


@T
def test_rename_noreplace_and_self(store):
    store.create("/a", 0o644)
    store.create("/b", 0o644)
    assert errno_of(store.rename, "/a", "/b", no_replace=True) == errno.EEXIST
    assert store.rename("/a", "/a") == 0
    store.link("/a", "/a2")
    assert store.rename("/a", "/a2") == 0  # two names of one inode: nothing happens
    assert {n for n, _ in store.readdir("/")} == {"a", "a2", "b"}
    assert errno_of(store.rename, "/nope", "/c") == errno.ENOENT


@T
def test_rename_dirs(store):
    store.mkdir("/d1", 0o755)
    store.mkdir("/d1/sub", 0o755)
    store.mkdir("/d2", 0o755)
    store.create("/f", 0o644)
    store.mkdir("/full", 0o755)
    store.create("/full/x", 0o644)
    for old, new, code in [
        ("/d1", "/d1/sub/deeper", errno.EINVAL),
        ("/d1", "/d1/inside", errno.EINVAL),
        ("/d1", "/full", errno.ENOTEMPTY),
        ("/f", "/d2", errno.EISDIR),
        ("/d2", "/f", errno.ENOTDIR),
    ]:
        assert errno_of(store.rename, old, new) == code, (old, new)
    # move a directory to another parent: nlink of both parents follows
    store.rename("/d1/sub", "/d2/sub")
    assert store.getattr("/d1").nlink == 2
    assert store.getattr("/d2").nlink == 3
    # dir over empty dir
    store.mkdir("/empty", 0o755)
    root_links = store.getattr("/").nlink
    d1 = store.getattr("/d1").ino
    store.rename("/d1", "/empty")
    assert store.getattr("/empty").ino == d1
    assert store.getattr("/").nlink == root_links - 1
    assert store.getattr("/d2/sub").is_dir


@T
def test_rename_is_atomic_on_error(store):
    store.mkdir("/d", 0o755)
    store.mkdir("/full", 0o755)
    store.create("/full/x", 0o644)
    with pytest.raises(FsError):
        store.rename("/d", "/full")
    assert store.getattr("/full/x").is_file
    assert store.getattr("/d").is_dir


# ---------------------------------------------------------------- symlink / link

@T
def test_symlink_readlink(store):
    s = store.symlink("/l", "target/path", 3, 4)
    assert stat.S_ISLNK(s.mode)
    assert s.size == len("target/path")
    assert s.uid == 3
    assert store.readlink("/l") == "target/path"
    store.create("/f", 0o644)
    assert errno_of(store.readlink, "/f") == errno.EINVAL
    assert errno_of(store.symlink, "/f", "x") == errno.EEXIST
    assert errno_of(store.symlink, "/l2", "") == errno.EINVAL


@T
def test_hard_link(store):
    a = store.create("/a", 0o644)
    store.commit(a.ino, [piece(0, 3, 1)], 3)
    b = store.link("/a", "/b")
    assert b.ino == a.ino
    assert b.nlink == 2
    assert store.unlink("/a") == 0
    assert store.getattr("/b").nlink == 1
    assert queued(store) == set()
    store.unlink("/b")
    assert queued(store) == {fid(1, 1)}
    store.mkdir("/d", 0o755)
    assert errno_of(store.link, "/d", "/d2") == errno.EPERM
    store.create("/c", 0o644)
    assert errno_of(store.link, "/c", "/d") == errno.EEXIST


# ---------------------------------------------------------------- setattr / truncate

@T
def test_setattr(store):
    a = store.create("/f", 0o644)
    b = store.setattr("/f", mode=0o4711, uid=7, gid=8, atime_ns=11, mtime_ns=22)
    assert stat.S_ISREG(b.mode)
    assert b.mode & 0o7777 == 0o4711
    assert (b.uid, b.gid, b.atime_ns, b.mtime_ns) == (7, 8, 11, 22)
    assert b.ctime_ns >= a.ctime_ns
    by_ino = store.setattr(ino=a.ino, mode=0o600)
    assert by_ino.mode & 0o7777 == 0o600
    store.mkdir("/d", 0o755)
    assert errno_of(store.setattr, "/d", size=0) == errno.EISDIR
    assert errno_of(store.setattr, ino=12345, mode=0) == errno.ENOENT


@T
def test_truncate_shrink_then_grow_reads_zeros(store):
    a = store.create("/f", 0o644)
    store.commit(a.ino, [piece(0, 100, 1), piece(100, 100, 2)], 200)
    v0 = store.get_chunks(a.ino)[2]
    t = store.setattr("/f", size=50)
    assert t.size == 50
    _, pieces, v1 = store.get_chunks(a.ino)
    assert v1 > v0
    assert pieces == [piece(0, 50, 1, 0, 100)]
    assert queued(store) == {fid(1, 2)}
    store.setattr("/f", size=300)
    _, pieces, _ = store.get_chunks(a.ino)
    assert pieces == [piece(0, 50, 1, 0, 100)]  # 50..300 is a hole
    assert store.getattr("/f").size == 300


# ---------------------------------------------------------------- commit / overlay

@T
def test_commit_overlay_queues_shadowed(store):
    a = store.create("/f", 0o644)
    store.commit(a.ino, [piece(0, 100, 1)], 100, mtime_ns=1234)
    attr = store.getattr("/f")
    assert attr.size == 100
    assert attr.mtime_ns == 1234
    store.commit(a.ino, [piece(20, 30, 2)], 100)
    _, pieces, _ = store.get_chunks(a.ino)
    assert pieces == [piece(0, 20, 1, 0, 100), piece(20, 30, 2), piece(50, 50, 1, 50, 100)]
    assert queued(store) == set()  # fid 1 still visible in two parts
    store.commit(a.ino, [piece(0, 100, 3)], 100)
    assert queued(store) == {fid(1, 1), fid(1, 2)}
    _, pieces, version = store.get_chunks(a.ino)
    assert pieces == [piece(0, 100, 3)]
    assert version == 3


@T
def test_commit_later_shadows_earlier_in_one_request(store):
    a = store.create("/f", 0o644)
    attr = store.commit(a.ino, [piece(0, 10, 1), piece(0, 10, 2), piece(10, 10, 3)], 20)
    assert attr.size == 20
    _, pieces, _ = store.get_chunks(a.ino)
    assert [p.fid for p in pieces] == [fid(1, 2), fid(1, 3)]
    assert queued(store) == {fid(1, 1)}


@T
def test_commit_bad_input_changes_nothing(store):
    a = store.create("/f", 0o644)
    store.commit(a.ino, [piece(0, 10, 1)], 10)
    for bad in ([Piece(0, 10, "garbage", 0, 10)], [Piece(0, 0, fid(1, 5), 0, 0)],
                [Piece(0, 10, fid(1, 5), 5, 10)]):
        assert errno_of(store.commit, a.ino, bad, 10) == errno.EINVAL
    assert errno_of(store.commit, 999, [piece(0, 1, 1)], 1) == errno.ENOENT
    d = store.mkdir("/d", 0o755)
    assert errno_of(store.commit, d.ino, [piece(0, 1, 1)], 1) == errno.EISDIR
    _, pieces, version = store.get_chunks(a.ino)
    assert pieces == [piece(0, 10, 1)]
    assert version == 1


@T
def test_exact_commit_cuts_pieces_past_size(store):
    a = store.create("/f", 0o644)
    store.commit(a.ino, [piece(0, 100, 1), piece(100, 50, 2)], 60, exact=True)
    _, pieces, _ = store.get_chunks(a.ino)
    assert pieces == [piece(0, 60, 1, 0, 100)]
    assert queued(store) == {fid(1, 2)}


@T
def test_plain_commit_never_shrinks_the_file(store):
    """Two writers: the second's commit, with its stale idea of the size, keeps the first's
    bytes (the data-loss case of two handles writing disjoint ranges)."""
    a = store.create("/f", 0o644)
    assert store.commit(a.ino, [piece(10, 10, 1)], 20).size == 20
    attr = store.commit(a.ino, [piece(0, 10, 2)], 10)
    assert attr.size == 20
    _, pieces, _ = store.get_chunks(a.ino)
    assert [p.fid for p in pieces] == [fid(1, 2), fid(1, 1)]
    # The size also covers every piece even when the caller asks for less.
    assert store.commit(a.ino, [piece(30, 5, 3)], 0).size == 35
    assert queued(store) == set()


# ---------------------------------------------------------------- xattrs

@T
def test_xattrs(store):
    store.create("/f", 0o644)
    assert errno_of(store.getxattr, "/f", "user.a") == errno.ENODATA
    assert errno_of(store.setxattr, "/f", "user.a", b"1", XATTR_REPLACE) == errno.ENODATA
    store.setxattr("/f", "user.a", b"1", XATTR_CREATE)
    assert errno_of(store.setxattr, "/f", "user.a", b"2", XATTR_CREATE) == errno.EEXIST
    store.setxattr("/f", "user.a", b"2", XATTR_REPLACE)
    store.setxattr("/f", "user.b", b"\0\xff")
    assert store.getxattr("/f", "user.a") == b"2"
    assert store.getxattr("/f", "user.b") == b"\0\xff"
    assert store.listxattr("/f") == ["user.a", "user.b"]
    store.removexattr("/f", "user.a")
    assert errno_of(store.removexattr, "/f", "user.a") == errno.ENODATA
    assert store.listxattr("/f") == ["user.b"]
    assert errno_of(store.setxattr, "/f", "user.big", b"x" * 65537) == errno.E2BIG
    assert errno_of(store.listxattr, "/nope") == errno.ENOENT


# ---------------------------------------------------------------- queue, servers, counters

@T
def test_deletion_queue_retry_and_done(store):
    a = store.create("/f", 0o644)
    store.commit(a.ino, [piece(0, 1, 1), piece(1, 1, 2)], 2)
    store.unlink("/f")
    assert store.pending_deletions() == 2
    store.deletions_retry([fid(1, 1)], 3600)
    assert queued(store) == {fid(1, 2)}
    store.deletions_done([fid(1, 2)])
    assert store.pending_deletions() == 1
    assert queued(store) == set()
    store.deletions_retry([fid(1, 1)], 0)
    assert store.due_deletions(10) == [(fid(1, 1), 2)]


@T
def test_servers_and_counters_persist(open_store):
    s = open_store()
    sid = s.register_server(0, "v1", "127.0.0.1:1", "")
    sid2 = s.register_server(0, "v2", "127.0.0.1:2", "")
    assert sid != sid2
    seq = needle_keys(s, step=100)
    keys = [seq.take() for _ in range(5)]
    assert keys == sorted(set(keys))
    s.close()
    s = open_store()
    assert s.register_server(sid, "v1b", "127.0.0.1:3", "h") == sid
    assert s.get_server(sid).grpc_address == "127.0.0.1:3"
    assert s.register_server(0, "v3", "x:1", "") not in (sid, sid2)
    assert s.register_server(77, "adopted", "x:2", "") == 77
    assert s.register_server(0, "v4", "x:3", "") > 77
    seq = needle_keys(s, step=100)
    assert seq.take() > max(keys)  # a restart never reissues a key
    s.close()


@T
def test_sequencer_concurrent_unique(store):
    seq = Sequencer(store, "test_counter", step=7)
    got: list[int] = []
    lock = threading.Lock()

    def worker():
        for _ in range(50):
            first = seq.take(3)
            with lock:
                got.extend(range(first, first + 3))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == 600


@T
def test_sequencer_ensure_above(store):
    seq = Sequencer(store, schema.COUNTER_VOLUME_ID, 1)
    assert seq.take() == 1
    seq.ensure_above(40)
    assert seq.take() == 41


@T
def test_sqlite_refuses_newer_schema(tmp_path):
    path = str(tmp_path / "m.db")
    SQLiteStore(path).close()
    import sqlite3
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'",
                 (str(schema.SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(schema.SchemaError):
        SQLiteStore(path)


@T
def test_sqlite_version_1_database_opens_and_upgrades(tmp_path):
    """A data dir written by the first schema (dumped from a real one) opens: its files,
    chunks, xattrs and symlinks are all there, it is marked with the current version, and
    the upgrade's new column works (a FIFO and a device can be made)."""
    import sqlite3
    path = tmp_path / "meta.db"
    conn = sqlite3.connect(path)
    conn.executescript((Path(__file__).parent / "data" / "meta_v1.sql").read_text())
    conn.close()
    store = SQLiteStore(str(path))
    try:
        a = store.getattr("/docs/a.txt")
        assert (a.size, a.uid, a.rdev, stat.S_IMODE(a.mode)) == (5, 1000, 0, 0o644)
        _, pieces, _ = store.get_chunks(a.ino)
        assert [(p.fid, p.length, p.crc32c) for p in pieces] == [("3,01637037d6", 5, 12345)]
        assert store.getxattr("/docs/a.txt", "user.color") == b"blue"
        assert store.readlink("/docs/link") == "a.txt"
        dev = store.mknod("/docs/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        assert stat.S_ISCHR(dev.mode)
        assert dev.rdev == os.makedev(1, 3)
        assert stat.S_ISFIFO(store.mknod("/docs/fifo", stat.S_IFIFO | 0o600).mode)
    finally:
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
        str(schema.SCHEMA_VERSION),)
    conn.close()
    SQLiteStore(str(path)).close()  # opening an upgraded database again changes nothing


@T
def test_special_files_are_metadata_with_their_device_numbers(store):
    fifo = store.mknod("/p", stat.S_IFIFO | 0o640, rdev=99, uid=7, gid=8)
    assert stat.S_ISFIFO(fifo.mode)
    assert fifo.rdev == 0
    assert (fifo.uid, fifo.gid) == (7, 8)
    blk = store.mknod("/b", stat.S_IFBLK | 0o600, os.makedev(8, 1))
    assert store.getattr("/b").rdev == os.makedev(8, 1) == blk.rdev
    assert dict(store.readdir("/"))["b"].rdev == os.makedev(8, 1)
    sock = store.mknod("/s", stat.S_IFSOCK | 0o755)
    assert stat.S_ISSOCK(sock.mode)
    assert errno_of(store.mknod, "/p", stat.S_IFIFO | 0o600) == errno.EEXIST
    assert errno_of(store.mknod, "/d", stat.S_IFDIR | 0o755) == errno.EINVAL
    assert errno_of(store.mknod, "/l", stat.S_IFLNK | 0o777) == errno.EINVAL
    assert errno_of(store.setattr, "/p", size=0) == errno.EINVAL
    store.link("/b", "/b2")
    assert store.getattr("/b2").nlink == 2
    store.rename("/s", "/b2")
    assert stat.S_ISSOCK(store.getattr("/b2").mode)
    assert store.getattr("/b").nlink == 1
    store.setattr("/p", mode=0o600, uid=1)
    assert stat.S_ISFIFO(store.getattr("/p").mode)
    assert store.getattr("/p").uid == 1
    store.unlink("/p")
    assert errno_of(store.getattr, "/p") == errno.ENOENT


@T
def test_paths_longer_than_path_max_are_fine(store):
    """Only each name is limited (255 bytes); a tree may be deeper than PATH_MAX."""
    path = ""
    for _ in range(30):
        path += "/" + "d" * 250
        store.mkdir(path, 0o755)
    assert len(path) > 7000
    store.create(path + "/f", 0o644)
    assert store.getattr(path + "/f").is_file
    assert errno_of(store.create, path + "/" + "x" * 256, 0o644) == errno.ENAMETOOLONG


def write_inline(store, ino, offset, data, **kw):
    import crc32c
    return store.write_inline(ino, offset, data, crc32c.crc32c(data), **kw)


@T
def test_inline_files_keep_their_bytes_in_the_store(store):
    import crc32c
    a = store.create("/f", 0o644)
    assert not a.inline
    a = write_inline(store, a.ino, 0, b"hello", size=5)
    assert a.inline
    assert a.size == 5
    c = store.content(path="/f")
    assert (c.inline, c.inline_crc, c.pieces) == (b"hello", crc32c.crc32c(b"hello"), [])
    write_inline(store, a.ino, 8, b"!!", size=0)        # past the end: a hole of zeros
    assert store.content(ino=a.ino).inline == b"hello\0\0\0!!"
    assert store.getattr("/f").size == 10
    # truncate: a shrink cuts the bytes, a grow reads zeros past them (still inline)
    store.setattr("/f", size=3)
    assert store.content(ino=a.ino).inline == b"hel"
    assert store.getattr("/f").inline
    store.setattr("/f", size=1 << 20)
    c = store.content(ino=a.ino)
    assert (c.inline, c.attr.size, c.inline_crc) == (b"hel", 1 << 20, crc32c.crc32c(b"hel"))
    # the same inode under another name (a hard link), renamed: still its bytes
    store.link("/f", "/g")
    store.rename("/g", "/h")
    assert store.content(path="/h").inline == b"hel"
    # bad CRC, too big: refused, nothing changed
    assert errno_of(store.write_inline, a.ino, 0, b"x", 1) == errno.EINVAL
    assert errno_of(write_inline, store, a.ino, 0, b"x" * 10, limit=8) == errno.EFBIG
    assert store.content(ino=a.ino).inline == b"hel"
    # O_TRUNC drops the inline bytes
    store.create("/f", 0o644, truncate=True)
    c = store.content(path="/f")
    assert (c.inline, c.attr.size, c.attr.inline) == (None, 0, False)


@T
def test_inline_bytes_move_to_chunks_only_when_the_chunks_cover_them(store):
    a = store.create("/f", 0o644)
    write_inline(store, a.ino, 0, b"x" * 100, size=100)
    # chunks that leave a gap where inline bytes were would lose them: refused
    assert errno_of(store.commit, a.ino, [piece(50, 100, 1)], 150) == errno.ESTALE
    assert store.content(ino=a.ino).inline == b"x" * 100
    # the writer's first chunk is the inline bytes: accepted, the file is in chunks now
    attr = store.commit(a.ino, [piece(0, 100, 2), piece(100, 50, 3)], 150)
    c = store.content(ino=a.ino)
    assert (c.inline, attr.inline, attr.size, len(c.pieces)) == (None, False, 150, 2)
    # a file with chunks does not go back inline, unless replaced whole (exact)
    assert errno_of(write_inline, store, a.ino, 0, b"y") == errno.EFBIG
    write_inline(store, a.ino, 0, b"small", size=5, exact=True)
    c = store.content(ino=a.ino)
    assert (c.inline, c.pieces, c.attr.size) == (b"small", [], 5)
    assert queued(store) == {fid(1, 2), fid(1, 3)}


@T
def test_split_needle_stays_until_every_part_is_gone(store):
    a = store.create("/f", 0o644)
    store.commit(a.ino, [piece(0, 100, 1)], 100)
    store.commit(a.ino, [piece(20, 30, 2)], 100)
    store.commit(a.ino, [piece(50, 50, 3)], 100)  # covers fid 1's tail part only
    assert queued(store) == set()
    store.commit(a.ino, [piece(0, 20, 4)], 100)
    assert queued(store) == {fid(1, 1)}


@T
def test_commit_and_truncate_match_a_model(store):
    """Random commits and truncates agree with chunkmap applied to the whole list, and the
    deletion queue holds exactly the written fids no longer visible."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from cluster.common import chunkmap

    op = st.one_of(
        st.tuples(st.just("w"), st.integers(0, 300), st.integers(1, 80)),
        st.tuples(st.just("t"), st.integers(0, 300), st.just(0)),
    )

    @settings(max_examples=60, deadline=None)
    @given(st.lists(op, min_size=1, max_size=25))
    def check(ops):
        s = store  # one database for every example: each starts with a new file, queue empty
        s.deletions_done(queued(s))
        a = s.create(f"/f{next(names)}", 0o644)
        model: list[Piece] = []
        size, written, key = 0, set(), 0
        for kind, off, length in ops:
            if kind == "w":
                key += 1
                p = piece(off, length, key, noff=3, nsize=length + 5)
                written.add(p.fid)
                size = max(size, off + length)
                model = chunkmap.truncate(chunkmap.overlay(model, [p]), size)
                s.commit(a.ino, [p], size)
            else:
                size = off
                model = chunkmap.truncate(model, size)
                s.setattr(ino=a.ino, size=size)
            attr, pieces, _ = s.get_chunks(a.ino)
            assert pieces == model
            assert attr.size == size
            assert queued(s) == written - chunkmap.fids(model)

    names = itertools.count()
    check()
