"""How the master's metadata grows with files, directories and mounts, on PostgreSQL.

    python -m bench.scale [--files 1000000] [--dir-entries 100000] [--per-dir 1000]
                          [--sqlite-files 50000] [--window 512] [--reps 3] [--ls-l-reps 2]
                          [--out bench/results/scale.json] [--workdir DIR] [--keep]

What it starts (all stopped at the end, by pid, the mounts unmounted, even on failure): a
private PostgreSQL with fsync on (tools.pglocal.LocalPostgres(durable=True)); a cluster of
one master on `--meta <that database>`, one volume server and a gateway on free ports, no
TLS; one FUSE mount (`python mount.py`), idle while the files are made.

What it does:

1. Creates `--files` empty files through the master's mutation channel (the ZMQ DEALER a
   mount uses, speaking the same `Mutation` messages), `--window` in flight on one
   connection, so the master's batches are full and the master, not this client, is the
   bottleneck. `--dir-entries` of them go to /big, spread evenly over the run; the rest to
   /t/dNNNNN/ of `--per-dir` each (each directory made just before its first file). Every
   10,000 creates: the time, and the CPU seconds of the master, the PostgreSQL processes,
   the mount and this client. At 0, 1/4, 1/2 and all of the files the pipeline is drained
   and the memory of every process (VmRSS, RssAnon, RssShmem from /proc/PID/status; the
   PostgreSQL processes by kind, from pg_stat_activity) and the database's size (per table
   and per index, WAL written, dead rows) are recorded.
   Then `--probe-files` more creates (into /probe) with the server logging every statement,
   to count the SQL statements, and the batches, one create costs.
2. Lists /big through the mount: `ls -f | wc -l` and `ls -l > /dev/null`, cold (the mount
   started again and the kernel's caches dropped; PostgreSQL's own buffers stay warm) and
   warm (at once again), `--reps` (`--ls-l-reps`) times each; through the CLI (`kelp ls`)
   and through ReadDir from this process (pages of 1,000 and 10,000).
3. stat rate on a sample of files in /t: GetAttr over gRPC from 4 threads, and os.stat
   through a freshly started mount from 4 threads.
4. The database's size again after VACUUM FULL (what the rows need, without dead rows).
5. The callback table's memory per granted entry (cluster/master/callbacks.py, in this
   process, with tracemalloc) for 100,000 entries held by one, then a second session, and a
   session's own memory (sessions.py).
6. The same create workload for `--sqlite-files` files on a master with its default SQLite
   store, for the ratio (the PostgreSQL figure to compare is the same shape's first files).

The JSON written to --out holds every raw number; docs/scaling.md reads it.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import psycopg
import zmq

from bench.targets import ClusterMount, KelpTarget, drop_page_cache, host_facts
from bench.workloads import run_parallel
from cluster.master.callbacks import CallbackTable
from cluster.master.sessions import SessionTable
from fusefs.master_client import MasterClient
from protos import master_pb2
from tools.local_cluster import REPO_ROOT, ClusterLayout, LocalCluster, children_of
from tools.pglocal import LocalPostgres

TICKS = os.sysconf("SC_CLK_TCK")
SEGMENT = 10_000          # creates between two rate samples
OUT = REPO_ROOT / "bench" / "results" / "scale.json"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- process facts

def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, RssShmem of one process, in KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


class Postgres:
    """The private server, its processes and a monitoring connection to the database."""

    def __init__(self, server: LocalPostgres, dsn: str):
        self.server = server
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True, application_name="bench-monitor")
        pidfile = Path(server.base) / "data" / "postmaster.pid"
        self.postmaster = int(pidfile.read_text().split()[0])

    def pids(self) -> list[int]:
        return [self.postmaster, *children_of(self.postmaster)]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def kinds(self) -> dict[int, str]:
        rows = self.conn.execute(
            "SELECT pid, backend_type, application_name FROM pg_stat_activity").fetchall()
        out = {}
        for pid, kind, app in rows:
            out[pid] = f"client: {app or '?'}" if kind == "client backend" else kind
        out[self.postmaster] = "postmaster"
        return out

    def processes(self) -> dict:
        """Memory of every PostgreSQL process, summed by kind. RssShmem is mostly
        shared_buffers, which each backend counts again for the pages it touched; RssAnon is
        each process's own memory."""
        kinds = self.kinds()
        by_kind: dict[str, dict[str, int]] = {}
        total = {"VmRSS": 0, "RssAnon": 0, "RssShmem": 0, "processes": 0}
        shmem_max = 0
        for pid in self.pids():
            mem = memory(pid)
            if not mem:
                continue
            kind = kinds.get(pid, "other")
            k = by_kind.setdefault(kind, {"VmRSS": 0, "RssAnon": 0, "RssShmem": 0,
                                          "processes": 0})
            for key in ("VmRSS", "RssAnon", "RssShmem"):
                k[key] += mem.get(key, 0)
                total[key] += mem.get(key, 0)
            k["processes"] += 1
            total["processes"] += 1
            shmem_max = max(shmem_max, mem.get("RssShmem", 0))
        # What the processes really hold: their own memory, and the shared memory once.
        total["own_plus_shared_once_kib"] = total["RssAnon"] + shmem_max
        return {"total_kib": total, "by_kind_kib": by_kind}

    def sizes(self) -> dict:
        c = self.conn
        db = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        rels = c.execute(
            "SELECT c.relname, c.relkind, pg_relation_size(c.oid), pg_total_relation_size(c.oid)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i') ORDER BY 4 DESC"
        ).fetchall()
        stats = c.execute(
            "SELECT relname, n_live_tup, n_dead_tup, n_tup_ins, n_tup_upd, n_tup_hot_upd,"
            " autovacuum_count FROM pg_stat_user_tables").fetchall()
        wal = c.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0]
        walstat = c.execute("SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync"
                            " FROM pg_stat_wal").fetchone()
        xact = c.execute("SELECT xact_commit, xact_rollback FROM pg_stat_database"
                         " WHERE datname = current_database()").fetchone()
        return {
            "database_bytes": db,
            "tables": {r[0]: {"heap_bytes": r[2], "total_bytes": r[3]}
                       for r in rels if r[1] == "r"},
            "indexes": {r[0]: r[2] for r in rels if r[1] == "i"},
            "rows": {r[0]: {"live": r[1], "dead": r[2], "inserted": r[3], "updated": r[4],
                            "hot_updated": r[5], "autovacuums": r[6]} for r in stats},
            "wal_lsn_bytes": int(wal),
            "wal": dict(zip(("records", "fpi", "bytes", "writes", "syncs"),
                            (int(x) for x in walstat), strict=True)),
            "xact_commit": xact[0], "xact_rollback": xact[1],
        }

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------- the workload

