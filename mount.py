"""Mount a KelpFS cluster as a directory.

    python mount.py MOUNTPOINT [--master HOST:PORT[,HOST:PORT...]] [--gateway HOST:PORT]
                    [--subdir PATH]
                    [--tls-dir DIR] [--chunk-size BYTES]
                    [--cache-size BYTES] [--attr-ttl SECONDS] [--[no-]allow-other] [--read-only]
                    [--log-level LEVEL] [--background --pid-file FILE --log-file FILE]
                    [--replication N]

Runs in the foreground by default; Ctrl-C or SIGTERM unmounts cleanly (libfuse's own signal
handlers end the loop, then fuse_main unmounts). `--background` re-executes this script as a
detached child (new session, output to --log-file), waits until the mount is live, and returns.
Refuses with one line on stderr and exit code 1 (no traceback) when the mount point is
missing, not a directory, already a mount point, --master is not a list of host:port, no
master answers at --master, or the
master refuses the --subdir (no export gives it to this client's identity, or it is no
directory).
`main(argv) -> int` is what `kelp mount` and the `kelp-mount` script call.

Installed (`pip install .`), this is the top-level module `mount` beside the packages it
imports; from a checkout with an editable install (`make install`), `python mount.py` finds
them in the checkout itself (a script's own directory comes first on sys.path).

Kernel options (passed by the binding as -o options; fusefs/fuse_binding.py picks libfuse 3
through mfusepy, or fusepy on libfuse 2 where libfuse 3 is missing), chosen for speed:
  max_idle_threads=64           (libfuse 3) 1 MiB writes and read-ahead are negotiated at
                                init instead (libfuse 3 refuses them as -o options)
  big_writes, max_write=131072  (libfuse 2) 128 KiB at a time instead of 4 KiB: libfuse 2
                                cannot negotiate more (the kernel caps max_write at 32 pages
                                without max_pages, which only libfuse 3 sends)
  max_readahead=1048576         (libfuse 2) the kernel reads ahead 1 MiB on sequential reads
  entry_timeout=0, negative_timeout=0
                                (with callbacks, the default) the kernel asks the mount about
                                every name; the mount answers from its cache, which the
                                master keeps true by callbacks (docs/caching.md), so a name
                                another mount created, removed or renamed is seen at once
  attr_timeout = --attr-ttl     the kernel trusts attributes that long, less when a callback
                                break invalidates them (libfuse 3); 0 on libfuse 2, which
                                cannot invalidate
  --no-callbacks                instead: attr_timeout and entry_timeout = --attr-ttl, the
                                mount trusts answers for --attr-ttl and "no such name" for
                                0.1 s (other mounts' changes show within that)
  use_ino                       st_ino is the master's inode number (hard links, tar, find)
  hard_remove                   unlink of an open file goes to us (keep_open on the master)
                                instead of libfuse's rename to .fuse_hidden files
  default_permissions           the kernel checks mode bits against cached attributes before
                                every operation (POSIX permission semantics at no RPC cost);
                                the master checks again for each request's caller. With
                                --no-default-permissions the master's checks alone protect
                                the files: entry_timeout is then 0 whatever --entry-ttl says
                                (a name the kernel trusted would be walked through without
                                asking), and the mount's cache answers each caller only
                                with what the master told that caller
  fsname=kelpfs:<master>, subtype=kelpfs   how df and /proc/mounts name it (several
                                masters joined with "+")
  allow_other                   on by default when mounting as root (--no-allow-other turns it
                                off), else when asked for; default_permissions keeps the
                                kernel's checks for every user
  ro                            with --read-only
  (nodev, nosuid: libfuse's defaults; device nodes and set-id bits are stored and shown, but
  a device in the mount cannot be opened and set-id bits are not honoured)
No kernel_cache/auto_cache: the page cache of a file is kept at open (keep_cache) only when
the open was answered from the mount's callback-protected cache, and dropped otherwise, which
gives close-to-open consistency between mounts.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import subprocess
import sys
import time

from cluster.common.config import ConfigError, add_flags, resolve
from fusefs.options import MountOptions

log = logging.getLogger("kelp.mount")

_CHILD_FLAG = "--_detached-child"


DURABILITY_HELP = """\
durability (as ext4 and NFS promise it):
  close()          returns once the data is in every replica's and the metadata in the
                   master's operating system: any process (the mount, a server) may crash
                   afterwards and nothing is lost; a power cut may lose it.
  fsync(), fdatasync(), O_SYNC/O_DSYNC writes, fsync of a directory
                   return once it is on stable storage on every replica and the master.
  --sync-on-close  gives close() the fsync contract (slower: a disk sync per file).
  (libfuse's high-level API passes no syncfs to a file system: `sync` alone does not reach
  the cluster; fsync the files that matter.)"""


class MountError(Exception):
    """A refusal to mount: its message is printed as one line, and the exit code is 1."""


def prog_name() -> str:
    """How the user called us, for usage and error lines: `kelp-mount` (the installed script)
    or `mount.py` (the file, also under `kelp mount`)."""
    return "kelp-mount" if os.path.basename(sys.argv[0]) == "kelp-mount" else "mount.py"


def build_parser() -> argparse.ArgumentParser:
    """The flags come from MountOptions' fields (cluster/common/config.py)."""
    p = argparse.ArgumentParser(
        prog=prog_name(), description="Mount a KelpFS cluster.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=DURABILITY_HELP)
    add_flags(p, MountOptions, "mount")
    p.add_argument("--config", help="TOML file with more options ([mount] table; flags and "
                                    "KELP_MOUNT_* env win)")
    p.add_argument(_CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)
    return p


def allow_other_default() -> bool:
    """Root mounts for a team (as SeaweedFS's allowOthers does); `default_permissions` makes
    the kernel check each caller against the mode bits, so no one gains access by it."""
    return os.geteuid() == 0


def options_from_args(args: argparse.Namespace) -> MountOptions:
    """MountOptions from flags, KELP_MOUNT_* variables and --config, with the decisions made
    at run time (an absolute mount point; allow_other for root)."""
    opts = resolve(MountOptions, "mount", args, args.config)
    opts.mountpoint = os.path.abspath(opts.mountpoint)
    if opts.allow_other is None:
        opts.allow_other = allow_other_default()
    return opts


def transport(opts: MountOptions):
    """The mount's transport: TLS and CURVE with the client credentials of --tls-dir."""
    from cluster.common.security import Transport
    return Transport("client", opts.tls_dir)


def check_mountpoint(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist") from None
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise MountError(f"{path} is a stale mount (run: fusermount -u {path})") from None
        raise MountError(f"mount point {path}: {e.strerror}") from None
    import stat as statmod
    if not statmod.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {path} is not a directory")
    if os.path.ismount(path):
        raise MountError(f"{path} is already a mount point")


def check_master(address: str, transport) -> None:
    from cluster.common.errors import FsError
    from fusefs.master_client import check_reachable
    try:
        check_reachable(address, transport=transport)
    except FsError as e:
        raise MountError(e.message) from None


def subdir_of(opts: MountOptions):
    from fusefs.paths import Subdir
    try:
        return Subdir(opts.subdir)
    except ValueError as e:
        raise MountError(str(e)) from None


def check_session(ops, session, opts: MountOptions) -> None:
    """The master took the session (it refuses a subdir no export gives this client), and
    the subdir is a directory: else one line, and no mount."""
    from cluster.common.errors import FsError
    from protos import master_pb2
    if session.refused:
        raise MountError(f"the master refused to serve {opts.subdir}: {session.refused}")
    if opts.subdir.strip("/"):
        try:
            attr = ops.master.call("GetAttr", master_pb2.PathRequest(path="/"), retry=False)
        except FsError as e:
            raise MountError(f"subdir {opts.subdir}: {e.message}") from None
        import stat as statmod
        if not statmod.S_ISDIR(attr.mode):
            raise MountError(f"subdir {opts.subdir} is not a directory")


def fuse_kwargs(opts: MountOptions) -> dict:
    from fusefs.fuse_binding import CAN_INVALIDATE, kernel_options
    if opts.callbacks:
        # Names always come to the mount (its cache answers); attributes stay in the kernel
        # until a break invalidates them, where the binding can.
        entry_ttl, attr_ttl = 0.0, (opts.attr_ttl if CAN_INVALIDATE else 0.0)
    else:
        entry_ttl, attr_ttl = opts.attr_ttl, opts.attr_ttl
    if opts.entry_ttl is not None:
        entry_ttl = opts.entry_ttl
    kw = dict(
        foreground=True,       # detaching is done by us (see --background), never by libfuse
        nothreads=False,
        **kernel_options(),    # request sizes: 1 MiB on libfuse 3, 128 KiB on libfuse 2
        attr_timeout=attr_ttl,
        entry_timeout=entry_ttl,
        negative_timeout=0,
        use_ino=True,
        hard_remove=True,
        # libfuse splits -o options at commas: a list of masters is named with "+".
        fsname=f"kelpfs:{opts.master.replace(',', '+')}" +
        (opts.subdir if opts.subdir.strip("/") else ""),
        subtype="kelpfs",
    )
    if opts.default_permissions:
        kw["default_permissions"] = True
    else:
        kw["entry_timeout"] = 0.0
    if opts.allow_other:
        kw["allow_other"] = True
    if opts.read_only:
        kw["ro"] = True
    return kw


def setup_logging(opts: MountOptions) -> None:
    handler: logging.Handler
    if opts.log_file:
        handler = logging.FileHandler(opts.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # The mount's own start and stop lines (which FUSE binding it runs on) are logged at any
    # level: they are what a reader of the log looks for first.
    log.setLevel(logging.INFO)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, opts.log_level.upper(), logging.WARNING))


def run_foreground(opts: MountOptions) -> int:
    """Mount and serve until unmounted (fusermount -u, SIGINT or SIGTERM)."""
    from fusefs.client import KelpClient
    from fusefs.fuse_binding import LIBFUSE, KelpFUSE
    from fusefs.operations import KelpOperations

    client = KelpClient(opts.master, opts.gateway, chunk_size=opts.chunk_size,
                        cache_bytes=opts.cache_bytes, credits=opts.write_credits,
                        transport=transport(opts))
    client.master.subdir = subdir_of(opts)
    ops = KelpOperations(client, opts)
    try:
        check_session(ops, ops.start_session(callbacks=opts.callbacks), opts)
    except MountError:
        ops.stop_session()
        client.close()
        raise
    if opts.pid_file:
        with open(opts.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    log.info("mounting %s (master %s) on %s%s", opts.mountpoint, opts.master, LIBFUSE,
             ", with callbacks" if opts.callbacks else "")
    try:
        KelpFUSE(ops, opts.mountpoint, **fuse_kwargs(opts))
    except RuntimeError as e:
        raise MountError(f"mounting {opts.mountpoint} failed (fuse_main returned {e}); "
                         "see the log above") from None
    finally:
        ops.stop_session()
        try:
            client.close()
        except Exception:
            log.debug("client close failed", exc_info=True)
        if opts.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(opts.pid_file)
    log.info("unmounted %s", opts.mountpoint)
    return 0


def run_background(argv: list[str], opts: MountOptions, timeout: float = 30.0) -> int:
    """Start this script detached, wait until the mount is live, return."""
    child_argv = [a for a in argv if a != "--background"] + [_CHILD_FLAG]
    log_path = opts.log_file or os.devnull
    script = os.path.abspath(__file__)
    with open(os.devnull, "rb") as devnull, open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, script, *child_argv], stdin=devnull,
                                stdout=out, stderr=out, start_new_session=True,
                                close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.ismount(opts.mountpoint):
            return 0
        if proc.poll() is not None:
            raise MountError(f"the mount process exited with code {proc.returncode}"
                             + (f"; see {opts.log_file}" if opts.log_file else ""))
        time.sleep(0.05)
    proc.terminate()
    raise MountError(f"{opts.mountpoint} was not mounted within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        opts = options_from_args(args)
        check_mountpoint(opts.mountpoint)
        check_master(opts.master, transport(opts))
        if opts.foreground or getattr(args, CHILD_ATTR):
            if getattr(args, CHILD_ATTR):
                opts.background = True
            setup_logging(opts)
            return run_foreground(opts)
        return run_background(argv, opts)
    except MountError as e:
        print(f"{prog_name()}: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"{prog_name()}: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


CHILD_ATTR = _CHILD_FLAG.lstrip("-").replace("-", "_")

if __name__ == "__main__":
    sys.exit(main())
