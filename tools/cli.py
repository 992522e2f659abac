"""`kelp`: the command line. Parses flags, builds option objects, and calls into the nodes,
the local-cluster runner and the client library; the work itself lives there.

Exit codes: 0 success; 1 the operation failed (a clear one-line message on stderr); 2 the
command line or configuration is wrong; 130 interrupted. User mistakes never print a traceback
(set KELP_DEBUG=1 to see one).
"""
from __future__ import annotations

import argparse
import os
import sys

from cluster.common.config import ConfigError, add_flags, resolve
from cluster.common.errors import FsError
from tools.errors import QuietError

DEFAULT_MASTER = os.environ.get("KELP_MASTER", "127.0.0.1:19333")


def _node_parser(sub, command: str, cls: type, help: str, func) -> argparse.ArgumentParser:
    """A subcommand whose flags come from an options dataclass (cluster/common/config.py),
    plus --config for a TOML file."""
    p = sub.add_parser(command, help=help)
    add_flags(p, cls, command)
    p.add_argument("--config", help=f"TOML file with more options ([{command}] table or top "
                                    f"level; flags and KELP_{command.upper()}_* env win)")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    from cluster.gateway.options import GatewayOptions
    from cluster.master.options import MasterOptions
    from cluster.volume.options import VolumeOptions
    from tools.local_cluster import UpOptions

    parser = argparse.ArgumentParser(
        prog="kelp", description="KelpFS: a distributed file system you mount as a directory.",
        epilog="Exit codes: 0 ok, 1 operation failed, 2 bad command line or config.")
    parser.add_argument("--version", action=_VersionAction, nargs=0,
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # -- nodes in the foreground
    _node_parser(sub, "master", MasterOptions, "run a master in the foreground", cmd_master)
    _node_parser(sub, "volume", VolumeOptions, "run a volume server in the foreground",
                 cmd_volume)
    _node_parser(sub, "gateway", GatewayOptions,
                 "run a gateway (the write path) in the foreground", cmd_gateway)

    # -- a local cluster in the background
    _node_parser(sub, "up", UpOptions,
                 "start a local cluster in the background and wait for it", command("up"))

    p = sub.add_parser("certs", help="make (or complete) a cluster's CA, certificates and "
                                     "CURVE keys in DIR (keys 0600, DIR 0700)")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--host", dest="hosts", action="append", default=None, metavar="HOST",
                   help="an address or name the nodes serve on, for the certificates "
                        "(repeatable; default: 127.0.0.1 and localhost)")
    p.add_argument("--force", action="store_true",
                   help="re-issue every certificate and key pair (rotation; the CA stays)")
    p.add_argument("--client", dest="clients", action="append", default=None, metavar="NAME",
                   help="also make a named client identity (for the master's exports) in "
                        "DIR/clients/NAME/, a credentials directory to hand to that client: "
                        "kelp-mount --tls-dir DIR/clients/NAME (repeatable; SIGHUP a running "
                        "master and gateway to admit it)")
    p.set_defaults(func=command("certs"))

    p = sub.add_parser("down", help="stop the cluster `kelp up` started (exactly its pids)")
    p.add_argument("--data", default="./data", help="data dir given to `up` (default: ./data)")
    p.set_defaults(func=command("down"))

    p = sub.add_parser("status", help="table of the cluster's nodes, volumes and space")
    _client_flags(p)
    p.set_defaults(func=command("status"))

    # -- files
    p = sub.add_parser("upload", help="store local files in the cluster")
    p.add_argument("-p", "--path", dest="path", required=True, help="local file or directory")
    p.add_argument("-r", "--recursive", action="store_true", help="upload a directory tree")
    p.add_argument("--to", default=None, help="remote directory (default: /)")
    p.add_argument("--replication", type=int, default=0,
                   help="copies of each chunk, 1..8 (default: the master's)")
    _client_flags(p)
    p.set_defaults(func=command("upload"))

    p = sub.add_parser("download", help="copy a file (or with -r a tree) out of the cluster")
    p.add_argument("remote", help="remote path")
    p.add_argument("-o", "--output", required=True,
                   help="local file to write ('-' = stdout); with -r, the directory to copy into")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="copy a directory tree: files, symlinks, FIFOs and (as root) devices "
                        "are recreated, sockets skipped with a line each")
    _client_flags(p)
    p.set_defaults(func=command("download"))

    p = sub.add_parser("ls", help="list a remote directory")
    p.add_argument("remote", nargs="?", default=None, help="remote path (default: /)")
    p.add_argument("-p", "--path", dest="path_flag", help="remote path (the original interface's "
                                                            "spelling)")
    p.add_argument("-l", "--long", action="store_true",
                   help="table with size, chunks, replicas, mtime")
    _client_flags(p)
    p.set_defaults(func=command("ls"))

    p = sub.add_parser("rm", help="remove a remote file (or a tree with -r)")
    p.add_argument("remote", help="remote path")
    p.add_argument("-r", "--recursive", action="store_true")
    _client_flags(p)
    p.set_defaults(func=command("rm"))

    # -- maintenance
    p = sub.add_parser(
        "fsck", help="check every chunk on every replica; --repair re-replicates",
        epilog="Exit codes: 0 clean (or, with --repair, everything found was repaired); "
               "1 problems found (or left unrepaired); 2 bad command line.")
    p.add_argument("remote", nargs="?", default="/", help="check files under this path "
                                                          "(default: /)")
    p.add_argument("--repair", action="store_true",
                   help="copy missing/damaged needles and volumes from a good replica, "
                        "queue orphans for deletion")
    p.add_argument("--no-orphans", dest="orphans", action="store_false",
                   help="skip the orphan search (no ListNeedles on every volume)")
    p.add_argument("--orphan-min-age", type=float, default=300.0, metavar="SECONDS",
                   help="--repair deletes only orphans whose key was handed out at least this "
                        "long ago, so uploads in flight are safe (default: 300)")
    _master_flags(p)
    p.set_defaults(func=cmd_fsck)

    p = sub.add_parser("vacuum", help="compact volumes whose garbage ratio passes a threshold")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="garbage ratio deleted/size, 0..1 (default: the master's, 0.3)")
    p.add_argument("--volume", dest="volume_ids", type=int, action="append", default=[],
                   metavar="ID", help="only this volume (repeatable)")
    _master_flags(p)
    p.set_defaults(func=cmd_vacuum)

    p = sub.add_parser("mount", help="mount the cluster at a directory (see mount.py --help)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for mount.py")
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser("bench", help="benchmark KelpFS against SeaweedFS, JuiceFS and the "
                                     "local disk (see python -m bench.run --help)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for bench.run")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("umount", help="unmount a KelpFS mount point")
    p.add_argument("mountpoint")
    p.set_defaults(func=command("umount"))
    return parser