def plan(files: int, big: int, per_dir: int) -> Iterator[tuple[str, str]]:
    """(op, path) in order: /big and /t, then `files` creates, `big` of them in /big spread
    evenly, the others in /t/dNNNNN/ of `per_dir` each (mkdir first)."""
    big = min(big, files)
    yield "mkdir", "/big"
    yield "mkdir", "/t"
    b = j = 0
    for i in range(files):
        if (i + 1) * big // files > b:
            yield "create", f"/big/f{b:07d}"
            b += 1
            continue
        d, k = divmod(j, per_dir)
        if k == 0:
            yield "mkdir", f"/t/d{d:05d}"
        yield "create", f"/t/d{d:05d}/f{k:04d}"
        j += 1


class Pipeline:
    """Mutations on one DEALER to the master's mutation port (a mount's mutation channel, as
    fusefs/mutation_channel.py speaks it), at most `window` unanswered. One thread; errors
    are counted, never ignored."""

    def __init__(self, address: str, transport, window: int):
        self.window = window
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 100_000), (zmq.RCVHWM, 100_000)):
            self.sock.setsockopt(opt, value)
        transport.zmq_client(self.sock, "master")
        self.sock.connect(f"tcp://{address}")
        self.ids = itertools.count(1)
        self.inflight: dict[int, str] = {}
        self.errors: list[str] = []
        self.answered = 0

    def send(self, op: str, path: str) -> None:
        while len(self.inflight) >= self.window:
            self._receive(block=True)
        mid = next(self.ids)
        if op == "create":
            m = master_pb2.Mutation(id=mid, create=master_pb2.CreateRequest(path=path,
                                                                            mode=0o644))
        else:
            m = master_pb2.Mutation(id=mid, mkdir=master_pb2.MkdirRequest(path=path,
                                                                          mode=0o755))
        self.sock.send(m.SerializeToString())
        self.inflight[mid] = path
        self._receive(block=False)

    def _receive(self, block: bool) -> None:
        if block and not self.sock.poll(120_000):
            raise RuntimeError(f"the master answered nothing in 120 s "
                               f"({len(self.inflight)} in flight)")
        while True:
            try:
                payload = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = master_pb2.MutationReply()
            reply.ParseFromString(payload)
            path = self.inflight.pop(reply.id, "?")
            self.answered += 1
            if reply.errno:
                self.errors.append(f"{path}: {os.strerror(reply.errno)} {reply.message}")
                if len(self.errors) > 100:
                    raise RuntimeError("over 100 mutations failed:\n" +
                                       "\n".join(self.errors[:10]))

    def drain(self) -> None:
        while self.inflight:
            self._receive(block=True)

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


