"""`kelp fsck`: check that every chunk of every file is intact on every replica, and repair.

The logic lives here (plain classes the tests drive); tools/reports.py renders the reports.

A check run, in this order:
  1. ClusterStatus: the volume servers, whether alive, and the volumes each holds.
  2. ListNeedles on every live server's volumes (for orphans). Taken BEFORE the chunk lists,
     so a needle committed in between is seen as referenced, not as an orphan.
  3. ListChunks (master): every chunk of every inode with a path, and the deletion queue.
  4. CheckNeedles on every live replica of every volume the chunks under PATH use: the volume
     server reads each needle locally and checks cookie, size and CRC (its own and the one the
     master recorded), so no data crosses the network.
Inline files (small files whose bytes the master keeps) are checked by the master against
their CRC32C and listed in ListChunks; one that fails is reported lost (there is no other copy
to repair it from; the master's store is as durable as its disk).
Findings: damaged replicas (file path, fid, server, what is wrong), needles with no intact
copy left (lost), volumes with fewer live copies than their replication, needles shared by two
inodes, and orphans (live needles no chunk references and not queued for deletion).

Repair (`--repair`), from a good copy only:
  * an under-replicated volume is copied whole (Volume.CopyVolume, pulled from a live replica)
    to live servers that lack it: the one that lost it, or another when its server is gone;
  * a damaged or missing needle is pulled by the damaged replica from an intact one
    (Volume.CopyNeedles, verified on both ends);
  * orphans are queued for deletion (Master.QueueOrphans), only if their key was handed out at
    least `orphan_min_age` seconds ago (an in-flight write's needle is not an orphan yet) and
    no chunk references them by then; the reaper then deletes them on every replica.

A busy cluster changes under fsck: a file deleted meanwhile may show as missing needles, an
upload in flight as orphans. Run it twice, or on a quiet cluster, before acting on surprises.
"""
from __future__ import annotations

import errno
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc

from cluster.common import rpc
from cluster.common.errors import FsError
from cluster.common.fid import BadFid, Fid
from cluster.common.security import Transport
from fusefs.master_client import MasterClient
from protos import master_pb2, volume_pb2, volume_pb2_grpc

CHECK_BATCH = 1000
RPC_TIMEOUT_S = 60.0
COPY_TIMEOUT_S = 600.0
SEEN_TIMEOUT_S = 15.0
DEFAULT_ORPHAN_MIN_AGE_S = 300.0

STATUS_NAMES = {v: k.lower() for k, v in volume_pb2.NeedleCheck.Status.items()}


# ---------------------------------------------------------------- findings

@dataclass(frozen=True)
class Server:
    name: str
    address: str
    alive: bool
    free_bytes: int
    volumes: dict            # vid -> master_pb2.VolumeInfo


@dataclass
class Needle:
    """A needle the chunk lists under PATH use."""
    fid: str
    volume_id: int
    key: int
    cookie: int
    size: int
    crc: int
    paths: dict = field(default_factory=dict)          # ino -> path
    good: list = field(default_factory=list)           # server names with an intact copy
    bad: dict = field(default_factory=dict)            # server name -> (status, detail)


@dataclass(frozen=True)
class Damage:
    path: str
    fid: str
    server: str
    status: str        # missing, wrong_cookie, crc_bad, size_mismatch, unreadable
    detail: str


@dataclass(frozen=True)
class UnderReplicated:
    volume_id: int
    replication: int
    live: list         # names of live servers holding it
    dead: list         # names of servers holding it that are down

    @property
    def missing_copies(self) -> int:
        return max(0, self.replication - len(self.live))


@dataclass(frozen=True)
class Orphan:
    fid: str
    volume_id: int
    size: int
    servers: tuple


