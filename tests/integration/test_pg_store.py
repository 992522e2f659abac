"""The MetadataStore contract suite (tests/unit/test_metadata_store.py) against PostgresStore
on a real PostgreSQL server, plus what only a store shared by several masters must survive:
concurrent writers in other processes' connections, crossing renames (no deadlock, no cycle),
and one name created by many at once (exactly one wins)."""
from __future__ import annotations

import errno
import threading

import pytest

import tests.unit.test_metadata_store as contract
from cluster.common.errors import FsError
from cluster.master.pg_store import PostgresStore

# Every contract test, collected here too; `open_store` below makes them run on PostgreSQL.
globals().update({name: test for name, test in vars(contract).items()
                  if name.startswith("test_") and "sqlite" not in name})


@pytest.fixture
def open_store(pg_dsn):
    return lambda: PostgresStore(pg_dsn)


@pytest.fixture
def store(open_store):
    s = open_store()
    yield s
    s.close()


def _run_all(workers) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(fn):
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a writer hung: deadlock?"
    return errors


def _move(store, src: str, dst_dir: str) -> str:
    """Move `src` into `dst_dir`: "moved", or the errno's name (EINVAL: a cycle refused)."""
    try:
        store.rename(src, f"{dst_dir}{src}")
    except FsError as e:
        return errno.errorcode[e.errno]
    return "moved"


@pytest.mark.timeout(120)
def test_crossing_renames_of_directories_never_deadlock_nor_make_a_cycle(open_store):
    """Two masters (two stores, two connections each) move /a under /b and /b under /a, over
    and over. SERIALIZABLE must let exactly one of each pair win: the tree stays a tree
    (every directory reachable from the root, no directory inside itself), and no call
    hangs or fails with anything but the EINVAL a cycle gets."""
    one, two = open_store(), open_store()
    try:
        for round_ in range(25):
            for d in ("/a", "/b"):
                one.mkdir(f"{d}{round_}", 0o755)
            a, b = f"/a{round_}", f"/b{round_}"
            outcomes: list[str] = []
            errors = _run_all([lambda a=a, b=b, o=outcomes: o.append(_move(one, a, b)),
                               lambda a=a, b=b, o=outcomes: o.append(_move(two, b, a))])
            assert not errors, errors
            assert sorted(outcomes) in (["EINVAL", "moved"], ["ENOENT", "moved"]), outcomes
            names = {n for n, _ in one.readdir("/")}
            assert (a in ("/" + n for n in names)) != (b in ("/" + n for n in names))
        # Every directory made is reachable from the root: no cycle cut a subtree off.
        reachable, todo = 0, ["/"]
        while todo:
            d = todo.pop()
            for name, attr in one.readdir(d, limit=10000):
                if attr.is_dir:
                    reachable += 1
                    todo.append(d.rstrip("/") + "/" + name)
        assert reachable == 50
    finally:
        one.close()
        two.close()


@pytest.mark.timeout(120)
def test_many_writers_one_name_exactly_one_create_wins(open_store):
    stores = [open_store() for _ in range(4)]
    try:
        for i in range(20):
            wins: list[int] = []

            def create(s, i=i, wins=wins):
                try:
                    s.create(f"/race{i}", 0o644, exclusive=True)
                    wins.append(1)
                except FsError as e:
                    wins.append(0 if e.errno == errno.EEXIST else -e.errno)

            assert not _run_all([lambda s=s: create(s) for s in stores])
            assert sorted(wins) == [0, 0, 0, 1]
        assert len(stores[0].readdir("/")) == 20
        assert stores[0].getattr("/").nlink == 2
    finally:
        for s in stores:
            s.close()


@pytest.mark.timeout(120)
def test_concurrent_creates_in_one_directory_keep_its_counts_exact(open_store):
    """Directory mtime/nlink updates of many masters' creates and mkdirs do not lose any."""
    stores = [open_store() for _ in range(3)]
    try:
        def work(k, s):
            for i in range(30):
                s.mkdir(f"/d{k}_{i}", 0o755)
                s.create(f"/f{k}_{i}", 0o644)

        assert not _run_all([lambda k=k, s=s: work(k, s) for k, s in enumerate(stores)])
        assert stores[0].getattr("/").nlink == 2 + 90
        assert len(stores[1].readdir("/", limit=1000)) == 180
    finally:
        for s in stores:
            s.close()