class Stack:
    """A cluster (one master, one volume server, a gateway), optionally on PostgreSQL, and a
    mount of it; stop() stops all of it."""

    def __init__(self, work: Path, meta: str = ""):
        self.work = work
        layout = ClusterLayout(data_dir=str(work / "cluster"), volumes=1, master_port=0,
                               master_grpc_port=0, master_zmq_port=0, volume_port=0,
                               volume_grpc_port=0, gateway_port=0, gateway_http_port=0,
                               heartbeat_interval=0.5, meta=meta)
        self.cluster = LocalCluster(layout)
        self.cluster.plan()
        self.mount: ClusterMount | None = None
        self.mountpoint = work / "mnt"

    def start(self) -> Stack:
        self.cluster.start(timeout=60)
        return self

    @property
    def master_pid(self) -> int:
        return self.cluster.nodes[self.cluster.layout.master_name].pid

    @property
    def mutation_address(self) -> str:
        return self.cluster.nodes[self.cluster.layout.master_name].zmq_address

    def start_mount(self) -> ClusterMount:
        self.mount = ClusterMount(self.cluster, self.mountpoint)
        self.mount.mount(timeout=60)
        return self.mount

    def stop_mount(self) -> None:
        if self.mount is not None:
            self.mount.unmount()
            self.mount = None

    def mount_pid(self) -> int:
        return self.mount.proc.pid if self.mount and self.mount.proc else 0

    def stop(self) -> None:
        try:
            self.stop_mount()
        finally:
            self.cluster.stop()


