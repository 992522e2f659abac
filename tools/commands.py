"""The client-facing `kelp` commands: up/down/status, upload/download/ls/rm, umount.

Each function takes the parsed argparse namespace and returns an exit code; failures are
raised as FsError/QuietError and turned into one line by tools.cli.main.
"""
from __future__ import annotations

import os
import posixpath
import stat as statmod
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cluster.common.masters import parse_masters
from cluster.common.security import Transport
from fusefs.client import KelpClient, normpath
from fusefs.master_client import check_reachable
from protos import master_pb2
from tools import mounts
from tools.errors import QuietError
from tools.local_cluster import (
    DEFAULT_TLS_DIR,
    ClusterLayout,
    LocalCluster,
    UpOptions,
    wait_pid_gone,
)

console = Console()
err_console = Console(stderr=True)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def admin_transport(args) -> Transport:
    """The CLI's transport: the admin credentials of --tls-dir, $KELP_TLS_DIR, or the
    ./data/tls that `kelp up` makes; plain when none is there."""
    tls_dir = getattr(args, "tls_dir", None) or os.environ.get("KELP_TLS_DIR")
    if not tls_dir and Path(DEFAULT_TLS_DIR, "ca.crt").exists():
        tls_dir = DEFAULT_TLS_DIR
    return Transport("admin", tls_dir or None)


def connect(args) -> KelpClient:
    """A client for --master, after checking the master answers and has the expected name."""
    transport = admin_transport(args)
    status = check_reachable(args.master, transport=transport)
    if getattr(args, "name", None) and status.master_name != args.name:
        raise QuietError(f"the master at {args.master} is named {status.master_name!r}, "
                         f"not {args.name!r}")
    return KelpClient(args.master, getattr(args, "gateway", None), transport=transport)


# ---------------------------------------------------------------- credentials

def certs(args) -> int:
    from cluster.common.certs import make_cluster_certs
    from cluster.common.credentials import CredentialsError
    try:
        report = make_cluster_certs(args.dir, tuple(args.hosts) if args.hosts else None,
                                    force=args.force,
                                    clients=tuple(args.clients) if args.clients else None)
    except (CredentialsError, ValueError) as e:
        raise QuietError(str(e)) from None
    print(f"{args.dir}: {len(report.created)} files made, {len(report.kept)} kept "
          f"(nodes: --tls-dir {args.dir})")
    for name in args.clients or ():
        print(f"client {name}: {Path(args.dir) / 'clients' / name} "
              f"(kelp-mount --tls-dir {Path(args.dir) / 'clients' / name})")
    return 0


# ---------------------------------------------------------------- local cluster

def up(args) -> int:
    from cluster.common.config import resolve
    opts = resolve(UpOptions, "up", args, args.config)
    data = Path(opts.data).resolve()
    if (data / "cluster.json").exists():
        try:
            old = LocalCluster.load(str(data))
            if any(old.running(n) for n in old.nodes):
                raise QuietError(f"a cluster is already running from {data} "
                                 f"(`kelp down --data {opts.data}` stops it)")
        except (ValueError, KeyError, TypeError):
            pass
    eph = opts.ephemeral_ports
    if opts.masters < 1:
        raise QuietError("--masters must be at least 1")
    if opts.masters > 1 and not opts.meta:
        raise QuietError("--masters > 1 needs --meta postgresql://... (the database the "
                         "masters share)")
    layout = ClusterLayout(data_dir=str(data), volumes=opts.volumes, masters=opts.masters,
                           meta=opts.meta)
    if eph:
        layout.master_port = layout.master_grpc_port = layout.master_zmq_port = 0
        layout.volume_port = layout.volume_grpc_port = 0
        layout.gateway_port = layout.gateway_http_port = 0
    if not opts.insecure:
        from cluster.common.certs import make_cluster_certs
        layout.tls_dir = str(data / "tls")
        make_cluster_certs(layout.tls_dir)
    cluster = LocalCluster(layout)
    cluster.plan()
    if not eph:
        _check_ports_free(cluster)
    err_console.print(f"starting {len(cluster.nodes)} nodes under {data} ...")
    try:
        cluster.start(timeout=60)
    except RuntimeError as e:
        cluster.stop()
        raise QuietError(f"cluster did not come up: {e}") from None
    if opts.mount:
        _mount_background(cluster, opts.mount, opts.allow_other)
    _print_status(check_reachable(cluster.master_addr, transport=cluster.transport),
                  cluster.transport)
    console.print(f"master: {cluster.master_addr}   gateway: {cluster.gateway_addr}   "
                  f"logs: {data / 'logs'}")
    return 0