@dataclass
class FsckReport:
    path: str = "/"
    files: int = 0
    inline_files: int = 0          # files whose bytes the master keeps (CRC checked there)
    chunks: int = 0
    needles: int = 0
    replicas_checked: int = 0
    damaged: list = field(default_factory=list)            # Damage
    lost: list = field(default_factory=list)               # (path, fid): no intact copy left
    under_replicated: list = field(default_factory=list)   # UnderReplicated
    missing_volumes: list = field(default_factory=list)    # vids used by files, held nowhere
    shared: list = field(default_factory=list)             # (fid, [paths])
    orphans: list = field(default_factory=list)            # Orphan
    unreachable: list = field(default_factory=list)        # (server, vid, error)
    seconds: float = 0.0
    needles_by_fid: dict = field(default_factory=dict, repr=False)
    servers: dict = field(default_factory=dict, repr=False)

    @property
    def damaged_files(self) -> list[str]:
        return sorted({d.path for d in self.damaged} | {p for p, _ in self.lost})

    @property
    def clean(self) -> bool:
        return not (self.damaged or self.lost or self.under_replicated or self.missing_volumes
                    or self.shared or self.orphans or self.unreachable)


@dataclass
class RepairReport:
    volumes_copied: list = field(default_factory=list)   # (vid, source, target, needles, bytes)
    needles_copied: int = 0
    bytes_copied: int = 0
    orphans_queued: int = 0
    orphans_referenced: int = 0
    orphans_too_recent: int = 0
    failures: list = field(default_factory=list)         # one line each

    @property
    def complete(self) -> bool:
        return not self.failures and not self.orphans_too_recent


class Progress:
    """What fsck tells about its progress; the CLI passes a rich progress bar behind it."""

    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def _under(path: str, root: str) -> bool:
    if root == "/":
        return True
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


# ---------------------------------------------------------------- the checker