def create_files(stack: Stack, files: int, big: int, per_dir: int, window: int,
                 pg: Postgres | None, checkpoints: set[int]) -> dict:
    """Run the create workload; the rate samples and the checkpoints' memory and sizes."""
    master = stack.master_pid
    pipe = Pipeline(stack.mutation_address, stack.cluster.transport, window)
    samples, marks = [], []

    def counters() -> dict:
        return {"t": time.monotonic(), "master_cpu": cpu_seconds(master),
                "pg_cpu": pg.cpu() if pg else 0.0,
                "mount_cpu": cpu_seconds(stack.mount_pid()) if stack.mount else 0.0,
                "client_cpu": time.process_time()}

    def checkpoint(done: int) -> None:
        pipe.drain()
        time.sleep(1.0)     # let the master settle (its batch answered, nothing queued)
        mark = {"files": done, "master_kib": memory(master),
                "mount_kib": memory(stack.mount_pid()) if stack.mount else {}}
        if pg is not None:
            mark["postgres"] = pg.processes()
            mark["db"] = pg.sizes()
        marks.append(mark)
        log(f"checkpoint at {done:,} files: master RSS "
            f"{mark['master_kib'].get('VmRSS', 0) / 1024:.0f} MiB"
            + (f", database {mark['db']['database_bytes'] / 2**20:.0f} MiB" if pg else ""))

    checkpoint(0)
    done, mkdirs, last_done = 0, 0, 0
    start = last = counters()
    paused = 0.0
    for op, path in plan(files, big, per_dir):
        pipe.send(op, path)
        if op == "mkdir":
            mkdirs += 1
            continue
        done += 1
        if done % SEGMENT == 0 or done == files:
            now = counters()
            n = done - last_done      # since the last sample or checkpoint
            dt = now["t"] - last["t"]
            samples.append({"files": done, "n": n, "seconds": round(dt, 3),
                            "per_s": round(n / dt, 1),
                            **{k: round(now[k] - last[k], 3) for k in now if k != "t"}})
            if done % (10 * SEGMENT) == 0 or done == files:
                log(f"{done:,} files, {n / dt:,.0f}/s now; master CPU "
                    f"{(now['master_cpu'] - last['master_cpu']) / n * 1000:.2f} s/1000")
            last, last_done = now, done
        if done in checkpoints:
            t0 = time.monotonic()
            checkpoint(done)
            paused += time.monotonic() - t0
            last, last_done = counters(), done
    pipe.drain()
    end = counters()
    pipe.close()
    if pipe.errors:
        raise RuntimeError(f"{len(pipe.errors)} mutations failed, e.g. {pipe.errors[:3]}")
    total = end["t"] - start["t"] - paused
    return {
        "files": files, "dirs": mkdirs, "big_dir_entries": min(big, files),
        "per_dir": per_dir, "window": window,
        "seconds": round(total, 1), "per_s": round(files / total, 1),
        "cpu_s": {k: round(end[k] - start[k], 2) for k in end if k != "t"},
        "cpu_ms_per_create": {k: round((end[k] - start[k]) / files * 1000, 4)
                              for k in end if k != "t"},
        "samples": samples, "checkpoints": marks,
    }


