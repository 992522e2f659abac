"""MountOptions: everything `python mount.py` (and `kelp mount`) can be told, with its default."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MountOptions:
    # an existing directory that is not already a mount point
    mountpoint: str = ""
    # the master's gRPC address (host:port)
    master: str = "127.0.0.1:19333"
    # a gateway's ZMQ address; None = pick a live one from the master's ClusterStatus
    gateway: str | None = None
    # bytes per chunk sent to the gateway (the unit of the write buffer)
    chunk_size: int = 4 << 20
    # chunks in flight per open file; a writer's memory is about credits x chunk_size
    write_credits: int = 4
    # bytes of the read cache (LRU of needles) shared by all files
    cache_bytes: int = 256 << 20
    # hold a session with the master and cache what it answers until it says otherwise
    # (callbacks, docs/caching.md); False: trust answers for attr_ttl seconds only
    callbacks: bool = True
    # seconds the kernel trusts attributes (attr_timeout; with callbacks the master's breaks
    # invalidate them sooner on libfuse 3), and without callbacks the mount's own cache too
    attr_ttl: float = 1.0
    # seconds the kernel trusts a name -> inode lookup (entry_timeout); None: 0 with callbacks
    # (the kernel asks the mount, whose cache is kept true), attr_ttl without. More than 0
    # with callbacks makes ls -l and path walks faster, but for that long a name another
    # mount removed may still be taken to exist here (create then fails ENOENT, mkdir EEXIST)
    entry_ttl: float | None = None
    # let other users use the mount (non-root needs user_allow_other in /etc/fuse.conf)
    allow_other: bool = False
    # refuse every change with EROFS
    read_only: bool = False
    # close() returns only once the data and metadata are on stable storage everywhere (as
    # fsync); by default close() returns once they are in every server's operating system
    sync_on_close: bool = False
    # stay attached to the terminal (False with --background)
    foreground: bool = True
    # debug, info, warning, error
    log_level: str = "warning"
    # copies per chunk for new files; 0 = the cluster's default
    replication: int = 0
    # where the log goes (None = stderr)
    log_file: str | None = None
    # where the mount process writes its pid (removed at unmount)
    pid_file: str | None = None
