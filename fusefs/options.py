"""MountOptions: everything `kelp-mount` (`python mount.py`, `kelp mount`) can be told.

The flags, KELP_MOUNT_* variables (and the shared KELP_MASTER and KELP_GATEWAY) and TOML keys
all come from these fields (cluster/common/config.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from cluster.common.config import option, parse_size


@dataclass
class MountOptions:
    mountpoint: str = option("", "an existing directory that is not already a mount point",
                             positional=True)
    master: str = option("127.0.0.1:19333", "the master's gRPC address host:port, or several "
                         "masters serving one namespace: host:port,host:port,... (the mount "
                         "moves to the next when one fails)", env=("KELP_MASTER",))
    gateway: str | None = option(None, "a gateway's ZMQ address host:port", env=("KELP_GATEWAY",),
                                 default_text="a live one the master knows")
    chunk_size: int = option(4 << 20, "bytes per chunk sent to the gateway, the unit of the "
                             "write buffer (4M, 1MiB ...)", parse=parse_size, metavar="SIZE")
    write_credits: int = option(4, "chunks in flight per open file; a writer's memory is "
                                "about credits x chunk size")
    cache_bytes: int = option(256 << 20, "bytes of the read cache shared by all files",
                              flags=("--cache-size",), parse=parse_size, metavar="SIZE")
    callbacks: bool = option(True, "hold a session with the master and cache what it answers "
                             "until it says otherwise, so other mounts' changes are seen at "
                             "once (docs/caching.md); off: trust answers for --attr-ttl")
    attr_ttl: float = option(1.0, "seconds the kernel trusts attributes (with callbacks, "
                             "breaks invalidate them sooner on libfuse 3) and, with "
                             "--no-callbacks, the mount's own answers too")
    entry_ttl: float | None = option(
        None, "seconds the kernel trusts a name without asking the mount; more is faster for "
        "ls -l, but for that long a name another mount removed may seem to exist here",
        default_text="0 with callbacks, --attr-ttl without")
    allow_other: bool | None = option(
        None, "let other users use the mount, the kernel checking permissions (a non-root "
        "user needs user_allow_other in /etc/fuse.conf)",
        default_text="on when mounting as root")
    default_permissions: bool = option(
        True, "the kernel checks each caller against the mode bits before asking the mount "
        "(no RPC); off: the master's checks alone, made for each request's caller (uid, gid, "
        "groups), protect the files, every name is asked about (no kernel entry cache), and "
        "the mount keeps its answers for the caller they were given to")
    read_only: bool = option(False, "refuse every change with EROFS")
    sync_on_close: bool = option(False, "close() returns once data and metadata are on "
                                 "stable storage everywhere, as fsync does; by default once "
                                 "they are in every server's operating system")
    background: bool = option(False, "detach once mounted")
    log_level: str = option("warning", "what the log keeps",
                            choices=("debug", "info", "warning", "error"))
    replication: int = option(0, "copies per chunk for new files (0 = the cluster's default)")
    log_file: str | None = option(None, "log here instead of stderr", default_text="stderr")
    pid_file: str | None = option(None, "write the mount process's pid here (removed at "
                                  "unmount)", default_text="none")

    subdir: str = option("/", "the subtree of the cluster to mount as the mount's root; the "
                         "master allows it only if an export gives it to this client's "
                         "identity (docs/security.md)", metavar="PATH")
    tls_dir: str | None = option(None, "directory with the cluster CA and the client "
                                 "certificate and keys (`kelp certs DIR`; a named client's: "
                                 "DIR/clients/NAME)", env=("KELP_TLS_DIR",),
                                 default_text="none: plain transport")

    @property
    def foreground(self) -> bool:
        return not self.background