def _client_flags(p: argparse.ArgumentParser) -> None:
    _master_flags(p)
    p.add_argument("-n", "--n", "--name", dest="name", default=None,
                   help="expected master name; refuse to work against another master")
    p.add_argument("--gateway", default=None,
                   help="gateway ZMQ address (default: a live one the master knows)")


def _master_flags(p: argparse.ArgumentParser) -> None:
    """How a CLI verb reaches the master: its address and, for a secure cluster, the
    credentials."""
    p.add_argument("--master", default=DEFAULT_MASTER,
                   help="master gRPC address, or several masters' host:port,host:port,... "
                        f"(tried in turn) (default: $KELP_MASTER or {DEFAULT_MASTER})")
    p.add_argument("--tls-dir", default=None, metavar="DIR",
                   help="the cluster's credentials (admin certificate and keys) for a secure "
                        "cluster (default: $KELP_TLS_DIR, else ./data/tls when it exists, as "
                        "`kelp up` makes it)")


def cmd_master(args) -> int:
    from cluster.master.options import MasterOptions
    from cluster.master.server import main
    return main(resolve(MasterOptions, "master", args, args.config))


def cmd_volume(args) -> int:
    from cluster.volume.options import VolumeOptions
    from cluster.volume.server import main
    return main(resolve(VolumeOptions, "volume", args, args.config))