def statement_probe(stack: Stack, pg: Postgres, n: int) -> dict:
    """The SQL statements the master sends PostgreSQL per create, counted in the server's
    log (log_statement = all, for `n` creates into /probe only), by connection."""
    logfile = Path(pg.server.base) / "server.log"
    offset = logfile.stat().st_size
    masters = {pid for pid, app in pg.conn.execute(
        "SELECT pid, application_name FROM pg_stat_activity").fetchall()
        if (app or "").startswith("kelp-master")}
    pg.conn.execute("ALTER SYSTEM SET log_statement = 'all'")
    pg.conn.execute("SELECT pg_reload_conf()")
    time.sleep(1.0)
    try:
        pipe = Pipeline(stack.mutation_address, stack.cluster.transport, 512)
        t0 = time.monotonic()
        pipe.send("mkdir", "/probe")
        for i in range(n):
            pipe.send("create", f"/probe/f{i:05d}")
        pipe.drain()
        took = time.monotonic() - t0
        pipe.close()
    finally:
        pg.conn.execute("ALTER SYSTEM RESET log_statement")
        pg.conn.execute("SELECT pg_reload_conf()")
        time.sleep(1.0)
    with open(logfile, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    per_pid: dict[int, int] = {}
    commits: dict[int, int] = {}
    kinds: dict[str, int] = {}
    for m in re.finditer(r"\[(\d+)\] LOG:  (?:statement|execute [^:]*): ([^\n]*)", text):
        pid = int(m.group(1))
        if pid not in masters:
            continue
        per_pid[pid] = per_pid.get(pid, 0) + 1
        sql = m.group(2).strip()
        word = " ".join(sql.split()[:2]).upper() if sql.upper().startswith(
            ("RELEASE", "SAVEPOINT", "ROLLBACK", "BEGIN")) else sql.split()[0].upper()
        kinds[word] = kinds.get(word, 0) + 1
        if sql.upper() == "COMMIT":
            commits[pid] = commits.get(pid, 0) + 1
    total = sum(per_pid.values())
    batches = max(commits.values(), default=0)
    out = {"creates": n, "seconds": round(took, 2),
           "statements": total, "statements_per_create": round(total / n, 2),
           "by_connection": sorted(per_pid.values(), reverse=True),
           "by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
           "batches": batches, "creates_per_batch": round(n / batches, 1) if batches else None}
    log(f"statements per create: {out['statements_per_create']}, "
        f"{out['creates_per_batch']} creates per batch")
    return out


# ---------------------------------------------------------------- listing and stat

def timed_shell(cmd: str, cwd: Path) -> tuple[float, str]:
    t0 = time.monotonic()
    done = subprocess.run(["bash", "-c", cmd], cwd=str(cwd), capture_output=True, text=True,
                          timeout=1800, check=False)
    took = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {done.stderr.strip()[-500:]}")
    return took, done.stdout.strip()


def fresh_mount(stack: Stack) -> None:
    """A mount with empty caches: the old one stopped, the kernel's caches dropped."""
    stack.stop_mount()
    drop_page_cache()
    stack.start_mount()


def list_big(stack: Stack, entries: int, reps: int, ls_l_reps: int) -> dict:
    out: dict = {"dropped_kernel_caches": drop_page_cache()}
    big = stack.mountpoint / "big"
    for name, cmd, times in (("ls_f_wc", f"ls -f {big} | wc -l", reps),
                             ("ls_l", f"ls -l {big} > /dev/null", ls_l_reps)):
        cold, warm = [], []
        for _ in range(times):
            fresh_mount(stack)
            took, text = timed_shell(cmd, stack.work)
            cold.append(round(took, 3))
            if name == "ls_f_wc" and int(text) != entries + 2:
                raise RuntimeError(f"ls -f saw {text} names, want {entries + 2}")
            took, _ = timed_shell(cmd, stack.work)
            warm.append(round(took, 3))
        out[name] = {"cold_s": cold, "warm_s": warm,
                     "cold_median_s": statistics.median(cold),
                     "warm_median_s": statistics.median(warm)}
        log(f"{name}: cold {statistics.median(cold):.2f} s, warm {statistics.median(warm):.2f} s")
    # The memory of the mount and master now: the mount has /big's 100k entries cached, the
    # master holds the callbacks of that listing.
    out["mount_kib_after"] = memory(stack.mount_pid())
    out["master_kib_after"] = memory(stack.master_pid)
    return out


def list_big_cli(stack: Stack, entries: int, reps: int) -> dict:
    out: dict = {}
    env_py = f"PYTHONPATH={REPO_ROOT} {sys.executable} -m tools.cli"
    cli = []
    for _ in range(reps):
        took, text = timed_shell(f"{env_py} ls /big --master {stack.cluster.master_addr}"
                                 " | wc -l", REPO_ROOT)
        if int(text) != entries:
            raise RuntimeError(f"kelp ls saw {text} names, want {entries}")
        cli.append(round(took, 3))
    took, _ = timed_shell(f"{env_py} --help > /dev/null", REPO_ROOT)
    out["kelp_ls"] = {"seconds": cli, "median_s": statistics.median(cli),
                      "cli_startup_s": round(took, 3)}
    client = MasterClient(stack.cluster.master_addr, transport=stack.cluster.transport)
    try:
        for page in (1000, 10_000):
            runs = []
            for _ in range(reps):
                t0 = time.monotonic()
                n = sum(1 for _ in client.readdir("/big", page_size=page))
                runs.append(round(time.monotonic() - t0, 3))
                if n != entries:
                    raise RuntimeError(f"ReadDir saw {n} entries, want {entries}")
            out[f"readdir_page_{page}"] = {"seconds": runs, "median_s": statistics.median(runs)}
    finally:
        client.close()
    log(f"kelp ls {out['kelp_ls']['median_s']:.2f} s; ReadDir "
        f"{out['readdir_page_1000']['median_s']:.2f} s (pages of 1000), "
        f"{out['readdir_page_10000']['median_s']:.2f} s (10000)")
    return out


def sample_paths(files: int, big: int, per_dir: int, n: int) -> list[str]:
    others = files - min(big, files)
    rng = random.Random(13)
    return [f"/t/d{j // per_dir:05d}/f{j % per_dir:04d}"
            for j in (rng.randrange(others) for _ in range(n))]


def threaded_rate(paths: list[str], fn, threads: int = 4) -> dict:
    chunks = [paths[i::threads] for i in range(threads)]
    failures: list[str] = []

    def work(chunk: list[str]) -> None:
        for p in chunk:
            try:
                fn(p)
            except Exception as e:
                failures.append(f"{p}: {e}")

    took = run_parallel([lambda c=c: work(c) for c in chunks])
    if failures:
        raise RuntimeError(f"{len(failures)} stats failed, e.g. {failures[:3]}")
    return {"n": len(paths), "threads": threads, "seconds": round(took, 3),
            "per_s": round(len(paths) / took, 1)}


def stat_rates(stack: Stack, paths: list[str]) -> dict:
    clients = [MasterClient(stack.cluster.master_addr, transport=stack.cluster.transport)
               for _ in range(4)]
    local = threading.local()
    pool = iter(clients)
    lock = threading.Lock()

    def getattr_(p: str) -> None:
        if not hasattr(local, "c"):
            with lock:
                local.c = next(pool)
        local.c.call("GetAttr", master_pb2.PathRequest(path=p))

    try:
        grpc_rate = threaded_rate(paths, getattr_)
    finally:
        for c in clients:
            c.close()
    fresh_mount(stack)
    root = str(stack.mountpoint)
    mount_cold = threaded_rate(paths, lambda p: os.stat(root + p))
    mount_warm = threaded_rate(paths, lambda p: os.stat(root + p))
    log(f"stat: GetAttr {grpc_rate['per_s']:,.0f}/s; through the mount "
        f"{mount_cold['per_s']:,.0f}/s cold, {mount_warm['per_s']:,.0f}/s warm")
    return {"grpc_getattr": grpc_rate, "mount_cold": mount_cold, "mount_warm": mount_warm}


# ---------------------------------------------------------------- callbacks, in process

def callback_memory(entries: int) -> dict:
    """Bytes the callback table takes per granted entry, as a ReadDir grants them (the
    directory's path, each entry's path, and each entry's inode), for one session and then a
    second session holding the same entries; and bytes per session of the session table."""
    tracemalloc.start()
    try:
        table = CallbackTable(max_keys=10 * entries)
        base = tracemalloc.get_traced_memory()[0]
        out = {"entries": entries}
        for sid in (1, 2):
            table.grant(sid, paths=["/big"] + [f"/big/f{i:07d}" for i in range(entries)],
                        inos=[10_000_000 + i for i in range(entries)])
            used = tracemalloc.get_traced_memory()[0] - base
            out[f"bytes_after_session_{sid}"] = used
            out[f"keys_held_by_session_{sid}"] = table.count(sid)
        out["bytes_per_entry_first_session"] = round(out["bytes_after_session_1"] / entries, 1)
        out["bytes_per_entry_each_further_session"] = round(
            (out["bytes_after_session_2"] - out["bytes_after_session_1"]) / entries, 1)
        del table
        sessions = SessionTable()
        base = tracemalloc.get_traced_memory()[0]
        n = 1000
        for i in range(n):
            sessions.open(f"peer-{i:05d}".encode(), identity="client")
        out["bytes_per_session"] = round((tracemalloc.get_traced_memory()[0] - base) / n, 1)
        return out
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------- the run

def machine() -> dict:
    try:
        debian = Path("/etc/debian_version").read_text().strip()
    except OSError:
        debian = ""
    return {**host_facts(), "debian": debian, "loadavg_at_start": os.getloadavg(),
            "kelpfs_commit": KelpTarget().version()}


def run_postgres(args: argparse.Namespace, work: Path, result: dict) -> None:
    server = LocalPostgres(durable=True)
    pg: Postgres | None = None
    stack: Stack | None = None
    try:
        server.start()
        dsn = server.create_database("kelp_scale")
        pg = Postgres(server, dsn)
        result["postgres"] = {
            "version": pg.conn.execute("SHOW server_version").fetchone()[0],
            "settings": {k: pg.conn.execute(f"SHOW {k}").fetchone()[0]
                         for k in ("fsync", "synchronous_commit", "shared_buffers",
                                   "wal_level", "max_wal_size", "full_page_writes")}}
        stack = Stack(work / "pg", meta=dsn).start()
        stack.start_mount()
        n = args.files
        checkpoints = {n // 4, n // 2, n}
        log(f"PostgreSQL {result['postgres']['version']}: creating {n:,} files")
        result["create"] = create_files(stack, n, args.dir_entries, args.per_dir, args.window,
                                        pg, checkpoints)
        log(f"created {n:,} files in {result['create']['seconds']:.0f} s "
            f"({result['create']['per_s']:,.0f}/s)")
        result["statement_probe"] = statement_probe(stack, pg, args.probe_files)
        big = min(args.dir_entries, n)
        result["ls_mount"] = list_big(stack, big, args.reps, args.ls_l_reps)
        result["ls_cli"] = list_big_cli(stack, big, args.reps)
        result["stat"] = stat_rates(stack, sample_paths(n, big, args.per_dir, args.stat_sample))
        result["processes_after_listing"] = {
            "master_kib": memory(stack.master_pid), "mount_kib": memory(stack.mount_pid()),
            "postgres": pg.processes()}
        stack.stop()
        stack = None
        t0 = time.monotonic()
        pg.conn.execute("VACUUM FULL")
        pg.conn.execute("ANALYZE")
        result["db_after_vacuum_full"] = pg.sizes()
        result["db_after_vacuum_full"]["vacuum_full_s"] = round(time.monotonic() - t0, 1)
    finally:
        if stack is not None:
            stack.stop()
        if pg is not None:
            pg.close()
        server.stop()


def run_sqlite(args: argparse.Namespace, work: Path, result: dict) -> None:
    n = args.sqlite_files
    big = round(args.dir_entries * n / args.files)
    stack = Stack(work / "sqlite")
    try:
        stack.start()
        stack.start_mount()
        log(f"SQLite: creating {n:,} files")
        res = create_files(stack, n, big, args.per_dir, args.window, None, set())
        db = Path(stack.cluster.nodes[stack.cluster.layout.master_name].data) / "meta.db"
        stack.stop()
        res["db_bytes"] = db.stat().st_size
        res["db_bytes_per_file"] = round(res["db_bytes"] / n, 1)
        result["sqlite_create"] = res
        log(f"SQLite: {n:,} files in {res['seconds']:.0f} s ({res['per_s']:,.0f}/s)")
    finally:
        stack.stop()


def summarize(result: dict) -> dict:
    """The figures docs/scaling.md quotes, worked out from the raw numbers."""
    c = result.get("create")
    if not c:
        return {}
    n = c["files"]
    s: dict = {"files": n, "per_s_overall": c["per_s"]}
    per100k = []
    seg = c["samples"]
    step = max(1, len(seg) // 10)
    for i in range(0, len(seg), step):
        part = seg[i:i + step]
        files = sum(p["n"] for p in part)
        secs = sum(p["seconds"] for p in part)
        per100k.append({"up_to": part[-1]["files"], "per_s": round(files / secs, 1),
                        "master_cpu_s_per_1000": round(
                            sum(p["master_cpu"] for p in part) / files * 1000, 3),
                        "pg_cpu_s_per_1000": round(sum(p["pg_cpu"] for p in part)
                                                   / files * 1000, 3)})
    s["rate_by_tenth"] = per100k
    last = c["checkpoints"][-1]["db"]
    first = c["checkpoints"][0]["db"]
    dirs = c["dirs"]
    s["db_bytes_per_file"] = round((last["database_bytes"] - first["database_bytes"]) / n, 1)
    s["wal_bytes_per_create"] = round((last["wal_lsn_bytes"] - first["wal_lsn_bytes"]) / n, 1)
    s["commits_per_create"] = round((last["xact_commit"] - first["xact_commit"]) / n, 4)
    s["wal_syncs_per_create"] = round((last["wal"]["syncs"] - first["wal"]["syncs"]) / n, 4)
    s["dirs"] = dirs
    vac = result.get("db_after_vacuum_full")
    if vac:
        probe = result.get("statement_probe", {}).get("creates", 0)
        s["db_bytes_per_file_vacuumed"] = round(
            (vac["database_bytes"] - first["database_bytes"]) / (n + probe), 1)
    if "sqlite_create" in result:
        sq = result["sqlite_create"]
        m = sq["files"]
        pg_first = [p for p in seg if p["files"] <= max(m, SEGMENT)]
        pg_rate = sum(p["n"] for p in pg_first) / sum(p["seconds"] for p in pg_first) \
            if pg_first else 0
        s["sqlite_vs_pg_first_files"] = {"files": m, "sqlite_per_s": sq["per_s"],
                                         "pg_per_s": round(pg_rate, 1),
                                         "ratio": round(sq["per_s"] / pg_rate, 2)
                                         if pg_rate else None}
    return s


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=1_000_000, help="files to create")
    p.add_argument("--dir-entries", type=int, default=100_000,
                   help="of them, how many go to the one big directory /big")
    p.add_argument("--per-dir", type=int, default=1000, help="files per other directory")
    p.add_argument("--sqlite-files", type=int, default=50_000,
                   help="files of the same workload on the SQLite store (0: skip)")
    p.add_argument("--window", type=int, default=512, help="mutations in flight")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each listing")
    p.add_argument("--ls-l-reps", type=int, default=2,
                   help="repetitions of `ls -l` (one entry costs a FUSE call or more)")
    p.add_argument("--stat-sample", type=int, default=5000, help="files stat()ed")
    p.add_argument("--probe-files", type=int, default=2000,
                   help="creates whose SQL statements are counted in the server's log")
    p.add_argument("--callback-entries", type=int, default=100_000,
                   help="entries granted in the in-process callback-table measurement")
    p.add_argument("--out", default=str(OUT), help="where the JSON goes")
    p.add_argument("--workdir", default=None, help="where the temp dir goes (default $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = p.parse_args(argv)
    if args.files < 4 or args.per_dir < 1 or args.window < 1:
        p.error("--files must be at least 4, --per-dir and --window at least 1")
    return args


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # A SIGTERM unwinds like Ctrl-C, so the finally blocks stop everything started.
    signal.signal(signal.SIGTERM, _interrupted)
    work = Path(tempfile.mkdtemp(prefix="kelp-scale-", dir=args.workdir))
    result: dict = {"machine": machine(), "args": vars(args)}
    started = time.monotonic()
    try:
        result["callbacks"] = callback_memory(args.callback_entries)
        log(f"callback table: {result['callbacks']['bytes_per_entry_first_session']:.0f} B per "
            f"entry (one session), {result['callbacks']['bytes_per_session']:.0f} B per session")
        run_postgres(args, work, result)
        if args.sqlite_files:
            run_sqlite(args, work, result)
        result["summary"] = summarize(result)
    finally:
        result["wall_s"] = round(time.monotonic() - started, 1)
        result["machine"]["loadavg_at_end"] = os.getloadavg()
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {out}")
        if args.keep:
            log(f"kept {work}")
        elif any(os.path.ismount(p) for p in work.glob("*/mnt")):
            log(f"not removing {work}: a mount under it is still mounted")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)
    print(json.dumps(result.get("summary", {}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