class Fsck:
    def __init__(self, master_addr: str, path: str = "/", orphans: bool = True,
                 progress: Progress | None = None, timeout: float = RPC_TIMEOUT_S,
                 transport: Transport | None = None):
        if not path.startswith("/"):
            raise FsError(errno.EINVAL, f"fsck path {path!r} must be absolute")
        self.path = path
        self.check_orphans = orphans
        self.progress = progress or Progress()
        self.timeout = timeout
        transport = transport or Transport("admin")
        self.master = MasterClient(master_addr, timeout=timeout, retry_for=10.0,
                                   transport=transport)
        self._stubs = rpc.ChannelCache(transport.channel_factory("volume"))

    def close(self) -> None:
        self.master.close()
        self._stubs.close()

    def __enter__(self) -> Fsck:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _volume(self, address: str):
        return self._stubs.stub(address, volume_pb2_grpc.VolumeStub)

    # ------------------------------------------------------------ check

    def servers(self) -> dict[str, Server]:
        st = self.master.status(timeout=self.timeout)
        return {s.name: Server(s.name, s.grpc_address, s.alive, s.free_bytes,
                               {v.volume_id: v for v in s.volumes}) for s in st.servers}

    def run(self) -> FsckReport:
        started = time.monotonic()
        report = FsckReport(path=self.path)
        if self.path != "/":
            self.master.call("GetAttr", master_pb2.PathRequest(path=self.path))  # ENOENT
        servers = self.servers()
        report.servers = servers
        listed = self._list_needles(servers, report) if self.check_orphans else {}
        refs, queued, inline = self._chunk_refs()
        for check in inline:
            if _under(check.path, self.path):
                report.inline_files += 1
                if not check.crc_ok:
                    report.lost.append((check.path, "inline"))

        # Every fid any inode references (for orphans and sharing), and those under PATH.
        inos_of: dict[str, set[int]] = defaultdict(set)
        paths_of_ino: dict[int, str] = {}
        for r in refs:
            fid = self._norm(r.fid)
            inos_of[fid].add(r.ino)
            paths_of_ino[r.ino] = r.path
        needles: dict[str, Needle] = {}
        files = set()
        for r in refs:
            if not _under(r.path, self.path):
                continue
            files.add(r.ino)
            report.chunks += 1
            fid = self._norm(r.fid)
            n = needles.get(fid)
            if n is None:
                f = Fid.parse(fid)
                n = needles[fid] = Needle(fid, f.volume_id, f.key, f.cookie, r.needle_size,
                                          r.crc32c)
            n.paths[r.ino] = r.path
        report.files = len(files) + report.inline_files
        report.needles = len(needles)
        report.needles_by_fid = needles
        for fid in sorted(needles):
            if len(inos_of[fid]) > 1:
                report.shared.append((fid, sorted(paths_of_ino[i] for i in inos_of[fid])))

        self._check_replicas(servers, needles, report)
        self._under_replicated(servers, report)
        if self.check_orphans:
            self._orphans(listed, set(inos_of), set(queued), report)
        report.seconds = time.monotonic() - started
        return report

    @staticmethod
    def _norm(fid: str) -> str:
        try:
            return str(Fid.parse(fid))
        except BadFid:
            return fid

    def _chunk_refs(self):
        refs, queued, inline = [], [], []
        for page in self.master.stream("ListChunks", master_pb2.ListChunksRequest(
                page_size=10_000), timeout=self.timeout):
            refs.extend(page.chunks)
            queued.extend(self._norm(f) for f in page.queued_fids)
            inline.extend(page.inline)
        return refs, queued, inline

    def _list_needles(self, servers: dict[str, Server], report: FsckReport):
        """(vid, server) -> {(key, cookie): size} of live needles, for the orphan check."""
        out = {}
        todo = [(s, vid) for s in servers.values() if s.alive for vid in sorted(s.volumes)]
        self.progress.start("listing needles", len(todo))
        for s, vid in todo:
            try:
                listing = self._volume(s.address).ListNeedles(
                    volume_pb2.VolumeRef(volume_id=vid), timeout=self.timeout)
                out[(vid, s.name)] = {(n.key, n.cookie): n.size for n in listing.needles}
            except grpc.RpcError as e:
                report.unreachable.append((s.name, vid, f"ListNeedles: {e.code().name}"))
            self.progress.advance()
        return out

    def _check_replicas(self, servers: dict[str, Server], needles: dict[str, Needle],
                        report: FsckReport) -> None:
        by_vid: dict[int, list[Needle]] = defaultdict(list)
        for n in needles.values():
            by_vid[n.volume_id].append(n)
        jobs = []
        for vid, group in sorted(by_vid.items()):
            holders = [s for s in servers.values() if vid in s.volumes]
            if not holders:
                report.missing_volumes.append(vid)
                continue
            for s in holders:
                if s.alive:
                    for i in range(0, len(group), CHECK_BATCH):
                        jobs.append((vid, s, group[i:i + CHECK_BATCH]))
        self.progress.start("checking replicas", sum(len(g) for _, _, g in jobs))
        for vid, s, group in jobs:
            self._check_batch(vid, s, group, report)
            self.progress.advance(len(group))
        for n in sorted(needles.values(), key=lambda n: n.fid):
            for server, (status, detail) in sorted(n.bad.items()):
                for path in sorted(set(n.paths.values())):
                    report.damaged.append(Damage(path, n.fid, server, status, detail))
            if not n.good:
                for path in sorted(set(n.paths.values())):
                    report.lost.append((path, n.fid))

    def _check_batch(self, vid: int, s: Server, group: list[Needle], report: FsckReport):
        req = volume_pb2.CheckNeedlesRequest(volume_id=vid, needles=[
            volume_pb2.NeedleRef(key=n.key, cookie=n.cookie, size=n.size, crc32c=n.crc)
            for n in group])
        try:
            reply = self._volume(s.address).CheckNeedles(req, timeout=self.timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                # The server dropped the volume since ClusterStatus: every needle is missing.
                for n in group:
                    n.bad[s.name] = ("missing", f"volume {vid} not on {s.name}")
            else:
                report.unreachable.append((s.name, vid, f"CheckNeedles: {e.code().name}"))
            return
        report.replicas_checked += len(group)
        for n, r in zip(group, reply.results, strict=True):
            if r.status == volume_pb2.NeedleCheck.OK:
                n.good.append(s.name)
            else:
                n.bad[s.name] = (STATUS_NAMES[r.status], r.detail)

    @staticmethod
    def _under_replicated(servers: dict[str, Server], report: FsckReport) -> None:
        vids = sorted({vid for s in servers.values() for vid in s.volumes})
        for vid in vids:
            holders = [s for s in servers.values() if vid in s.volumes]
            wanted = max(s.volumes[vid].replication for s in holders)
            live = sorted(s.name for s in holders if s.alive)
            if len(live) < wanted:
                report.under_replicated.append(UnderReplicated(
                    vid, wanted, live, sorted(s.name for s in holders if not s.alive)))

    @staticmethod
    def _orphans(listed: dict, referenced: set[str], queued: set[str],
                 report: FsckReport) -> None:
        found: dict[str, list] = {}
        for (vid, server), needles in sorted(listed.items()):
            for (key, cookie), size in needles.items():
                fid = str(Fid(vid, key, cookie))
                if fid in referenced or fid in queued:
                    continue
                found.setdefault(fid, [vid, size, []])[2].append(server)
        report.orphans = [Orphan(fid, vid, size, tuple(sorted(servers)))
                          for fid, (vid, size, servers) in sorted(found.items())]

    # ------------------------------------------------------------ repair

    def repair(self, report: FsckReport,
               orphan_min_age: float = DEFAULT_ORPHAN_MIN_AGE_S) -> RepairReport:
        out = RepairReport()
        servers = report.servers or self.servers()
        work = len(report.under_replicated) + len(report.damaged) + (1 if report.orphans else 0)
        self.progress.start("repairing", work)
        copied_to = self._rereplicate(servers, report, out)
        self._repair_needles(servers, report, copied_to, out)
        if report.orphans:
            self._queue_orphans(report.orphans, orphan_min_age, out)
            self.progress.advance()
        for vid in report.missing_volumes:
            out.failures.append(f"volume {vid} is on no server: its chunks are lost")
        for path, fid in report.lost:
            out.failures.append(f"{path}: needle {fid} has no intact copy left")
        return out

    def _rereplicate(self, servers: dict[str, Server], report: FsckReport,
                     out: RepairReport) -> dict[int, set[str]]:
        copied_to: dict[int, set[str]] = defaultdict(set)
        for ur in report.under_replicated:
            self.progress.advance()
            sources = [servers[n] for n in ur.live]
            if not sources:
                out.failures.append(f"volume {ur.volume_id}: no live copy to copy from "
                                    f"(held by {', '.join(ur.dead)}, all down)")
                continue
            # Prefer the copy with the fewest damaged needles as the source.
            bad = defaultdict(int)
            for n in report.needles_by_fid.values():
                if n.volume_id == ur.volume_id:
                    for name in n.bad:
                        bad[name] += 1
            source = min(sources, key=lambda s: (bad[s.name], s.name))
            targets = sorted((s for s in servers.values()
                              if s.alive and ur.volume_id not in s.volumes),
                             key=lambda s: (-s.free_bytes, s.name))[:ur.missing_copies]
            if len(targets) < ur.missing_copies:
                out.failures.append(f"volume {ur.volume_id}: {ur.missing_copies} copies "
                                    f"missing but only {len(targets)} servers to copy to")
            for t in targets:
                try:
                    r = self._volume(t.address).CopyVolume(volume_pb2.CopyVolumeRequest(
                        volume_id=ur.volume_id, replication=ur.replication,
                        source=source.address), timeout=COPY_TIMEOUT_S)
                except grpc.RpcError as e:
                    out.failures.append(f"volume {ur.volume_id}: copying {source.name} -> "
                                        f"{t.name} failed: {e.code().name}: {e.details()}")
                    continue
                out.volumes_copied.append((ur.volume_id, source.name, t.name, r.copied, r.bytes))
                out.bytes_copied += r.bytes
                copied_to[ur.volume_id].add(t.name)
                if r.failed:
                    out.failures.append(f"volume {ur.volume_id}: {r.failed} needles of "
                                        f"{source.name} were unreadable and not copied to "
                                        f"{t.name}")
        if copied_to:
            self._wait_seen(copied_to)
        return copied_to

    def _wait_seen(self, copied_to: dict[int, set[str]]) -> None:
        """Until the master lists the new copies (next heartbeat), so reads and a following
        fsck find them."""
        deadline = time.monotonic() + SEEN_TIMEOUT_S
        while time.monotonic() < deadline:
            now = self.servers()
            if all(name in now and vid in now[name].volumes
                   for vid, names in copied_to.items() for name in names):
                return
            time.sleep(0.2)

    def _repair_needles(self, servers: dict[str, Server], report: FsckReport,
                        copied_to: dict[int, set[str]], out: RepairReport) -> None:
        # (vid, damaged server, source server) -> needles to pull
        plan: dict[tuple[int, str, str], list[Needle]] = defaultdict(list)
        for n in report.needles_by_fid.values():
            for name in n.bad:
                self.progress.advance(len(set(n.paths.values())))
                if not n.good:
                    continue   # reported as lost
                plan[(n.volume_id, name, n.good[0])].append(n)
        for (vid, target, source), group in sorted(plan.items(), key=lambda kv: kv[0]):
            t, s = servers.get(target), servers.get(source)
            if t is None or s is None or not t.alive:
                out.failures.append(f"volume {vid}: {target} is down; {len(group)} needles "
                                    f"not repaired there")
                continue
            for i in range(0, len(group), CHECK_BATCH):
                part = group[i:i + CHECK_BATCH]
                try:
                    if vid not in t.volumes and target not in copied_to.get(vid, ()):
                        # The server lost the whole volume: copy it whole.
                        r = self._volume(t.address).CopyVolume(volume_pb2.CopyVolumeRequest(
                            volume_id=vid, replication=s.volumes[vid].replication,
                            source=s.address), timeout=COPY_TIMEOUT_S)
                        out.volumes_copied.append((vid, source, target, r.copied, r.bytes))
                        out.bytes_copied += r.bytes
                        copied_to[vid].add(target)
                        continue
                    r = self._volume(t.address).CopyNeedles(volume_pb2.CopyNeedlesRequest(
                        volume_id=vid, source=s.address, needles=[
                            volume_pb2.NeedleRef(key=n.key, cookie=n.cookie, size=n.size,
                                                 crc32c=n.crc) for n in part]),
                        timeout=COPY_TIMEOUT_S)
                except grpc.RpcError as e:
                    out.failures.append(f"volume {vid}: copying needles {source} -> {target} "
                                        f"failed: {e.code().name}: {e.details()}")
                    continue
                out.needles_copied += r.copied
                out.bytes_copied += r.bytes
                for f in r.failures:
                    out.failures.append(f"volume {vid}: needle {f.key:x} not copied to "
                                        f"{target}: {f.detail}")

    def _queue_orphans(self, orphans: Iterable[Orphan], min_age: float,
                       out: RepairReport) -> None:
        fids = [o.fid for o in orphans]
        for i in range(0, len(fids), 10_000):
            r = self.master.call("QueueOrphans", master_pb2.QueueOrphansRequest(
                fids=fids[i:i + 10_000], min_age_s=min_age))
            out.orphans_queued += r.queued
            out.orphans_referenced += r.referenced
            out.orphans_too_recent += r.too_recent


def check(master_addr: str, path: str = "/", *, orphans: bool = True,
          progress: Progress | None = None, transport: Transport | None = None) -> FsckReport:
    """One fsck run (no repair)."""
    with Fsck(master_addr, path, orphans, progress, transport=transport) as f:
        return f.run()


def check_and_repair(master_addr: str, path: str = "/", *, orphans: bool = True,
                     orphan_min_age: float = DEFAULT_ORPHAN_MIN_AGE_S,
                     progress: Progress | None = None,
                     on_report: Callable[[FsckReport], None] | None = None,
                     transport: Transport | None = None) -> tuple[FsckReport, RepairReport]:
    with Fsck(master_addr, path, orphans, progress, transport=transport) as f:
        report = f.run()
        if on_report:
            on_report(report)
        return report, f.repair(report, orphan_min_age)
