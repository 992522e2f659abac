"""DirPrefetcher: when a walk through a directory is listed once, and what it may cache."""
from __future__ import annotations

import errno

import pytest

from cluster.common.errors import FsError
from fusefs.attrcache import AttrCache
from fusefs.dirprefetch import DirPrefetcher
from protos import master_pb2


class FakeMaster:
    def __init__(self, names, fail=False):
        self.names = names
        self.fail = fail
        self.calls = []

    def readdir_head(self, path, limit):
        self.calls.append((path, limit))
        if self.fail:
            raise FsError(errno.EIO, "master down")
        entries = [master_pb2.DirEntry(name=n, attr=master_pb2.Attr(ino=100 + i, size=i))
                   for i, n in enumerate(self.names[:limit])]
        return entries, len(self.names) > limit


def walk(prefetch, cache, names, directory="/d"):
    for n in names:
        path = f"{directory}/{n}"
        if cache.get(path) is None:
            cache.put(path, master_pb2.Attr(ino=1))   # what _lookup does with the answer
            prefetch.found(path)


@pytest.mark.timeout(10)
def test_the_eighth_name_looked_up_lists_the_directory_and_the_rest_come_from_the_cache():
    names = [f"f{i}" for i in range(50)]
    cache, master = AttrCache(ttl=5), FakeMaster(names)
    prefetch = DirPrefetcher(master, cache, window=5, after=8)
    walk(prefetch, cache, names)
    assert master.calls == [("/d", prefetch.limit)]
    assert prefetch.listings == 1
    assert cache.get("/d/f49").size == 49          # from the listing, attributes included


@pytest.mark.timeout(10)
def test_a_listing_that_a_local_change_may_predate_is_not_cached():
    cache = AttrCache(ttl=5)

    class RacingMaster(FakeMaster):
        def readdir_head(self, path, limit):
            got = super().readdir_head(path, limit)
            cache.invalidate("/d/f3")     # this mount removed f3 while the listing was out
            return got

    master = RacingMaster([f"f{i}" for i in range(20)])
    prefetch = DirPrefetcher(master, cache, window=5, after=3)
    walk(prefetch, cache, ["f0", "f1", "f2"])
    assert len(master.calls) == 1
    assert prefetch.listings == 0
    assert cache.get("/d/f3") is None
    assert cache.get("/d/f10") is None


@pytest.mark.timeout(10)
def test_no_prefetch_without_a_ttl_below_the_threshold_or_when_the_master_fails():
    names = [f"f{i}" for i in range(20)]
    master = FakeMaster(names)
    walk(DirPrefetcher(master, AttrCache(ttl=0), window=0, after=2), AttrCache(ttl=0), names)
    walk(DirPrefetcher(master, AttrCache(ttl=5), window=5, after=30), AttrCache(ttl=5), names)
    assert master.calls == []
    failing = FakeMaster(names, fail=True)
    cache = AttrCache(ttl=5)
    prefetch = DirPrefetcher(failing, cache, window=5, after=2)
    walk(prefetch, cache, names[:2])                # the lookup itself is not failed
    assert len(failing.calls) == 1
    assert prefetch.listings == 0


@pytest.mark.timeout(10)
def test_a_directory_bigger_than_one_page_is_left_alone_for_a_while():
    names = [f"f{i:03d}" for i in range(100)]
    cache, master = AttrCache(ttl=5), FakeMaster(names)
    prefetch = DirPrefetcher(master, cache, window=5, after=2, limit=10, big_quiet=60)
    walk(prefetch, cache, names)
    assert len(master.calls) == 1                   # not again for each later page of names
    assert cache.get("/d/f009").size == 9           # the first page came from the listing


@pytest.mark.timeout(10)
def test_answers_from_the_master_do_not_void_a_listing_but_local_changes_do():
    cache = AttrCache(ttl=5)
    gen = cache.generation()
    cache.put("/x/y", master_pb2.Attr(ino=5))           # another lookup meanwhile
    cache.put_absent("/x/z")
    listing = [master_pb2.DirEntry(name="a", attr=master_pb2.Attr(ino=6)),
               master_pb2.DirEntry(name="y", attr=master_pb2.Attr(ino=99))]
    assert cache.put_listing("/x", listing, gen)
    assert cache.get("/x/a").ino == 6
    assert cache.get("/x/y").ino == 5                   # the newer answer is kept
    for change in (lambda: cache.invalidate("/x/a"), lambda: cache.invalidate_tree("/x"),
                   lambda: cache.invalidate_ino(6), lambda: cache.touch_dir("/x", 1),
                   cache.clear):
        gen = cache.generation()
        change()
        assert not cache.put_listing("/x", listing, gen)


@pytest.mark.timeout(10)
def test_a_directory_is_not_listed_twice_at_once_even_when_its_window_ends():
    import threading
    started, release = threading.Event(), threading.Event()

    class SlowMaster(FakeMaster):
        def readdir_head(self, path, limit):
            started.set()
            release.wait(5)
            return super().readdir_head(path, limit)

    cache, master = AttrCache(ttl=5), SlowMaster([f"f{i}" for i in range(30)])
    prefetch = DirPrefetcher(master, cache, window=0.05, after=2)
    t = threading.Thread(target=walk, args=(prefetch, cache, ["f0", "f1"]))
    t.start()
    assert started.wait(5)
    import time
    time.sleep(0.1)                                     # the window has ended meanwhile
    for n in ("f2", "f3", "f4"):
        prefetch.found(f"/d/{n}")
    release.set()
    t.join(5)
    assert len(master.calls) == 1


@pytest.mark.timeout(10)
def test_a_second_listing_replaces_expired_answers():
    """Entries that expired unread stay in the dict until looked at; a later listing must
    replace them, or every name past the first listing's reach misses again (this cut the
    gain on 2,000-file walks to nothing)."""
    import time
    cache = AttrCache(ttl=0.2)
    listing = [master_pb2.DirEntry(name=f"f{i}", attr=master_pb2.Attr(ino=10 + i))
               for i in range(5)]
    assert cache.put_listing("/d", listing, cache.generation())
    time.sleep(0.25)                                    # all expire, none is looked at
    assert cache.put_listing("/d", listing, cache.generation())
    assert all(cache.get(f"/d/f{i}") is not None for i in range(5))