def _check_ports_free(cluster: LocalCluster) -> None:
    import socket
    for spec in cluster.nodes.values():
        for addr in filter(None, (spec.grpc_address, spec.http_address, spec.zmq_address)):
            host, port = addr.rsplit(":", 1)
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, int(port)))
                except OSError:
                    raise QuietError(f"port {addr} for {spec.name} is in use "
                                     "(another cluster running? try --ephemeral-ports)") from None


def _mount_background(cluster: LocalCluster, mountpoint: str,
                      allow_other: bool | None) -> None:
    mnt = Path(mountpoint).resolve()
    mnt.mkdir(parents=True, exist_ok=True)
    pid_file = cluster.root / "pids" / "mount.pid"
    log_file = cluster.root / "logs" / "mount.log"
    repo = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, str(repo / "mount.py"), str(mnt), "--master", cluster.master_addr,
           "--gateway", cluster.gateway_addr, "--background", "--pid-file", str(pid_file),
           "--log-file", str(log_file)]
    if allow_other is not None:
        cmd.append("--allow-other" if allow_other else "--no-allow-other")
    if cluster.layout.tls_dir:
        cmd += ["--tls-dir", cluster.layout.tls_dir]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise QuietError(f"mount failed: {result.stderr.strip() or result.stdout.strip()}")
    (cluster.root / "mountpoint").write_text(str(mnt))


def down(args) -> int:
    """Unmount and stop every node `kelp up` started, whatever one step reports.

    Each step runs even when an earlier one failed (a busy mount must not leave the nodes
    running); the failures are reported one line each at the end, with exit code 1. Files
    that another process may remove at any moment (the mount process deletes its own pid file
    as it exits) are removed with missing_ok, never checked first.
    """
    data = Path(args.data).resolve()
    try:
        cluster = LocalCluster.load(str(data))
    except FileNotFoundError:
        raise QuietError(f"no cluster state in {data} (was `kelp up --data {args.data}` run?)") \
            from None
    failures: list[str] = []
    mp = data / "mountpoint"
    try:
        mountpoint = mp.read_text().strip()
    except FileNotFoundError:
        mountpoint = ""
    if mountpoint:
        failures += _stop_mount(mountpoint, data / "pids" / "mount.pid")
        if not failures:
            mp.unlink(missing_ok=True)
    stopped = [n for n in cluster.nodes if cluster.running(n)]
    for name in sorted(cluster.nodes, key=cluster.stop_order):
        try:
            cluster.stop_node(name)
        except OSError as e:
            failures.append(f"stopping {name}: {e}")
    cluster.save()
    err_console.print(f"stopped {len(stopped)} nodes: {', '.join(stopped) or 'none running'}")
    for line in failures:
        print(f"kelp: {line}", file=sys.stderr)
    return 1 if failures else 0


def _stop_mount(mountpoint: str, pid_file: Path) -> list[str]:
    """Unmount, then wait for the mount process to exit; the failures, one line each."""
    failures = []
    if not mounts.unmount(mountpoint):
        failures.append(f"could not unmount {mountpoint} (busy? close files there and retry)")
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        pid = 0  # already exited (it removes its own pid file) or never wrote one
    if pid and not failures and not wait_pid_gone(pid, timeout=10):
        failures.append(f"the mount process {pid} did not exit after unmounting")
    pid_file.unlink(missing_ok=True)
    return failures


def unmount(mountpoint: str) -> None:
    if not mounts.unmount(mountpoint):
        raise QuietError(f"could not unmount {mountpoint} (busy? close files there and retry)")


def umount(args) -> int:
    if not os.path.ismount(args.mountpoint):
        raise QuietError(f"{args.mountpoint} is not a mount point")
    unmount(args.mountpoint)
    return 0


def status(args) -> int:
    transport = admin_transport(args)
    st = check_reachable(args.master, transport=transport)
    if args.name and st.master_name != args.name:
        raise QuietError(f"the master at {args.master} is named {st.master_name!r}, "
                         f"not {args.name!r}")
    _print_status(st, transport, parse_masters(args.master))
    return 0