def cmd_gateway(args) -> int:
    from cluster.gateway.options import GatewayOptions
    from cluster.gateway.server import main
    return main(resolve(GatewayOptions, "gateway", args, args.config))


def command(name: str):
    """A subcommand implemented in tools.commands, imported only when it runs (so `kelp
    master` does not pay for rich and the client library)."""

    def run(args) -> int:
        from tools import commands
        return getattr(commands, name)(args)

    return run


def cmd_fsck(args) -> int:
    from rich.console import Console

    from tools import fsck, reports
    from tools.commands import admin_transport
    if args.orphan_min_age < 0:
        raise QuietError("--orphan-min-age must be >= 0", 2)
    if not args.remote.startswith("/"):
        raise QuietError(f"fsck path {args.remote!r} must be absolute", 2)
    out, err = Console(), Console(stderr=True)
    with reports.RichProgress(err) as progress:
        if not args.repair:
            report = fsck.check(args.master, args.remote, orphans=args.orphans,
                                progress=progress, transport=admin_transport(args))
        else:
            report, repaired = fsck.check_and_repair(
                args.master, args.remote, orphans=args.orphans,
                orphan_min_age=args.orphan_min_age, progress=progress,
                transport=admin_transport(args))
    reports.print_fsck(report, out)
    if not args.repair:
        return 0 if report.clean else 1
    reports.print_repair(repaired, out)
    return 0 if repaired.complete else 1


def cmd_vacuum(args) -> int:
    from rich.console import Console

    from tools import reports, vacuum
    from tools.commands import admin_transport
    if args.threshold and not 0 < args.threshold <= 1:
        raise QuietError(f"--threshold {args.threshold} is not in (0, 1]", 2)
    rows = vacuum.vacuum(args.master, args.threshold, args.volume_ids,
                         transport=admin_transport(args))
    reports.print_vacuum(rows, args.threshold, Console())
    return 1 if any(r.error for r in rows) else 0


def cmd_bench(args) -> int:
    """`python -m bench.run ARGS` as a child process: `bench` sits above `tools` (it drives
    clusters through tools.local_cluster), so tools never imports it."""
    import subprocess
    proc = subprocess.Popen([sys.executable, "-m", "bench.run", *args.args])
    while True:
        try:
            code = proc.wait()
            return code if code >= 0 else 128 - code   # killed by a signal: as a shell says
        except KeyboardInterrupt:
            # Ctrl-C reached the child too (one process group): let it unmount its targets
            # and stop its clusters, however long that takes, instead of killing it.
            continue


def cmd_mount(args) -> int:
    import mount  # the top-level mount.py, installed beside the packages
    return mount.main(args.args)


class _VersionAction(argparse.Action):
    """`--version`: looks the version up only when asked (metadata lookups scan sys.path)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog} {version()}")
        parser.exit()


def version() -> str:
    """The installed distribution's version (setup.cfg's, through the package metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("kelpfs")
    except PackageNotFoundError:
        return "unknown (not installed: run `make install` or `pip install -e .`)"


# Subcommands whose arguments belong to another program's parser, passed on untouched.
PASSTHROUGH = {"bench": cmd_bench, "mount": cmd_mount}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv[:1] and argv[0] in PASSTHROUGH and argv[1:2] not in (["-h"], ["--help"]):
        args = argparse.Namespace(func=PASSTHROUGH[argv[0]], args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except QuietError as e:
        print(f"kelp: {e}", file=sys.stderr)
        return e.code
    except ConfigError as e:
        print(f"kelp: configuration error: {e}", file=sys.stderr)
        return 2
    except FsError as e:
        if os.environ.get("KELP_DEBUG"):
            raise
        print(f"kelp: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        if os.environ.get("KELP_DEBUG"):
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"kelp: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kelp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
