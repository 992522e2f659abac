"""MasterOptions: everything `kelp master` can be told, with its default and its help.

The flags, KELP_MASTER_* variables and TOML keys all come from these fields
(cluster/common/config.py). The short spellings `-ip -p -gp -n` keep the original KelpFS
command line (`master -ip -p -gp -n`) working.
"""
from __future__ import annotations

from dataclasses import dataclass

from cluster.common.config import NodeOptions, option


@dataclass
class MasterOptions(NodeOptions):
    ip: str = option("127.0.0.1", "address to bind (other addresses are opt-in)",
                     flags=("-ip",))
    port: int = option(9333, "HTTP port for /status and /metrics (0 = any free port)",
                       flags=("-p",))
    grpc_port: int = option(19333, "gRPC port (0 = any free port)", flags=("-gp",))
    zmq_port: int = option(19334, "ZMQ port of the mounts' mutation channel (0 = any free "
                           "port)", flags=("-zp",))
    name: str = option("m0", "node name, checked by clients that pass -n", flags=("-n",))
    data_dir: str = option("./data/master", "directory of the metadata store (meta.db)",
                           flags=("--data", "-mdir"))
    meta: str = option("", "metadata store: a PostgreSQL URL (postgresql://user@host/db) "
                       "that several masters may share (docs/scaling.md), or empty for the "
                       "SQLite file meta.db in the data dir", default_text="SQLite in --data")
    default_replication: int = option(1, "copies per chunk when a writer asks for 0",
                                      flags=("--replication",))
    volume_size_limit: int = option(1 << 30, "bytes past which a volume becomes read-only")
    heartbeat_interval: float = option(1.0, "seconds between volume-server heartbeats")
    dead_after: float = option(4.0, "seconds without a heartbeat before a server is dead")
    reaper_interval: float = option(1.0, "seconds between deletion-queue passes")
    sqlite_synchronous: str = option(
        "NORMAL", "NORMAL: a commit is in the operating system when answered (no process "
        "crash loses it; fsyncs sync the log); FULL: every commit synced (the sync-on-close "
        "contract)", choices=("NORMAL", "FULL"))
    inline_max: int = option(65536, "bytes up to which a file's data stays in the metadata "
                             "store (one round trip to write, one to read); 0 = never")
    vacuum_interval: float = option(0.0, "seconds between automatic vacuums (0 = never)")
    vacuum_threshold: float = option(0.3, "garbage ratio that makes a volume worth "
                                     "compacting")
    session_lease: float = option(6.0, "seconds a mount's session lives past each renewal: "
                                  "the longest a dead mount can hold up a change it had a "
                                  "callback on, and keep files it had open")
    max_callbacks: int = option(200_000, "callbacks kept per session; past it the oldest are "
                                "broken")
    exports: str | None = option(None, "TOML file of export rules: which client identity may "
                                 "mount which subtree, read-only or read-write, with root "
                                 "squash (docs/security.md); re-read on SIGHUP",
                                 default_text="none: \"/\" to every client, read-write, "
                                 "nothing squashed")