def _print_status(st, transport: Transport, listed=()) -> None:
    """The table of the cluster as the master `st` sees it; `listed`: the --master list,
    whose masters that master does not count live are shown as unreachable."""
    table = Table(title=f"KelpFS cluster (master {st.master_name} at {st.grpc_address})")
    for col in ("node", "kind", "address", "state", "volumes", "used", "free"):
        table.add_column(col, justify="right" if col in ("volumes", "used", "free") else "left")
    if st.masters:
        # Several masters over one database: each live one, the leader marked.
        for address in st.masters:
            role = "master (leader)" if address == st.leader else "master"
            table.add_row(st.master_name if address == st.grpc_address else "", role,
                          address, "[green]up[/]", "", "", "")
    else:
        table.add_row(st.master_name, "master", st.grpc_address, "[green]up[/]",
                      "", "", "")
    if len(listed) > 1:
        seen = {*st.masters, st.grpc_address}
        for address in listed:
            if address not in seen:
                table.add_row("", "master", address, "[red]unreachable[/]", "", "", "")

    for s in sorted(st.servers, key=lambda s: s.name):
        used = sum(v.size for v in s.volumes)
        state = "[green]up[/]" if s.alive else f"[red]dead[/] ({s.last_seen_s:.0f}s)"
        table.add_row(s.name, f"volume #{s.server_id}", s.grpc_address, state,
                      str(len(s.volumes)), human(used), human(s.free_bytes))
    for g in sorted(st.gateways, key=lambda g: g.name):
        state = "[green]up[/]" if g.alive else f"[red]dead[/] ({g.last_seen_s:.0f}s)"
        table.add_row(g.name, "gateway", g.address, state, "", "", "")
    console.print(table)
    console.print(f"files: {st.files}   default replication: {st.default_replication}   "
                  f"pending deletions: {st.pending_deletions}   "
                  f"mutation channel (ZMQ): {st.mutation_address or 'none'}")
    if st.masters:
        console.print(f"leader: {st.leader or 'none yet (an election is under way)'}")
    console.print(f"a mount on this host would use: {_fuse_binding()}")
    if not transport.secure:
        # This CLI reached the master without credentials, so anyone on the network path
        # (any local user, for loopback) can too.
        console.print("[yellow]warning: insecure cluster[/]: no TLS or CURVE; any process "
                      "that reaches its ports can read and change every file "
                      "(`kelp up` without --insecure, or --tls-dir on every node, secures it)")


def _fuse_binding() -> str:
    """Which FUSE binding `kelp mount` picks here (fusefs/fuse_binding.py decides)."""
    try:
        from fusefs.fuse_binding import LIBFUSE
    except (ImportError, OSError) as e:  # no libfuse, or no binding
        return f"no FUSE ({e})"
    return LIBFUSE


# ---------------------------------------------------------------- files

def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=err_console,
                    transient=False)


def upload(args) -> int:
    src = Path(args.path)
    if not src.exists():
        raise QuietError(f"{args.path}: no such file or directory")
    if src.is_dir() and not args.recursive:
        raise QuietError(f"{args.path} is a directory (use -r)")
    if not (0 <= args.replication <= 8):
        raise QuietError("--replication must be between 1 and 8", code=2)
    dest_dir = normpath(args.to or "/")
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file())
        pairs = [(p, f"{dest_dir.rstrip('/')}/{src.name}/{p.relative_to(src).as_posix()}")
                 for p in files]
    else:
        pairs = [(src, f"{dest_dir.rstrip('/')}/{src.name}")]
    total = sum(p.stat().st_size for p, _ in pairs)
    client = connect(args)
    start = time.monotonic()
    try:
        with _progress() as progress:
            task = progress.add_task("upload", total=total)
            for local, remote in pairs:
                progress.update(task, description=f"upload {local.name[:30]}")
                client.upload_file(str(local), remote, args.replication,
                                   progress=lambda n: progress.advance(task, n))
    finally:
        client.close()
    secs = max(time.monotonic() - start, 1e-6)
    err_console.print(f"uploaded {len(pairs)} files, {human(total)} in {secs:.2f}s: "
                      f"{len(pairs) / secs:.1f} files/s, {total / secs / 1e6:.1f} MB/s")
    return 0


def download(args) -> int:
    client = connect(args)
    try:
        attr = client.stat(args.remote)
        if args.recursive:
            return download_tree(client, normpath(args.remote), Path(args.output))
        if not statmod.S_ISREG(attr.mode):
            kind = "a directory (use -r)" if statmod.S_ISDIR(attr.mode) else \
                f"a {file_kind(attr.mode)}, which holds no data (-r recreates it)"
            raise QuietError(f"{normpath(args.remote)} is {kind}")
        if args.output == "-":
            client.download(args.remote, sys.stdout.buffer)
            return 0
        out = Path(args.output)
        if out.is_dir():
            out = out / Path(normpath(args.remote)).name
        tmp = out.with_name(out.name + ".kelp-part")
        start = time.monotonic()
        try:
            with open(tmp, "wb") as fh, _progress() as progress:
                task = progress.add_task(f"download {out.name[:30]}", total=attr.size)
                client.download(args.remote, fh, progress=lambda n: progress.advance(task, n))
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        secs = max(time.monotonic() - start, 1e-6)
        err_console.print(f"downloaded {human(attr.size)} in {secs:.2f}s: "
                          f"{attr.size / secs / 1e6:.1f} MB/s")
    finally:
        client.close()
    return 0


def file_kind(mode: int) -> str:
    return {statmod.S_IFIFO: "FIFO", statmod.S_IFSOCK: "socket", statmod.S_IFCHR:
            "character device", statmod.S_IFBLK: "block device", statmod.S_IFLNK: "symlink",
            statmod.S_IFDIR: "directory"}.get(statmod.S_IFMT(mode), "file")


