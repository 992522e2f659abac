"""The benchmark workloads: plain functions that run on a directory and return numbers.

Each workload gets a `Context` (an empty directory on the target that it owns, the sizes, and
`cold()` to empty caches) and returns {metric name: value}; METRICS says each metric's unit
and whether higher is better. Workloads that change the file system end their timed part with
os.sync() (a global sync): the local disk then pays for durability like a server does, and the
SeaweedFS volume server (which does not fsync on its own) has its volume files written back, so
"done" means on disk for every target.

Reads are measured cold: before them `cold()` drops the page cache (echo 3 >
/proc/sys/vm/drop_caches, as root) and, for FUSE mounts, remounts so the mount process's own
caches are empty too. The "warm" rows repeat a cold pass at once on the same mount: what the
mount's caches and the kernel's give a program that looks twice.
"""
from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Imported up front, with everything else: a module loaded mid-run could come from a newer
# tree than the servers and modules already loaded.
from fusefs.client import KelpClient

MiB = 1 << 20


@dataclass(frozen=True)
class Metric:
    unit: str
    higher_is_better: bool


@dataclass(frozen=True)
class Sizes:
    big_file: int          # bytes of the sequential write/read file
    random_reads: int      # 4 KiB preads into it
    small_files: int       # count of 4 KiB files
    small_size: int
    tree_bytes: int        # target size of the cp -r source tree
    tree_files: int        # at most this many files in it (plus the big top-up files)
    dirs: int              # directories in the mkdir tree
    renames: int


FULL = Sizes(big_file=1 << 30, random_reads=2000, small_files=2000, small_size=4096,
             tree_bytes=150 * MiB, tree_files=6000, dirs=1000, renames=1000)
QUICK = Sizes(big_file=16 * MiB, random_reads=200, small_files=100, small_size=4096,
              tree_bytes=8 * MiB, tree_files=300, dirs=100, renames=100)


@dataclass
class Context:
    root: Path                      # an empty directory on the target, this workload's own
    sizes: Sizes
    cold: Callable[[], None]
    source: Path                    # the cp -r source tree (on local disk)
    kelp: object = None             # the KelpTarget, for the client-library workload


