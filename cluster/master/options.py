"""MasterOptions: everything `kelp master` can be told, with its default."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MasterOptions:
    ip: str = "127.0.0.1"             # address to bind (other addresses are opt-in)
    port: int = 9333                  # HTTP: /status and /metrics (0 = any free port)
    grpc_port: int = 19333            # gRPC service (0 = any free port)
    zmq_port: int = 19334             # ZMQ mutation channel of the mounts (0 = any free port)
    name: str = "m0"                  # checked by clients that pass -n
    data_dir: str = "./data/master"   # meta.db (SQLite) lives here
    default_replication: int = 1      # copies per chunk when a writer asks for 0
    volume_size_limit: int = 1 << 30  # bytes; a volume past it becomes read-only
    heartbeat_interval: float = 1.0   # seconds between volume-server heartbeats
    dead_after: float = 4.0           # seconds without a heartbeat before a server is dead
    reaper_interval: float = 1.0      # seconds between deletion-queue passes
    sqlite_synchronous: str = "NORMAL"  # NORMAL: a commit is in the OS when answered (no
                                      # crash of a process loses it; a power cut may lose
                                      # what no client fsynced, and fsyncs sync the log);
                                      # FULL: every commit synced (the sync-on-close contract)
    inline_max: int = 65536           # bytes up to which a file's data stays in the metadata
                                      # store (one round trip to write, one to read); 0: none
    vacuum_interval: float = 0.0      # seconds between automatic vacuums (0 = never)
    vacuum_threshold: float = 0.3     # garbage ratio that makes a volume worth compacting
    session_lease: float = 6.0        # seconds a mount's session lives past each renewal:
                                      # the longest a dead mount can hold up a change it had
                                      # a callback on, and keep files it had open
    max_callbacks: int = 200_000      # callbacks kept per session; the oldest are broken