def download_tree(client: KelpClient, remote: str, dest: Path) -> int:
    """Copy the tree at `remote` into the local directory `dest` (made if missing), as
    `cp -a` would: modes and mtimes kept, symlinks as symlinks, FIFOs made anew, devices made
    anew when run as root. A socket is only a name without the process that listens on it,
    so it is skipped (as tar does), with one line; so is a device for a user who may not
    make one. Skips are expected outcomes (tar too exits 0 for a socket): the exit code is
    0, and a failure to copy raises."""
    attr = client.stat(remote)
    if not statmod.S_ISDIR(attr.mode):
        raise QuietError(f"{remote} is not a directory (download -r copies a tree)")
    if dest.exists() and not dest.is_dir():
        raise QuietError(f"{dest} exists and is not a directory")
    dest = dest / (posixpath.basename(remote) or "kelpfs-root")
    counts = {"files": 0, "dirs": 0, "links": 0, "special": 0, "skipped": 0}

    def skip(path: str, why: str) -> None:
        err_console.print(f"skipped {path}: {why}", highlight=False)
        counts["skipped"] += 1

    def copy(rpath: str, local: Path, a) -> None:
        kind = statmod.S_IFMT(a.mode)
        if kind == statmod.S_IFDIR:
            local.mkdir(exist_ok=True)
            for entry in client.listdir(rpath):
                copy(posixpath.join(rpath, entry.name), local / entry.name, entry.attr)
            counts["dirs"] += 1
        elif kind == statmod.S_IFREG:
            with open(local, "wb") as fh:
                client.download(rpath, fh)
            counts["files"] += 1
        elif kind == statmod.S_IFLNK:
            os.symlink(client.master.call("Readlink", master_pb2.PathRequest(path=rpath)).target,
                       local)
            counts["links"] += 1
            return  # a symlink's own mode and times are not worth an lutimes here
        elif kind == statmod.S_IFSOCK:
            return skip(rpath, "a socket (it means nothing without its server)")
        elif kind in (statmod.S_IFCHR, statmod.S_IFBLK) and os.geteuid() != 0:
            return skip(rpath, f"a {file_kind(a.mode)} (only root may make one)")
        else:
            os.mknod(local, kind | 0o600, a.rdev)
            counts["special"] += 1
        os.chmod(local, statmod.S_IMODE(a.mode))
        os.utime(local, ns=(a.atime_ns, a.mtime_ns))

    copy(remote, dest, attr)
    err_console.print(f"downloaded {counts['files']} files, {counts['dirs']} directories, "
                      f"{counts['links']} symlinks, {counts['special']} special files "
                      f"into {dest}; skipped {counts['skipped']}")
    return 0


def ls(args) -> int:
    path = normpath(args.path_flag or args.remote or "/")
    client = connect(args)
    try:
        attr = client.stat(path)
        if statmod.S_ISDIR(attr.mode):
            entries = [(e.name, e.attr) for e in client.listdir(path)]
        else:
            entries = [(Path(path).name, attr)]
        if not args.long:
            for name, a in entries:
                console.print(name + ("/" if statmod.S_ISDIR(a.mode) else ""), highlight=False)
            return 0
        table = Table(title=path)
        for col in ("name", "mode", "size", "chunks", "replicas", "mtime"):
            numeric = col in ("size", "chunks", "replicas")
            table.add_column(col, justify="right" if numeric else "left")
        for name, a in entries:
            chunks = replicas = ""
            if a.inline:
                chunks, replicas = "inline", "master"  # the bytes live in the metadata
            elif statmod.S_ISREG(a.mode):
                info = client.chunks(a.ino)
                chunks = str(len(info.chunks))
                vids = {c.fid.split(",")[0] for c in info.chunks}
                if vids:
                    locs = client.master.call("LookupVolume", master_pb2.LookupRequest(
                        volume_ids=[int(v) for v in vids]))
                    replicas = str(min((len(v.replicas) for v in locs.locations), default=0))
            mtime = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.mtime_ns / 1e9))
            size = (f"{os.major(a.rdev)}, {os.minor(a.rdev)}"  # a device shows its numbers
                    if statmod.S_ISCHR(a.mode) or statmod.S_ISBLK(a.mode) else str(a.size))
            table.add_row(name + ("/" if statmod.S_ISDIR(a.mode) else ""),
                          statmod.filemode(a.mode), size, chunks, replicas, mtime)
        console.print(table)
    finally:
        client.close()
    return 0


def rm(args) -> int:
    client = connect(args)
    try:
        n = client.remove(args.remote, recursive=args.recursive)
    finally:
        client.close()
    err_console.print(f"removed {n} entr{'y' if n == 1 else 'ies'}")
    return 0