METRICS: dict[str, Metric] = {
    "seq write (MB/s)": Metric("MB/s", True),
    "seq read cold (MB/s)": Metric("MB/s", True),
    "random 4KiB read cold (reads/s)": Metric("reads/s", True),
    "random 4KiB read cold, 4 jobs (reads/s)": Metric("reads/s", True),
    "small files: create (files/s)": Metric("files/s", True),
    "small files: ls -l (files/s)": Metric("files/s", True),
    "small files: stat cold (files/s)": Metric("files/s", True),
    "small files: stat warm (files/s)": Metric("files/s", True),
    "small files: read cold (files/s)": Metric("files/s", True),
    "small files: read warm (files/s)": Metric("files/s", True),
    "small files: delete (files/s)": Metric("files/s", True),
    "8 threads: create (files/s)": Metric("files/s", True),
    "cp -r tree (s)": Metric("s", False),
    "cp -r tree (MB/s)": Metric("MB/s", True),
    "mkdir tree (dirs/s)": Metric("dirs/s", True),
    "rename (renames/s)": Metric("renames/s", True),
    "client upload big (MB/s)": Metric("MB/s", True),
    "client download big cold (MB/s)": Metric("MB/s", True),
    "client upload small (files/s)": Metric("files/s", True),
    "client download small cold (files/s)": Metric("files/s", True),
}


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_parallel(fns: Iterable[Callable[[], object]]) -> float:
    """Run the callables at once, one thread each; the seconds until the last is done. The
    first exception any of them raised is raised here, once all are done."""
    import threading
    errors: list[BaseException] = []

    def run(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def _block(seed: int = 7) -> bytes:
    # Random bytes, so no layer can win by compressing or deduplicating.
    return random.Random(seed).randbytes(MiB)


# -- big file -------------------------------------------------------------------------------

def big_file(ctx: Context) -> dict[str, float]:
    """Sequential write (1 MiB writes, fsync, close), cold sequential read, cold random
    4 KiB preads of the same file."""
    size, path, block = ctx.sizes.big_file, ctx.root / "big.bin", _block()

    def write() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for _ in range(size // MiB):
                os.write(fd, block)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.sync()

    out = {"seq write (MB/s)": size / MiB / _timed(write)}
    if os.path.getsize(path) != size:
        raise AssertionError(f"wrote {size} bytes, file has {os.path.getsize(path)}")

    ctx.cold()

    def read() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            got = 0
            while chunk := os.read(fd, MiB):
                got += len(chunk)
        finally:
            os.close(fd)
        if got != size:
            raise AssertionError(f"read {got} bytes of {size}")

    out["seq read cold (MB/s)"] = size / MiB / _timed(read)

    ctx.cold()
    rng = random.Random(42)
    offsets = [rng.randrange(size // 4096) * 4096 for _ in range(ctx.sizes.random_reads)]

    def preads(part: list[int]) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            for off in part:
                if len(os.pread(fd, 4096, off)) != 4096:
                    raise AssertionError(f"short read at {off}")
        finally:
            os.close(fd)

    out["random 4KiB read cold (reads/s)"] = len(offsets) / _timed(lambda: preads(offsets))

    ctx.cold()
    jobs = [offsets[i::4] for i in range(4)]   # the same reads, by 4 threads on one fd each

    def preads_4() -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(preads, jobs))

    out["random 4KiB read cold, 4 jobs (reads/s)"] = len(offsets) / _timed(preads_4)
    # Spot-check content: a block written at offset k MiB is `block` again.
    with open(path, "rb") as fh:
        fh.seek(size - MiB)
        if fh.read(MiB) != block:
            raise AssertionError("the last MiB read back differs from what was written")
    path.unlink()
    return out


# -- many small files -----------------------------------------------------------------------

def small_files(ctx: Context) -> dict[str, float]:
    n, data = ctx.sizes.small_files, _block()[:ctx.sizes.small_size]
    d = ctx.root / "small"
    d.mkdir()
    names = [d / f"f{i:05d}" for i in range(n)]

    def create() -> None:
        for p in names:
            with open(p, "wb") as fh:
                fh.write(data)
        os.sync()

    out = {"small files: create (files/s)": n / _timed(create)}
    ctx.cold()

    def ls() -> None:
        res = subprocess.run(["ls", "-l", str(d)], capture_output=True, check=True)
        listed = res.stdout.count(b"\n") - 1  # minus the "total" line
        if listed != n:
            raise AssertionError(f"ls -l listed {listed} of {n} files")

    out["small files: ls -l (files/s)"] = n / _timed(ls)

    def stat() -> None:
        for p in names:
            if os.stat(p).st_size != len(data):
                raise AssertionError(f"{p} has the wrong size")

    ctx.cold()
    out["small files: stat cold (files/s)"] = n / _timed(stat)
    # The second pass on the same mount: what its caches (and the kernel's) give.
    out["small files: stat warm (files/s)"] = n / _timed(stat)
    ctx.cold()

    def read() -> None:
        for p in names:
            with open(p, "rb") as fh:
                if fh.read() != data:
                    raise AssertionError(f"{p} reads back wrong")

    out["small files: read cold (files/s)"] = n / _timed(read)
    out["small files: read warm (files/s)"] = n / _timed(read)

    def delete() -> None:
        for p in names:
            os.unlink(p)
        os.sync()

    out["small files: delete (files/s)"] = n / _timed(delete)
    if os.listdir(d):
        raise AssertionError("files left after deleting all")
    return out


# -- a real source tree ---------------------------------------------------------------------

def tree_stats(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            files += 1
            size += os.lstat(os.path.join(dirpath, f)).st_size
    return files, size


def build_source_tree(dest: Path, target_bytes: int, max_files: int) -> tuple[int, int]:
    """Up to `max_files` files of this machine's Python stdlib, then venv site-packages
    (symlinks resolved, so every target gets regular files), topped up with big random files
    to `target_bytes`. Returns (files, bytes)."""
    import sysconfig
    sources = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    dest.mkdir(parents=True)
    budget = target_bytes * 9 // 10  # leave room for the big files
    used = count = 0
    for i, src in enumerate(sources):
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            rel = Path(dirpath).relative_to(src)
            for f in sorted(filenames):
                s = Path(dirpath) / f
                try:
                    st = s.stat()
                except OSError:
                    continue  # dangling symlink
                if not s.is_file() or used + st.st_size > budget or count >= max_files:
                    continue
                out = dest / f"src{i}" / rel / f
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(s, out)
                used += st.st_size
                count += 1
    block, k = _block(3), 0
    while used < target_bytes:
        n = min(32 * MiB, target_bytes - used)
        with open(dest / f"big{k}.bin", "wb") as fh:
            fh.write((block * (n // MiB + 1))[:n])
        used, k = used + n, k + 1
    return tree_stats(dest)


def cp_tree(ctx: Context) -> dict[str, float]:
    dst = ctx.root / "tree"
    from bench.targets import drop_page_cache
    files, size = tree_stats(ctx.source)
    drop_page_cache()  # every target reads the source cold

    def cp() -> None:
        subprocess.run(["cp", "-r", str(ctx.source), str(dst)], check=True,
                       capture_output=True)
        os.sync()

    seconds = _timed(cp)
    got = tree_stats(dst)
    if got != (files, size):
        raise AssertionError(f"cp -r copied {got} (files, bytes), the source has "
                             f"{(files, size)}")
    shutil.rmtree(dst)
    return {"cp -r tree (s)": seconds, "cp -r tree (MB/s)": size / MiB / seconds}


# -- metadata -------------------------------------------------------------------------------

def parallel_creates(ctx: Context, threads: int = 8) -> dict[str, float]:
    """`small_files` files of 4 KiB created by `threads` threads at once in one mount, each in
    a directory of its own: how far the mount and the servers overlap independent writers
    (the single-thread rate is the small-files create row)."""
    n, data = ctx.sizes.small_files, _block()[:ctx.sizes.small_size]
    dirs = [ctx.root / "parallel" / f"t{t}" for t in range(threads)]
    for d in dirs:
        d.mkdir(parents=True)

    def work(d: Path) -> None:
        for i in range(n // threads):
            with open(d / f"f{i:05d}", "wb") as fh:
                fh.write(data)

    seconds = run_parallel([lambda d=d: work(d) for d in dirs]) + _timed(os.sync)
    return {"8 threads: create (files/s)": (n // threads) * threads / seconds}


def mkdir_tree(ctx: Context) -> dict[str, float]:
    """`dirs` directories: 10 top-level ones, the rest spread evenly below them."""
    top = [ctx.root / "dirs" / f"d{i}" for i in range(10)]
    per = (ctx.sizes.dirs - len(top)) // len(top)
    paths = [p for t in top for p in [t] + [t / f"s{j:03d}" for j in range(per)]]
    (ctx.root / "dirs").mkdir()

    def mkdirs() -> None:
        for p in paths:
            os.mkdir(p)
        os.sync()

    out = {"mkdir tree (dirs/s)": len(paths) / _timed(mkdirs)}
    shutil.rmtree(ctx.root / "dirs")
    return out


def renames(ctx: Context) -> dict[str, float]:
    d = ctx.root / "ren"
    d.mkdir()
    n = ctx.sizes.renames
    for i in range(n):
        (d / f"a{i:05d}").write_bytes(b"x")

    def rename() -> None:
        for i in range(n):
            os.rename(d / f"a{i:05d}", d / f"b{i:05d}")
        os.sync()

    out = {"rename (renames/s)": n / _timed(rename)}
    if sorted(os.listdir(d)) != [f"b{i:05d}" for i in range(n)]:
        raise AssertionError("the directory does not hold exactly the renamed files")
    shutil.rmtree(d)
    return out


# -- the client library (KelpFS only) -------------------------------------------------------

class _Sink(io.RawIOBase):
    """A write-only stream that counts bytes (download to nowhere)."""

    def __init__(self):
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.n += len(b)
        return len(b)


def core_client(ctx: Context) -> dict[str, float]:
    """KelpClient.upload/download of one big file and of many small ones. Each download uses
    a new client (an empty read cache) after the page cache was dropped."""
    from bench.targets import drop_page_cache

    k, sz = ctx.kelp, ctx.sizes
    base = f"/bench-core-{os.getpid()}-{time.time_ns()}"
    local_big = ctx.root / "big.bin"
    with open(local_big, "wb") as fh:
        block = _block()
        for _ in range(sz.big_file // MiB):
            fh.write(block)
    small = _block()[:sz.small_size]
    out: dict[str, float] = {}

    client = KelpClient(k.master_addr, k.gateway_addr)
    try:
        def upload_big() -> None:
            with open(local_big, "rb") as fh:
                client.upload(fh, f"{base}/big.bin", replication=k.REPLICATION)

        out["client upload big (MB/s)"] = sz.big_file / MiB / _timed(upload_big)

        def upload_small() -> None:
            for i in range(sz.small_files):
                client.upload(io.BytesIO(small), f"{base}/small/f{i:05d}",
                              replication=k.REPLICATION)

        out["client upload small (files/s)"] = sz.small_files / _timed(upload_small)
    finally:
        client.close()

    drop_page_cache()
    client = KelpClient(k.master_addr, k.gateway_addr)
    try:
        sink = _Sink()
        out["client download big cold (MB/s)"] = sz.big_file / MiB / _timed(
            lambda: client.download(f"{base}/big.bin", sink))
        if sink.n != sz.big_file:
            raise AssertionError(f"downloaded {sink.n} bytes of {sz.big_file}")
    finally:
        client.close()

    drop_page_cache()
    client = KelpClient(k.master_addr, k.gateway_addr)
    try:
        def download_small() -> None:
            for i in range(sz.small_files):
                if client.read_all(f"{base}/small/f{i:05d}") != small:
                    raise AssertionError(f"small file {i} reads back wrong")

        out["client download small cold (files/s)"] = sz.small_files / _timed(download_small)
        client.remove(base, recursive=True)
    finally:
        client.close()
    local_big.unlink()
    return out


MOUNT_WORKLOADS = [big_file, small_files, parallel_creates, cp_tree, mkdir_tree, renames]
CORE_WORKLOADS = [core_client]
