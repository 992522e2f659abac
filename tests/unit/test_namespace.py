"""The namespace without a network: the one mutation table (mutations.py) over Namespace, and
the store's group commit (batch: one transaction, a savepoint per operation)."""
from __future__ import annotations

import errno
import stat

import pytest

from cluster.common.errors import FsError
from cluster.master import mutation_server, mutations
from cluster.master.namespace import Namespace
from cluster.master.sqlite_store import SQLiteStore
from protos import master_pb2


@pytest.fixture
def ns(tmp_path):
    store = SQLiteStore(str(tmp_path / "meta.db"), synchronous="NORMAL")
    yield Namespace(store)
    store.close()


def apply(ns, op, request):
    return mutations.apply(ns, op, request)


def errno_of(fn, *args) -> int:
    with pytest.raises(FsError) as e:
        fn(*args)
    return e.value.errno


@pytest.mark.timeout(10)
def test_every_mutation_of_the_table_through_plain_messages(ns):
    a = apply(ns, "mkdir", master_pb2.MkdirRequest(path="/d", mode=0o755, uid=5, gid=6))
    assert stat.S_ISDIR(a.mode)
    assert (a.uid, a.gid) == (5, 6)
    f = apply(ns, "create", master_pb2.CreateRequest(path="/d/f", mode=0o644))
    assert stat.S_ISREG(f.mode)
    apply(ns, "mknod", master_pb2.MknodRequest(path="/d/p", mode=stat.S_IFIFO | 0o600))
    apply(ns, "symlink", master_pb2.SymlinkRequest(path="/d/s", target="f"))
    assert apply(ns, "link", master_pb2.LinkRequest(existing_path="/d/f",
                                                    new_path="/d/g")).nlink == 2
    chunk = master_pb2.Chunk(file_offset=0, length=3, fid="3,01637037d6", needle_offset=0,
                             needle_size=3, crc32c=7)
    assert apply(ns, "commit_chunks", master_pb2.CommitRequest(
        ino=f.ino, chunks=[chunk], size=3)).size == 3
    assert apply(ns, "set_attr", master_pb2.SetAttrRequest(path="/d/f", mode=0o600)).mode \
        == stat.S_IFREG | 0o600
    apply(ns, "set_xattr", master_pb2.XattrRequest(path="/d/f", name="user.k", value=b"v"))
    assert ns.store.getxattr("/d/f", "user.k") == b"v"
    apply(ns, "remove_xattr", master_pb2.XattrRequest(path="/d/f", name="user.k"))
    replaced = apply(ns, "rename", master_pb2.RenameRequest(old_path="/d/p", new_path="/d/g"))
    assert isinstance(replaced, master_pb2.RenameResponse)
    assert replaced.replaced_ino == 0
    assert isinstance(apply(ns, "unlink", master_pb2.UnlinkRequest(path="/d/g")),
                      master_pb2.Empty)
    for name in ("f", "s"):
        apply(ns, "unlink", master_pb2.UnlinkRequest(path=f"/d/{name}"))
    apply(ns, "rmdir", master_pb2.PathRequest(path="/d"))
    assert ns.store.readdir("/") == []
    # every op of Mutation has a row (but the session messages the channel handles itself),
    # and every answer type a result field
    ops = {f.name for f in master_pb2.Mutation.DESCRIPTOR.oneofs_by_name["op"].fields}
    assert ops == set(mutations.TABLE) | set(mutation_server.CONTROL)


@pytest.mark.timeout(10)
def test_protocol_checks_are_einval(ns):
    assert errno_of(apply, ns, "create", master_pb2.CreateRequest(
        path="/f", mode=0o644, replication=9)) == errno.EINVAL
    assert errno_of(apply, ns, "set_attr", master_pb2.SetAttrRequest(mode=0o600)) \
        == errno.EINVAL
    assert ns.store.readdir("/") == []


@pytest.mark.timeout(10)
def test_a_batch_commits_once_and_a_failing_operation_rolls_back_alone(ns):
    store = ns.store
    with store.batch():
        ns.mkdir("/a", 0o755, 0, 0)
        with pytest.raises(FsError):
            ns.mkdir("/a", 0o755, 0, 0)          # EEXIST: its savepoint is rolled back
        with pytest.raises(FsError):
            ns.create("/missing/f", 0o644, 0, 0)  # ENOENT
        ns.create("/a/f", 0o644, 0, 0)
        # inside the batch, later operations see earlier ones
        assert [n for n, _ in store.readdir("/a")] == ["f"]
    assert [n for n, _ in store.readdir("/")] == ["a"]
    assert store.getattr("/a").nlink == 2


@pytest.mark.timeout(10)
def test_a_batch_that_raises_leaves_nothing(ns):
    store = ns.store

    def mkdir_then_fail():
        with store.batch():
            ns.mkdir("/gone", 0o755, 0, 0)
            raise RuntimeError("the commit failed")

    with pytest.raises(RuntimeError, match="the commit failed"):
        mkdir_then_fail()
    assert store.readdir("/") == []
    ns.mkdir("/after", 0o755, 0, 0)              # the store works on
    assert [n for n, _ in store.readdir("/")] == ["after"]


@pytest.mark.timeout(10)
def test_a_durable_batch_syncs_the_log(ns, monkeypatch, tmp_path):
    synced = []
    monkeypatch.setattr(type(ns.store), "_sync_wal", lambda self: synced.append(True))
    with ns.store.batch():
        ns.mkdir("/x", 0o755, 0, 0)
    assert synced == []
    with ns.store.batch(durable=True):
        ns.mkdir("/y", 0o755, 0, 0)
    assert synced == [True]
